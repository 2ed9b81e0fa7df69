"""``make run`` / ``keepa-deals up``: the whole stack on the embedded default, one Ctrl-C to stop.

Starts a local redis-server when nothing answers on REDIS_URL, the embedded Keepa server (a Keepa
minute of 2 s) when KEEPA_API_KEY is unset, then the Procfile under honcho. Everything it started
is stopped on exit, whatever the reason. The local Redis keeps its data, and the metrics their
multiprocess files, under ``KEEPA_DEALS_VAR`` (default: ``var/`` in the checkout).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from keepa_deals.errors import ConfigError
from keepa_deals.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
VAR_VARIABLE = "KEEPA_DEALS_VAR"
DEMO_MINUTE_S = 2
READY_TIMEOUT_S = 20


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait(check, what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
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


def _start_redis(url: str, var: Path, started: list) -> None:
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    if _listening(host, port):
        print(f"redis: using the server already listening on {host}:{port}")
        return
    if host not in ("127.0.0.1", "localhost"):
        raise ConfigError(f"REDIS_URL names {host}:{port}, where nothing answers; start Redis there")
    binary = shutil.which("redis-server")
    if binary is None:
        raise ConfigError("redis-server is not installed: run `make deps`")
    (var / "redis").mkdir(parents=True, exist_ok=True)
    # Ctrl-C in a terminal signals its whole process group at once: Redis (and the embedded Keepa)
    # run in sessions of their own, so they stay up while the workers drain, and go after them
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(var / "redis"),
                             "--save", "60 1", "--appendonly", "yes"], stdout=subprocess.DEVNULL,
                            start_new_session=True)
    started.append(proc)
    _wait(lambda: _listening("127.0.0.1", port), "redis-server")
    print(f"redis: started a local redis-server on 127.0.0.1:{port} (data in {var / 'redis'})")


def _start_fake_keepa(started: list) -> str:
    proc = subprocess.Popen([sys.executable, "-m", "keepa_deals.cli", "fake-keepa", "--port", "0",
                             "--minute-seconds", str(DEMO_MINUTE_S), "--refill-per-minute", "20"],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    started.append(proc)
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        raise ConfigError("the embedded Keepa server did not print its URL")
    print(f"keepa: NO KEEPA_API_KEY set: using the embedded Keepa simulator at {url}")
    print(f"       (20 tokens a minute, and a Keepa minute lasts {DEMO_MINUTE_S} s, so the demo moves fast)")
    return url


def _exit_on_sigterm(signum, _frame):
    raise SystemExit(0)  # runs the cleanup below: nothing this launcher started is left behind


def up() -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    sys.stdout.reconfigure(line_buffering=True)  # its lines reach a log file (or a pipe) as printed
    settings = load_settings()
    env = dict(os.environ)
    started: list[subprocess.Popen] = []
    try:
        var = _var_dir(env)
        _start_redis(settings.redis_url, var, started)
        if settings.embedded_keepa:
            env["KEEPA_API_URL"] = _start_fake_keepa(started)
            env["KEEPA_MINUTE_SECONDS"] = str(DEMO_MINUTE_S)
        else:
            print(f"keepa: talking to {settings.keepa_api_url} with the key from KEEPA_API_KEY")
        from metrics.dramatiq_seconds import prepare_multiproc_dir

        env["PROMETHEUS_MULTIPROC_DIR"] = str(prepare_multiproc_dir(var / "prometheus"))
        print(f"storage: {settings.database_url}; metrics on http://{settings.metrics_host}:{settings.metrics_port}/metrics")
        print("watch it: keepa-deals status   (Ctrl-C stops everything)")
        honcho = Path(sys.executable).with_name("honcho")
        procfile = subprocess.Popen([str(honcho), "-d", str(ROOT), "-f", str(ROOT / "Procfile"), "start"], env=env)
        started.append(procfile)  # stopped first in the cleanup below: the workers drain, then Redis goes
        return procfile.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in reversed(started):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
