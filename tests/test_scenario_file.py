"""The scenario reader: docs/scenarios.md's format, strict about keys and values."""

import json

import pytest

from keepa_base.errors import ScenarioError
from simulator.scenario import load_scenario, parse_scenario

MINIMAL = {"minutes": 60, "plan": {"refill_per_minute": 5}}


def with_(**changes):
    data = json.loads(json.dumps(MINIMAL))
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        node = data
        for key in path:
            node = node.setdefault(key, {})
        node[last] = value
    return data


def test_every_key_but_minutes_and_plan_has_a_default():
    sc = parse_scenario(MINIMAL)
    assert (sc.seed, sc.deal_page_cost, sc.peek_cost, sc.commit_cost) == (1, (5, 5), (1, 1), (20, 20))
    assert (sc.backlog, sc.new_per_hour, sc.viable_fraction) == (400, 60, 0.1)
    assert sc.screen_pass_fraction == 1.0  # every deal passes the screen: older files keep their meaning
    assert sc.max_tokens is None and sc.start_tokens == 0 and sc.error_rate == 0


def test_viable_fraction_counts_among_the_deals_that_pass_the_screen():
    sc = parse_scenario(with_(feed__screen_pass_fraction=0.2, feed__viable_fraction=0.5))
    assert sc.overall_viable_fraction == pytest.approx(0.1)


def test_costs_may_be_ranges_and_refill_a_schedule():
    sc = parse_scenario(with_(costs__commit=[12, 20], plan__refill_per_minute=[[0, 5], [600, 20]]))
    assert sc.commit_cost == (12, 20)
    assert sc.schedule.rate_at(599) == 5 and sc.schedule.rate_at(600) == 20


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({**MINIMAL, "colour": "red"}, "colour"),
        (with_(feed__backlogg=3), "backlogg"),
        (with_(faults__restart=1), "restart"),
        ({"plan": {"refill_per_minute": 5}}, "minutes"),
        ({"minutes": 5}, "plan"),
        ({"minutes": 5, "plan": {}}, "plan.refill_per_minute"),
        (with_(minutes=0), "minutes"),
        (with_(minutes="a day"), "minutes"),
        (with_(plan__refill_per_minute=0), "plan.refill_per_minute"),
        (with_(plan__max_tokens=-1), "plan.max_tokens"),
        (with_(costs__commit=[20, 12]), "costs.commit"),
        (with_(costs__peek=[1, 2, 3]), "costs.peek"),
        (with_(feed__viable_fraction=1.5), "feed.viable_fraction"),
        (with_(feed__screen_pass_fraction=-0.1), "feed.screen_pass_fraction"),
        (with_(feed__screen_pass_fraction="most"), "feed.screen_pass_fraction"),
        (with_(feed__screen_fraction=0.2), "screen_fraction"),
        (with_(faults__error_rate=True), "faults.error_rate"),
        (with_(plan__refill_per_minute=[[0]]), "plan.refill_per_minute[0]"),
        ([], "JSON object"),
    ],
)
def test_a_bad_scenario_is_an_error_naming_the_key(data, named):
    with pytest.raises(ScenarioError, match=named.replace("[", r"\[").replace("]", r"\]")):
        parse_scenario(data)


def test_a_file_that_is_not_json_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{minutes: 5")
    with pytest.raises(ScenarioError, match="broken.json"):
        load_scenario(path)


def test_every_shipped_scenario_loads():
    from pathlib import Path

    paths = sorted((Path(__file__).parent.parent / "bench" / "scenarios").glob("*.json"))
    assert len(paths) >= 14
    for path in paths:
        assert load_scenario(path).name == path.stem
