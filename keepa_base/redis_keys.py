"""Redis keys one process writes and another reads (each named here once, for both sides).

Every key of the project starts with ``keepa-deals:``; keys only one module reads and writes stay
with that module.
"""

from __future__ import annotations

PREFIX = "keepa-deals:"
GOVERNOR_PREFIX = PREFIX + "governor:"
# the governor's state as the status screen and the exporter read it (actors/ledger.py writes it)
SNAPSHOT_KEY = GOVERNOR_PREFIX + "snapshot"
# calls a worker made for a grant another attempt had already paid for (actors/grant_claims.py)
REPEATED_KEY = PREFIX + "calls:repeated_total"
# when the scheduler last finished a tick, for the dead-scheduler alert (actors/processes.py)
SCHEDULER_TICK_KEY = PREFIX + "scheduler:last_tick_ms"
