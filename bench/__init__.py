"""Benchmarks: ``make bench`` (``python -m bench``) prints every figure the README quotes."""
