"""Run a scenario under named policies."""

from __future__ import annotations

from dataclasses import replace

from governor.fifo import FifoPolicy
from governor.legacy import LegacyPolicy
from governor.policy import Governor
from simulator.run import PipelineConfig, Simulation
from simulator.scenario import Scenario


def legacy_pipeline(scenario: Scenario) -> PipelineConfig:
    """The old system's pipeline: Celery beat ran the upserter every minute; one backfiller worked
    through candidates sequentially, peek first (2026-02-07), 1 ASIN a call below 10 tokens a
    minute and 5 above (2026-02-04, 2026-02-05); each viable ASIN committed on its own. It had no
    screen (every new deal of an unfiltered feed was peeked) and read every scan to the watermark."""
    low_plan = scenario.schedule.rate_at(0) < 10
    return PipelineConfig(cadence="every_minute", backfill_window=1, sequential=True,
                          backfill_batch=1 if low_plan else 5,
                          commit_batch=1, scan_pages=1, query_filter=False, screen=False,
                          on_demand=False)


def make(policy: str, scenario: Scenario):
    """The policy object and the pipeline it runs with."""
    if policy == "governor":
        return Governor(), PipelineConfig()
    if policy == "fifo":
        return FifoPolicy(), PipelineConfig()
    if policy == "legacy":
        return LegacyPolicy(), legacy_pipeline(scenario)
    raise ValueError(f"unknown policy {policy!r}: choose governor, legacy, fifo or all")


def simulate(scenario: Scenario, policy: str = "governor", *, query_filter: bool = True) -> dict:
    """``query_filter`` False: the deal query without the rule's ranges, as the stack runs with
    ``KEEPA_SCREEN_QUERY=0`` (every feed deal listed; the screen judges each)."""
    obj, pipeline = make(policy, scenario)
    if not query_filter:
        pipeline = replace(pipeline, query_filter=False)
    return Simulation(scenario, obj, pipeline).run()


def run_policies(scenario: Scenario, policies: list[str], *, query_filter: bool = True) -> dict:
    return {name: simulate(scenario, name, query_filter=query_filter) for name in policies}
