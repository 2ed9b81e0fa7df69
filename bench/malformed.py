"""Charged /product calls per ASIN while the embedded Keepa server spoils a share of the products
(issue 13's scenario), on the test stack: redis-server, the governor, a worker and the scheduler as
processes, the embedded Keepa server over HTTP (20 tokens a Keepa minute, 0.5 s a Keepa minute).

    python -m bench.malformed [--seconds 300] [--rate 0.02] [--root PATH]

``--root`` runs the stack of another checkout (its ``tests/stack.py`` and processes), e.g. the code
before issue 13 with this checkout's ``keepa_api/service.py`` copied in for the fault switch. Not part
of ``python -m bench``: it takes as long as ``--seconds``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

MARKS_S = (60, 120, 180, 240, 300, 600, 900)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.malformed")
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--rate", type=float, default=0.02, help="share of products sent malformed")
    parser.add_argument("--root", default=str(Path(__file__).resolve().parent.parent))
    args = parser.parse_args(argv)
    sys.path.insert(0, args.root)
    from tests.stack import Stack

    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp))
        service = stack.keepa.service
        stack.keepa.set_faults(malformed_product_rate=args.rate)
        stack.start_all()
        started = time.monotonic()
        try:
            for mark in (m for m in MARKS_S if m <= args.seconds):
                time.sleep(max(0.0, started + mark - time.monotonic()))
                calls = dict(service.product_calls)
                bad = sorted((n for a, n in calls.items() if service.malformed_product(a)), reverse=True)
                good = [n for a, n in calls.items() if not service.malformed_product(a)]
                print(f"t={mark:>3}s  ASINs called {len(calls)}, malformed {len(bad)}; calls per malformed ASIN "
                      f"{bad[:8]}{' ...' if len(bad) > 8 else ''}; most calls for a good ASIN {max(good, default=0)}; "
                      f"deals ingested {stack.ingested()}; tokens charged {service.charged_to_callers_total}",
                      flush=True)
        finally:
            stack.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
