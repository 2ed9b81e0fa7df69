"""The running system: Dramatiq actors on a Redis broker.

Import order matters (``@dramatiq.actor`` binds to the broker that exists at import time), so
nothing here imports an actor module: call :func:`actors.app.setup` first, which configures the
broker and then imports :mod:`actors.governor_actor` and :mod:`actors.pipeline`.

Queues: ``governor`` (exactly one consumer, one thread), ``upsert``, ``peek``, ``commit``.
"""
