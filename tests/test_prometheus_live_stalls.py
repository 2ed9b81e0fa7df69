"""On the running stack, a real Prometheus pages for a dead scheduler and the frozen feed it leaves,
and stays quiet while the scheduler ticks and scans run.

The stack is tests/stack.py (20 tokens a Keepa minute, a Keepa minute of 0.5 s, so the plan's scan
interval is 12.5 Keepa minutes = 6.25 s). The rules are the shipped ones from
deploy/prometheus/keepa-deals.rules.yml with their durations shortened (see SHORTENED), so the
expressions Prometheus evaluates are the real ones. Every wait is a bounded poll.
"""

from __future__ import annotations

import math
import re
import time

import pytest

from tests.stack import wait_for
from tests.test_prometheus_live import Prometheus, rule_block, squeeze, stack_and_prometheus, start_stack

pytestmark = pytest.mark.integration

SCHEDULER_DEAD, FEED_STOPPED = "KeepaSchedulerDead", "KeepaFeedScansStopped"
HEALTHY_EVALUATIONS = 15       # over more than two of the plan's scan intervals (6.25 s)
# Per rule: (pattern in the real rule, replacement, times it must occur). A change to the real rule's
# windows fails here loudly instead of testing something else.
SHORTENED = {
    SCHEDULER_DEAD: (
        (r"\) > 600\b", ") > 12", 1),   # ten missed Keepa minutes -> 12 s: room for a tick held by a busy database
        (r"(?m)^(\s+for:) 5m$", r"\g<1> 1s", 1),
    ),
    FEED_STOPPED: (
        (r"keepa_feed_scan_interval_seconds \+ 600\b", "keepa_feed_scan_interval_seconds + 10", 1),
        (r"\[15m\]", "[30s]", 1),
        (r"(?m)^(\s+for:) 10m$", r"\g<1> 1s", 1),
    ),
}


def shortened_rules() -> tuple[str, dict[str, str]]:
    """The rules file's text holding both shortened rules, and each one's expression."""
    blocks, exprs = [], {}
    for name, substitutions in SHORTENED.items():
        block = rule_block(name)
        for pattern, replacement, count in substitutions:
            block, made = re.subn(pattern, replacement, block)
            assert made == count, f"{name} no longer has {count} x {pattern!r}: update SHORTENED to match the rule"
        blocks.append(f"      - alert: {block}\n")
        exprs[name] = " ".join(re.search(r"expr: \|\n(.*?)\n\s+for:", block, re.S).group(1).split())
    return "groups:\n  - name: keepa-deals-live-stalls\n    rules:\n" + "".join(blocks), exprs


def evaluated_group(prom: Prometheus) -> dict | None:
    """The live-stalls rule group as last evaluated, or None before its first evaluation."""
    group = next(g for g in prom.api("rules")["groups"] if g["name"] == "keepa-deals-live-stalls")
    last = group.get("lastEvaluation", "")
    return None if not last or last.startswith("0001-") else group


def rule(prom: Prometheus, name: str) -> dict:
    rules = [r for g in prom.api("rules")["groups"] for r in g["rules"] if r["name"] == name]
    assert len(rules) == 1, rules
    return rules[0]


def alert(prom: Prometheus, name: str, states=("pending", "firing")) -> dict | None:
    found = [a for a in prom.api("alerts")["alerts"] if a["labels"]["alertname"] == name]
    return next((a for a in found if a["state"] in states), None)


def test_a_real_prometheus_pages_for_a_dead_scheduler_and_the_frozen_feed_it_leaves(tmp_path):
    rules_text, exprs = shortened_rules()
    with stack_and_prometheus(tmp_path, rules_text) as (stack, prom):
        start_stack(stack)
        prom.start()
        for name, expr in exprs.items():
            assert squeeze(rule(prom, name)["query"]) == squeeze(expr), f"Prometheus did not load the shortened {name}"

        # Healthy: the scheduler ticks every 0.5 s and a scan runs at least every 6.25 s. Judge only
        # evaluations made after Prometheus has scraped a tick and a scanned page (before them both
        # read 0: "never", which the rules rightly treat as long ago).
        wait_for(lambda: prom.value("keepa_scheduler_last_tick_timestamp_seconds > 0")
                 and prom.value("keepa_feed_last_scan_timestamp_seconds > 0")
                 and prom.value("keepa_feed_scan_interval_seconds > 0"), 90, "Prometheus to scrape a tick and a scan")
        healthy_from = time.time()
        seen: set[str] = set()
        while len(seen) < HEALTHY_EVALUATIONS:   # Prometheus evaluates the group every second
            group = wait_for(lambda: (g := evaluated_group(prom)) and g["lastEvaluation"] not in seen and g, 10,
                             "a fresh evaluation of the stall rules")
            seen.add(group["lastEvaluation"])
            for state in group["rules"]:
                assert state["health"] == "ok", state
                assert state["state"] == "inactive" and not state["alerts"], \
                    f"{state['name']} is active while the scheduler ticks and scans run: {state}"

        # The scheduler dies: no tick, and (on this plan only the scheduler starts scans) no scan.
        stack.kill("scheduler")
        killed_at = time.time()
        fired_after_s = {}
        dead = wait_for(lambda: alert(prom, SCHEDULER_DEAD, ("firing",)), 60, "the dead-scheduler alert to fire")
        fired_after_s[SCHEDULER_DEAD] = time.time() - killed_at
        frozen = wait_for(lambda: alert(prom, FEED_STOPPED, ("firing",)), 90, "the frozen-feed alert to fire")
        fired_after_s[FEED_STOPPED] = time.time() - killed_at
        assert dead["labels"]["severity"] == frozen["labels"]["severity"] == "page"
        assert float(dead["value"]) > 12 and float(frozen["value"]) > 6.25 + 10

        # ALERTS holds every evaluation that found an alert active: none fell in the healthy window.
        healthy_s = math.floor(killed_at - healthy_from)
        for name in exprs:
            active = prom.api("query", query=f'ALERTS{{alertname="{name}"}}[{healthy_s}s]', time=f"{killed_at:.3f}")
            assert not active["result"], f"{name} was active while the scheduler ticked: {active}"
        print(f"dead scheduler paged within {fired_after_s[SCHEDULER_DEAD]:.1f} s, "
              f"frozen feed within {fired_after_s[FEED_STOPPED]:.1f} s of the kill")
