"""The running system: Dramatiq actors on a Redis broker.

Import order matters (``@dramatiq.actor`` binds to the broker that exists at import time), so
nothing here imports an actor module: call :func:`actors.app.setup` first, which configures the
broker and then declares the actors (:func:`actors.app._declare_actors`).

Queues: ``governor`` (consumed by the governor process's own loop, :mod:`actors.governor_loop`, with
Dramatiq's public consumer: no actor), ``upsert``, ``peek``, ``commit``.
"""
