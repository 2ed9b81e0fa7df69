"""How many ASINs go into one ``/product`` call, and when a part-filled peek is worth sending.

One rule set for the actors (:mod:`actors.scan`, :mod:`actors.backfill`) and the simulator
(:mod:`simulator.run`), so the two stay the same model. ``rate`` is Keepa's refill in tokens a minute.

- A peek costs about 1 token an ASIN: one ASIN a call per 100 tokens a minute (1 on every plan below
  200/min, where the old system's failures live), at most Keepa's 100 a call.
- A commit costs 12-20 tokens an ASIN (the governor reserves at most 32): one ASIN a call per 200
  tokens a minute, at most 100. A batch then reserves at most 32 x rate / 200, a sixth of one
  minute's refill (a tenth at the usual 20-token estimate): one commit never holds the bucket for
  long, and it stays far below the plan's cap (60 x rate), so the governor never rejects it as
  impossible. Below 400 tokens a minute a commit is one ASIN, as before.
- A feed-scan call reads ``scan_pages`` pages (5 tokens each): one below 2,000 tokens a minute, where
  every scenario and every failure of the old system lives, then one per 1,000 tokens a minute, at
  most 16. The pages of one grant are read at once and stored strictly in page order as they come;
  pages after the one that ends the scan are paid for and dropped, at most 15 x 5 = 75 tokens a
  scan, under half a percent of one minute's refill on the plans that read that many.
- Candidates are claimed for a peek in full batches; a part-filled batch goes out only when no other
  peek is outstanding. While peeks are outstanding their answers bring more candidates (a feed page
  brings up to 150), so waiting fills the next call; when none is, nothing else would ever fill it,
  so a slow plan never holds a candidate back for a batch.
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_ASINS_PER_CALL = 100   # Keepa's limit per /product call
MAX_SCAN_PAGES = 16


def peek_batch(rate: float) -> int:
    """ASINs per peek call on a plan of ``rate`` tokens a minute (0 or unknown: 1)."""
    return max(1, min(MAX_ASINS_PER_CALL, int(rate) // 100))


def commit_batch(rate: float) -> int:
    """ASINs per commit call on a plan of ``rate`` tokens a minute (0 or unknown: 1)."""
    return max(1, min(MAX_ASINS_PER_CALL, int(rate) // 200))


def scan_pages(rate: float) -> int:
    """Feed pages read under one grant on a plan of ``rate`` tokens a minute (0 or unknown: 1)."""
    return max(1, min(MAX_SCAN_PAGES, int(rate) // 1000))


def peek_claim_minimum(batch: int, others_outstanding: int) -> int:
    """The fewest candidates worth claiming for a peek now: a full ``batch`` while other peeks are
    outstanding (asked for and not yet answered), any number (1) when none is."""
    return max(1, batch) if others_outstanding > 0 else 1


def split(items: Sequence, size: int) -> list[list]:
    """``items`` in order, cut into calls of at most ``size`` (at least 1)."""
    size = max(1, size)
    return [list(items[i:i + size]) for i in range(0, len(items), size)]
