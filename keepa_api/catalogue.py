"""A deterministic synthetic Keepa catalogue: deals and products that look like Keepa's.

Everything derives from ``seed``: the same seed gives byte-identical deals and products on every run
and machine (per-ASIN ``random.Random(f"{seed}:{asin}")``; string seeds hash with SHA-512).

The feed: ``backlog`` deals are already there at minute 0 (spread over the 12 hours before), then
``new_per_minute`` appear each Keepa minute; the feed lists the newest first. A selection with range
options (:mod:`keepa_api.deal_query`) sees only the deals whose feed numbers pass them, paged the
same way.

A feed deal's numbers (``current``, ``avg``) are the product's as Keepa last noticed the deal; the
product's ``stats`` are fresh, and the two can differ, as real ones do (a price goes back up after
the deal was listed, or drops further). ``screen_pass_fraction`` of all feed deals have feed numbers
that pass the default viability rule (:mod:`pipeline.screen`); ``viable_fraction`` of those are
viable on fresh stats too, and ``screen_miss_fraction`` of the others are viable on fresh stats
although their feed numbers are not. The defaults, 0.12 x 0.8 + 0.88 x 0.0045, make 10.0 % of all
feed deals viable, as before the screen; ``screen_pass_fraction=1.0`` gives every deal passing feed
numbers and makes ``viable_fraction`` the share of all deals that are viable (the simulator's
scenario semantics).

A viable ASIN (fresh stats): its NEW price (type 1) is 25-50 % under its 90-day average (and at
least 5.99), its sales rank is under 50,000 with at least 15 drops in 30 days, and it has at least 5
offers. Every other ASIN is at most about 15 % under average, has at most 8 rank drops in 30 days,
or both. Feed numbers that pass look like a viable ASIN's; feed numbers that fail, like another's.
:meth:`Catalogue.is_viable` and :meth:`Catalogue.passes_screen` answer for tests and benchmarks.
"""

from __future__ import annotations

import bisect
import math
import random
import threading
from functools import lru_cache

from keepa_api.deal_query import DealFilter, delta_of

PRICE_TYPES = 36                  # Keepa's csv types 0 AMAZON .. 35 COUNT_NEW_FBM
AMAZON, NEW, USED, SALES, LISTPRICE, NEW_FBA = 0, 1, 2, 3, 4, 10
COUNT_NEW, COUNT_USED, RATING, COUNT_REVIEWS, BUY_BOX_SHIPPING = 11, 12, 16, 17, 18
DATE_RANGES = (1, 7, 30, 90)      # deal avg/delta first dimension: day, week, month, 90 days, in days
START_KEEPA_MINUTE = 7_364_160    # 2025-01-01 00:00 UTC
BACKLOG_SPAN_MINUTES = 720        # Keepa lists products updated in the last 12 hours
_STEADY = frozenset({SALES, RATING, COUNT_REVIEWS, COUNT_NEW, COUNT_USED})
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ROOTS = (172282, 1055398, 3760911, 165793011, 3375251, 283155, 2619525011, 16310101)
_WORDS = ("Stainless", "Wireless", "Organic", "Compact", "Deluxe", "Portable", "Smart", "Classic")
_THINGS = ("Kettle", "Headphones", "Tea Sampler", "Desk Lamp", "Yoga Mat", "Blender", "Backpack")


def _base36(number: int, width: int) -> str:
    out = []
    for _ in range(width):
        number, digit = divmod(number, 36)
        out.append(_ALPHABET[digit])
    return "".join(reversed(out))


