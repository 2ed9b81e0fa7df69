"""The actors' batching: full peeks, a part-filled one only when no other peek is outstanding, and
viable ASINs committed in plan-sized calls; a batch the governor can never grant is split.

Real Redis and SQLite; the embedded Keepa server stands in for Keepa, a list for the broker."""

from __future__ import annotations

import dataclasses
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from prometheus_client import generate_latest

from actors.asks import ASK_AGAIN_ACTOR
from actors.grant_claims import CLAIM_PREFIX, calls_repeated
from actors.ledger import Ledger
from actors.messages import MalformedMessage
from actors.peek_tickets import OUTSTANDING_KEY, PeekTickets, new_ticket
from actors.scan import LAST_SCAN_KEY, read_pages
from actors.scan_frontier import SCAN_KEY
from actors.steps import Steps
from keepa_api.catalogue import Catalogue
from keepa_api.client import KeepaClient
from keepa_api.server import FakeKeepa
from keepa_base.errors import DatabaseUnavailable, TransientError
from metrics.exporter import build_registry
from pipeline import batching
from pipeline.driver import PEEK_WINDOW
from pipeline.verdict import ViabilityRule
from pipeline.watermark import MAX_PAGES
from storage.store import open_store

NOW = 1_700_000_000_000


class SentMessages:
    """The broker, as far as the steps use it: what was sent, in order."""

    def __init__(self):
        self.sent, self.delays = [], []

    def enqueue(self, message, delay=None):
        self.sent.append(message)
        self.delays.append(delay)

    def requests(self, cls):
        """The requests of ``cls`` sent to the governor, and those asked again after a delay through
        the worker queue's ``keepa_ask_again`` actor, in the order sent."""
        return [body for body in map(_request_body, self.sent) if body is not None and body["cls"] == cls]

    def settles(self):
        return [m.args[1] for m in self.sent if m.actor_name == "keepa_governor" and m.args[0] == "settle"]


def _request_body(message):
    if message.actor_name == ASK_AGAIN_ACTOR:
        return message.args[0]
    if message.actor_name == "keepa_governor" and message.args[0] == "request":
        return message.args[1]
    return None


def asked_peek(redis_client, asins, ticket=None) -> dict:
    """A peek request's payload as :meth:`Steps.top_up` asks for it: its ticket opened first."""
    ticket = ticket or new_ticket(asins)
    PeekTickets(redis_client).open(ticket, asins, NOW)
    return {"asins": asins, "ticket": ticket}


class Runtime:
    def __init__(self, redis_client, store, client=None, rate=0, pool=None, screen_query=True, screen_deals=True):
        self.broker, self.redis, self.store, self.client = SentMessages(), redis_client, store, client
        self.rule, self.rate, self.pool = ViabilityRule(), rate, pool
        self.screen_query, self.screen_deals = screen_query, screen_deals
        self.minute_ms = 60_000

    def clock_ms(self):
        return NOW

    def peek_batch(self):
        return batching.peek_batch(self.rate)

    def commit_batch(self):
        return batching.commit_batch(self.rate)

    def scan_pages(self):
        return batching.scan_pages(self.rate)

    def read_pages(self, selection, pages):
        return read_pages(self.client, selection, pages, self.pool)


@pytest.fixture
def redis_db(redis_server):
    client = redis.Redis.from_url(redis_server.rsplit("/", 1)[0] + "/9")  # a database of its own
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def store(tmp_path):
    opened = open_store(f"sqlite:///{tmp_path}/deals.db")
    yield opened
    opened.close()


def orphan_claim(redis_client, grant_id, answer=None):
    """The grant's claim as an attempt that died mid-call left it (it beats no more)."""
    doc = {"state": "answered" if answer else "calling", "owner": "dead-process/attempt", "since_ms": 0}
    if answer:
        doc["answer"] = answer
    redis_client.set(CLAIM_PREFIX + grant_id, json.dumps(doc))


def add_candidates(store, n):
    asins = [f"B{i:09d}" for i in range(n)]
    for i, asin in enumerate(asins):
        store.upsert_deal(asin, NOW - i, NOW + i)
    return asins


