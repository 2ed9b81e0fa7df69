"""Issue 4's first figure: the governor through the real Redis broker.

Run with ``make bench`` (all sections) or ``python -m bench grants``. Everything printed is measured
in this run on this machine; every server and process started here is stopped on the way out.

1. request -> grant -> settle. A real redis-server, the real governor process (``keepa-deals
   governor``: :func:`actors.processes.run_governor`, its batch loop on Dramatiq's public consumer)
   in its own process. Client threads in this process each send a ``request`` (class ``commit``), wait for
   the grant, which a ``keepa_commit`` actor here receives (a real Dramatiq worker), timestamps and
   settles at once with a plausible envelope. Tokens are plentiful on purpose (``/token`` answers
   balance 10^6, refill 100,000 a minute; settles report the same), so the governor never waits on
   tokens: what is measured is the machinery. Side by side, on the same Redis, the same number of
   threads acquire Dramatiq's own ``BucketRateLimiter`` (``RedisBackend``, limit never reached).

Every message is sent and received through Dramatiq's public API (``Broker.enqueue``,
``Broker.consume``), and progress is read from the governor's own keys or ``Broker.join``, so the
same file measures any version of the governor (run it against an older checkout to compare).

The second figure (one worker ingesting end to end) is :mod:`bench.ingest`.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench.proc import cpu_s

CLIENT_THREADS = 32
BURST = 5_000                          # requests queued at once to measure the governor's own capacity
WARMUP_S, GOVERNOR_WINDOW_S, LIMITER_WINDOW_S, ALONE_WINDOW_S = 1.0, 6.0, 4.0, 2.0
RECEIVERS, RECEIVER_THREADS = 2, 4        # grant receivers: worker processes, as in production
OPEN_RATE, OPEN_WINDOW_S = 1_000, 6.0  # the latency target is quoted at the throughput target
WORKER_TIMEOUT_MS = 5                 # the consumers' idle poll ceiling: small, so latency is not poll time
PLENTY = {"balance": 10**6, "refill_per_minute": 100_000}
ROOT = Path(__file__).resolve().parent.parent


# -- 1. the governor through Redis ------------------------------------------------------------------

class _PlentifulTokens:
    """The governor's token source (Keepa's free /token), answering a generous envelope."""

    def token(self):
        from keepa_api.tokens import Envelope
        return Envelope(int(time.time() * 1000), PLENTY["balance"], 60_000, PLENTY["refill_per_minute"])


def _governor_process(redis_url: str, db_url: str) -> None:
    """The child: ``keepa-deals governor`` exactly as the Procfile runs it (stopped with SIGTERM),
    except that its token source answers a plentiful envelope instead of calling Keepa's /token."""
    from actors import app, processes
    from keepa_deals.settings import load_settings

    settings = load_settings({"REDIS_URL": redis_url, "DATABASE_URL": db_url, "LOG_LEVEL": "WARNING",
                              "KEEPA_API_URL": "http://127.0.0.1:9"})
    app.setup(settings, client=_PlentifulTokens(), with_host=True)   # run_governor reuses this runtime
    processes.run_governor(settings)


def _receiver(redis_url: str, arrivals, stop, threads: int) -> None:
    """A grant receiver process, as a ``keepa-deals worker`` receives grants: a real Dramatiq
    ``Worker`` on the ``commit`` queue whose actor settles at once with a plausible envelope and
    reports when the grant arrived (``time.monotonic()`` is one clock for every process here)."""
    import dramatiq

    from actors.broker import make_broker

    broker = make_broker(redis_url)

    def keepa_commit(grant_id, payload):
        arrived = time.monotonic()
        broker.enqueue(to_governor("settle", settle_body(grant_id)))
        arrivals.put((grant_id, arrived))

    dramatiq.actor(keepa_commit, broker=broker, queue_name="commit", actor_name="keepa_commit", max_retries=0)
    worker = dramatiq.Worker(broker, queues={"commit"}, worker_threads=threads, worker_timeout=WORKER_TIMEOUT_MS)
    worker.start()
    stop.wait()
    worker.stop(timeout=2_000)
    broker.close()


