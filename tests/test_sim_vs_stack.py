"""The simulator agrees with reality: one scenario, run on the real stack for 60 Keepa minutes and
through ``keepa-deals simulate``, ingests as many deals and spends as many tokens, within 15 %."""

import json
import math
import subprocess
import sys
import time

import pytest

from keepa_api.catalogue import Catalogue
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
