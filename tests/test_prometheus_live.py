"""Proof on the running stack: its /metrics passes ``promtool check metrics``, and a real Prometheus
server scraping it on loopback sees the deal-stall alert go pending once ingestion stops.

The stack is tests/stack.py (redis-server, the embedded Keepa server, SQLite, and the governor,
worker, scheduler and metrics processes). Prometheus is Debian's binary on a free 127.0.0.1 port with
a 1 s scrape and evaluation interval. Every wait is a bounded poll of an observable state.

The stall rule is the real one from deploy/prometheus/keepa-deals.rules.yml with its durations scaled
down (see :func:`shortened_stall_rule`), so the expression Prometheus evaluates is the shipped one.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from metrics.dramatiq_seconds import prepare_multiproc_dir
from tests.services import free_port
from tests.stack import ROOT, Stack, wait_for

pytestmark = pytest.mark.integration

DEPLOY = ROOT / "deploy" / "prometheus"
RULES = DEPLOY / "keepa-deals.rules.yml"
STALL = "KeepaDealsStalled"
JOB = re.search(r"job_name: (\S+)", (DEPLOY / "prometheus.yml").read_text()).group(1)   # as deployed
STALL_SERIES = ("keepa_feed_last_scan_timestamp_seconds", "keepa_feed_scan_interval_seconds",
                "keepa_scheduler_last_tick_timestamp_seconds", "keepa_candidate_oldest_claim_age_seconds")
REQUIRED = ("keepa_tokens_balance", "keepa_recharge_active", "keepa_deals_ingested_per_minute",
            "keepa_deals_ingested_total")

# The stall rule's durations, shortened by the same factor (1/450): one hour becomes 8 s and the
# 15-minute `for` becomes 2 s. Each is (pattern in the real rule, replacement, times it must occur),
# so a change to the real rule's windows fails here loudly instead of testing something else.
STALL_AFTER_S, FOR_S = 8, 2
SHORTENED = (
    (r"\) > 3600\b", f") > {STALL_AFTER_S}", 1),      # (time() - last deal) > 3600  -> > 8
    (r"\[1h\]", f"[{STALL_AFTER_S}s]", 2),             # max/min_over_time(...[1h])  -> [8s]
    (r"(?m)^(\s+for:) 15m$", rf"\g<1> {FOR_S}s", 1),   # for: 15m                     -> for: 2s
)


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed: `make deps` installs Debian's prometheus package")
    return path


def metrics_text(stack: Stack) -> str:
    url = f"http://127.0.0.1:{stack.env['METRICS_PORT']}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        return response.read().decode()


def samples(text: str) -> dict[str, list[tuple[dict, float]]]:
    """Every sample in an exposition, by sample name (counters keep their ``_total``)."""
    found: dict[str, list[tuple[dict, float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def start_stack(stack: Stack) -> None:
    """governor, worker, scheduler and metrics, with Dramatiq's per-process metrics merged as in `make run`."""
    stack.env["PROMETHEUS_MULTIPROC_DIR"] = str(prepare_multiproc_dir(stack.workdir / "prometheus-multiproc"))
    stack.start("metrics")
    stack.start_all()


