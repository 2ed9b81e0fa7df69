"""The simulator agrees with reality.

- One token-bound scenario, run on the real stack for 60 Keepa minutes and through ``keepa-deals
  simulate``, ingests as many deals and spends as many tokens, within 15 %: the governor's model.
- One scenario with plentiful tokens and a finite feed, where only the pipeline's decisions (the
  screen, peeks, commits, the scan's depth) shape the outcome: the two shells decide exactly alike
  (both take every decision from :mod:`pipeline.driver`)."""

import json
import math
import subprocess
import sys
import time

import pytest

from keepa_api.catalogue import Catalogue
from simulator.feed import Feed
from simulator.scenario import load_scenario
from tests.stack import ROOT, Stack, wait_for

pytestmark = pytest.mark.integration

MINUTES, MINUTE_S, RATE, BACKLOG, SEED = 60, 1.0, 20, 3000, 7


def mean_commit_cost(catalogue: Catalogue, sample: int = 2000) -> float:
    """What the embedded server charges for a commit of a viable ASIN with offers=20, on average."""
    costs = [6 * math.ceil(min(catalogue.offers_found(catalogue.asin(i)), 20) / 10)
             for i in range(sample) if catalogue.is_viable(catalogue.asin(i))]
    return sum(costs) / len(costs)


