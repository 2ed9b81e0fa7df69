"""What the governor costs when there is nothing to do.

Run with ``python -m bench idle``. A redis-server, the embedded Keepa server (20 tokens a minute)
and one ``keepa-deals governor`` process with no worker and no scheduler: after a few seconds to
start and resynchronise, the CPU of the governor and of Redis, and the commands Redis ran, over a
10-second window. Before the doorbell (:mod:`actors.doorbell`) the governor polled its queue every
5 ms when idle.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.proc import cpu_s

ROOT = Path(__file__).resolve().parent.parent
SETTLE_S, WINDOW_S = 4.0, 10.0


def _commands(client) -> int:
    return sum(v["calls"] for v in client.info("commandstats").values())


def measure() -> dict:
    import redis

    from keepa_api.server import FakeKeepa
    from tests.services import RedisServer, free_port

    with tempfile.TemporaryDirectory(prefix="bench-idle-") as workdir:
        server, keepa, governor = RedisServer(workdir), FakeKeepa(refill_per_minute=20, minute_seconds=2.0), None
        try:
            server.start()
            env = {**os.environ, "REDIS_URL": server.url, "DATABASE_URL": f"sqlite:///{workdir}/deals.db",
                   "KEEPA_API_URL": keepa.start(), "KEEPA_MINUTE_SECONDS": "2", "METRICS_PORT": str(free_port()),
                   "LOG_LEVEL": "WARNING", "KEEPA_API_KEY": "bench-key-0000"}
            governor = subprocess.Popen([sys.executable, "-m", "keepa_deals.cli", "governor"], cwd=ROOT, env=env)
            client = redis.Redis.from_url(server.url)
            time.sleep(SETTLE_S)
            before = (cpu_s(governor.pid), cpu_s(server.process.pid), _commands(client), time.monotonic())
            time.sleep(WINDOW_S)
            after = (cpu_s(governor.pid), cpu_s(server.process.pid), _commands(client), time.monotonic())
            span = after[3] - before[3]
            return {"governor": (after[0] - before[0]) / span, "redis": (after[1] - before[1]) / span,
                    "commands_per_s": (after[2] - before[2]) / span}
        finally:
            if governor is not None:
                governor.terminate()
                governor.wait(15)
            keepa.stop()
            server.stop()


def main() -> None:
    r = measure()
    print(f"idle governor over {WINDOW_S:.0f} s: governor {r['governor']:.3f} cores, redis {r['redis']:.3f} cores, "
          f"{r['commands_per_s']:,.0f} Redis commands a second")


if __name__ == "__main__":
    main()
