"""The alert rules and the Prometheus config pass promtool: syntax, unit tests (fire / must not fire), config."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

PROMETHEUS = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
RULES = PROMETHEUS / "keepa-deals.rules.yml"
RULE_TESTS = PROMETHEUS / "keepa-deals.rules.test.yml"
CONFIG = PROMETHEUS / "prometheus.yml"
ALERTS = {"KeepaDealsStalled", "KeepaGovernorAbsent", "KeepaGovernorNotGranting", "KeepaRechargeStuck",
          "KeepaTokenDeficitTooDeep", "KeepaRateLimitStorm", "KeepaApiKeyRejected", "KeepaCallsFailing",
          "KeepaMetricsTargetDown", "KeepaMetricsSourceDown", "KeepaProductsSetAside", "KeepaMessagesDeadLettered"}
STALL_ALERTS = {"KeepaFeedScansStopped", "KeepaClaimsStuck", "KeepaSchedulerDead"}   # issue 13: every stall pages
ALERTS |= STALL_ALERTS


def promtool(*args: str) -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool is not installed: `make deps` installs Debian's prometheus package")
    done = subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, cwd=PROMETHEUS)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def rule_blocks() -> dict[str, str]:
    """Each alert's text in the rules file (promtool has already parsed it; this only reads it)."""
    parts = re.split(r"^      - alert: ", RULES.read_text(), flags=re.M)[1:]
    return {part.split("\n", 1)[0].strip(): part for part in parts}


def rule_test_cases() -> dict[str, str]:
    """Each `promtool test rules` case's text, by its name."""
    parts = re.split(r"^  - name: ", RULE_TESTS.read_text(), flags=re.M)[1:]
    return {part.split("\n", 1)[0].strip(): part for part in parts}


def quiet_and_firing(text: str) -> tuple[set[str], set[str]]:
    quiet = set(re.findall(r"alertname: (\w+), exp_alerts: \[\]", text))
    firing = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts:\n\s+- ", text))
    return quiet, firing


def test_promtool_accepts_the_alert_rules():
    assert f"SUCCESS: {len(ALERTS)} rules found" in promtool("check", "rules", RULES.name)


def test_every_alert_fires_and_stays_quiet_where_the_rule_tests_say():
    assert "SUCCESS" in promtool("test", "rules", RULE_TESTS.name)


def test_promtool_accepts_the_prometheus_config_and_its_rule_file():
    output = promtool("check", "config", CONFIG.name)
    assert "1 rule files found" in output


def test_every_alert_has_a_severity_a_summary_and_an_actionable_description():
    blocks = rule_blocks()
    assert set(blocks) == ALERTS
    for name, block in blocks.items():
        assert re.search(r"severity: (page|warning)\n", block), name
        assert re.search(r"summary: \S", block), name
        description = block.split("description:", 1)[1]
        assert re.search(r"\b(Check|Run|Stop|Find|Restart|restart)\b", description), \
            f"{name}: the description must tell the operator what to do"


def test_each_alert_has_a_case_that_fires_and_a_case_that_must_not():
    quiet, firing = quiet_and_firing(RULE_TESTS.read_text())
    assert firing == ALERTS
    assert quiet == ALERTS


def test_a_normal_45_minute_recharge_is_checked_against_every_alert_and_fires_none():
    normal = next(text for name, text in rule_test_cases().items() if "normal 45-minute recharge" in name)
    quiet, firing = quiet_and_firing(normal)
    assert quiet == ALERTS
    assert firing == set()


def severities() -> dict[str, str]:
    return {name: re.search(r"severity: (\w+)", block).group(1) for name, block in rule_blocks().items()}


def test_a_100_minute_deficit_repayment_on_20_per_minute_is_checked_against_every_alert_and_pages_no_one():
    case = next(text for name, text in rule_test_cases().items() if "100-minute deficit repayment" in name)
    quiet, firing = quiet_and_firing(case)
    assert quiet == ALERTS
    pages = {name for name, severity in severities().items() if severity == "page"}
    assert firing == {"KeepaTokenDeficitTooDeep"} and not firing & pages   # a warning: the deficit came from outside


def test_each_stall_kind_pages_whether_or_not_work_is_queued():
    """Frozen feed, stuck claims and a dead scheduler each have a case that fires a page, and none of
    their expressions asks for work waiting (the older stall rule does: its `> 0` is what this looks
    for)."""
    cases = rule_test_cases()
    for alert in STALL_ALERTS:
        assert severities()[alert] == "page", alert
        expr = re.search(r"expr: \|\n(.*?)\n\s+for:", rule_blocks()[alert], re.S).group(1)
        assert not re.search(r"(keepa_requests_pending|keepa_candidates_waiting)[^\n]*> 0", expr), alert
        assert any(alert in quiet_and_firing(text)[1] for text in cases.values()), alert
    frozen = next(text for name, text in cases.items() if name.startswith("scans stopped"))
    assert "keepa_requests_pending" not in frozen and "keepa_candidates_waiting" not in frozen


def test_alert_rules_name_only_metrics_the_exporter_exports_or_prometheus_adds():
    from tests.test_dashboard import exported_series, metric_names

    exported = {name for name, _, _ in exported_series()} | {"up"}
    for name, block in rule_blocks().items():
        expr = re.search(r"expr: (?:\|\n)?(.*?)\n\s+for:", block, re.S).group(1)
        names = metric_names(expr)
        assert names and names <= exported, f"{name}: {sorted(names - exported)} are not exported"
