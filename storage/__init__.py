"""Durable storage behind intent-named functions.

:func:`storage.store.open_store` opens the database ``DATABASE_URL`` names (SQLite in WAL mode by
default, PostgreSQL when the URL says so), creates or migrates its schema
(:mod:`storage.migrations`) and returns a :class:`storage.store.Store`. Callers never see a model.

:class:`storage.memory.MemoryStore` is the simulator's store. Both implement
:class:`storage.protocol.PipelineStore`, what the pipeline's two shells (actors, simulator) call.
"""
