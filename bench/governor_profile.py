"""Where the governor's time goes: ``python -m bench.governor_profile [N]``.

A real redis-server on a free loopback port, the governor's own loop (``GovernorLoop.step``) in this
process under cProfile, N requests queued at once and granted, then their N settles applied; prints
the wall and CPU time of each phase and the functions that took the most time. Tokens are
plentiful (as in :mod:`bench.grants`), so what is measured is the machinery: Dramatiq's consumer and
broker, redis-py, the fenced write. The server is stopped on the way out.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import tempfile
import threading
import time


def main(n: int = 3_000) -> None:
    from actors import app
    from actors.broker import close_broker, make_broker
    from actors.doorbell import Doorbell
    from actors.governor_loop import GovernorLoop
    from actors.ledger import KEYS
    from actors.messages import to_governor
    from bench.grants import _PlentifulTokens, settle_body
    from keepa_deals.settings import load_settings
    from tests.services import RedisServer

    inflight = KEYS[3]
    with tempfile.TemporaryDirectory(prefix="bench-govprof-") as workdir:
        server = RedisServer(workdir)
        server.start()
        try:
            settings = load_settings({"REDIS_URL": server.url, "DATABASE_URL": f"sqlite:///{workdir}/deals.db",
                                      "LOG_LEVEL": "WARNING", "KEEPA_API_URL": "http://127.0.0.1:9"})
            rt = app.setup(settings, client=_PlentifulTokens(), with_host=True)
            sender = make_broker(server.url)
            doorbell = Doorbell(server.url)
            stop = threading.Event()
            stop.set()   # the loop never waits: each step takes what is queued
            loop = GovernorLoop(rt, stop, doorbell, new_broker=lambda: make_broker(server.url))
            profile = cProfile.Profile()

            def phase(name: str, done) -> None:
                wall, cpu = time.perf_counter(), time.process_time()
                profile.enable()
                for _ in range(10 * n):   # bounded: a step takes up to 256 messages
                    loop.step()
                    if done():
                        break
                profile.disable()
                print(f"{name}: {n:,} messages in {time.perf_counter() - wall:.2f} s wall, "
                      f"{time.process_time() - cpu:.2f} s CPU of this process")

            for i in range(n):
                sender.enqueue(to_governor("request", {"id": f"commit:p{i}:0", "cls": "commit", "units": 1}))
            phase("grant", lambda: rt.redis.hlen(inflight) >= n)
            for i in range(n):
                sender.enqueue(to_governor("settle", settle_body(f"commit:p{i}:0")))
            phase("settle", lambda: rt.redis.hlen(inflight) == 0)
            pstats.Stats(profile).sort_stats("cumulative").print_stats(30)
            loop.stop.set()
            rt.host.close()
            doorbell.close()
            close_broker(sender)
            close_broker(rt.host.broker)
        finally:
            server.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3_000)
