"""The pipeline steps, pure functions the actors and the simulator call.

- :class:`pipeline.watermark.Watermark` -- the page-by-page ratchet of the deal feed scan;
- :func:`pipeline.verdict.peek_verdict` -- is a candidate worth a commit?
- :func:`pipeline.commit.commit_record` -- the stored, visible deal from a full product;
- :func:`pipeline.cadence.upsert_interval_ms` -- how often the feed is worth reading on this plan;
- :mod:`pipeline.batching` -- ASINs per peek and per commit call, and when a part-filled peek goes;
- :mod:`pipeline.driver` -- every decision the two shells (actors, simulator) make with these steps.
"""
