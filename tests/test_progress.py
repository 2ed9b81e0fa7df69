"""The progress line of ``keepa-deals up``, from a fixed governor snapshot through the same
document ``keepa-deals status`` builds (:func:`keepa_deals.status.document`)."""

from __future__ import annotations

import time

import pytest

from keepa_deals.progress import ProgressReporter, progress_line
from keepa_deals.status import document

NOW_MS = 1_780_000_000_000
CLOCK = time.strftime("%H:%M:%S", time.localtime(NOW_MS / 1000))
FLOOR_REASON = "balance 0 (less 0 for calls in flight) at or below floor 0; next refill +20 at 1780000003000 ms"


class _Counts:
    """The store's counts, fixed."""

    def __init__(self, stored=326, ingested=36):
        self.stored, self.ingested = stored, ingested

    def deals_stored(self):
        return self.stored

    def deals_ingested(self):
        return self.ingested

    def deals_ingested_since(self, since_ms):
        return self.ingested

    def candidates_waiting(self):
        return 4

    def deals_screened_out(self):
        return 120

    def products_set_aside(self):
        return 0

    def watermark_age_ms(self, now_ms):
        return 800


def _snapshot(pending=None, explanations=None, recharge_active=False) -> dict:
    return {
        "version": 1, "updated_ms": NOW_MS - 900, "synced": True, "balance": 1007, "refill_rate": 20,
        "recharge": {"active": recharge_active, "exit_by_ms": None, "high": 280},
        "pending": pending or {"upsert": 0, "commit": 2, "peek": 5},
        "in_flight": {"upsert": 1, "commit": 0, "peek": 0},
        "last_grant_ms": NOW_MS - 1000, "leader": {"id": "cc8a3280", "since_ms": NOW_MS - 60_000},
        "explanations": explanations if explanations is not None else [
            {"request_id": "c1", "cls": "commit", "position": 0, "reason": FLOOR_REASON, "eta_ms": NOW_MS + 3000},
            {"request_id": "c2", "cls": "commit", "position": 1, "reason": "1 commit request(s) ahead",
             "eta_ms": NOW_MS + 9000},
            {"request_id": "p1", "cls": "peek", "position": 0, "reason": "higher priority waiting: 2 commit",
             "eta_ms": NOW_MS + 12_000},
        ],
    }


def test_the_line_says_deals_tokens_pending_per_class_and_why_the_first_waiting_request_waits():
    line = progress_line(document(_snapshot(), _Counts(), NOW_MS))
    assert line == (f"{CLOCK} progress | deals 326 stored, 36 ingested | tokens 1007 (+20/min) | "
                    f"pending upsert 0, commit 2, peek 5 | commit waits (runs in 3 s): {FLOOR_REASON}")


def test_the_line_gives_the_change_in_deals_since_the_line_before():
    before = document(_snapshot(), _Counts(stored=314, ingested=33), NOW_MS - 30_000)
    line = progress_line(document(_snapshot(), _Counts(), NOW_MS), before)
    assert "deals 326 stored (+12), 36 ingested (+3) |" in line


def test_the_first_waiting_request_is_taken_in_priority_order_not_list_order():
    explanations = [
        {"request_id": "p1", "cls": "peek", "position": 0, "reason": "backpressure", "eta_ms": NOW_MS + 5000},
        {"request_id": "u1", "cls": "upsert", "position": 0, "reason": "a scan holds 50 tokens", "eta_ms": None},
    ]
    snap = _snapshot(pending={"upsert": 1, "commit": 0, "peek": 3}, explanations=explanations)
    assert progress_line(document(snap, _Counts(), NOW_MS)).endswith(
        "| upsert waits (no projected time): a scan holds 50 tokens")


def test_recharge_nothing_waiting_and_no_governor_state_are_said_in_words():
    recharging = document(_snapshot(pending={"upsert": 0, "commit": 0, "peek": 0}, explanations=[],
                                    recharge_active=True), _Counts(), NOW_MS)
    assert "| tokens 1007 (+20/min, recharging) |" in progress_line(recharging)
    assert progress_line(recharging).endswith("| pending upsert 0, commit 0, peek 0 | nothing waits")
    assert progress_line(document(None, _Counts(0, 0), NOW_MS)) == (
        f"{CLOCK} progress | deals 0 stored, 0 ingested | governor: no state in Redis yet")


def test_a_long_reason_is_cut_to_keep_one_line():
    reason = "; ".join(["backpressure: 9 commit requests wait and 8 peek calls are in flight"] * 5)
    snap = _snapshot(explanations=[{"request_id": "c1", "cls": "commit", "position": 0, "reason": reason,
                                    "eta_ms": NOW_MS - 10}])
    line = progress_line(document(snap, _Counts(), NOW_MS))
    assert "commit waits (due now): backpressure" in line and line.endswith("...")
    assert len(line.split("commit waits (due now): ")[1]) == 160


def test_the_reporter_turns_a_failed_read_into_a_line_and_counts_changes_from_the_last_good_one():
    reads = iter([_Counts(300, 30), ConnectionError("Error 111 connecting to 127.0.0.1:6379"), _Counts(326, 36)])
    clock = iter([NOW_MS, NOW_MS + 30_000, NOW_MS + 60_000])

    def collect(now_ms):
        counts = next(reads)
        if isinstance(counts, Exception):
            raise counts
        return document(_snapshot(), counts, now_ms)

    reporter = ProgressReporter(collect, clock_ms=lambda: next(clock))
    assert "deals 300 stored, 30 ingested |" in reporter.line()
    assert reporter.line().endswith("progress | unavailable: ConnectionError: Error 111 connecting to 127.0.0.1:6379")
    assert "deals 326 stored (+26), 36 ingested (+6) |" in reporter.line()


def test_a_negative_progress_period_is_refused_naming_the_option(capsys):
    from keepa_deals.cli import main

    assert main(["up", "--progress-seconds", "-1"]) == 2
    assert "--progress-seconds must be 0 (no progress lines) or more, got -1.0" in capsys.readouterr().err


@pytest.mark.parametrize("seconds", ["0", "2.5"])
def test_the_progress_period_is_an_option_of_up(seconds):
    from keepa_deals.cli import build_parser

    assert build_parser().parse_args(["up", "--progress-seconds", seconds]).progress_seconds == float(seconds)