def _light_receiver(redis_url: str, arrivals, stop, threads: int) -> None:
    """A grant receiver that only takes grants off the ``commit`` queue and settles them: what it
    times is when the governor's grant reached the queue, not how soon a Dramatiq worker picks it
    up. One thread fetches (Dramatiq's public consumer: everything waiting, up to 256 a fetch,
    napping 0.5 ms when there is none), times each grant as it comes out of the fetch and
    acknowledges it; ``threads`` threads send the settles, so the fetching thread is not held up by
    them (a receiver slower than the governor would time its own backlog)."""
    import queue as queues
    from concurrent.futures import ThreadPoolExecutor

    from actors.broker import make_broker

    broker = make_broker(redis_url)
    consumer = broker.consume("commit", prefetch=256, timeout=1)
    settles: queues.SimpleQueue = queues.SimpleQueue()

    def settle_forever() -> None:
        while (grant_id := settles.get()) is not None:
            broker.enqueue(to_governor("settle", settle_body(grant_id)))

    with ThreadPoolExecutor(threads) as pool:
        for _ in range(threads):
            pool.submit(settle_forever)
        while not stop.is_set():
            grants = []
            while len(grants) < 256 and (grant := next(consumer)) is not None:
                arrivals.put((grant.args[0], time.monotonic()))
                settles.put(grant.args[0])
                grants.append(grant)
            if not grants:
                time.sleep(0.0005)
            for grant in grants:
                consumer.ack(grant)
        for _ in range(threads):
            settles.put(None)
    consumer.close()
    broker.close()


class _GrantClient:
    """Sends requests from this process; ``RECEIVERS`` processes receive the grants and settle them;
    arrivals come back over a pipe and are timed against the send."""

    def __init__(self, redis_url: str, light: bool = False):

        from actors.broker import make_broker

        ctx = multiprocessing.get_context("spawn")
        self.broker = make_broker(redis_url)
        self._sent: dict[str, tuple[float, threading.Event | None]] = {}
        self.latencies_ms: dict[str, float] = {}
        self._arrivals, self._stop = ctx.Queue(), ctx.Event()
        target, n = (_light_receiver, 1) if light else (_receiver, RECEIVERS)
        self._receivers = [ctx.Process(target=target, args=(redis_url, self._arrivals, self._stop, RECEIVER_THREADS),
                                       daemon=True) for _ in range(n)]
        for proc in self._receivers:
            proc.start()
        self._collector = threading.Thread(target=self._collect, daemon=True)
        self._collector.start()

    def _collect(self) -> None:
        while True:
            item = self._arrivals.get()
            if item is None:
                return
            grant_id, arrived = item
            sent = self._sent.pop(grant_id, None)
            if sent:
                self.latencies_ms[grant_id] = (arrived - sent[0]) * 1000
                if sent[1] is not None:
                    sent[1].set()

    def request(self, rid: str, timeout_s: float = 10.0) -> float | None:
        done = threading.Event()
        self._sent[rid] = (time.monotonic(), done)
        self.broker.enqueue(to_governor("request", request_body(rid)))
        return self.latencies_ms.get(rid) if done.wait(timeout_s) else None

    def open_loop(self, rate: float, seconds: float, tick_s: float = 0.005, grace_s: float = 5.0) -> dict:
        """Offer ``rate`` requests a second for ``seconds`` whatever happens to them (an open loop: a
        slow governor cannot slow the offered load down and hide its own latency), sent every
        ``tick_s``, each timed from just before its own enqueue. Then wait up to ``grace_s`` for the
        last grants; a request never granted by then counts as timed out. ``backlog``: the most
        requests sent and not yet granted at once."""
        ids, sent_n, backlog = [], 0, 0
        started = time.perf_counter()
        while (now := time.perf_counter()) < started + seconds:
            due = int((now - started) * rate) - sent_n
            for i in range(due):
                rid = f"open:{started}:{sent_n + i}"
                self._sent[rid] = (time.monotonic(), None)
                self.broker.enqueue(to_governor("request", request_body(rid)))
                ids.append(rid)
            sent_n += due
            backlog = max(backlog, len(self._sent))
            time.sleep(tick_s)
        offered_s = time.perf_counter() - started
        deadline = time.monotonic() + grace_s
        while any(rid in self._sent for rid in ids[-50:]) and time.monotonic() < deadline:
            time.sleep(0.01)
        lat = [self.latencies_ms[rid] for rid in ids if rid in self.latencies_ms]
        return {**_summary(len(lat) / offered_s, lat, len(ids) - len(lat)), "offered": len(ids) / offered_s,
                "max": max(lat) if lat else float("nan"), "backlog": backlog}

    def close(self) -> None:
        self._stop.set()
        for proc in self._receivers:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        self._arrivals.put(None)
        self._collector.join(5)
        self.broker.close()