class TestTheRules:
    @pytest.mark.parametrize(("rate", "peek", "commit"), [(0, 1, 1), (5, 1, 1), (20, 1, 1), (399, 3, 1),
                                                          (1_000, 10, 5), (100_000, 100, 100)])
    def test_batches_grow_with_the_plan_up_to_keepas_limit(self, rate, peek, commit):
        assert (batching.peek_batch(rate), batching.commit_batch(rate)) == (peek, commit)

    def test_a_commit_batch_reserves_a_small_share_of_a_minutes_refill(self):
        for rate in (400, 1_000, 5_000, 20_000):
            assert batching.commit_batch(rate) * 32 <= rate / 6  # 32: the governor's most per ASIN

    def test_a_part_filled_peek_waits_only_while_others_are_outstanding(self):
        assert batching.peek_claim_minimum(100, 0) == 1
        assert batching.peek_claim_minimum(100, 3) == 100
        assert batching.peek_claim_minimum(1, 3) == 1

    @pytest.mark.parametrize(("rate", "pages"), [(0, 1), (5, 1), (1_000, 1), (1_999, 1), (2_000, 2),
                                                 (8_000, 8), (16_000, 16), (100_000, 16)])
    def test_a_scan_reads_more_pages_a_grant_only_on_plentiful_plans(self, rate, pages):
        assert batching.scan_pages(rate) == pages

    def test_split_keeps_order_and_cuts_at_the_size(self):
        assert batching.split(list("abcde"), 2) == [["a", "b"], ["c", "d"], ["e"]]
        assert batching.split([], 5) == []


class TestTopUp:
    def test_peeks_carry_full_batches_and_the_remainder_waits_for_them(self, redis_db, store):
        rt = Runtime(redis_db, store, rate=10_000)  # 100 ASINs a peek
        add_candidates(store, 250)
        steps = Steps(rt)
        assert steps.top_up() == 2
        assert [len(b["payload"]["asins"]) for b in rt.broker.requests("peek")] == [100, 100]
        assert [b["units"] for b in rt.broker.requests("peek")] == [100, 100]
        assert store.candidates_waiting() == 50 and int(redis_db.get(OUTSTANDING_KEY)) == 2
        assert steps.top_up() == 0  # still outstanding: 50 is no batch

        redis_db.decr(OUTSTANDING_KEY)  # one peek answered, one still out
        assert steps.top_up() == 0 and store.candidates_waiting() == 50
        redis_db.decr(OUTSTANDING_KEY)  # none out: nothing else would fill the batch
        assert steps.top_up() == 1
        assert len(rt.broker.requests("peek")[-1]["payload"]["asins"]) == 50
        assert store.candidates_waiting() == 0 and int(redis_db.get(OUTSTANDING_KEY)) == 1

    def test_a_slow_plan_peeks_every_candidate_at_once_up_to_the_window(self, redis_db, store):
        rt = Runtime(redis_db, store, rate=20)  # 1 ASIN a peek
        add_candidates(store, PEEK_WINDOW + 4)
        assert Steps(rt).top_up() == PEEK_WINDOW
        assert all(len(b["payload"]["asins"]) == 1 for b in rt.broker.requests("peek"))
        assert store.candidates_waiting() == 4 and int(redis_db.get(OUTSTANDING_KEY)) == PEEK_WINDOW

    def test_a_full_window_claims_nothing_and_leaves_the_count_alone(self, redis_db, store):
        rt = Runtime(redis_db, store, rate=10_000)
        add_candidates(store, 300)
        redis_db.set(OUTSTANDING_KEY, PEEK_WINDOW)
        assert Steps(rt).top_up() == 0
        assert store.candidates_waiting() == 300 and int(redis_db.get(OUTSTANDING_KEY)) == PEEK_WINDOW


