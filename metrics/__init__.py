"""Prometheus metrics for keepa-deals: what operators graph, alert on and read at night.

Entry points:

- :func:`metrics.exporter.serve` -- the ``metrics`` process (``python -m metrics``): an HTTP exporter
  on ``METRICS_HOST:METRICS_PORT`` whose collector reads, on every scrape, the governor's snapshot from
  Redis and the deal counts from the database. Every number comes from shared state, so the exporter
  is correct however many worker processes run.
- :class:`metrics.dramatiq_seconds.DramatiqSeconds` -- a Dramatiq middleware recording each worker
  process's message metrics in seconds (prometheus_client multiprocess mode); the exporter merges
  ``PROMETHEUS_MULTIPROC_DIR`` into its output when that variable is set.
- :mod:`metrics.families` -- the metric names, their HELP texts and the pure translation from a
  snapshot and database counts to metric families.
"""
