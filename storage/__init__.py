"""Durable storage behind intent-named functions.

:class:`storage.memory.MemoryStore` is the simulator's store; the peewee store (SQLite by default,
PostgreSQL when ``DATABASE_URL`` says so) implements the same functions for the running system.
"""
