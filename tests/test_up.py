"""``keepa-deals up`` (what ``make run`` runs) on the embedded default, from nothing to Ctrl-C; and
the start-up options of the processes it runs.

Nothing listens on its REDIS_URL and no KEEPA_API_KEY is set, so it must start a local redis-server
and the embedded Keepa server itself, run the Procfile, ingest deals, and on Ctrl-C (SIGINT to its
process group, as a terminal sends it) stop everything it started.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from keepa_deals import stack
from storage.store import open_store
from tests.services import free_port
from tests.stack import wait_for

BIN = Path(sys.executable).parent


def _listening(port: int) -> bool:
    return stack._listening("127.0.0.1", port)


def _ours(marker: str) -> list[int]:
    """Processes whose environment carries ``marker`` (this test's unique REDIS_URL)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc to find leftover processes")
def test_up_starts_everything_on_the_embedded_default_ingests_and_ctrl_c_stops_it_all(tmp_path):
    redis_port, metrics_port = free_port(), free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    db_url = f"sqlite:///{tmp_path}/deals.db"
    unset = ("KEEPA_API_KEY", "KEEPA_API_URL", "PROMETHEUS_MULTIPROC_DIR")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(REDIS_URL=redis_url, DATABASE_URL=db_url, METRICS_PORT=str(metrics_port),
               KEEPA_DEALS_VAR=str(tmp_path / "var"), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    with open(tmp_path / "up.log", "w+") as log:
        up = subprocess.Popen([str(BIN / "keepa-deals"), "up"], env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
        stored, keepa_port = _run_then_ctrl_c(up, log, db_url, redis_url, redis_port, metrics_port, tmp_path)
    wait_for(lambda: not _ours(redis_url), 10, "every process it started to exit")
    assert not _listening(redis_port) and not _listening(metrics_port) and not _listening(keepa_port)
    assert stored > 0 and open_store(db_url).deals_ingested() == stored  # nothing lost on the way out


def _run_then_ctrl_c(up, log, db_url, redis_url, redis_port, metrics_port, tmp_path) -> tuple[int, int]:
    try:
        store = wait_for(lambda: _store(db_url), 30, "the database")
        wait_for(lambda: store.deals_ingested() > 0, 90, "a deal ingested", every_s=0.5)
        assert _listening(redis_port) and _listening(metrics_port)
        log.seek(0)
        said = log.read()
        assert "started a local redis-server" in said and str(tmp_path / "var" / "redis") in said
        assert "NO KEEPA_API_KEY set" in said
        keepa_port = int(re.search(r"embedded Keepa simulator at http://127\.0\.0\.1:(\d+)", said).group(1))
        assert _ours(redis_url), "no stack process found to stop"
        os.killpg(up.pid, signal.SIGINT)  # Ctrl-C in its terminal
        assert up.wait(60) == 0
        stored = store.deals_ingested()
        store.close()
        return stored, keepa_port
    finally:
        if up.poll() is None:  # a failed check: stop it as Ctrl-C would, then whatever is left
            os.killpg(up.pid, signal.SIGINT)
            try:
                up.wait(30)
            except subprocess.TimeoutExpired:
                up.kill()
            for pid in _ours(redis_url):
                os.kill(pid, signal.SIGKILL)


def _store(db_url: str):
    path = db_url.removeprefix("sqlite:///")
    return open_store(db_url) if os.path.exists(path) else None


class _Up:
    """One `keepa-deals up` from nothing on its own ports, in a session of its own (as in a terminal)."""

    def __init__(self, tmp_path, stdout, *, shell_pipe: str | None = None, extra: tuple = ()):
        self.redis_port, self.metrics_port = free_port(), free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.db_url = f"sqlite:///{tmp_path}/deals.db"
        unset = ("KEEPA_API_KEY", "KEEPA_API_URL", "PROMETHEUS_MULTIPROC_DIR")
        self.env = {k: v for k, v in os.environ.items() if k not in unset}
        self.env.update(REDIS_URL=self.redis_url, DATABASE_URL=self.db_url, METRICS_PORT=str(self.metrics_port),
                        KEEPA_DEALS_VAR=str(tmp_path / "var"), PATH=f"{BIN}{os.pathsep}{self.env.get('PATH', '')}")
        argv = [str(BIN / "keepa-deals"), "up", *extra]
        if shell_pipe:  # `keepa-deals up | tee log`, as typed in a terminal: one process group
            argv = ["sh", "-c", f"{' '.join(argv)} | {shell_pipe}"]
        self.proc = subprocess.Popen(argv, env=self.env, stdout=stdout, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def ports(self, said: str) -> list[int]:
        keepa = re.search(r"embedded Keepa simulator at http://127\.0\.0\.1:(\d+)", said)
        return [self.redis_port, self.metrics_port] + ([int(keepa.group(1))] if keepa else [])

    def wait_until_ingesting(self) -> None:
        store = wait_for(lambda: _store(self.db_url), 30, "the database")
        try:
            wait_for(lambda: store.deals_ingested() > 0, 90, "a deal ingested", every_s=0.2)
        finally:
            store.close()
        assert _listening(self.redis_port) and _listening(self.metrics_port)

    def ports_when_ingesting(self, log) -> list[int]:
        """Wait until a deal is ingested, then the ports the stack listens on, as its log names them."""
        self.wait_until_ingesting()
        log.seek(0)
        return self.ports(log.read())

    def seconds_until_all_gone(self, ports: list[int], sent_at: float) -> float:
        """Seconds from ``sent_at`` until no process carrying this stack's REDIS_URL is alive and no
        port of it listens; fails after 15 s (the promise)."""
        wait_for(lambda: not _ours(self.redis_url) and not any(_listening(p) for p in ports), 15,
                 "every process `up` started to end and every port to close", every_s=0.05)
        return time.monotonic() - sent_at

    def kill_leftovers(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for pid in _ours(self.redis_url):
            os.kill(pid, signal.SIGKILL)


STOPS = {
    # how the stack is stopped: (signal, whom) or a way of closing its output
    "SIGINT to its process group (Ctrl-C)": (signal.SIGINT, "group"),
    "SIGTERM to up": (signal.SIGTERM, "up"),
    "SIGHUP to its process group (terminal closed)": (signal.SIGHUP, "group"),
    "SIGKILL to up": (signal.SIGKILL, "up"),
}


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc to find leftover processes")
@pytest.mark.parametrize("how", list(STOPS))
def test_everything_up_started_ends_within_15_s_of(how, tmp_path):
    signum, whom = STOPS[how]
    with open(tmp_path / "up.log", "w+") as log:
        stack_ = _Up(tmp_path, log, extra=("--progress-seconds", "0"))
        try:
            ports = stack_.ports_when_ingesting(log)
            assert len(ports) == 3 and _ours(stack_.redis_url)
            sent_at = time.monotonic()
            if whom == "group":
                os.killpg(stack_.proc.pid, signum)
            else:
                os.kill(stack_.proc.pid, signum)
            took_s = stack_.seconds_until_all_gone(ports, sent_at)
            print(f"\n{how}: everything gone {took_s:.2f} s after the signal")
            assert stack_.proc.wait(5) == (-signal.SIGKILL if signum == signal.SIGKILL else 0)
        finally:
            stack_.kill_leftovers()


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc to find leftover processes")
def test_everything_up_started_ends_within_15_s_of_its_output_pipe_closing(tmp_path):
    """`keepa-deals up | head -n N`: the reader goes away while the stack runs."""
    reader, writer = os.pipe()
    stack_ = _Up(tmp_path, writer, extra=("--progress-seconds", "0"))
    os.close(writer)
    said = b""
    try:
        store = wait_for(lambda: _store(stack_.db_url), 30, "the database")
        deadline = time.monotonic() + 90
        while store.deals_ingested() == 0:  # read what it prints meanwhile, as `head` would
            assert time.monotonic() < deadline, "no deal ingested within 90 s"
            if select.select([reader], [], [], 0.2)[0]:
                said += os.read(reader, 65536)
        store.close()
        ports = stack_.ports(said.decode())
        assert len(ports) == 3
        sent_at = time.monotonic()
        os.close(reader)
        took_s = stack_.seconds_until_all_gone(ports, sent_at)
        print(f"\noutput pipe closed: everything gone {took_s:.2f} s after")
        assert stack_.proc.wait(5) == 0
    finally:
        stack_.kill_leftovers()


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc to find leftover processes")
def test_everything_up_started_ends_within_15_s_of_ctrl_c_with_its_output_piped_to_tee(tmp_path):
    """`make run | tee run.log`, then Ctrl-C: SIGINT reaches up and tee at once, and tee's end of the
    pipe closes while up is still stopping what it started."""
    stack_ = _Up(tmp_path, subprocess.DEVNULL, shell_pipe=f"tee {tmp_path / 'tee.log'}",
                 extra=("--progress-seconds", "0"))
    try:
        stack_.wait_until_ingesting()
        ports = stack_.ports((tmp_path / "tee.log").read_text())
        assert len(ports) == 3
        sent_at = time.monotonic()
        os.killpg(stack_.proc.pid, signal.SIGINT)
        took_s = stack_.seconds_until_all_gone(ports, sent_at)
        print(f"\nCtrl-C to `up | tee`: everything gone {took_s:.2f} s after")
        stack_.proc.wait(5)
    finally:
        stack_.kill_leftovers()


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc to find leftover processes")
def test_a_second_up_on_the_same_redis_url_is_refused_naming_it_and_the_first_keeps_running(tmp_path):
    with open(tmp_path / "up.log", "w+") as log:
        first = _Up(tmp_path, log, extra=("--progress-seconds", "0"))
        try:
            first.wait_until_ingesting()
            env = dict(first.env, KEEPA_DEALS_VAR=str(tmp_path / "second-var"),
                       DATABASE_URL=f"sqlite:///{tmp_path}/second.db", METRICS_PORT=str(free_port()))
            second = subprocess.run([str(BIN / "keepa-deals"), "up"], env=env, capture_output=True, text=True,
                                    timeout=30)
            assert second.returncode != 0
            assert f"already running on REDIS_URL={first.redis_url}" in second.stderr
            assert "keepa-deals up` (pid " in second.stderr and str(first.proc.pid) in second.stderr
            assert not _ours(env["DATABASE_URL"])  # it left nothing running
            assert not (tmp_path / "second.db").exists() and not (tmp_path / "second-var" / "prometheus").exists()
            assert first.proc.poll() is None and _listening(first.redis_port)
        finally:
            os.killpg(first.proc.pid, signal.SIGINT)
            first.proc.wait(30)
            first.kill_leftovers()


def test_a_state_folder_that_cannot_be_made_is_an_error_naming_the_variable(tmp_path):
    from keepa_base.errors import ConfigError
    from keepa_deals.stack import _var_dir

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="KEEPA_DEALS_VAR names .*a-file/var"):
        _var_dir({"KEEPA_DEALS_VAR": str(blocker / "var")})
    assert _var_dir({"KEEPA_DEALS_VAR": str(tmp_path / "state")}) == tmp_path / "state"


def test_a_worker_with_no_threads_is_refused_at_start_naming_the_option(capsys, monkeypatch, tmp_path):
    from keepa_deals.cli import main

    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/deals.db")
    assert main(["worker", "--threads", "0"]) == 2
    assert "--threads must be at least 1, got 0" in capsys.readouterr().err



@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc to find leftover processes")
def test_after_up_is_sigkilled_the_next_up_on_the_same_redis_and_data_is_not_refused(tmp_path):
    """No live marker or governor lease is left in Redis's saved data to refuse the next start."""
    with open(tmp_path / "up.log", "w+") as log:
        first = _Up(tmp_path, log, extra=("--progress-seconds", "0"))
        try:
            ports = first.ports_when_ingesting(log)
            os.kill(first.proc.pid, signal.SIGKILL)
            first.seconds_until_all_gone(ports, time.monotonic())
        finally:
            first.kill_leftovers()
    with open(tmp_path / "again.log", "w+") as log:
        again = subprocess.Popen([str(BIN / "keepa-deals"), "up", "--progress-seconds", "0"], env=first.env,
                                 stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        said = lambda: Path(log.name).read_text()  # noqa: E731
        try:
            wait_for(lambda: "took the lease" in said() or again.poll() is not None, 60, "a governor leading again")
            assert again.poll() is None and "already running" not in said(), said()
        finally:
            os.killpg(again.pid, signal.SIGINT)
            again.wait(30)
            for pid in _ours(first.redis_url):
                os.kill(pid, signal.SIGKILL)


PROGRESS = re.compile(r"^\d\d:\d\d:\d\d progress \| "
                      r"deals (\d+) stored(?: \(([+-]\d+)\))?, (\d+) ingested(?: \(([+-]\d+)\))? "
                      r"\| (?:tokens -?\d+ \(\+\d+/min(?:, recharging)?\) \| pending upsert \d+, commit \d+, peek \d+ "
                      r"\| (?:nothing waits|(?:upsert|commit|peek) waits \(.+\): .+)|governor: no state in Redis yet)$")


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc to find leftover processes")
def test_up_prints_progress_lines_through_a_pipe_while_it_runs_with_deal_counts_that_change(tmp_path):
    """Read as `keepa-deals up | cat` would, while it runs: lines arrive as printed, not at exit."""
    reader, writer = os.pipe()
    stack_ = _Up(tmp_path, writer, extra=("--progress-seconds", "0.5"))
    os.close(writer)
    pending, lines = b"", []
    try:
        deadline = time.monotonic() + 90
        while not any(m.group(2) and int(m.group(2)) > 0 for m in lines):  # deals stored went up between lines
            assert time.monotonic() < deadline, f"no progress line with more deals stored within 90 s: {lines}"
            if select.select([reader], [], [], 0.2)[0]:
                pending += os.read(reader, 65536)
                *complete, pending = pending.split(b"\n")
                # a read that failed (the database locked while the workers create it) says so on its line
                said = [raw.decode() for raw in complete if b" progress | " in raw and b" | unavailable: " not in raw]
                lines += [PROGRESS.match(line) for line in said]
                assert all(lines), f"a progress line does not read as promised: {said}"
        assert stack_.proc.poll() is None  # printed while running
        for before, after in zip(lines, lines[1:], strict=False):  # each change is the difference from the line before
            if after.group(2) is not None:
                assert int(after.group(2)) == int(after.group(1)) - int(before.group(1))
                assert int(after.group(4)) == int(after.group(3)) - int(before.group(3))
        assert lines[0].group(2) is None and len(lines) >= 2
    finally:
        os.killpg(stack_.proc.pid, signal.SIGINT)
        stack_.proc.wait(30)
        os.close(reader)
        stack_.kill_leftovers()
