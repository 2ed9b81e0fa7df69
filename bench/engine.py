"""The engine's figures: every scenario under every policy (issues 2 and 12), the screen's deals per
token, burst mode over a week, the simulator's and the policy's speed, and the policy's memory.

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
#: the governor with recharge (burst) mode on below 10 tokens a minute: what burst mode gives or
#: costs against the default (off), side by side
RECHARGE = "gov-recharge"
PEER_TOLERANCE = 0.99   # the governor ingests at least this share of the best peer
BOUND_SHARE = 0.97      # and, where tokens bind, at least this share of the bound


def _books(report: dict) -> bool:
    return report["tokens_start"] + report["tokens_refilled"] - report["tokens_spent"] == report["final_balance"]


def _bounds_met(report: dict, scenario) -> bool:
    rate = min(rate for _, rate in scenario.refill)
    for cls in CLASSES:
        n = max(1, report["by_class"][cls]["queued_max"])  # the most requests of the class pending at once
        bound = wait_bound_s(cls, rate=rate, n=n, start_balance=scenario.start_tokens,
                             largest_cost=report["largest_granted_cost"], cap=scenario.max_tokens)
        if report["by_class"][cls]["wait_max_s"] > bound:
            return False
    return True


def _run(name: str, scenario) -> dict:
    if name == RECHARGE:
        _, pipeline = make("governor", scenario)
        return Simulation(scenario, Governor(GovernorConfig(recharge="auto")), pipeline).run()
    policy, pipeline = make(name, scenario)
    return Simulation(scenario, policy, pipeline).run()


def scenario_table() -> None:
    columns = (*POLICIES, RECHARGE)
    print(f"{'scenario':23} {'bound':>8} | " + " | ".join(f"{p:>16}" for p in columns)
          + " | gov: peers bound lost-waiting books min-bal waits<=bound final-bal wall-s")
    details = []
    for path in sorted(glob.glob(str(SCENARIOS / "*.json"))):
        scenario = load_scenario(path)
        limits = ingest_bound(scenario)
        bound = limits["bound"]
        reports = {name: _run(name, scenario) for name in columns}
        cells = []
        for name in columns:
            ingested = reports[name]["deals_ingested"]
            ratio = f"{ingested / bound:.3f}" if bound else "  - "
            cells.append(f"{ingested:>7} ({ratio})")
        gov = reports["governor"]
        best_peer = max(reports["fifo"]["deals_ingested"], reports["legacy"]["deals_ingested"])
        peers_ok = gov["deals_ingested"] >= PEER_TOLERANCE * best_peer
        token_bound = 0 < limits["tokens_buy"] < limits["supply"]
        bound_ok = "-" if not token_bound else ("ok" if gov["deals_ingested"] >= BOUND_SHARE * bound else "LOW")
        # Keepa takes a call at any positive balance, so the floor holds if no more than one call's
        # charge (a batch of ASINs: its whole charge) went below zero
        floor_ok = gov["min_balance"] >= min(-gov["largest_call_cost"], scenario.start_tokens)
        print(f"{scenario.name[:23]:23} {bound:>8} | " + " | ".join(cells)
              + f" | {'ok' if peers_ok else 'BEHIND':>6} {bound_ok:>5} {gov['tokens_lost_at_cap_while_waiting']:>4}"
              f" {'ok' if _books(gov) else 'OFF':>5} {gov['min_balance']:>6}{'' if floor_ok else '!'}"
              f" {'yes' if _bounds_met(gov, scenario) else 'NO':>5} {gov['final_balance']:>9}"
              f" {gov['wall_seconds']:>6.2f}")
        details.append((scenario.name, reports))
    print()
    print(f"{'scenario (governor)':23} {'tok/deal':>8} {'upsert':>8} {'peek':>8} {'commit':>8} "
          f"{'screened':>8} {'pages':>6} {'unused':>6} {'pending':>7} | {'fifo tok/deal':>13} {'legacy tok/deal':>15}")
    for name, reports in details:
        gov, tokens = reports["governor"], reports["governor"]["by_class"]
        print(f"{name[:23]:23} {_per_deal(gov):>8} {tokens['upsert']['tokens']:>8} {tokens['peek']['tokens']:>8} "
              f"{tokens['commit']['tokens']:>8} {gov['deals_screened_out']:>8} {gov['pages_bought']:>6} "
              f"{gov['pages_unused']:>6} {gov['pages_pending']:>7} | {_per_deal(reports['fifo']):>13}"
              f" {_per_deal(reports['legacy']):>15}")


def _per_deal(report: dict) -> str:
    value = report["tokens_per_deal"]
    return "-" if value is None else f"{value:.2f}"


SCREEN_VARIANTS = {"screen+filter": {}, "screen only": {"query_filter": False},
                   "screen off": {"query_filter": False, "screen": False}}


def screen_figure() -> None:
    """Deals per token with the screen (and the query filter) against the same code with both off,
    each scenario's variants run one after another."""
    for name in ("day-5-screened", "day-20-screened"):
        scenario = load_scenario(SCENARIOS / f"{name}.json")
        per_token = {}
        for variant, switches in SCREEN_VARIANTS.items():
            policy, pipeline = make("governor", scenario)
            report = Simulation(scenario, policy, dataclasses.replace(pipeline, **switches)).run()
            per_token[variant] = report["deals_ingested"] / report["tokens_spent"]
            print(f"screen {name:16} {variant:13}: {report['deals_ingested']:>5} deals for "
                  f"{report['tokens_spent']:>6} tokens = {1000 * per_token[variant]:.2f} deals per 1,000 tokens "
                  f"({report['asins_peeked']} peeked, {report['deals_screened_out']} screened out, "
                  f"{report['pages_bought']} pages)")
        print(f"screen {name:16} deals per token, screen+filter / screen off: "
              f"{per_token['screen+filter'] / per_token['screen off']:.2f}x")


