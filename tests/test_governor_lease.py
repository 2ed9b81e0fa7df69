"""The governor's lease over an idle hour, with a standby governor beside it, on a simulated clock.

Two real :class:`~actors.governor_loop.GovernorLoop` instances share a real redis-server, with the
production lease (30 s), standby poll (1 s), doorbell wait (0.5 s) and the scheduler's nudge (one
wake message a minute, as ``actors.processes.scheduler_tick`` sends). Nothing sleeps: a discrete-event
run steps whichever loop is due next, and when the simulated clock moves on, the lease's time to live
in Redis is shortened by as much (Redis counts it on its own clock, which the test cannot move).
Real time also passes meanwhile, a few milliseconds a step, so the lease runs out no later than it
would in production.
"""

from __future__ import annotations

import heapq
import threading
import time
from types import SimpleNamespace

import pytest

from actors import governor_loop
from actors.broker import make_broker
from actors.governor_host import GovernorHost
from actors.governor_loop import GovernorLoop
from actors.ledger import KEYS, LEASE_MS, Ledger
from actors.messages import to_governor
from governor.config import GovernorConfig
from keepa_api.tokens import Envelope
from tests.governor_rig import settled

HOUR_MS = 3_600_000
NUDGE_EVERY_MS = 60_000          # the scheduler's tick: one wake message for the governor a minute
DOORBELL_MAX_WAIT_S = 0.5        # actors.doorbell.Doorbell's default
PASS_TIME = """
local left = redis.call('PTTL', KEYS[1])
if left > 0 then
  if left <= tonumber(ARGV[1]) then redis.call('DEL', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], left - ARGV[1]) end
end
return left
"""


class Waits:
    """The loop's stop event or doorbell: records how long a step asked to wait instead of waiting
    (a doorbell waits at most ``max_wait_s``, as the real one does)."""

    def __init__(self, max_wait_s: float = float("inf")):
        self.asked_s = 0.0
        self.max_wait_s = max_wait_s
        self.stopped = threading.Event()

    def is_set(self) -> bool:
        return self.stopped.is_set()

    def wait(self, timeout_s: float) -> bool:
        self.asked_s = min(timeout_s, self.max_wait_s)
        return False


class Simulation:
    """The leader and the standby stepped on one simulated clock, the scheduler nudging every minute."""

    def __init__(self, redis_url: str):
        self.redis_url = redis_url
        self.clock = SimpleNamespace(ms=int(time.time() * 1000))
        self.scheduler = make_broker(redis_url)
        self.scheduler.client.flushdb()
        self._pass_time = self.scheduler.client.register_script(PASS_TIME)
        self.loops = {name: self._loop(name) for name in ("leader", "standby")}
        self.holders: list[tuple[int, str | None]] = []     # (simulated ms, lease holder) after each step
        self.lowest_ttl_ms = LEASE_MS
        self.take_overs = {name: 0 for name in self.loops}

    def _loop(self, name: str) -> GovernorLoop:
        broker = make_broker(self.redis_url)
        clock = self.clock
        host = GovernorHost(Ledger(broker.client, holder=name), broker, GovernorConfig(),
                            lambda: Envelope(clock.ms, 1_000, 60_000, 20), clock_ms=lambda: clock.ms)
        return GovernorLoop(SimpleNamespace(host=host), Waits(), Waits(DOORBELL_MAX_WAIT_S),
                            new_broker=lambda: make_broker(self.redis_url))

    def _advance(self, to_ms: int) -> None:
        passed = to_ms - self.clock.ms
        if passed > 0:
            left = self._pass_time(keys=[KEYS[0]], args=[passed])
            if left > 0:
                self.lowest_ttl_ms = min(self.lowest_ttl_ms, left - passed)
            self.clock.ms = to_ms

    def _step(self, name: str) -> float:
        loop = self.loops[name]
        loop.stop.asked_s = loop.doorbell.asked_s = 0.0
        leading = loop.host.gov is not None
        loop.step()
        if loop.host.gov is not None and not leading:
            self.take_overs[name] += 1
        self.holders.append((self.clock.ms, loop.host.ledger.leader()))
        return max(loop.stop.asked_s, loop.doorbell.asked_s, 0.001)   # a busy step goes again at once

    def run(self, duration_ms: int, *, frozen: set[str] = frozenset()) -> None:
        """Step every loop not in ``frozen`` (a process paused, say) for ``duration_ms`` simulated."""
        end = self.clock.ms + duration_ms
        due = [(self.clock.ms, 0, "leader"), (self.clock.ms + 1, 1, "standby"),
               (self.clock.ms + NUDGE_EVERY_MS, 2, "scheduler")]
        heapq.heapify(due)
        while due and due[0][0] < end:
            at, order, name = heapq.heappop(due)
            self._advance(at)
            if name == "scheduler":
                self.scheduler.enqueue(to_governor("wake", {}))
                heapq.heappush(due, (at + NUDGE_EVERY_MS, order, name))
            elif name not in frozen:
                heapq.heappush(due, (at + int(self._step(name) * 1000), order, name))
        self._advance(end)

    def close(self) -> None:
        self.scheduler.client.flushdb()
        for loop in self.loops.values():
            loop.host.broker.close()
        self.scheduler.close()