class TestScan:
    """A grant of several feed pages: read at once, stored in page order, the cursor saved after each."""

    @pytest.fixture
    def feed(self):  # 1,000 deals, all passing the deal query's ranges: pages 0-5 full, page 6 short, page 7 empty
        catalogue = Catalogue(3, backlog=1_000, new_per_minute=0, screen_pass_fraction=1.0)
        server = FakeKeepa(refill_per_minute=100_000, catalogue=catalogue)
        client = KeepaClient("test-key", base_url=server.start(), timeout_s=5)
        pool = ThreadPoolExecutor(batching.MAX_SCAN_PAGES)
        yield client, pool
        pool.shutdown()
        client.close()
        server.stop()

    def test_the_page_that_ends_the_scan_drops_the_pages_after_it_and_all_are_settled(self, redis_db, store, feed):
        client, pool = feed
        rt = Runtime(redis_db, store, client, rate=8_000, pool=pool)
        redis_db.set(SCAN_KEY, 1)
        Steps(rt).upsert("upsert:1.0:0", {"scan": 1, "page": 0, "pages": 8})
        assert store.deals_stored() == 1_000
        watermark = store.load_watermark()
        assert watermark.next_page == 0 and watermark.mark_ms is not None  # the scan ended at page 6
        (settle,) = rt.broker.settles()
        assert settle["outcome"] == "ok" and settle["envelope"]["tokensConsumed"] == 8 * 5  # page 7 was paid for
        assert rt.broker.requests("upsert") == [] and redis_db.get(SCAN_KEY) is None

    def test_a_failed_page_keeps_the_pages_before_it_and_is_asked_again_from_there(self, redis_db, store, feed):
        client, pool = feed

        class FailingPageTwo:  # Keepa answers page 2 with a 503 that carries its envelope
            def deals(self, selection, page):
                if page == 2:
                    answer = client.deals(selection, page)
                    raise TransientError("Keepa /deal: HTTP 503", status=503,
                                         envelope=dataclasses.replace(answer.envelope, tokens_consumed=0))
                return client.deals(selection, page)

        rt = Runtime(redis_db, store, FailingPageTwo(), rate=4_000, pool=pool)
        Steps(rt).upsert("upsert:1.0:0", {"scan": 1, "page": 0, "pages": 4})
        assert store.deals_stored() == 300 and store.load_watermark().next_page == 2
        (settle,) = rt.broker.settles()
        assert settle["outcome"] == "5xx" and settle["envelope"]["tokensConsumed"] == 3 * 5  # pages 0, 1, 3
        (again,) = rt.broker.requests("upsert")
        assert again["id"] == "upsert:1.2:1" and again["units"] == 4 and again["continues"]
        assert again["payload"] == {"scan": 1, "page": 2, "pages": 4, "attempt": 1, "failures": 1}

        rt.client = client  # Keepa answers again: the scan goes on from page 2, then ends at page 6
        Steps(rt).upsert(again["id"], again["payload"])
        assert store.deals_stored() == 900 and store.load_watermark().next_page == 6
        following = rt.broker.requests("upsert")[-1]
        assert following["id"] == "upsert:1.6:0" and following["payload"]["page"] == 6
        Steps(rt).upsert(following["id"], following["payload"])
        assert store.deals_stored() == 1_000 and store.load_watermark().next_page == 0

    def test_a_grant_that_runs_again_reads_only_what_is_not_stored_and_never_skips_a_page(self, redis_db, store,
                                                                                           feed):
        client, pool = feed
        failing = {"left": 1}

        class Store(type(store)):  # the database fails once, on the fourth page's deals
            def upsert_deals(self, deals, now_ms):
                deals = list(deals)
                if failing["left"] and self.load_watermark().next_page == 3:
                    failing["left"] -= 1
                    raise DatabaseUnavailable("the database went away")
                return super().upsert_deals(deals, now_ms)

        flaky = Store(store.db)
        read = []

        class Counting:
            def deals(self, selection, page):
                read.append(page)
                return client.deals(selection, page)

        rt = Runtime(redis_db, flaky, Counting(), rate=8_000, pool=pool)
        grant = {"scan": 1, "page": 0, "pages": 4}
        with pytest.raises(DatabaseUnavailable):
            Steps(rt).upsert("upsert:1.0:0", grant)
        assert flaky.load_watermark().next_page == 3 and rt.broker.settles() == []
        read.clear()
        Steps(rt).upsert("upsert:1.0:0", grant)  # Dramatiq delivers the same grant again
        assert read == [3] and flaky.load_watermark().next_page == 4
        assert [r["payload"]["page"] for r in rt.broker.requests("upsert")] == [4]

        read.clear()
        Steps(rt).upsert("upsert:1.0:0", grant)  # and once more, after it went on: nothing to do
        assert read == [] and flaky.load_watermark().next_page == 4
        assert [r["payload"]["page"] for r in rt.broker.requests("upsert")] == [4]  # asked once

    def test_pages_are_stored_as_they_arrive_not_after_the_last_one(self, redis_db, store, feed):
        client, pool = feed
        first_stored = threading.Event()

        class Watching(type(store)):
            def upsert_deals(self, deals, now_ms):
                written = super().upsert_deals(deals, now_ms)
                first_stored.set()
                return written

        class Gated:  # page 1 answers only once page 0 is stored (or gives up after 5 s)
            def deals(self, selection, page):
                if page and not first_stored.wait(5):
                    raise TransientError("page 0 was not stored while page 1 was still being read")
                return client.deals(selection, page)

        rt = Runtime(redis_db, Watching(store.db), Gated(), rate=2_000, pool=pool)
        redis_db.set(SCAN_KEY, 1)
        Steps(rt).upsert("upsert:1.0:0", {"scan": 1, "page": 0, "pages": 2})
        (settle,) = rt.broker.settles()
        assert settle["outcome"] == "ok" and store.load_watermark().next_page == 2

    @pytest.mark.parametrize(("began_min_ago", "snapshot", "follows"), [
        (2, {"refill_rate": 100_000, "pending": {"upsert": 0, "commit": 0, "peek": 0}}, True),
        (0.5, {"refill_rate": 100_000, "pending": {"upsert": 0, "commit": 0, "peek": 0}}, False),
        (2, None, False)])  # the plan is not known yet: the scheduler's tick decides
    def test_a_scan_that_ran_past_its_interval_is_followed_at_once(self, redis_db, store, began_min_ago,
                                                                   snapshot, follows):
        server = FakeKeepa(refill_per_minute=100_000, catalogue=Catalogue(3, backlog=100, new_per_minute=0))
        client = KeepaClient("test-key", base_url=server.start(), timeout_s=5)
        try:
            rt = Runtime(redis_db, store, client, rate=1_000)
            if snapshot:
                Ledger(redis_db).write_snapshot(snapshot)
            steps = Steps(rt)
            began = NOW - int(began_min_ago * 60_000)
            redis_db.set(LAST_SCAN_KEY, began)
            assert steps.frontier.start(began, 0)
            steps.upsert(f"upsert:{began}.0:0", {"scan": began, "page": 0, "pages": 1})  # a short page: the end
        finally:
            client.close()
            server.stop()
        assert store.load_watermark().next_page == 0
        asked = [r["payload"] for r in rt.broker.requests("upsert")]
        assert asked == ([{"scan": NOW, "page": 0, "pages": 1}] if follows else [])
        assert (int(redis_db.get(LAST_SCAN_KEY)) == NOW) is follows

    @pytest.mark.parametrize(("upsert_pending", "upsert_in_flight", "over", "asks_again"), [
        (0, 0, False, True), (1, 0, False, False), (0, 1, False, False), (0, 0, True, False)])
    def test_a_scan_whose_ask_was_lost_is_asked_for_again_at_the_tick(self, redis_db, store, upsert_pending,
                                                                      upsert_in_flight, over, asks_again):
        rt = Runtime(redis_db, store, rate=4_000)
        steps = Steps(rt)
        assert steps.frontier.start(7, 0)  # recorded as asked; the process died before sending it
        if over:
            steps.frontier.end(7)
        snapshot = {"pending": {"upsert": upsert_pending, "commit": 0, "peek": 0},
                    "in_flight": {"upsert": upsert_in_flight, "commit": 0, "peek": 0}}
        assert steps.ask_again_if_lost(snapshot) is asks_again
        asked = rt.broker.requests("upsert")
        assert asked == ([{"id": "upsert:7.0:0", "cls": "upsert", "units": 4, "continues": True,
                           "payload": {"scan": 7, "page": 0, "pages": 4}}] if asks_again else [])
        assert steps.ask_again_if_lost(None) is False

    def test_an_old_grant_run_again_neither_ends_nor_forks_the_scan_that_went_on(self, redis_db, store, feed):
        client, pool = feed
        rt = Runtime(redis_db, store, client, rate=4_000, pool=pool)
        steps = Steps(rt)
        assert steps.frontier.start(1, 0)
        steps.upsert("upsert:1.0:0", {"scan": 1, "page": 0, "pages": 4})
        (second,) = rt.broker.requests("upsert")
        steps.upsert(second["id"], second["payload"])  # pages 4-6: the scan ends at the short page
        assert store.load_watermark().next_page == 0 and redis_db.get(SCAN_KEY) is None

        steps = Steps(Runtime(redis_db, store, client, rate=4_000, pool=pool))
        assert steps.frontier.start(2, 0)
        steps.upsert("upsert:2.0:0", {"scan": 2, "page": 0, "pages": 4})
        assert store.load_watermark().next_page == 0  # page 0 reached the mark: scan 2 is over too
        read_before = store.deals_stored()
        steps.rt.broker.sent.clear()
        steps.upsert("upsert:2.0:0", {"scan": 2, "page": 0, "pages": 4})  # a resend after it settled
        assert steps.rt.broker.sent == [] and redis_db.get(SCAN_KEY) is None  # its claim says done
        orphan_claim(redis_db, "upsert:2.0:0")  # as if its worker had died before settling
        steps.upsert("upsert:2.0:0", {"scan": 2, "page": 0, "pages": 4})
        assert steps.rt.broker.settles()[0]["envelope"] is None and redis_db.get(SCAN_KEY) is None
        assert store.deals_stored() == read_before and steps.rt.broker.requests("upsert") == []
        steps.frontier.start(3, 0)
        steps.rt.broker.sent.clear()
        orphan_claim(redis_db, "upsert:1.0:0")
        steps.upsert("upsert:1.0:0", {"scan": 1, "page": 0, "pages": 4})  # scan 1's first grant again
        assert steps.rt.broker.requests("upsert") == [] and redis_db.get(SCAN_KEY) == b"3"
        assert calls_repeated(redis_db) == 0  # every page was stored: none read again

    def test_a_failed_page_and_a_rerun_of_its_grant_leave_one_chain(self, redis_db, store, feed):
        client, pool = feed
        fail = {"page": 2}

        class FailingOnce:
            def deals(self, selection, page):
                if page == fail["page"]:
                    fail["page"] = None
                    raise TransientError("Keepa /deal: HTTP 503", status=503)
                return client.deals(selection, page)

        rt = Runtime(redis_db, store, FailingOnce(), rate=4_000, pool=pool)
        steps = Steps(rt)
        assert steps.frontier.start(1, 0)
        steps.upsert("upsert:1.0:0", {"scan": 1, "page": 0, "pages": 4})
        (retry,) = rt.broker.requests("upsert")
        assert retry["payload"]["page"] == 2
        rt.broker.sent.clear()
        steps.upsert("upsert:1.0:0", {"scan": 1, "page": 0, "pages": 4})  # a copy of the settled grant
        assert rt.broker.sent == [] and calls_repeated(redis_db) == 0      # does nothing
        orphan_claim(redis_db, "upsert:1.0:0")  # a copy whose predecessor died before settling runs again
        steps.upsert("upsert:1.0:0", {"scan": 1, "page": 0, "pages": 4})
        assert store.load_watermark().next_page == 4 and rt.broker.requests("upsert") == []  # stored, asks nothing
        assert calls_repeated(redis_db) == 2  # pages 2 and 3 were read again for this grant
        scraped = generate_latest(build_registry(redis_db, None)).decode()
        assert "\nkeepa_calls_repeated_total 2.0\n" in scraped  # as the metrics process exports it
        assert redis_db.get(SCAN_KEY) == b"1"  # and the scan runs on
        steps.upsert(retry["id"], retry["payload"])  # the retry reads what is left of its pages and goes on
        (following,) = rt.broker.requests("upsert")
        assert following["payload"]["page"] == 6 and store.load_watermark().next_page == 6

    def test_a_grant_of_a_scan_that_another_scan_replaced_reads_nothing(self, redis_db, store, feed):
        client, pool = feed
        read = []

        class Counting:
            def deals(self, selection, page):
                read.append(page)
                return client.deals(selection, page)

        redis_db.set(SCAN_KEY, 2)  # scan 2 runs now (scan 1's key expired and the scheduler began anew)
        rt = Runtime(redis_db, store, Counting(), rate=8_000, pool=pool)
        Steps(rt).upsert("upsert:1.0:0", {"scan": 1, "page": 0, "pages": 8})
        assert read == [] and store.deals_stored() == 0 and redis_db.get(SCAN_KEY) == b"2"
        (settle,) = rt.broker.settles()
        assert settle["envelope"] is None  # no call made: the governor releases the grant

    def test_a_page_with_no_answer_settles_with_no_envelope(self, redis_db, store, feed):
        client, pool = feed

        class TimingOut:
            def deals(self, selection, page):
                if page == 1:
                    raise TransientError("no answer from Keepa /deal within 10 s")
                return client.deals(selection, page)

        rt = Runtime(redis_db, store, TimingOut(), rate=2_000, pool=pool)
        Steps(rt).upsert("upsert:1.0:0", {"scan": 1, "page": 0, "pages": 2})
        (settle,) = rt.broker.settles()
        assert settle["outcome"] == "timeout" and settle["envelope"] is None
        assert store.load_watermark().next_page == 1

    def test_a_scan_near_keepas_last_page_asks_for_no_page_past_it(self, redis_db, store):
        rt = Runtime(redis_db, store, rate=100_000)
        Steps(rt)._ask_pages(1, MAX_PAGES - 3)
        (ask,) = rt.broker.requests("upsert")
        assert ask["payload"]["pages"] == ask["units"] == 3

    @pytest.mark.parametrize("payload", [{"scan": 1, "page": 0, "pages": 0},
                                         {"scan": 1, "page": 0, "pages": batching.MAX_SCAN_PAGES + 1},
                                         {"scan": 1, "page": -1}, {"scan": 1, "page": 0, "pages": "8"}])
    def test_a_malformed_scan_message_is_refused_before_any_call(self, redis_db, store, payload):
        rt = Runtime(redis_db, store, client=None, rate=8_000)
        with pytest.raises(MalformedMessage, match="upsert"):
            Steps(rt).upsert("upsert:1.0:0", payload)


