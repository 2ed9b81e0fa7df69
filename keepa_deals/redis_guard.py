"""The parent of the redis-server ``keepa-deals up`` starts, so that Redis goes last, whatever ends ``up``.

redis-server cannot watch ``up`` itself. This small process runs it (with ``PR_SET_PDEATHSIG``, so
a SIGKILLed guard takes Redis with it) and, when told to stop (SIGTERM from ``up``, or from
:func:`keepa_deals.lifeline.follow_up` when ``up`` is gone), waits until the stack's processes have
disconnected (at most ``CLIENTS_GRACE_S``), so a draining worker can still settle and the governor
can give its lease up, then stops Redis (SIGTERM: it saves and exits) and exits.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time

import redis

from keepa_deals.lifeline import die_with_parent, follow_up, stop_on_signals

log = logging.getLogger(__name__)

CLIENTS_GRACE_S = 9.0
REDIS_STOP_S = 4.0


def _other_clients(client: redis.Redis) -> int:
    try:
        return max(0, len(client.client_list()) - 1)  # less this connection
    except redis.RedisError:
        return 0


def wait_for_clients_to_leave(port: int, grace_s: float = CLIENTS_GRACE_S, every_s: float = 0.1) -> int:
    """Wait until no other client is connected to the Redis on ``port``; return how many were left
    when ``grace_s`` ran out (0: all gone)."""
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1)
    deadline = time.monotonic() + grace_s
    try:
        left = _other_clients(client)
        while left and time.monotonic() < deadline:
            time.sleep(every_s)
            left = _other_clients(client)
        return left
    finally:
        client.close()


def guard(port: int, redis_argv: list[str]) -> int:
    # redis-server first, while this process has one thread (a preexec_fn is unsafe beside others);
    # a signal before the handlers below ends the guard, and the parent-death signal Redis with it
    proc = subprocess.Popen(redis_argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            preexec_fn=die_with_parent())
    stop = stop_on_signals((signal.SIGTERM, signal.SIGINT, signal.SIGHUP))
    follow_up()
    while not stop.wait(0.2):
        if proc.poll() is not None:
            log.error("redis-server exited by itself with %s", proc.returncode)
            return 1
    log.info("stopping redis-server once the stack's clients have gone (at most %.0f s)", CLIENTS_GRACE_S)
    left = wait_for_clients_to_leave(port)
    if left:
        log.warning("stopping redis-server with %d client(s) still connected", left)
    proc.terminate()
    try:
        proc.wait(REDIS_STOP_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return 0
