"""Issue 2's figures: every scenario under every policy, the policy's speed, and its memory.

Run with ``make bench`` (all sections) or ``python -m bench engine``. Everything printed is measured
in this run; ratios compare policies run side by side on the same machine.
"""

from __future__ import annotations

import dataclasses
import glob
import pickle
import time
from pathlib import Path

from governor.bounds import wait_bound_s
from governor.config import GovernorConfig
from governor.model import CLASSES, COMMIT, PEEK, UPSERT, Request
from governor.policy import Governor
from keepa_api.tokens import Envelope
from simulator.bound import ingest_bound
from simulator.report import make
from simulator.run import Simulation
from simulator.scenario import load_scenario

SCENARIOS = Path(__file__).parent / "scenarios"
POLICIES = ("governor", "legacy", "fifo")
#: the governor with recharge (burst) mode off: shows what the default burst mode costs at a
#: fixed horizon (tokens it holds at the end of the run), side by side
NO_RECHARGE = "gov-no-recharge"


def _books(report: dict) -> bool:
    return report["tokens_start"] + report["tokens_refilled"] - report["tokens_spent"] == report["final_balance"]


def _bounds_met(report: dict, scenario) -> bool:
    rate = min(rate for _, rate in scenario.refill)
    for cls in CLASSES:
        bound = wait_bound_s(cls, rate=rate, start_balance=scenario.start_tokens,
                             largest_cost=report["largest_granted_cost"], cap=scenario.max_tokens)
        if report["by_class"][cls]["wait_max_s"] > bound:
            return False
    return True


def scenario_table() -> None:
    columns = (*POLICIES, NO_RECHARGE)
    print(f"{'scenario':24} {'bound':>7} | " + " | ".join(f"{p:>17}" for p in columns)
          + " | gov: lost-waiting books min-bal waits<=bound final-bal wall-s")
    for path in sorted(glob.glob(str(SCENARIOS / "*.json"))):
        scenario = load_scenario(path)
        bound = ingest_bound(scenario)["bound"]
        reports = {}
        for name in POLICIES:
            policy, pipeline = make(name, scenario)
            reports[name] = Simulation(scenario, policy, pipeline).run()
        _, pipeline = make("governor", scenario)
        reports[NO_RECHARGE] = Simulation(scenario, Governor(GovernorConfig(recharge="off")), pipeline).run()
        cells = []
        for name in columns:
            ingested = reports[name]["deals_ingested"]
            ratio = f"{ingested / bound:.3f}" if bound else "  - "
            cells.append(f"{ingested:>8} ({ratio})")
        gov = reports["governor"]
        # Keepa takes a call at any positive balance, so the floor holds if no more than one call's
        # charge (a batch of ASINs: its whole charge) went below zero
        floor_ok = gov["min_balance"] >= min(-gov["largest_call_cost"], scenario.start_tokens)
        print(f"{scenario.name[:24]:24} {bound:>7} | " + " | ".join(cells)
              + f" | {gov['tokens_lost_at_cap_while_waiting']:>4} {'ok' if _books(gov) else 'OFF':>5}"
              f" {gov['min_balance']:>6}{'' if floor_ok else '!'} {'yes' if _bounds_met(gov, scenario) else 'NO':>5}"
              f" {gov['final_balance']:>9} {gov['wall_seconds']:>6.2f}")


def simulation_speed() -> None:
    for name in ("day-5-saturated", "day-1000"):
        scenario = load_scenario(SCENARIOS / f"{name}.json")
        walls = []
        for _ in range(3):
            policy, pipeline = make("governor", scenario)
            started = time.perf_counter()
            Simulation(scenario, policy, pipeline).run()
            walls.append(time.perf_counter() - started)
        print(f"simulated day {name}: best {min(walls):.2f} s, worst {max(walls):.2f} s of wall time (3 runs)")


def _loaded_governor(pending: int) -> Governor:
    gov = Governor(GovernorConfig(recharge="off", peek_buffer=10**9))
    gov.sync(Envelope(0, 1, 60_000, 5), 0)
    for i in range(pending):
        gov.request(Request(f"r{i}", CLASSES[i % 3]), 0)
    return gov


def policy_speed(pending: int = 10_000, rounds: int = 100_000) -> None:
    """One decision = a request arrives, decide grants one call, the call settles."""
    gov = _loaded_governor(pending)
    classes = (UPSERT, COMMIT, PEEK)
    started = time.perf_counter()
    granted = 0
    for i in range(rounds):
        now = 1 + i
        gov.request(Request(f"n{i}", classes[i % 3]), now)
        decision = gov.decide(now)
        for grant in decision.grants:
            granted += 1
            gov.settle(grant.id, Envelope(now, 1, 60_000, 5, tokens_consumed=grant.estimate), now)
    elapsed = time.perf_counter() - started
    print(f"policy: {rounds / elapsed:,.0f} decisions/s with {gov.pending():,} requests pending "
          f"({granted:,} grants, each request + decide + settle)")


def memory_growth() -> None:
    base = load_scenario(SCENARIOS / "day-5-saturated.json")
    sizes = {}
    for days in (1, 4):
        scenario = dataclasses.replace(base, minutes=1440 * days)
        policy, pipeline = make("governor", scenario)
        Simulation(scenario, policy, pipeline).run()
        sizes[days] = (len(pickle.dumps(policy)), policy.pending())
    for pending in (1_000, 10_000):
        sizes[f"{pending} pending"] = (len(pickle.dumps(_loaded_governor(pending))), pending)
    print("governor state (pickled bytes, pending): "
          + ", ".join(f"{k if isinstance(k, str) else f'{k} day(s)'}: {v[0]:,} B ({v[1]})" for k, v in sizes.items()))


def main() -> None:
    scenario_table()
    simulation_speed()
    policy_speed()
    memory_growth()


if __name__ == "__main__":
    main()