def to_governor(kind: str, body: dict):
    """A message for the governor's queue, as the actors send it (``actors.steps``)."""
    from dramatiq import Message

    return Message(queue_name="governor", actor_name="keepa_governor", args=(kind, body), kwargs={}, options={})


def request_body(rid: str) -> dict:
    """A one-ASIN commit request: the bench's unit of work."""
    return {"id": rid, "cls": "commit", "units": 1, "payload": {"asins": ["B000000000"]}}


def settle_body(grant_id: str) -> dict:
    from keepa_api.tokens import Envelope

    env = Envelope(int(time.time() * 1000), PLENTY["balance"], 60_000, PLENTY["refill_per_minute"], tokens_consumed=20)
    return {"grant_id": grant_id, "endpoint": "commit", "outcome": "ok", "envelope": env.to_json()}


def _capacity(redis_url: str, pids: dict[str, int], governor_pid: int, n: int = BURST,
              timeout_s: float = 120.0) -> dict:
    """The governor's own capacity, with no client in the way: ``n`` requests queued while the
    governor is paused (SIGSTOP), timed from its resumption until every one is granted, sent and
    acknowledged (``Broker.join`` on its queue; nobody consumes the grants); then ``n`` settles
    queued the same way, timed until all are applied. Returns seconds for each phase and CPU
    microseconds per grant for each process in ``pids``."""
    from actors.broker import make_broker

    broker = make_broker(redis_url)

    def queue_then_time(kind: str, bodies: list[dict]) -> tuple[float, dict]:
        os.kill(governor_pid, signal.SIGSTOP)
        try:
            for body in bodies:
                broker.enqueue(to_governor(kind, body))
        finally:
            cpu0 = {k: cpu_s(pid) for k, pid in pids.items()}
            started = time.perf_counter()
            os.kill(governor_pid, signal.SIGCONT)
        broker.join("governor", interval=2, timeout=int(timeout_s * 1000))
        return time.perf_counter() - started, {k: cpu_s(pid) - cpu0[k] for k, pid in pids.items()}

    ids = [f"capacity:{time.monotonic_ns()}:{i}" for i in range(n)]
    broker.join("governor", interval=2, timeout=int(timeout_s * 1000))   # the closed loops' last settles
    grant_s, cpu_grant = queue_then_time("request", [request_body(i) for i in ids])
    settle_s, cpu_settle = queue_then_time("settle", [settle_body(i) for i in ids])
    cpu = {k: (cpu_grant[k] + cpu_settle[k]) * 1e6 / n for k in pids}
    broker.close()
    return {"grant_s": grant_s, "settle_s": settle_s, "cpu_us_per_grant": cpu}