@pytest.fixture
def simulation(redis_server):
    assert governor_loop.POLL_S == DOORBELL_MAX_WAIT_S   # an idle step waits this long: the step count below
    sim = Simulation(redis_server)
    yield sim
    sim.close()


def test_an_idle_governor_keeps_its_lease_for_an_hour_with_a_standby_beside_it(simulation):
    simulation.run(HOUR_MS)
    holders = {holder for _, holder in simulation.holders}
    assert holders == {"leader"}, f"the lease changed hands: {sorted(h or 'nobody' for h in holders)}"
    assert simulation.take_overs == {"leader": 1, "standby": 0}
    assert simulation.loops["standby"].host.gov is None
    # the leader renewed well before the lease ran low, whatever the 60 s between its wakes
    assert simulation.lowest_ttl_ms > LEASE_MS // 2, simulation.lowest_ttl_ms
    # and it was the one awake: every nudge of the hour was applied and acknowledged
    assert settled(simulation.scheduler, "governor")
    assert len(simulation.holders) > HOUR_MS / 1000   # both loops stepped all hour (not a vacuous run)


def test_a_leader_that_stops_stepping_loses_the_lease_to_the_standby_within_a_lease(simulation):
    """Renewal is not a lease for life: a paused or wedged leader renews nothing."""
    simulation.run(10 * 60_000)
    paused_at = simulation.clock.ms
    simulation.run(LEASE_MS + 2_000, frozen={"leader"})
    took = [at for at, holder in simulation.holders if at > paused_at and holder == "standby"]
    assert took, "the standby never took the lease of a leader that stopped renewing it"
    # not before the lease could have run out (renewed at most a third of it before the pause), and
    # within one standby poll after it must have
    assert LEASE_MS * 2 // 3 - 1_000 <= took[0] - paused_at <= LEASE_MS + 1_000, took[0] - paused_at
    assert simulation.take_overs["standby"] == 1
    # the old leader, stepping again, finds the lease gone and stands by instead of writing
    simulation.run(5_000)
    assert simulation.loops["leader"].host.gov is None
    assert {holder for at, holder in simulation.holders if at > paused_at + LEASE_MS + 1_000} == {"standby"}


def test_a_leader_paused_mid_batch_past_its_lease_cannot_write_over_a_successor_that_came_and_went(redis_server):
    """The first governor applies a request, then is paused (SIGSTOP, a long GC) before its write. Its
    lease runs out; a second takes over, grants, and stops cleanly, giving the lease up. The first
    resumes and writes: the lease is free, but the state is not the one it loaded, so the write is
    refused (the fence in commit.lua) and nothing it decided is granted or sent."""
    from actors.ledger import GRANT_LOG_KEY, KEYS, Ops
    from actors.messages import to_governor
    from tests.governor_rig import close_loop, make_loop, take

    first, second = make_loop(redis_server, holder="first"), make_loop(redis_server, holder="second")
    sender = first.host.broker
    try:
        sender.client.flushdb()
        sender.enqueue(to_governor("request", {"id": "a", "cls": "commit", "units": 1}))
        first.step()                                                 # the first leads and grants a
        assert [g.args[0] for g in take(sender, "commit")] == ["a"]
        now = first.host.clock_ms()
        ops = Ops()
        first.host.apply("request", {"id": "b", "cls": "commit", "units": 1}, now, ops)   # ... then pauses
        sender.client.delete(KEYS[0])                                # its lease runs out
        sender.enqueue(to_governor("request", {"id": "c", "cls": "commit", "units": 1}))
        second.step()                                                # the second takes over and grants c
        second.run()                                                 # and stops cleanly: the lease is free
        assert second.host.ledger.leader() is None
        assert not first.host.finish(now, ops)                       # the first resumes: refused
        assert sender.client.lrange(GRANT_LOG_KEY, 0, -1) == [b"a", b"c"]
        assert [g.args[0] for g in take(sender, "commit")] == ["c"]  # b was never granted or sent
        assert sorted(sender.client.hkeys(KEYS[3])) == [b"a", b"c"]  # the second's state stands
    finally:
        sender.client.flushdb()
        close_loop(second)
        close_loop(first)