class TestPeekAndCommit:
    @pytest.fixture
    def keepa(self):
        every_deal_viable = Catalogue(3, screen_pass_fraction=1.0, viable_fraction=1.0)
        server = FakeKeepa(refill_per_minute=100_000, catalogue=every_deal_viable)
        url = server.start()
        client = KeepaClient("test-key", base_url=url, timeout_s=5)
        yield server, client
        client.close()
        server.stop()

    def test_the_viable_asins_of_a_peek_are_committed_in_plan_sized_calls(self, redis_db, store, keepa):
        server, client = keepa
        catalogue = server.service.catalogue
        asins = [catalogue.asin(i) for i in range(12)]
        for asin in asins:
            store.upsert_deal(asin, NOW, NOW)
        rt = Runtime(redis_db, store, client, rate=1_000)  # 5 ASINs a commit
        steps = Steps(rt)
        claimed = store.take_candidates(100, NOW)
        redis_db.set(OUTSTANDING_KEY, 1)
        steps.peek("peek:g1:0", asked_peek(redis_db, claimed))
        commits = rt.broker.requests("commit")
        viable = [a for a in claimed if catalogue.is_viable(a)]  # seed 3: every verdict agrees
        assert [c["payload"]["asins"] for c in commits] == batching.split(viable, 5)
        assert [c["units"] for c in commits] == [len(c["payload"]["asins"]) for c in commits]
        assert commits[0]["id"] == f"commit:{viable[0]}x5:0"

        for n, request in enumerate(commits):
            steps.commit(f"commit:g{n}:0", request["payload"])
        assert store.deals_ingested() == store.deals_by_state()["committed"] == len(viable)

    def test_an_asin_keepa_leaves_out_of_a_commit_answer_is_set_aside_with_the_reason(self, redis_db, store, keepa):
        server, client = keepa
        asins = [server.service.catalogue.asin(i) for i in range(3)]
        for asin in asins:
            store.upsert_deal(asin, NOW, NOW)
            store.record_verdict(asin, True, "viable", NOW)

        class Omitting:  # Keepa answers, but without the middle product
            def commit(self, wanted, **options):
                batch = client.commit(wanted, **options)
                return dataclasses.replace(batch, products=tuple(p for p in batch.products if p.asin != asins[1]))

        Steps(Runtime(redis_db, store, Omitting(), rate=1_000)).commit("commit:g:0", {"asins": asins})
        assert store.deals_ingested() == 2
        states = store.deals_by_state()
        assert states["committed"] == 2 and states["rejected"] == 1 and states["viable"] == 0

    def test_a_commit_batch_that_can_never_be_granted_is_split_into_single_calls(self, redis_db, store):
        rt = Runtime(redis_db, store)
        batch = ["B000000001", "B000000002", "B000000003"]
        Steps(rt).rejected("commit:B000000001x3:0", "commit", {"asins": batch}, "too big")
        singles = rt.broker.requests("commit")
        assert [r["payload"]["asins"] for r in singles] == [[a] for a in batch]
        assert redis_db.get(OUTSTANDING_KEY) is None  # commits take no peek slot

    def test_a_split_peek_batch_keeps_one_window_slot_per_single_peek(self, redis_db, store):
        rt = Runtime(redis_db, store)
        redis_db.set(OUTSTANDING_KEY, 1)
        batch = ["B000000001", "B000000002", "B000000003"]
        payload = asked_peek(redis_db, batch)
        Steps(rt).rejected(f"peek:{payload['ticket']}:0", "peek", payload, "too big")
        singles = rt.broker.requests("peek")
        assert [r["payload"]["asins"] for r in singles] == [[a] for a in batch]
        assert int(redis_db.get(OUTSTANDING_KEY)) == 3
        sweep = PeekTickets(redis_db).sweep(NOW, 60_000)  # each single's ticket open, the batch's closed
        assert sweep.asins == set(batch) and sweep.open_tickets == 3 and sweep.dropped == ()
        rt.broker.sent.clear()
        Steps(rt).rejected(f"peek:{payload['ticket']}:0", "peek", payload, "too big")  # delivered again
        assert rt.broker.sent == [] and int(redis_db.get(OUTSTANDING_KEY)) == 3

    def test_a_single_asin_that_can_never_be_granted_is_set_aside_with_the_reason(self, redis_db, store):
        rt = Runtime(redis_db, store)
        (asin,) = add_candidates(store, 1)
        store.take_candidates(1, NOW)
        redis_db.set(OUTSTANDING_KEY, 1)
        payload = asked_peek(redis_db, [asin])
        Steps(rt).rejected(f"peek:{payload['ticket']}:0", "peek", payload, "more than the bucket")
        assert store.deals_by_state()["rejected"] == 1 and int(redis_db.get(OUTSTANDING_KEY)) == 0
        assert rt.broker.requests("peek") == [] and PeekTickets(redis_db).sweep(NOW, 60_000).open_tickets == 0

    def test_a_delayed_peek_whose_ticket_was_dropped_is_not_asked_again(self, redis_db, store):
        rt = Runtime(redis_db, store)
        payload = asked_peek(redis_db, ["B000000001"])
        body = {"id": f"peek:{payload['ticket']}:1", "cls": "peek", "units": 1, "continues": False,
                "payload": {**payload, "attempt": 1, "failures": 1}}
        Steps(rt).ask_again(body)            # its ticket open: to the governor, undelayed
        assert [(m.queue_name, m.args) for m in rt.broker.sent] == [("governor", ("request", body))]
        assert rt.broker.delays == [None]
        PeekTickets(redis_db).close(payload["ticket"])  # the scheduler dropped it meanwhile
        rt.broker.sent.clear()
        Steps(rt).ask_again(body)
        assert rt.broker.sent == []


