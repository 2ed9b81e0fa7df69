"""Offline check of the Grafana dashboard: every panel query parses (promtool), names only metrics the
exporter really exports, and returns data when Prometheus holds exactly the exporter's series.

The exporter's series come from running its collector against a governor snapshot and a fake store,
and the Dramatiq middleware against a fake message; Grafana's own variables are replaced by values.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from metrics.dramatiq_seconds import DramatiqSeconds
from metrics.exporter import build_registry
from tests.test_metrics_support import NOW_MS, FakeRedis, FakeStore, governor_snapshot

GRAFANA = Path(__file__).resolve().parent.parent / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "keepa-deals.json"
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset", "inf", "nan"}
STEPS = 40


def exporter_text() -> str:
    store = FakeStore(stored=40, ingested=12, recent=3, last_ms=NOW_MS - 90_000, waiting=7, watermark_ms=NOW_MS)
    text = generate_latest(build_registry(FakeRedis(json.dumps(governor_snapshot())), store,
                                          now_ms=lambda: NOW_MS)).decode()
    registry = CollectorRegistry()
    middleware = DramatiqSeconds(registry=registry, clock=iter(range(100)).__next__)
    broker = StubBroker(middleware=[])
    actor = dramatiq.actor(lambda: None, broker=broker, queue_name="work", actor_name="commit_deal")
    middleware.after_declare_actor(broker, actor)
    message = actor.message()
    middleware.before_process_message(broker, message)
    middleware.after_process_message(broker, message)
    return text + generate_latest(registry).decode()


def exported_series() -> list[tuple[str, dict, float]]:
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(exporter_text()) for s in f.samples]


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def queries() -> list[tuple[str, str]]:
    """``(where, expr)`` for every panel target, Grafana's variables replaced."""
    out = []
    for panel in panels():
        for target in panel["targets"]:
            expr = target["expr"]
            for name, replacement in GRAFANA_VARIABLES.items():
                expr = expr.replace(name, replacement)
            out.append((f"panel {panel['id']} {panel['title']!r} target {target['refId']}", expr))
    return out


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers that are not functions, keywords, label
    names (inside braces or grouping lists), strings or durations."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        following = expr[match.end():].lstrip()
        word = match.group()
        if following.startswith("(") or word.lower() in KEYWORDS:
            continue
        if match.start() and (expr[match.start() - 1].isdigit() or expr[match.start() - 1] == "."):
            continue  # the exponent or unit of a number
        names.add(word)
    return names


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool is not installed: `make deps` installs Debian's prometheus package")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def test_the_dashboard_picks_its_datasource_through_a_variable_not_an_import_placeholder():
    board = dashboard()
    assert "__inputs" not in board and "${DS_" not in DASHBOARD.read_text()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"]), panel["title"]


def test_the_dashboard_has_the_panels_operators_need():
    titles = " | ".join(p["title"].lower() for p in panels())
    for needed in ("balance and recharge", "deals ingested per minute", "pending requests per class",
                   "grant wait per class", "tokens consumed per minute by class", "keepa errors",
                   "tokens per deal", "screened out"):
        assert needed in titles, needed
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"


def test_the_provisioning_files_point_grafana_at_prometheus_and_the_dashboard_folder():
    datasource = (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    assert re.search(r"^\s+type: prometheus$", datasource, re.M)
    assert re.search(r"^apiVersion: 1$", datasource, re.M)
    provider = (GRAFANA / "provisioning" / "dashboards" / "keepa-deals.yml").read_text()
    assert re.search(r"^\s+type: file$", provider, re.M) and re.search(r"^\s+path: /\S+", provider, re.M)


def test_every_panel_query_names_only_metrics_the_exporter_exports():
    exported = {name for name, _, _ in exported_series()}
    for where, expr in queries():
        assert "$" not in expr, f"{where}: unreplaced Grafana variable in {expr!r}"
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        unknown = names - exported
        assert not unknown, f"{where}: {sorted(unknown)} are not exported; query {expr!r}"


def test_every_panel_query_parses(tmp_path):
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": expr} for i, (_, expr) in enumerate(queries())]}]}
    (tmp_path / "dashboard.rules.yml").write_text(json.dumps(rules, indent=1))
    done = promtool("check", "rules", "dashboard.rules.yml", cwd=tmp_path)
    assert done.returncode == 0, "promtool rejects a panel query:\n" + done.stdout + done.stderr + "\n" + \
        "\n".join(f"query_{i}: {where}: {expr}" for i, (where, expr) in enumerate(queries()))


def test_every_panel_query_returns_data_from_the_exporters_series(tmp_path):
    series = []
    for name, labels, value in exported_series():
        labels = {**labels, "job": "keepa-deals", "instance": "127.0.0.1:9300"}
        text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        cumulative = name.endswith(("_total", "_bucket", "_count", "_sum"))
        series.append({"series": f"{name}{{{text}}}",
                       "values": f"{value:g}+1x{STEPS}" if cumulative else f"{value:g}x{STEPS}"})
    checks = [{"expr": f"clamp_max(count({expr}), 1)", "eval_time": f"{STEPS - 5}m",
               "exp_samples": [{"labels": "{}", "value": 1}]} for _, expr in queries()]
    (tmp_path / "empty.rules.yml").write_text(json.dumps({"groups": []}))
    (tmp_path / "dashboard.test.yml").write_text(json.dumps({
        "rule_files": ["empty.rules.yml"], "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": checks}]}, indent=1))
    done = promtool("test", "rules", "dashboard.test.yml", cwd=tmp_path)
    assert done.returncode == 0, "a panel query returns nothing from the exporter's series:\n" + done.stdout + \
        done.stderr
