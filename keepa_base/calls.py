"""The names a Keepa call is counted under: which endpoint it used and how it ended.

A worker settles each call with the governor under these names (``actors/messages.py`` checks
them), the governor counts calls by them in its snapshot, and the exporter serves every pair as
``keepa_calls_total{endpoint, outcome}``, present at 0 from start-up.
"""

from __future__ import annotations

ENDPOINTS = ("deal", "peek", "commit", "token")
OUTCOMES = ("ok", "429", "402", "400", "5xx", "timeout", "malformed")
