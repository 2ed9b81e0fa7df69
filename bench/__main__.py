"""Run every benchmark section in one process and print its table.

``python -m bench`` runs all; ``python -m bench engine`` (or ``wire``, ``grants``, ``ingest``, ``steps``,
``idle``) runs one; ``python -m bench actors`` runs ``grants``, ``ingest``, ``steps`` and ``idle``.
"""

from __future__ import annotations

import importlib
import sys

SECTIONS = {
    "engine": "bench.engine",   # issue 2: simulator table, policy speed, memory
    "wire": "bench.wire",       # issue 3: decoder speed, embedded server throughput
    "grants": "bench.grants",   # issue 4: governor through Redis vs BucketRateLimiter
    "ingest": "bench.ingest",   # issue 4: one worker end to end, SQLite and PostgreSQL
    "steps": "bench.steps",     # issue 4: the pipeline steps alone, CPU per feed deal
    "idle": "bench.idle",       # issue 4: what the governor costs with nothing to do
}
ALIASES = {"actors": ["grants", "ingest", "steps", "idle"]}


def main(argv: list[str]) -> int:
    chosen = [s for name in (argv or list(SECTIONS)) for s in ALIASES.get(name, [name])]
    for name in chosen:
        if name not in SECTIONS:
            print(f"unknown bench section {name!r}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
            return 2
        try:
            module = importlib.import_module(SECTIONS[name])
        except ModuleNotFoundError as exc:
            print(f"== {name}: not available ({exc})")
            continue
        print(f"== {name}")
        module.main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
