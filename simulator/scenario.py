"""Scenario files (docs/scenarios.md): one JSON object; unknown keys and bad values are errors."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from keepa_api.tokens import RateSchedule
from keepa_base.errors import ScenarioError

Cost = tuple[int, int]  # uniform integer draw in [low, high]; a fixed cost is (n, n)


@dataclass(frozen=True)
class Scenario:
    name: str
    minutes: int
    seed: int
    refill: tuple            # ((minute, rate), ...)
    max_tokens: int | None
    start_tokens: int
    deal_page_cost: Cost
    peek_cost: Cost
    commit_cost: Cost
    backlog: int
    new_per_hour: float
    viable_fraction: float   # of the deals that pass the screen: the share whose fresh peek is viable
    known_fraction: float
    order_noise: float
    restart_every_minutes: int
    rogue_tokens_per_minute: int
    error_rate: float
    screen_pass_fraction: float = 1.0  # of all feed deals: the share whose own numbers pass the rule

    @property
    def overall_viable_fraction(self) -> float:
        """The share of all feed deals that a peek finds viable."""
        return self.screen_pass_fraction * self.viable_fraction

    @property
    def schedule(self) -> RateSchedule:
        return RateSchedule([list(step) for step in self.refill])


_TOP = {"name", "minutes", "seed", "plan", "costs", "feed", "faults"}
_SECTIONS = {
    "plan": {"refill_per_minute", "max_tokens", "start_tokens"},
    "costs": {"deal_page": 5, "peek": 1, "commit": 20},
    "feed": {"backlog": 400, "new_per_hour": 60, "screen_pass_fraction": 1.0, "viable_fraction": 0.1,
             "known_fraction": 0.0, "order_noise": 0.0},
    "faults": {"restart_every_minutes": 0, "rogue_tokens_per_minute": 0, "error_rate": 0.0},
}


def _number(where: str, value, *, integer=False, low=None, high=None):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ScenarioError(f"{where} must be a number, got {value!r}")
    if integer and value != int(value):
        raise ScenarioError(f"{where} must be a whole number, got {value!r}")
    if low is not None and value < low:
        raise ScenarioError(f"{where} must be >= {low}, got {value!r}")
    if high is not None and value > high:
        raise ScenarioError(f"{where} must be <= {high}, got {value!r}")
    return int(value) if integer else float(value)


def _cost(where: str, value) -> Cost:
    if isinstance(value, list):
        if len(value) != 2:
            raise ScenarioError(f"{where} must be a number or [low, high], got {value!r}")
        low = _number(f"{where}[0]", value[0], integer=True, low=0)
        high = _number(f"{where}[1]", value[1], integer=True, low=0)
        if low > high:
            raise ScenarioError(f"{where} must have low <= high, got {value!r}")
        return (low, high)
    n = _number(where, value, integer=True, low=0)
    return (n, n)


def _refill(value) -> tuple:
    where = "plan.refill_per_minute"
    if isinstance(value, list):
        if not value:
            raise ScenarioError(f"{where} schedule must not be empty")
        steps = []
        for i, step in enumerate(value):
            if not isinstance(step, list) or len(step) != 2:
                raise ScenarioError(f"{where}[{i}] must be [minute, rate], got {step!r}")
            steps.append((_number(f"{where}[{i}][0]", step[0], integer=True, low=0),
                          _number(f"{where}[{i}][1]", step[1], integer=True, low=1)))
        return tuple(sorted(steps))
    return ((0, _number(where, value, integer=True, low=1)),)


def _section(data: dict, name: str) -> dict:
    section = data.get(name, {})
    if not isinstance(section, dict):
        raise ScenarioError(f"{name} must be a JSON object, got {section!r}")
    unknown = set(section) - set(_SECTIONS[name])
    if unknown:
        raise ScenarioError(f"unknown key(s) in {name}: {', '.join(sorted(unknown))}")
    return section


def parse_scenario(data) -> Scenario:
    if not isinstance(data, dict):
        raise ScenarioError(f"a scenario must be a JSON object, got {type(data).__name__}")
    unknown = set(data) - _TOP
    if unknown:
        raise ScenarioError(f"unknown key(s) in scenario: {', '.join(sorted(unknown))}")
    for required in ("minutes", "plan"):
        if required not in data:
            raise ScenarioError(f"scenario needs the key {required!r}")
    plan = _section(data, "plan")
    if "refill_per_minute" not in plan:
        raise ScenarioError("scenario needs the key 'plan.refill_per_minute'")
    costs, feed, faults = (_section(data, n) for n in ("costs", "feed", "faults"))

    def get(section, name, key):
        return section.get(key, _SECTIONS[name][key])

    name = data.get("name", "scenario")
    if not isinstance(name, str) or not name:
        raise ScenarioError(f"name must be a non-empty string, got {name!r}")
    max_tokens = plan.get("max_tokens")
    return Scenario(
        name=name,
        minutes=_number("minutes", data["minutes"], integer=True, low=1, high=60 * 24 * 31),
        seed=_number("seed", data.get("seed", 1), integer=True),
        refill=_refill(plan["refill_per_minute"]),
        max_tokens=None if max_tokens is None else _number("plan.max_tokens", max_tokens, integer=True, low=1),
        start_tokens=_number("plan.start_tokens", plan.get("start_tokens", 0), integer=True),
        deal_page_cost=_cost("costs.deal_page", get(costs, "costs", "deal_page")),
        peek_cost=_cost("costs.peek", get(costs, "costs", "peek")),
        commit_cost=_cost("costs.commit", get(costs, "costs", "commit")),
        backlog=_number("feed.backlog", get(feed, "feed", "backlog"), integer=True, low=0, high=10_000_000),
        new_per_hour=_number("feed.new_per_hour", get(feed, "feed", "new_per_hour"), low=0, high=1_000_000),
        screen_pass_fraction=_number("feed.screen_pass_fraction", get(feed, "feed", "screen_pass_fraction"),
                                     low=0, high=1),
        viable_fraction=_number("feed.viable_fraction", get(feed, "feed", "viable_fraction"), low=0, high=1),
        known_fraction=_number("feed.known_fraction", get(feed, "feed", "known_fraction"), low=0, high=1),
        order_noise=_number("feed.order_noise", get(feed, "feed", "order_noise"), low=0, high=1),
        restart_every_minutes=_number("faults.restart_every_minutes",
                                      get(faults, "faults", "restart_every_minutes"), integer=True, low=0),
        rogue_tokens_per_minute=_number("faults.rogue_tokens_per_minute",
                                        get(faults, "faults", "rogue_tokens_per_minute"), integer=True, low=0),
        error_rate=_number("faults.error_rate", get(faults, "faults", "error_rate"), low=0, high=1),
    )


def load_scenario(path: str | Path) -> Scenario:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ScenarioError(f"scenario {path} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    return parse_scenario(data)