def test_a_worker_sizes_its_batches_from_the_governors_snapshot(redis_db):
    from actors.app import Runtime as AppRuntime
    from actors.ledger import Ledger

    rt = AppRuntime(settings=None, broker=None, redis=redis_db, store=None, client=None)
    assert (rt.peek_batch(), rt.commit_batch()) == (1, 1)  # nothing known yet: one ASIN a call
    Ledger(redis_db).write_snapshot({"refill_rate": 10_000})
    rt._rate_read_s = None  # as if a second had passed
    assert (rt.peek_batch(), rt.commit_batch()) == (100, 50)


class TestScreen:
    """Stage 0 through the actors' own path: the deal query's ranges, the deal screen, the peek as
    the confirmation. Real Redis and SQLite, the embedded Keepa server over HTTP."""

    @pytest.fixture
    def feed(self):  # 1,000 deals; about 12 % pass the rule on their feed numbers, 80 % of those on fresh stats
        catalogue = Catalogue(5, backlog=1_000, new_per_minute=0)
        server = FakeKeepa(refill_per_minute=100_000, catalogue=catalogue)
        client = KeepaClient("test-key", base_url=server.start(), timeout_s=5)
        pool = ThreadPoolExecutor(batching.MAX_SCAN_PAGES)
        yield client, pool, catalogue
        pool.shutdown()
        client.close()
        server.stop()

    def scan(self, redis_db, store, feed, **switches) -> Runtime:
        client, pool, _ = feed
        rt = Runtime(redis_db, store, client, rate=8_000, pool=pool, **switches)
        redis_db.set(SCAN_KEY, 1)
        Steps(rt).upsert("upsert:1.0:0", {"scan": 1, "page": 0, "pages": 8})
        assert not store.load_watermark().scanning  # the whole feed was read
        return rt

    def states(self, store) -> dict[str, tuple[str, str]]:
        from storage.models import bind_models

        L = bind_models(store.db).LightDeal
        return {asin: (state, reason) for asin, state, reason in L.select(L.asin, L.state, L.reason).tuples()}

    def feed_asins(self, catalogue) -> list[str]:
        return [catalogue.asin(i) for i in range(1_000)]

    def waiting_for_a_peek(self, store) -> int:
        by_state = store.deals_by_state()
        return by_state["new"] + by_state["peeking"]  # the scan's end claimed the first batches already

    def peek_everything(self, rt, steps) -> list[str]:
        """Run every peek asked for, those the peeks themselves ask for too; the ASINs peeked."""
        peeked, done = [], 0
        while done < len(rt.broker.requests("peek")):
            assert done < 10_000, "peeks keep asking for more peeks"
            payload = rt.broker.requests("peek")[done]["payload"]
            steps.peek(f"g{done}", payload)  # a grant id each: a repeated id is a copy, paid once
            peeked += payload["asins"]
            done += 1
        return peeked

    def test_the_deal_query_carries_the_rules_ranges_so_the_feed_holds_only_deals_that_pass(
            self, redis_db, store, feed):
        catalogue = feed[2]
        rt = self.scan(redis_db, store, feed, screen_query=True, screen_deals=False)
        selection = Steps(rt).selection
        assert selection["isRangeEnabled"] is True and selection["priceTypes"] == [1]
        assert selection["dateRange"] == 3 and selection["salesRankRange"] == [0, rt.rule.max_sales_rank]
        assert selection["currentRange"][0] == rt.rule.min_price and selection["deltaPercentRange"][0] == 20
        passing = {a for a in self.feed_asins(catalogue) if catalogue.passes_screen(a)}
        assert set(self.states(store)) == passing and 50 < len(passing) < 300
        assert len(rt.broker.settles()) == 1 and self.waiting_for_a_peek(store) == len(passing)

    def test_a_screened_out_deal_is_stored_with_its_reason_and_never_claimed_for_a_peek(self, redis_db, store, feed):
        catalogue = feed[2]
        rt = self.scan(redis_db, store, feed, screen_query=False, screen_deals=True)
        states = self.states(store)
        assert len(states) == 1_000  # the unfiltered feed, every deal stored
        screened = {a for a, (state, _) in states.items() if state == "screened"}
        assert screened == {a for a in self.feed_asins(catalogue) if not catalogue.passes_screen(a)}
        assert all(states[a][1].startswith("screened: drop ") for a in screened)  # the verdict's own reason
        peeked = self.peek_everything(rt, Steps(rt))
        assert sorted(peeked) == sorted(set(states) - screened)  # every other deal, and none screened out
        assert store.deals_screened_out() == len(screened) and self.waiting_for_a_peek(store) == 0

    def test_a_deal_passing_the_screen_and_failing_the_peek_is_rejected_and_never_committed(
            self, redis_db, store, feed):
        catalogue = feed[2]
        rt = self.scan(redis_db, store, feed, screen_query=True, screen_deals=True)
        assert sorted(self.peek_everything(rt, Steps(rt))) == sorted(self.states(store))
        states = self.states(store)
        stale = [a for a in states if not catalogue.is_viable(a)]  # passed on the feed, failed on fresh stats
        assert stale and all(states[a][0] == "rejected" and "below the" in states[a][1] for a in stale)
        committing = [a for r in rt.broker.requests("commit") for a in r["payload"]["asins"]]
        assert sorted(committing) == sorted(a for a in states if catalogue.is_viable(a))
        assert not set(committing) & set(stale)

    def test_a_deal_the_feed_rules_out_stays_screened_even_if_fresh_stats_would_pass(self, redis_db, store, feed):
        catalogue = feed[2]
        self.scan(redis_db, store, feed, screen_query=False, screen_deals=True)
        missed = [a for a in self.feed_asins(catalogue) if catalogue.is_viable(a) and not catalogue.passes_screen(a)]
        states = self.states(store)
        assert missed and all(states[a][0] == "screened" for a in missed)  # the screen's price, rarely paid

    def test_with_both_switches_off_every_feed_deal_waits_for_a_peek_as_before(self, redis_db, store, feed):
        rt = self.scan(redis_db, store, feed, screen_query=False, screen_deals=False)
        assert Steps(rt).selection == {"priceTypes": [1], "dateRange": 0, "sortType": 1}
        assert store.deals_stored() == self.waiting_for_a_peek(store) == 1_000 and store.deals_screened_out() == 0