def scan_figure() -> None:
    """Scan on demand against every scan read to the watermark, on the deep-backlog 5/min day."""
    scenario = load_scenario(SCENARIOS / "day-5-saturated.json")
    for variant, on_demand in (("on demand", True), ("to the watermark", False)):
        policy, pipeline = make("governor", scenario)
        report = Simulation(scenario, policy, dataclasses.replace(pipeline, on_demand=on_demand)).run()
        print(f"scan {scenario.name} {variant:16}: {report['pages_bought']:>3} pages bought, "
              f"{report['pages_unused']} unused, {report['pages_pending']} with deals still waiting, "
              f"{report['deals_ingested']} deals ingested")


def recharge_figure(seeds: int = 5) -> None:
    """Burst mode on (below 10/min) against off, over a simulated week on the 5/min plan: the
    scenario's own seed and the next ones, each run both ways one after the other."""
    base = load_scenario(SCENARIOS / "week-5-saturated.json")
    totals = {"auto": 0, "off": 0}
    rows = []
    for seed in [base.seed, *range(1, seeds)]:
        scenario = dataclasses.replace(base, seed=seed)
        _, pipeline = make("governor", scenario)
        row = []
        for mode in ("auto", "off"):
            report = Simulation(scenario, Governor(GovernorConfig(recharge=mode)), pipeline).run()
            totals[mode] += report["deals_ingested"]
            row.append(f"{report['deals_ingested']} (final balance {report['final_balance']})")
        rows.append(f"seed {seed}: on {row[0]}, off {row[1]}")
    print("recharge over week-5-saturated: " + "; ".join(rows))
    print(f"recharge over week-5-saturated, {seeds} seeds: on {totals['auto']}, off {totals['off']} deals "
          f"(off / on = {totals['off'] / totals['auto']:.4f})")


def simulation_speed() -> None:
    for name in ("day-5-saturated", "day-1000", "day-4000"):
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
    screen_figure()
    scan_figure()
    recharge_figure()
    simulation_speed()
    policy_speed()
    memory_growth()


if __name__ == "__main__":
    main()
