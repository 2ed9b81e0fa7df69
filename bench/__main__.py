"""Run every benchmark section in one process and print its table.

``python -m bench`` runs all; ``python -m bench engine`` (or ``wire``, ``actors``) runs one section.
"""

from __future__ import annotations

import importlib
import sys

SECTIONS = {
    "engine": "bench.engine",   # issue 2: simulator table, policy speed, memory
    "wire": "bench.wire",       # issue 3: decoder speed, embedded server throughput
    "actors": "bench.actors",   # issue 4: governor through Redis vs BucketRateLimiter, one worker end to end
}


def main(argv: list[str]) -> int:
    chosen = argv or list(SECTIONS)
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