def _closed_loop(op, threads: int, seconds: float) -> tuple[float, list[float], int]:
    """``threads`` threads call ``op(name) -> latency ms | None`` back to back for ``seconds``."""
    latencies: list[float] = []
    failures = [0]
    deadline = time.perf_counter() + seconds

    def run(t: int) -> None:
        i = 0
        while time.perf_counter() < deadline:
            i += 1
            ms = op(f"bench:{t}:{i}:{time.monotonic_ns()}")
            if ms is None:
                failures[0] += 1
            else:
                latencies.append(ms)

    started = time.perf_counter()
    pool = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    return len(latencies) / (time.perf_counter() - started), latencies, failures[0]


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _limiter_op(redis_url: str):
    import redis
    from dramatiq.rate_limits import BucketRateLimiter
    from dramatiq.rate_limits.backends import RedisBackend

    backend = RedisBackend(client=redis.Redis.from_url(redis_url))
    limiter = BucketRateLimiter(backend, "bench-actors", limit=10**9, bucket=1_000)

    def op(_name: str) -> float | None:
        started = time.perf_counter()
        with limiter.acquire(raise_on_failure=False) as acquired:
            took = (time.perf_counter() - started) * 1000
        return took if acquired else None
    return op


def _summary(rate: float, lat: list[float], failed: int) -> dict:
    return {"rate": rate, "p50": _pct(lat, 0.5), "p99": _pct(lat, 0.99),
            "mean": statistics.fmean(lat) if lat else float("nan"), "failed": failed}


def _governor_run(server, workdir: str, threads: int) -> dict:
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_governor_process, name="bench-governor",
                        args=(server.url, f"sqlite:///{workdir}/deals.db"))
    client = None
    server.redis_flush()
    try:
        child.start()
        client = _GrantClient(server.url)
        if client.request("bench:first", timeout_s=30) is None:   # start, lease, load, /token
            raise RuntimeError("the governor granted nothing within 30 s")
        _closed_loop(client.request, threads, WARMUP_S)
        out = {"loaded": _summary(*_closed_loop(client.request, threads, GOVERNOR_WINDOW_S))}
        out["alone"] = _summary(*_closed_loop(client.request, 1, ALONE_WINDOW_S))
        pids = {"governor": child.pid, "redis": server.process.pid, "bench (sender)": os.getpid(),
                **{f"receiver {i}": proc.pid for i, proc in enumerate(client._receivers)}}
        cpu0, t0 = {k: cpu_s(pid) for k, pid in pids.items()}, time.monotonic()
        client.open_loop(OPEN_RATE, WARMUP_S)   # receivers and governor out of their idle naps
        out["open"] = client.open_loop(OPEN_RATE, OPEN_WINDOW_S)
        took = time.monotonic() - t0
        out["open"]["cpu"] = {k: (cpu_s(pid) - cpu0[k]) / took for k, pid in pids.items()}
        client.close()
        client = _GrantClient(server.url, light=True)
        client.open_loop(OPEN_RATE, WARMUP_S)
        out["open_light"] = client.open_loop(OPEN_RATE, OPEN_WINDOW_S)
        client.close()
        client = None
        out["capacity"] = _capacity(server.url, {"governor": child.pid, "redis": server.process.pid}, child.pid)
        return out
    finally:
        if client is not None:
            client.close()
        if child.is_alive():
            child.terminate()
            child.join(10)
            if child.is_alive():
                child.kill()
                child.join(5)


def governor_vs_limiter(threads: int = CLIENT_THREADS) -> dict:
    from tests.services import RedisServer

    class _Redis(RedisServer):
        def redis_flush(self) -> None:
            import redis
            redis.Redis.from_url(self.url).flushall()

    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-actors-") as workdir:
        server = _Redis(workdir)
        try:
            server.start()
            results["governor"] = _governor_run(server, workdir, threads)
            op = _limiter_op(server.url)
            _closed_loop(op, threads, WARMUP_S / 2)
            results["limiter"] = {"loaded": _summary(*_closed_loop(op, threads, LIMITER_WINDOW_S)),
                                  "alone": _summary(*_closed_loop(op, 1, ALONE_WINDOW_S))}
        finally:
            server.stop()
    return results


def _line(name: str, r: dict, threads: int) -> str:
    return (f"{name:34} {r['rate']:>7,.0f}/s  p50 {r['p50']:6.2f} ms  p99 {r['p99']:6.2f} ms  "
            f"mean {r['mean']:6.2f} ms  ({threads} client thread(s), {r['failed']} timed out)")


