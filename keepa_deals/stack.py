"""``make run`` / ``keepa-deals up``: the whole stack on the embedded default, one Ctrl-C to stop.

Starts a local redis-server when nothing answers on REDIS_URL (refusing a Redis another stack
uses: :mod:`keepa_deals.running_stack`), the embedded Keepa server (a Keepa minute of 2 s) when
KEEPA_API_KEY is unset, then the Procfile under honcho, whose output it relays, with a progress line
every ``--progress-seconds`` (:mod:`keepa_deals.progress`). The local Redis keeps its data, and the
metrics their multiprocess files, under ``KEEPA_DEALS_VAR`` (default: ``var/`` in the checkout).

Everything it started ends within ``STOP_BUDGET_S`` when it gets SIGINT, SIGTERM or SIGHUP, when its
output is closed (``| head -1``), when a Procfile process stops for good, and when ``up`` is
SIGKILLed (:mod:`keepa_deals.lifeline`: every process it started watches it). In order: honcho
(the workers drain), then the embedded Keepa and Redis (:mod:`keepa_deals.redis_guard`: once the
stack's clients are gone), then SIGKILL for anything of ours still alive when the budget is spent.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

from keepa_base.errors import ConfigError
from keepa_deals.lifeline import UP_PID_VARIABLE, die_with_parent, started_by, stop_on_signals
from keepa_deals.progress import PROGRESS_S
from keepa_deals.running_stack import RENEW_S, RunningStack, redacted
from keepa_deals.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
VAR_VARIABLE = "KEEPA_DEALS_VAR"
DEMO_MINUTE_S = 2
READY_TIMEOUT_S = 20
STOP_BUDGET_S = 13.0    # within the 15 s promised: honcho, then Keepa and Redis, then SIGKILL
TICK_S = 0.25


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait(check, what: str, stop: threading.Event) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and not stop.is_set():
        if check():
            return
        stop.wait(0.1)
    if stop.is_set():
        raise _Stopped()
    raise ConfigError(f"{what} did not come up within {READY_TIMEOUT_S} s")


def _var_dir(env: dict) -> Path:
    raw = env.get(VAR_VARIABLE, "").strip()
    path = Path(raw).resolve() if raw else ROOT / "var"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{VAR_VARIABLE} names {str(path)!r}, where no folder can be made: "
                          f"{exc.strerror or exc}") from None
    return path



class _Stopped(Exception):
    """A stop was asked for while the stack was still starting."""


def _stop_request() -> threading.Event:
    """Set by SIGINT (Ctrl-C), SIGTERM and SIGHUP (the terminal closed); ``reason`` names the first."""
    def note(signum):
        stop.reason = stop.reason or signal.Signals(signum).name

    stop = stop_on_signals((signal.SIGINT, signal.SIGTERM, signal.SIGHUP), then=note)
    stop.reason = None
    return stop


def _start_redis(url: str, var: Path, env: dict, started: list, screen, stop) -> None:
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    if _listening(host, port):
        screen.line(f"redis: using the server already listening on {host}:{port}")
        return
    if host not in ("127.0.0.1", "localhost"):
        raise ConfigError(f"REDIS_URL names {host}:{port}, where nothing answers; start Redis there")
    binary = shutil.which("redis-server")
    if binary is None:
        raise ConfigError("redis-server is not installed: run `make deps`")
    (var / "redis").mkdir(parents=True, exist_ok=True)
    redis_argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(var / "redis"),
                  "--save", "60 1", "--appendonly", "yes"]
    # Ctrl-C in a terminal signals its whole process group at once: Redis (and the embedded Keepa)
    # run in sessions of their own, so they stay up while the workers drain, and go after them;
    # the guard stops Redis when it is told to or when `up` is gone, once the stack's clients left
    guard = subprocess.Popen([sys.executable, "-m", "keepa_deals.cli", "redis-guard", "--port", str(port), "--",
                              *redis_argv], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             start_new_session=True, preexec_fn=die_with_parent())
    started.append(guard)
    _wait(lambda: _listening("127.0.0.1", port) or guard.poll() is not None, "redis-server", stop)
    if guard.poll() is not None:
        raise ConfigError(f"redis-server could not start on 127.0.0.1:{port} (see its log above)")
    screen.line(f"redis: started a local redis-server on 127.0.0.1:{port} (data in {var / 'redis'})")


def _start_fake_keepa(env: dict, started: list, screen) -> str:
    proc = subprocess.Popen([sys.executable, "-m", "keepa_deals.cli", "fake-keepa", "--port", "0",
                             "--minute-seconds", str(DEMO_MINUTE_S), "--refill-per-minute", "20"],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=die_with_parent())
    started.append(proc)
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        raise ConfigError("the embedded Keepa server did not print its URL")
    screen.line(f"keepa: NO KEEPA_API_KEY set: using the embedded Keepa simulator at {url}")
    screen.line(f"       (20 tokens a minute, and a Keepa minute lasts {DEMO_MINUTE_S} s, so the demo moves fast)")
    return url


def _relay(stream, screen) -> None:
    """honcho's output, line by line, to our screen; read to the end even when nobody reads the
    screen any more, so honcho never blocks on (or dies of) a full or broken pipe."""
    for raw in iter(stream.readline, b""):
        screen.line(raw.decode("utf-8", "replace"))


def _watch(honcho, stop: threading.Event, screen, marker, progress, progress_s: float) -> str:
    """Run until something ends the stack; renew our marker and print progress meanwhile."""
    from redis import RedisError

    next_renew = time.monotonic() + RENEW_S
    next_progress = time.monotonic() + progress_s
    while True:
        if stop.is_set():
            return f"{stop.reason} received"
        if honcho.poll() is not None:
            return f"a Procfile process stopped and honcho exited with {honcho.returncode}"
        if screen.closed:
            return "nobody reads the output any more"
        now = time.monotonic()
        if now >= next_renew:
            next_renew = now + RENEW_S
            with contextlib.suppress(RedisError):  # Redis restarting: the next renewal puts it back
                marker.keep()
        if progress is not None and now >= next_progress:
            next_progress = now + progress_s
            screen.line(progress.line())
        stop.wait(TICK_S)


def _end(proc: subprocess.Popen, deadline: float) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _stop_everything(started: list, honcho, closers: list, deadline: float) -> None:
    if honcho is not None:
        _end(honcho, deadline - 3)  # the workers drain first; Keepa and Redis still answer them
    for close in closers:
        with contextlib.suppress(Exception):  # Redis already gone: our marker runs out by itself
            close()
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in started:
        _end(proc, deadline)
    for pid in started_by(os.getpid()):  # anything of ours that outlived the budget
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def up(progress_s: float = PROGRESS_S) -> int:
    """``progress_s``: seconds between progress lines (0: none)."""
    import redis

    from keepa_deals.progress import ProgressReporter, status_collector
    from keepa_deals.screen import Screen

    stop = _stop_request()
    screen = Screen(sys.stdout)
    settings = load_settings()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env[UP_PID_VARIABLE] = str(os.getpid())  # every process below watches us (keepa_deals.lifeline)
    started: list[subprocess.Popen] = []
    closers: list = []
    honcho = None
    code = 0
    try:
        var = _var_dir(env)
        _start_redis(settings.redis_url, var, env, started, screen, stop)
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
        closers.append(client.close)
        marker = RunningStack(client, settings.redis_url)
        marker.claim()
        closers.insert(0, marker.release)
        if settings.embedded_keepa:
            env["KEEPA_API_URL"] = _start_fake_keepa(env, started, screen)
            env["KEEPA_MINUTE_SECONDS"] = str(DEMO_MINUTE_S)
        else:
            screen.line(f"keepa: talking to {settings.keepa_api_url} with the key from KEEPA_API_KEY")
        from metrics.dramatiq_seconds import prepare_multiproc_dir

        env["PROMETHEUS_MULTIPROC_DIR"] = str(prepare_multiproc_dir(var / "prometheus"))
        screen.line(f"storage: {redacted(settings.database_url)}; metrics on http://{settings.metrics_host}:{settings.metrics_port}/metrics")
        screen.line("watch it: keepa-deals status   (Ctrl-C stops everything)")
        if stop.is_set():
            raise _Stopped()
        honcho_bin = Path(sys.executable).with_name("honcho")
        # its own session: a signal to our process group reaches us alone, and we stop honcho in order
        honcho = subprocess.Popen([str(honcho_bin), "-d", str(ROOT), "-f", str(ROOT / "Procfile"), "start"], env=env,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  start_new_session=True, preexec_fn=die_with_parent())
        # no thread may fork: the parent-death signal follows the thread that forked (here, the main one)
        threading.Thread(target=_relay, args=(honcho.stdout, screen), name="relay", daemon=True).start()
        progress = None
        if progress_s > 0:
            collect = status_collector(settings)
            closers.append(collect.close)
            progress = ProgressReporter(collect)
        why = _watch(honcho, stop, screen, marker, progress, progress_s)
        code = 0 if honcho.returncode is None else honcho.returncode
        screen.line(f"stopping everything: {why}")
    except _Stopped:
        screen.line(f"stopping everything: {stop.reason} received while starting")
    finally:
        started_at = time.monotonic()
        _stop_everything(started, honcho, closers, started_at + STOP_BUDGET_S)
        if started:
            screen.line(f"stopped everything it started in {time.monotonic() - started_at:.1f} s")
    return code
