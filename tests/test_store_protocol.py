"""Store (durable) and MemoryStore (the simulator's) implement one Protocol, storage.protocol.PipelineStore:
the same method names with the same signatures, and the same answers to the same calls."""

from __future__ import annotations

import inspect

import pytest

from pipeline.commit import DealRecord
from pipeline.watermark import Watermark
from storage.memory import MemoryStore
from storage.protocol import PipelineStore
from storage.store import Store, open_store

PROTOCOL_METHODS = sorted(name for name, value in vars(PipelineStore).items()
                          if callable(value) and not name.startswith("_"))


def test_the_protocol_names_what_both_shells_call():
    assert {"upsert_deals", "take_candidates", "record_verdicts", "store_deal", "advance_watermark",
            "requeue_stale_claims", "set_aside"} <= set(PROTOCOL_METHODS)


@pytest.mark.parametrize("name", PROTOCOL_METHODS)
def test_both_stores_define_each_method_with_the_protocols_signature(name):
    wanted = inspect.signature(getattr(PipelineStore, name))
    assert inspect.signature(getattr(Store, name)) == wanted, f"Store.{name}"
    assert inspect.signature(getattr(MemoryStore, name)) == wanted, f"MemoryStore.{name}"


def test_the_memory_store_offers_nothing_the_protocol_does_not_name():
    public = {name for name, value in vars(MemoryStore).items() if callable(value) and not name.startswith("_")}
    assert public == set(PROTOCOL_METHODS)


@pytest.fixture(params=["memory", "sqlite"])
def any_store(request, tmp_path):
    if request.param == "memory":
        yield MemoryStore()
        return
    store = open_store(f"sqlite:///{tmp_path}/deals.db")
    yield store
    store.close()


def record(asin: str, committed_ms: int) -> DealRecord:
    return DealRecord(asin=asin, title="Kettle", price_new=1999, avg90_new=2999, drop_percent=33.34,
                      sales_rank=1200, offers=4, deal_time_ms=1_000, committed_ms=committed_ms)


def test_both_stores_answer_one_sequence_of_pipeline_calls_alike(any_store):
    s: PipelineStore = any_store
    answers = [
        s.upsert_deal("B000000001", 1_000, 10_000),
        s.upsert_deal("B000000001", 2_000, 10_001),                # seen again: not new, time moves up
        s.upsert_deal("B000000009", 1_500, 10_002, "no drop"),    # screened out: never a candidate
        s.upsert_deals([("B000000002", 1_100), ("B000000003", 1_200, None), ("B000000004", 900, "too dear")], 11_000),
        (s.deals_stored(), s.candidates_waiting(), s.deals_screened_out()),
        s.take_candidates(5, 12_000, at_least=4),                  # three wait: fewer than at least four
        s.take_candidates(2, 12_000),
        s.release_candidate("B000000002"), s.release_candidate("B000000002"),
        s.take_candidates(5, 13_000),
        s.requeue_stale_claims(5_000, 19_000, in_use=["B000000003"]),  # B1 and B2 go back, B3 is in use
        s.candidates_waiting(),
        s.deal_times(["B000000001", "B000000404"]),
        s.record_product_failure("B000000002", "peek", "bad stats", 20_000),
        s.record_product_failure("B000000002", "peek", "bad stats", 20_001),
    ]
    s.record_verdicts([("B000000003", True, "viable"), ("B000000002", False, "no drop")], 21_000)
    s.set_aside("B000000001", "peek", "unreadable", 21_500)
    answers += [
        s.store_deal(record("B000000003", 22_000)), s.store_deal(record("B000000003", 21_000)),
        s.deals_ingested(),
        s.advance_watermark(Watermark(mark_ms=5_000, scan_top_ms=6_000, next_page=1), 23_000),
        s.advance_watermark(Watermark(mark_ms=4_000), 24_000),                     # older: ignored
        s.advance_watermark(Watermark(mark_ms=6_000, next_page=2), 25_000, from_page=0),  # cursor moved on
        s.advance_watermark(Watermark(mark_ms=6_000), 26_000, from_page=1),
        s.load_watermark(),
    ]
    s.record_verdict("B000000003", False, "late repeat", 27_000)   # a committed deal keeps its state
    answers += [s.take_candidates(5, 28_000), s.deals_ingested(), s.candidates_waiting()]
    assert answers == [
        True, False, True, 3, (5, 3, 2), [], ["B000000001", "B000000002"], True, False,
        ["B000000002", "B000000003"], 2, 2, {"B000000001": 2_000}, 1, 2,
        True, False, 1,
        Watermark(5_000, 6_000, 1), Watermark(5_000, 6_000, 1), Watermark(5_000, 6_000, 1),
        Watermark(6_000), Watermark(6_000),
        [], 1, 0,
    ]