def main() -> None:
    sides = governor_vs_limiter()
    lim = sides["limiter"]
    for name, r in sides.items():
        label = "BucketRateLimiter acquire" if name == "limiter" else f"{name} req->grant->settle"
        print(_line(label, r["loaded"], CLIENT_THREADS))
        print(_line(label, r["alone"], 1))
    for name in ("governor",):
        g = sides[name]["loaded"]
        print(f"{name} / limiter at {CLIENT_THREADS} threads: {g['rate'] / lim['loaded']['rate']:.3f} x the rate, "
              f"{g['p50'] / lim['loaded']['p50']:.1f} x the p50, {g['p99'] / lim['loaded']['p99']:.1f} x the p99")
    gov = sides["governor"]["loaded"]
    cap = sides["governor"]["capacity"]
    cycle = BURST / (cap["grant_s"] + cap["settle_s"])
    print(f"governor capacity, no client in the way: {BURST:,} requests queued at once granted in "
          f"{cap['grant_s']:.2f} s ({BURST / cap['grant_s']:,.0f} grants/s), their {BURST:,} settles applied in "
          f"{cap['settle_s']:.2f} s: {cycle:,.0f} request-grant-settle cycles/s")
    print("CPU per cycle in that run (less noisy than rates on a shared machine): "
          + ", ".join(f"{k} {v:,.0f} us" for k, v in cap["cpu_us_per_grant"].items()))
    print("\n| figure | target | measured |\n|---|---|---|")
    print(f"| governor grants/s, {CLIENT_THREADS} client threads | >= 1,000 | {gov['rate']:,.0f} |")
    print(f"| governor request-grant-settle cycles/s, {BURST:,} requests then settles queued at once "
          f"(its own capacity) | >= 1,000 | {cycle:,.0f} |")
    ol = sides["governor"]["open"]
    print(f"open loop: {ol['offered']:,.0f} requests/s offered, {ol['rate']:,.0f} grants/s received, request-to-grant "
          f"p50 {ol['p50']:.1f} ms, p99 {ol['p99']:.1f} ms, max {ol['max']:.1f} ms, {ol['failed']} not granted in time")
    print(f"  at most {ol['backlog']} requests sent and not yet granted at once; CPU (cores) "
          + ", ".join(f"{k} {v:.2f}" for k, v in ol["cpu"].items()) + f"; load average {os.getloadavg()[0]:.1f}")
    lt = sides["governor"]["open_light"]
    print(f"open loop, grants timed on the queue: {lt['offered']:,.0f} requests/s offered, {lt['rate']:,.0f} grants/s "
          f"received, request-to-grant p50 {lt['p50']:.1f} ms, p99 {lt['p99']:.1f} ms, max {lt['max']:.1f} ms, "
          f"{lt['failed']} not granted in time; at most {lt['backlog']} not yet granted at once")
    print(f"| governor request-to-grant p50 / p99 at {OPEN_RATE:,} requests/s offered (open loop), grant on the queue "
          f"| p99 < 20 ms | {lt['p50']:.1f} / {lt['p99']:.1f} ms |")
    print(f"| the same, until a Dramatiq worker ({RECEIVERS} processes x {RECEIVER_THREADS} threads, "
          f"{WORKER_TIMEOUT_MS} ms poll) starts the granted actor | - | {ol['p50']:.1f} / {ol['p99']:.1f} ms |")
    print(f"| governor request-to-grant p50 / p99, {CLIENT_THREADS} threads | - | "
          f"{gov['p50']:.1f} / {gov['p99']:.1f} ms |")
    print(f"| governor request-to-grant p50 / p99, 1 thread | - | {sides['governor']['alone']['p50']:.1f} / "
          f"{sides['governor']['alone']['p99']:.1f} ms |")
    print(f"| BucketRateLimiter acquisitions/s, p50 / p99 | - | {lim['loaded']['rate']:,.0f}, "
          f"{lim['loaded']['p50']:.2f} / {lim['loaded']['p99']:.2f} ms |")
    print(f"| governor / limiter rate, same threads, same Redis | - | {gov['rate'] / lim['loaded']['rate']:.2f} |")


if __name__ == "__main__":
    main()
