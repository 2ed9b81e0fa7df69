"""Real services for tests: a throwaway redis-server and PostgreSQL cluster on free loopback ports.

Both start on a port picked here, wait for readiness with a deadline (polling, never a blind sleep),
and clean up after themselves. PostgreSQL refuses to run as root, so as root its programs run as
the ``postgres`` system user (created by Debian's package) in a temporary folder that user owns.
The fixtures in ``tests/conftest.py`` wrap these classes.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 30.0
POLL_S = 0.02


class ServiceUnavailable(RuntimeError):
    """A service binary is missing or the service did not become ready in time."""


def free_port() -> int:
    """A TCP port nothing listens on at 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(ready, what: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll ``ready()`` until it returns true; raise ServiceUnavailable after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        if ready():
            return
        if time.monotonic() >= deadline:
            raise ServiceUnavailable(f"{what} was not ready after {timeout_s:.0f} s")
        time.sleep(POLL_S)


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as fh:
            return "".join(fh.readlines()[-lines:])
    except OSError:
        return "(no log)"


class RedisServer:
    """``redis-server`` on a free loopback port, no persistence; ``url`` stays the same across restarts."""

    def __init__(self, workdir: str, binary: str | None = None):
        self.binary = binary or shutil.which("redis-server")
        if not self.binary:
            raise ServiceUnavailable("redis-server is not installed: run `make deps`")
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def logfile(self) -> str:
        return os.path.join(self.workdir, "redis.log")

    def start(self) -> None:
        if self.running:
            return
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.workdir, "--logfile", self.logfile],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(self._answers_ping, f"redis-server on port {self.port}")
        except ServiceUnavailable as exc:
            self.stop()
            raise ServiceUnavailable(f"{exc}; its log ends:\n{_tail(self.logfile)}") from None

    def _answers_ping(self) -> bool:
        if self.process.poll() is not None:
            raise ServiceUnavailable(f"redis-server exited with {self.process.returncode}; its log ends:\n"
                                     f"{_tail(self.logfile)}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop gracefully (SIGTERM), then SIGKILL if it has not exited within ``timeout_s``."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout_s)
        self.process = None

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing is saved (there is no persistence anyway)."""
        if self.running:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        """Stop and start again on the same port (an empty server: no persistence)."""
        self.stop()
        self.start()


def postgres_bin_dir() -> str:
    """The newest ``/usr/lib/postgresql/N/bin`` (or ``$PG_BIN``) holding initdb and pg_ctl."""
    override = os.environ.get("PG_BIN")
    candidates = [override] if override else sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit()
        else 0)
    for folder in reversed(candidates):
        if os.access(os.path.join(folder, "initdb"), os.X_OK) and os.access(os.path.join(folder, "pg_ctl"), os.X_OK):
            return folder
    raise ServiceUnavailable("PostgreSQL server programs (initdb, pg_ctl) are not installed: run `make deps`")


class PostgresServer:
    """A private PostgreSQL cluster on a free loopback port, password auth over TCP, fsync off."""

    USER = "keepa"

    def __init__(self, bin_dir: str | None = None):
        self.bin_dir = bin_dir or postgres_bin_dir()
        self._as_user: list[str] = []
        self._owner: tuple[int, int] | None = None
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                raise ServiceUnavailable("running as root needs the `postgres` system user: run `make deps`") from None
            self._as_user = ["runuser", "-u", "postgres", "--"]
            self._owner = (account.pw_uid, account.pw_gid)
        self.port = free_port()
        self.password = secrets.token_hex(12)
        self.base = tempfile.mkdtemp(prefix="keepa-pg-")
        if self._owner:
            os.chown(self.base, *self._owner)
        self.data = os.path.join(self.base, "data")
        self.logfile = os.path.join(self.base, "postgres.log")
        self._initialised = False

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def _run(self, program: str, *args: str, timeout_s: float = 60) -> None:
        cmd = [*self._as_user, os.path.join(self.bin_dir, program), *args]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=self.base)
        except subprocess.TimeoutExpired:
            raise ServiceUnavailable(f"{program} did not finish within {timeout_s:.0f} s") from None
        if done.returncode != 0:
            output = done.stderr.strip() or done.stdout.strip()
            raise ServiceUnavailable(f"{program} failed ({done.returncode}): {output}\n"
                                     f"server log ends:\n{_tail(self.logfile)}")

    def _initdb(self) -> None:
        pwfile = os.path.join(self.base, "pwfile")
        with open(pwfile, "w") as fh:
            fh.write(self.password + "\n")
        if self._owner:
            os.chown(pwfile, *self._owner)
        self._run("initdb", "-D", self.data, "-U", self.USER, f"--pwfile={pwfile}", "--auth-host=scram-sha-256",
                  "--auth-local=trust", "--encoding=UTF8", "--no-locale", "--no-sync", "--no-instructions")
        os.unlink(pwfile)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as fh:
            fh.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = ''\n"
                     "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 50\n")
        self._initialised = True

    def start(self) -> None:
        if not self._initialised:
            self._initdb()
        self._run("pg_ctl", "-D", self.data, "-l", self.logfile, "-w", "-t", str(int(READY_TIMEOUT_S)), "start")
        wait_until(self._accepts_login, f"PostgreSQL on port {self.port}")

    def _accepts_login(self) -> bool:
        import psycopg2
        try:
            psycopg2.connect(self.url(), connect_timeout=2).close()
            return True
        except psycopg2.OperationalError:
            return False

    @property
    def running(self) -> bool:
        return os.path.exists(os.path.join(self.data, "postmaster.pid"))

    def stop(self) -> None:
        """Fast shutdown (clients are disconnected, the data is kept)."""
        if self.running:
            self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", str(int(READY_TIMEOUT_S)), "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def _admin(self, sql: str) -> None:
        import psycopg2
        conn = psycopg2.connect(self.url(), connect_timeout=5)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database; return its postgresql:// URL."""
        name = name or f"test_{secrets.token_hex(6)}"
        self._admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def cleanup(self) -> None:
        """Stop the server (SIGKILL the postmaster if pg_ctl cannot) and delete every file."""
        try:
            self.stop()
        except ServiceUnavailable:
            log.warning("pg_ctl stop failed; killing the postmaster", exc_info=True)
            with contextlib.suppress(OSError, ValueError), open(os.path.join(self.data, "postmaster.pid")) as fh:
                os.kill(int(fh.readline()), signal.SIGKILL)
        shutil.rmtree(self.base, ignore_errors=True)