def test_the_simulator_agrees_with_the_stack_within_15_percent(tmp_path):
    epoch_ms = int(time.time() * 1000)
    catalogue = Catalogue(SEED, start_minute=epoch_ms // 60_000 - 21_564_000, backlog=BACKLOG,
                          new_per_minute=1.0, screen_pass_fraction=1.0, viable_fraction=0.1)
    commit = mean_commit_cost(catalogue)
    stack = Stack(tmp_path, minute_s=MINUTE_S, refill_per_minute=RATE, start_tokens=0, epoch_ms=epoch_ms,
                  catalogue=catalogue)
    started = time.monotonic()
    try:
        stack.start_all()
        end = started + MINUTES * MINUTE_S
        wait_for(lambda: time.monotonic() >= end, MINUTES * MINUTE_S + 5, "60 Keepa minutes to pass", every_s=0.5)
        real = {"deals_ingested": stack.ingested(), "tokens_spent": stack.keepa.books()["spent_total"]}
    finally:
        stack.close()

    scenario = {"name": "stack-twin", "minutes": MINUTES, "seed": SEED,
                "plan": {"refill_per_minute": RATE, "start_tokens": 0},
                "costs": {"deal_page": 5, "peek": 1, "commit": [math.floor(commit), math.ceil(commit)]},
                "feed": {"backlog": BACKLOG, "new_per_hour": 60, "viable_fraction": 0.1}}
    path = tmp_path / "twin.json"
    path.write_text(json.dumps(scenario))
    out = subprocess.run([sys.executable, "-m", "keepa_deals.cli", "simulate", str(path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=True)
    simulated = json.loads(out.stdout)
    for key in ("deals_ingested", "tokens_spent"):
        assert real[key] > 0
        assert abs(real[key] - simulated[key]) <= 0.15 * simulated[key], (key, real, simulated)


# -- a scenario that is not token-bound: the pipeline's own decisions decide every figure ----------
UNBOUND_RATE, UNBOUND_BACKLOG, PASS, VIABLE = 1_000, 1_500, 0.3, 0.5


def decisions(*, stored, screened, peeked, ingested, failing, passing, viable, tokens, pages, scans) -> dict:
    """What the pipeline decided on a finite feed, each as a share of what the feed held (so the
    stack's random catalogue and the simulator's evenly spread feed compare exactly), and the
    tokens each class spent per unit it worked on."""
    return {"stored / listed": stored / UNBOUND_BACKLOG, "screened out / failing": screened / failing,
            "peeked / passing": peeked / passing, "ingested / viable": ingested / viable,
            "peek tokens / peeked": tokens["peek"] / peeked, "page tokens / page": tokens["upsert"] / pages,
            "pages read past each scan's first": pages - scans}


def test_the_simulator_decides_as_the_stack_on_a_finite_feed_with_plentiful_tokens(tmp_path):
    """Tokens never run short, so nothing but the pipeline's decisions shapes the outcome: which deals
    the screen sets aside, which are peeked, which committed, how many pages each scan reads. Both
    shells run the unfiltered deal query, so the screen judges every deal."""
    epoch_ms = int(time.time() * 1000)
    catalogue = Catalogue(SEED, start_minute=epoch_ms // 60_000 - 21_564_000, backlog=UNBOUND_BACKLOG,
                          new_per_minute=0.0, screen_pass_fraction=PASS, viable_fraction=VIABLE,
                          screen_miss_fraction=0.0)
    commit = mean_commit_cost(catalogue)
    stack = Stack(tmp_path, minute_s=0.5, refill_per_minute=UNBOUND_RATE, epoch_ms=epoch_ms, catalogue=catalogue)
    stack.env["KEEPA_SCREEN_QUERY"] = "off"
    try:
        stack.start_all()

        def quiet():
            states = stack.states() if stack.store.deals_stored() >= UNBOUND_BACKLOG else {}
            busy = any(s in ("new", "peeking", "viable") for s in states.values())
            return states and not busy and states

        states = wait_for(quiet, 120, "the stack to work through the backlog", every_s=0.5)
        # no more scans (the idle ones read page 0 once a Keepa minute); the last one settled, so the
        # governor's per-class tokens, Keepa's page count and the grant log tell the same story
        stack.terminate("scheduler")
        wait_for(lambda: not any(stack.pending_and_in_flight_ids()), 20, "the last grants to settle")
        # the governor's durable state, written with every message it handles (its published
        # snapshot is at most one a second, so it may lag the last settle)
        spent = json.loads(stack.redis.get("keepa-deals:governor:core"))["gov"]["tokens_by_class"]
        upserts = [gid for gid in stack.grant_log() if gid.startswith("upsert:")]
        pages = stack.keepa.books()["requests_total"].get("/deal", 0)
        counts = {s: sum(1 for v in states.values() if v == s) for s in ("screened", "rejected", "committed")}
        asins = list(states)
        real = decisions(stored=len(states), screened=counts["screened"],
                         peeked=counts["rejected"] + counts["committed"], ingested=stack.ingested(),
                         failing=sum(not catalogue.passes_screen(a) for a in asins),
                         passing=sum(catalogue.passes_screen(a) for a in asins),
                         viable=sum(catalogue.is_viable(a) for a in asins),
                         tokens=spent, pages=pages,
                         scans=len({gid.split(":")[1].split(".")[0] for gid in upserts}))
        real_commit_tokens = spent["commit"] / stack.ingested()
    finally:
        stack.close()

    scenario = {"name": "unbound-twin", "minutes": 30, "seed": SEED,
                "plan": {"refill_per_minute": UNBOUND_RATE, "start_tokens": 60 * UNBOUND_RATE},
                "costs": {"deal_page": 5, "peek": 1, "commit": [math.floor(commit), math.ceil(commit)]},
                "feed": {"backlog": UNBOUND_BACKLOG, "new_per_hour": 0, "screen_pass_fraction": PASS,
                         "viable_fraction": VIABLE}}
    path = tmp_path / "unbound.json"
    path.write_text(json.dumps(scenario))
    out = subprocess.run([sys.executable, "-m", "keepa_deals.cli", "simulate", "--unfiltered-feed", str(path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    sim = json.loads(out.stdout)
    feed = Feed(load_scenario(path))
    tokens = {cls: sim["by_class"][cls]["tokens"] for cls in ("upsert", "peek", "commit")}
    simulated = decisions(stored=sim["deals_seen"], screened=sim["deals_screened_out"], peeked=sim["asins_peeked"],
                          ingested=sim["deals_ingested"], failing=len(feed) - sum(feed.screen_pass),
                          passing=sum(feed.screen_pass), viable=sum(feed.viable), tokens=tokens,
                          pages=sim["pages_bought"], scans=sim["scans"])
    assert real == pytest.approx(simulated, abs=1e-9), (real, simulated)
    # the backlog scan reads its full pages and the short (here empty) one that ends the feed
    assert real["pages read past each scan's first"] == UNBOUND_BACKLOG // 150
    assert real_commit_tokens == pytest.approx(tokens["commit"] / sim["deals_ingested"], rel=0.15)