def test_the_running_stack_serves_metrics_that_promtool_accepts(stack):
    start_stack(stack)
    wait_for(lambda: stack.ingested() >= 5, 90, "5 deals ingested")
    stored_before = stack.ingested()
    text = metrics_text(stack)

    done = subprocess.run([binary("promtool"), "check", "metrics"], input=text, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, f"promtool check metrics failed:\n{done.stdout}{done.stderr}"

    found = samples(text)
    missing = [name for name in REQUIRED if name not in found]
    assert not missing, f"{missing} are not served; the scrape was:\n{text}"
    value = {name: found[name][0][1] for name in (*REQUIRED, "keepa_tokens_cap", "keepa_governor_up")}
    assert all(math.isfinite(v) for v in value.values()), value
    assert value["keepa_governor_up"] == 1
    assert -100 <= value["keepa_tokens_balance"] <= value["keepa_tokens_cap"], value   # KeepaTokenDeficitTooDeep
    assert value["keepa_recharge_active"] in (0, 1)
    # read from the database on the scrape, which came after the count above; deals are never removed
    assert value["keepa_deals_ingested_total"] >= stored_before
    assert value["keepa_deals_ingested_per_minute"] > 0          # every deal is younger than the 5-minute window
    assert "keepa_dramatiq_messages_total" in found, "the workers' Dramatiq metrics are not merged in"
    # the stall series (issue 13), from the running processes: the scheduler ticks every Keepa minute
    # (0.5 s here) and a scan stored a page before the first deal; the plan is 20/min, so the interval
    # is 12.5 Keepa minutes; the claims of peeks in progress are seconds old
    stall = {name: found[name][0][1] for name in STALL_SERIES}
    scraped_s = time.time()
    assert 0 <= scraped_s - stall["keepa_scheduler_last_tick_timestamp_seconds"] < 30, stall
    assert 0 < stall["keepa_feed_last_scan_timestamp_seconds"] <= scraped_s, stall
    assert stall["keepa_feed_scan_interval_seconds"] == 12.5 * float(stack.env["KEEPA_MINUTE_SECONDS"]), stall
    assert 0 <= stall["keepa_candidate_oldest_claim_age_seconds"] < 60, stall


# -- a real Prometheus -----------------------------------------------------------------------------

def rule_block(name: str) -> str:
    """One alert's block from the real rules file, comment lines dropped (promtool parses the result)."""
    parts = re.split(r"^      - alert: ", RULES.read_text(), flags=re.M)[1:]
    block = next(part for part in parts if part.split("\n", 1)[0].strip() == name)
    return "\n".join(line for line in block.splitlines() if not line.lstrip().startswith("#"))


def shortened_stall_rule() -> tuple[str, str]:
    """The real stall rule with its hour-long windows shortened (see SHORTENED); returns the rules
    file's text and the shortened expression."""
    block = rule_block(STALL)
    for pattern, replacement, count in SHORTENED:
        block, made = re.subn(pattern, replacement, block)
        assert made == count, f"{STALL} no longer has {count} x {pattern!r}: update SHORTENED to match the rule"
    assert not re.search(r"\b(3600|1h|15m)\b", block.split("annotations:")[0]), block
    expr = re.search(r"expr: \|\n(.*?)\n\s+for:", block, re.S).group(1)
    text = f"groups:\n  - name: keepa-deals-live-test\n    rules:\n      - alert: {block}\n"
    return text, " ".join(expr.split())


def squeeze(expr: str) -> str:
    """An expression without whitespace: Prometheus re-prints what it loads (``sum by(job, ...)``)."""
    return re.sub(r"\s+", "", expr)


class Prometheus:
    """Debian's prometheus on a free loopback port scraping one target every second."""

    def __init__(self, workdir: Path, target: str, rules_text: str):
        self.workdir = workdir
        self.port = free_port()
        self.logfile = workdir / "prometheus.log"
        (workdir / "rules.yml").write_text(rules_text)
        config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                  "rule_files": ["rules.yml"],
                  "scrape_configs": [{"job_name": JOB, "metrics_path": "/metrics",
                                      "static_configs": [{"targets": [target]}]}]}
        (workdir / "prometheus.yml").write_text(json.dumps(config, indent=2))   # JSON is YAML
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        promtool = binary("promtool")
        for check in (["check", "rules", "rules.yml"], ["check", "config", "prometheus.yml"]):
            done = subprocess.run([promtool, *check], cwd=self.workdir, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, f"promtool {' '.join(check)}:\n{done.stdout}{done.stderr}"
        with open(self.logfile, "ab") as log:
            self.process = subprocess.Popen(
                [binary("prometheus"), f"--config.file={self.workdir / 'prometheus.yml'}",
                 f"--storage.tsdb.path={self.workdir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{self.port}"],
                cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._ready, 30, f"Prometheus ready on 127.0.0.1:{self.port}")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited with {self.process.returncode}:\n{self.log()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def api(self, path: str, **params) -> dict:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/{path}{query}", timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def value(self, expr: str) -> float | None:
        """An instant query's single value, or None when it returns nothing."""
        result = self.api("query", query=expr)["result"]
        return float(result[0]["value"][1]) if result else None

    def stall_rule(self) -> dict:
        rules = [r for g in self.api("rules")["groups"] for r in g["rules"] if r["name"] == STALL]
        assert len(rules) == 1, rules
        return rules[0]

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")[-4000:] if self.logfile.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def evaluated_at(prom: Prometheus) -> tuple[float, dict] | None:
    """The stall rule and the Unix time of its last evaluation, or None before the first one."""
    rule = prom.stall_rule()
    last = rule.get("lastEvaluation", "")
    if not last or last.startswith("0001-"):
        return None
    stamp = re.sub(r"(\.\d{6})\d*", r"\1", last.replace("Z", "+00:00"))   # Python parses microseconds
    return datetime.fromisoformat(stamp).timestamp(), rule


@contextmanager
def stack_and_prometheus(workdir: Path, rules_text: str) -> Iterator[tuple[Stack, Prometheus]]:
    """A stack (not started) and a Prometheus (not started) scraping its exporter with ``rules_text``;
    both stopped afterwards, Prometheus's log printed if the test failed."""
    stack = Stack(workdir)
    prom = None
    try:
        prom = Prometheus(workdir, f"127.0.0.1:{stack.env['METRICS_PORT']}", rules_text)
        yield stack, prom
    except BaseException:
        if prom is not None:
            print("prometheus log:\n" + prom.log())
        raise
    finally:
        try:
            if prom is not None:
                prom.stop()
        finally:
            stack.close()


def test_a_real_prometheus_sees_the_stall_alert_go_pending_when_ingestion_stops(tmp_path):
    rules_text, expr = shortened_stall_rule()
    with stack_and_prometheus(tmp_path, rules_text) as (stack, prom):
        # Slower Keepa answers stretch the healthy phase: the first feed scan's candidates last long
        # enough for Prometheus to evaluate the rule several times while deals flow and work waits.
        stack.keepa.set_faults(slow_ms=300)
        start_stack(stack)
        prom.start()
        assert squeeze(prom.stall_rule()["query"]) == squeeze(expr), "Prometheus did not load the shortened rule"

        # Healthy: deals are committed while candidates wait. Before the first deal the rule may be
        # pending (no deal yet reads as "last deal at time 0"), so look only at evaluations made
        # after Prometheus has scraped a committed deal.
        wait_for(lambda: stack.ingested() >= 1, 90, "the first deal")
        wait_for(lambda: prom.value("keepa_last_deal_ingested_timestamp_seconds > 0"), 30,
                 "Prometheus to scrape a committed deal")
        since, evaluations = time.time(), []
        while len(evaluations) < 5:
            at, rule = wait_for(lambda s=since: (e := evaluated_at(prom)) and e[0] > s and e, 10,
                                "a fresh evaluation of the stall rule")
            since = at
            evaluations.append(at)
            assert rule["health"] == "ok", rule
            assert rule["state"] == "inactive" and not rule["alerts"], \
                f"the stall alert is active while deals flow:\n{json.dumps(rule, indent=1)}"
        ingested_healthy = stack.ingested()
        assert stack.store.candidates_waiting() > 0, \
            "no candidate waits any more, so the stall rule could not become true: lengthen the healthy phase"
        assert prom.value("keepa_candidates_waiting") > 0

        # Stall: the worker dies while candidates wait. Grants go on but nothing runs them, so the
        # candidates stay unclaimed (at most one peek window is claimed), the bucket refills and no
        # deal is committed: every clause of the real expression becomes true.
        # (Failing every Keepa call instead does not keep it true: failed peeks wait out their retry
        # delay in Dramatiq's delay queue, where neither keepa_requests_pending nor
        # keepa_candidates_waiting sees them, so the "work waits" clause turns false.)
        stack.kill("worker")
        stopped_at = time.time()

        def stall_alert(states=("pending", "firing")):
            alerts = [a for a in prom.api("alerts")["alerts"] if a["labels"]["alertname"] == STALL]
            return next((a for a in alerts if a["state"] in states), None)

        alert = wait_for(stall_alert, STALL_AFTER_S + 30, "the stall alert to go pending")
        pending_after_s = time.time() - stopped_at
        assert alert["labels"]["severity"] == "page"
        assert float(alert["value"]) > STALL_AFTER_S          # seconds since the last deal
        wait_for(lambda: stall_alert(("firing",)), FOR_S + 30, "the stall alert to fire")

        # Prometheus records every evaluation that found the alert active in its ALERTS series: none
        # of them fell in the healthy window, not only the five looked at above.
        healthy_s = math.floor(stopped_at - evaluations[0])
        active = prom.api("query", query=f'ALERTS{{alertname="{STALL}"}}[{healthy_s}s]', time=f"{stopped_at:.3f}")
        assert not active["result"], f"the stall alert was active while deals flowed: {active}"
        stalled = prom.api("query", query=f'ALERTS{{alertname="{STALL}"}}[{healthy_s}s]')
        assert stalled["result"], "ALERTS holds no sample of the active alert, so the check above proves nothing"
        print(f"{ingested_healthy} deals while healthy; stall alert pending {pending_after_s:.1f} s after the "
              f"worker died (rule: no deal for {STALL_AFTER_S} s)")