class Catalogue:
    def __init__(self, seed: int = 1, *, start_minute: int = START_KEEPA_MINUTE, backlog: int = 300,
                 new_per_minute: float = 1.0, screen_pass_fraction: float = 0.12, viable_fraction: float = 0.8,
                 screen_miss_fraction: float = 0.0045, lumped: bool = False):
        if backlog < 0 or new_per_minute < 0:
            raise ValueError("backlog and new_per_minute must be non-negative")
        for name, share in (("screen_pass_fraction", screen_pass_fraction), ("viable_fraction", viable_fraction),
                            ("screen_miss_fraction", screen_miss_fraction)):
            if not 0 <= share <= 1:
                raise ValueError(f"{name} is a share between 0 and 1, got {share!r}")
        if lumped and new_per_minute != int(new_per_minute):
            raise ValueError("lumped arrivals need a whole new_per_minute")
        self.seed = seed
        self.start_minute = start_minute
        self.backlog = backlog
        self.new_per_minute = new_per_minute
        self.screen_pass_fraction = screen_pass_fraction
        self.viable_fraction = viable_fraction
        self.screen_miss_fraction = screen_miss_fraction
        self.lumped = lumped
        self._base = lru_cache(maxsize=50_000)(self._make_base)
        self.deal = lru_cache(maxsize=50_000)(self._make_deal)
        self._matching: dict[DealFilter, tuple[int, list[int]]] = {}  # filter -> (indexes tested, matches)
        self._matching_lock = threading.Lock()

    # -- the feed -------------------------------------------------------------------------------
    def asin(self, index: int) -> str:
        """A distinct, valid-looking ASIN per feed index (an odd multiplier is a bijection mod 36^8)."""
        return "B0" + _base36((index * 1_000_003 + self.seed * 7_919) % 36**8, 8)

    def appears_at(self, index: int) -> float:
        """Keepa minute (relative to ``start_minute``) at which deal ``index`` enters the feed."""
        if index < self.backlog:
            return -(self.backlog - index) * BACKLOG_SPAN_MINUTES / self.backlog
        if not self.new_per_minute:
            return float("inf")
        if self.lumped:
            return float((index - self.backlog) // int(self.new_per_minute) + 1)
        return (index - self.backlog + 1) / self.new_per_minute

    def feed_size(self, minutes: float) -> int:
        """Deals in the feed ``minutes`` after the start: new ones arrive evenly, or with ``lumped``
        all of a minute's at its start (a feed that stands still between minutes)."""
        arrived = math.floor(minutes) if self.lumped else minutes
        return self.backlog + max(0, int(arrived * self.new_per_minute))

    def feed_page(self, minutes: float, page: int, per_page: int = 150, query: DealFilter | None = None) -> list[dict]:
        """Page ``page`` of the feed as seen ``minutes`` after the start, newest first; with ``query``,
        of the deals whose feed numbers pass its ranges."""
        top = self.feed_size(minutes)
        if query is None:
            hi = top - page * per_page
            return [self.deal(i) for i in range(hi - 1, max(hi - per_page, 0) - 1, -1)] if hi > 0 else []
        matches = self._matches(query, top)
        hi = bisect.bisect_left(matches, top) - page * per_page
        return [self.deal(matches[i]) for i in range(hi - 1, max(hi - per_page, 0) - 1, -1)] if hi > 0 else []

    def _matches(self, query: DealFilter, top: int) -> list[int]:
        """The feed indexes below ``top`` whose deals pass ``query``, ascending (kept per filter and
        extended as the feed grows, so each deal is tested once)."""
        with self._matching_lock:
            tested, matches = self._matching.get(query, (0, []))
            for index in range(tested, top):
                current, avg = self.feed_numbers(index)
                if query.matches(current, avg):
                    matches.append(index)
            self._matching[query] = (max(tested, top), matches)
            return matches

    def feed_numbers(self, index: int) -> tuple[list[int], list[list[int]]]:
        """``current`` and ``avg`` (``[date range][price type]``) of feed deal ``index``."""
        base = self._base(self.asin(index))
        return base["feed_current"], [base["avg"][days] for days in DATE_RANGES]

    # -- per ASIN -------------------------------------------------------------------------------
    def is_viable(self, asin: str) -> bool:
        """Viable on fresh stats: a peek's verdict passes."""
        return self._base(asin)["viable"]

    def passes_screen(self, asin: str) -> bool:
        """The deal's feed numbers pass the default viability rule."""
        return self._base(asin)["passes"]

    def offers_found(self, asin: str) -> int:
        return self._base(asin)["offers"]

    def _make_base(self, asin: str) -> dict:
        rng = random.Random(f"{self.seed}:{asin}")
        draw, passing = rng.random(), self.screen_pass_fraction
        passes = draw < passing
        if passes:
            viable = draw / passing < self.viable_fraction
        else:
            viable = (draw - passing) / (1 - passing) < self.screen_miss_fraction
        list_price = rng.randrange(1_999, 19_999)
        avg90 = int(list_price * rng.uniform(0.6, 0.95))
        new = int(avg90 * (rng.uniform(0.5, 0.75) if viable else rng.uniform(0.85, 1.1)))
        rank = rng.randrange(500, 50_000) if viable else rng.randrange(20_000, 2_000_000)
        current = [-1] * PRICE_TYPES
        current[NEW] = current[NEW_FBA] = new
        current[LISTPRICE] = list_price
        current[SALES] = rank
        current[AMAZON] = int(new * rng.uniform(0.98, 1.08)) if rng.random() < 0.4 else -1
        current[USED] = int(new * rng.uniform(0.6, 0.9)) if rng.random() < 0.6 else -1
        current[BUY_BOX_SHIPPING] = new
        offers = rng.randrange(5, 40) if viable else rng.randrange(0, 25)
        current[COUNT_NEW], current[COUNT_USED] = offers, rng.randrange(0, 6)
        current[RATING], current[COUNT_REVIEWS] = rng.randrange(30, 51), rng.randrange(0, 20_000)
        avg = {}
        drifting = [t for t, v in enumerate(current) if v >= 0 and t not in _STEADY]
        for days in (*DATE_RANGES, 180, 365):
            drift = 1.0 if days < 7 else avg90 / max(new, 1) * (0.97 + 0.03 * days / 365)
            row = list(current)
            for t in drifting:  # in type order: the same draws as a comprehension over every type
                row[t] = int(current[t] * drift * rng.uniform(0.97, 1.03))
            avg[days] = row
        image = "".join(rng.choice(_ALPHABET + "abcdefghijklmnopqrstuvwxyz") for _ in range(11)) + ".jpg"
        return {
            "viable": viable, "passes": passes, "offers": offers, "current": current, "avg": avg,
            "feed_current": current if passes == viable else self._feed_current(asin, current, avg90, passes),
            "drops30": rng.randrange(15, 60) if viable else rng.randrange(0, 9),
            "root": rng.choice(_ROOTS), "title": f"{rng.choice(_WORDS)} {rng.choice(_THINGS)} "
            f"{rng.choice(_ALPHABET)}{rng.randrange(100, 999)}", "image": image,
            "updated": self.start_minute - rng.randrange(0, BACKLOG_SPAN_MINUTES),
        }

    def _feed_current(self, asin: str, fresh: list[int], avg90: int, passes: bool) -> list[int]:
        """The deal's ``current`` when Keepa noticed it, for an ASIN whose fresh stats tell the other
        story: the NEW price (and the types that follow it) and the sales rank as they were then."""
        rng = random.Random(f"{self.seed}:{asin}:feed")
        current = list(fresh)
        new = int(avg90 * (rng.uniform(0.5, 0.75) if passes else rng.uniform(0.85, 1.1)))
        current[NEW] = current[NEW_FBA] = current[BUY_BOX_SHIPPING] = new
        if passes:
            current[SALES] = rng.randrange(500, 50_000)
        return current

    def _make_deal(self, index: int) -> dict:
        asin = self.asin(index)
        base = self._base(asin)
        current = base["feed_current"]
        seen = self.start_minute + int(self.appears_at(index))
        avg = [base["avg"][days] for days in DATE_RANGES]
        priced = [t for t, c in enumerate(current) if c >= 0]  # an average is -1 where current is
        delta, percent = [], []
        for row in avg:
            drow, prow = [0] * PRICE_TYPES, [0] * PRICE_TYPES
            for t in priced:
                drow[t], prow[t] = delta_of(current[t], row[t])
            delta.append(drow)
            percent.append(prow)
        return {
            "asin": asin, "title": base["title"], "rootCat": base["root"],
            "categories": [base["root"], base["root"] * 10 + index % 7],
            "current": list(current), "delta": delta, "deltaPercent": percent, "avg": avg,
            "lastUpdate": seen, "creationDate": seen - 3 - index % 50,
            "image": [ord(c) for c in base["image"]],
        }

    def product(self, asin: str, *, stats_days: int = 0, history: bool = True, offers: int = 0,
                stock: bool = False) -> dict:
        """The product object Keepa would return; ``offers`` returned = min(found, offers)."""
        base = self._base(asin)
        rng = random.Random(f"{self.seed}:{asin}:detail") if history or offers else None
        current, updated = base["current"], base["updated"]
        out = {"asin": asin, "title": base["title"], "rootCategory": base["root"],
               "lastUpdate": updated, "csv": None, "stats": None}
        if history:
            out["csv"] = [self._series(rng, t, current[t], updated) if current[t] >= 0
                          and t in (AMAZON, NEW, USED, SALES, BUY_BOX_SHIPPING) else None
                          for t in range(PRICE_TYPES)]
        if stats_days:
            drops = base["drops30"]
            out["stats"] = {
                "current": list(current), "avg": base["avg"][90 if stats_days >= 90 else 30],
                "avg30": base["avg"][30], "avg90": base["avg"][90], "avg180": base["avg"][180],
                "avg365": base["avg"][365],
                "min": [[updated - 40_000, int(v * 0.8)] if v >= 0 else None for v in current],
                "max": [[updated - 90_000, int(v * 1.3)] if v >= 0 else None for v in current],
                "salesRankDrops30": drops, "salesRankDrops90": drops * 3,
                "salesRankDrops180": drops * 6, "salesRankDrops365": drops * 12,
            }
        if offers:
            out["offers"] = [self._offer(rng, asin, i, current[NEW], updated, stock)
                             for i in range(min(base["offers"], offers))]
        return out

    @staticmethod
    def _series(rng: random.Random, price_type: int, value: int, end: int) -> list[int]:
        flat, minute = [], end - 90 * 1440
        chance, uniform, randrange = rng.random, rng.uniform, rng.randrange
        gaps, shipping = price_type != SALES, price_type == BUY_BOX_SHIPPING
        while minute < end:
            point = -1 if gaps and chance() < 0.08 else max(1, int(value * uniform(0.85, 1.2)))
            flat += [minute, point, 0] if shipping else [minute, point]
            minute += randrange(600, 9_000)
        flat += [end, value, 0] if price_type == BUY_BOX_SHIPPING else [end, value]
        return flat

    @staticmethod
    def _offer(rng: random.Random, asin: str, i: int, price: int, end: int, stock: bool) -> dict:
        amazon = i == 0 and rng.random() < 0.3
        offer = {
            "offerId": i + 1,
            "sellerId": "ATVPDKIKX0DER" if amazon else "A" + _base36(rng.getrandbits(60), 13),
            "condition": 1 if rng.random() < 0.85 else rng.randrange(2, 6), "isPrime": rng.random() < 0.6,
            "isFBA": amazon or rng.random() < 0.5, "isAmazon": amazon, "isShippable": True,
            "lastSeen": end - rng.randrange(0, 300),
            "offerCSV": [end - 2_000, int(price * rng.uniform(1.0, 1.3)), rng.choice((0, 0, 499, 599)),
                         end - rng.randrange(0, 300), int(price * rng.uniform(1.0, 1.2)), 0],
        }
        if stock:
            offer["stockCSV"] = [end - 100, rng.randrange(1, 200)]
        return offer
