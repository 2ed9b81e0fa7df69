"""The exporter over real HTTP on 127.0.0.1 against a real redis-server; the text passes `promtool check metrics`.

Uses the session's ``redis_server`` fixture (tests/conftest.py) on a database number of its own, so
other tests' governor keys never meet these.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.request

import pytest
import redis

from keepa_deals.settings import load_settings
from metrics.exporter import SNAPSHOT_KEY, start
from tests.test_metrics_support import EXPECTED_NAMES, NOW_MS, FakeStore, governor_snapshot, helps, samples, value

pytestmark = pytest.mark.integration
METRICS_DB = 11


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def redis_url(redis_server):
    url = redis_server.rsplit("/", 1)[0] + f"/{METRICS_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def exporter(redis_url):
    store = FakeStore(stored=25, ingested=9, recent=5, last_ms=NOW_MS - 30_000, waiting=4)
    settings = load_settings({"REDIS_URL": redis_url, "METRICS_PORT": str(free_port())})
    running = start(settings, store, now_ms=lambda: NOW_MS + 2000)
    yield running
    running.stop()


def fetch(url: str) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.headers.get("Content-Type", ""), response.read().decode()


def promtool_check_metrics(text: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (`make deps` installs Debian's prometheus package)")
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"promtool check metrics:\n{done.stdout}{done.stderr}"


def test_the_exporter_binds_loopback_by_default_on_the_configured_port(exporter):
    assert exporter.host == "127.0.0.1"
    content_type, _ = fetch(exporter.url)
    assert content_type.startswith("text/plain")


def test_every_series_is_served_at_zero_before_the_governor_writes_a_snapshot(exporter):
    _, text = fetch(exporter.url)
    parsed = samples(text)
    assert set(helps(text)) >= EXPECTED_NAMES
    assert value(parsed, "keepa_governor_up") == 0
    assert value(parsed, "keepa_exporter_source_up", source="redis") == 1
    for name in ("keepa_tokens_balance", "keepa_recharge_active", "keepa_governor_leader",
                 "keepa_last_grant_timestamp_seconds"):
        assert value(parsed, name) == 0
    assert value(parsed, "keepa_calls_total", endpoint="commit", outcome="429") == 0
    assert value(parsed, "keepa_requests_pending", **{"class": "peek"}) == 0
    promtool_check_metrics(text)


def test_values_follow_the_snapshot_the_governor_writes_to_redis(exporter, redis_url):
    snap = governor_snapshot(NOW_MS)
    client = redis.Redis.from_url(redis_url)
    client.set(SNAPSHOT_KEY, json.dumps(snap))
    _, text = fetch(exporter.url)
    parsed = samples(text)
    assert value(parsed, "keepa_governor_up") == 1
    assert value(parsed, "keepa_governor_snapshot_age_seconds") == 2.0
    assert value(parsed, "keepa_tokens_balance") == snap["balance"]
    assert value(parsed, "keepa_recharge_active") == 1
    assert value(parsed, "keepa_requests_pending", **{"class": "commit"}) == 1
    assert value(parsed, "keepa_calls_total", endpoint="deal", outcome="ok") == 7
    assert value(parsed, "keepa_deals_ingested_per_minute") == 1.0
    assert value(parsed, "keepa_deals_ingested_total") == 9
    promtool_check_metrics(text)

    snap["balance"], snap["recharge"]["active"] = 250, False
    client.set(SNAPSHOT_KEY, json.dumps(snap))
    parsed = samples(fetch(exporter.url)[1])
    assert value(parsed, "keepa_tokens_balance") == 250
    assert value(parsed, "keepa_recharge_active") == 0
    assert value(parsed, "keepa_recharge_exit_by_timestamp_seconds") == 0

    client.delete(SNAPSHOT_KEY)
    parsed = samples(fetch(exporter.url)[1])
    assert value(parsed, "keepa_governor_up") == 0
    assert value(parsed, "keepa_tokens_balance") == 0
    client.close()


def test_a_redis_that_goes_away_is_reported_not_fatal(redis_url):
    dead_url = f"redis://127.0.0.1:{free_port()}/0"
    settings = load_settings({"REDIS_URL": dead_url, "METRICS_PORT": str(free_port())})
    running = start(settings, FakeStore(), now_ms=lambda: NOW_MS)
    try:
        _, text = fetch(running.url)
    finally:
        running.stop()
    parsed = samples(text)
    assert value(parsed, "keepa_exporter_source_up", source="redis") == 0
    assert value(parsed, "keepa_exporter_source_up", source="database") == 1
    assert value(parsed, "keepa_governor_up") == 0
    promtool_check_metrics(text)


def test_deal_counts_come_from_the_real_store_through_the_default_factory(tmp_path, redis_url):
    from metrics.exporter import _default_store

    settings = load_settings({"REDIS_URL": redis_url, "METRICS_PORT": str(free_port()),
                              "DATABASE_URL": f"sqlite:///{tmp_path}/deals.db"})
    store = _default_store(settings)
    assert store.upsert_deal("B000TEST01", NOW_MS - 60_000, NOW_MS)
    running = start(settings, store, now_ms=lambda: NOW_MS)
    try:
        parsed = samples(fetch(running.url)[1])
    finally:
        running.stop()
        store.close()
    assert value(parsed, "keepa_exporter_source_up", source="database") == 1
    assert value(parsed, "keepa_deals_stored") == 1
    assert value(parsed, "keepa_candidates_waiting") == 1
    assert value(parsed, "keepa_deals_ingested_total") == 0
