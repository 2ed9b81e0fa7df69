"""``keepa-deals up`` (what ``make run`` runs) on the embedded default, from nothing to Ctrl-C; and
the start-up options of the processes it runs.

Nothing listens on its REDIS_URL and no KEEPA_API_KEY is set, so it must start a local redis-server
and the embedded Keepa server itself, run the Procfile, ingest deals, and on Ctrl-C (SIGINT to its
process group, as a terminal sends it) stop everything it started.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
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


def test_a_state_folder_that_cannot_be_made_is_an_error_naming_the_variable(tmp_path):
    from keepa_deals.errors import ConfigError
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
