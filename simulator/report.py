"""Run a scenario under named policies."""

from __future__ import annotations

from governor.fifo import FifoPolicy
from governor.legacy import LegacyPolicy
from governor.policy import Governor
from simulator.run import PipelineConfig, Simulation
from simulator.scenario import Scenario

#: The old system's pipeline: Celery beat ran the upserter every minute; the backfiller took one
#: ASIN at a time (batch size 1 on low plans), peek first (2026-02-07).
LEGACY_PIPELINE = PipelineConfig(cadence="every_minute", backfill_window=1)


def make(policy: str):
    """The policy object and the pipeline it runs with."""
    if policy == "governor":
        return Governor(), PipelineConfig()
    if policy == "fifo":
        return FifoPolicy(), PipelineConfig()
    if policy == "legacy":
        return LegacyPolicy(), LEGACY_PIPELINE
    raise ValueError(f"unknown policy {policy!r}: choose governor, legacy, fifo or all")


def simulate(scenario: Scenario, policy: str = "governor") -> dict:
    obj, pipeline = make(policy)
    return Simulation(scenario, obj, pipeline).run()


def run_policies(scenario: Scenario, policies: list[str]) -> dict:
    return {name: simulate(scenario, name) for name in policies}
