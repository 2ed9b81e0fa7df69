"""Issue 3 figures: decoder speed and the embedded Keepa server's throughput and token accounting.

``python -m bench wire``. Decoding runs in this process on a full 150-deal page from the synthetic
catalogue. The server runs as its own process (``keepa-deals fake-keepa``) so its threads do not
share a GIL with the 8 client threads; each client keeps one session (connection reuse). After the
load, the server's books (``/_admin/books``) must equal the sum of ``tokensConsumed`` the clients
were told.
"""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import time

import requests

from keepa_api.catalogue import Catalogue
from keepa_api.records import decode_deals, load_body

CLIENTS = 8
LOAD_SECONDS = 3.0
BIG = 10**9


def _rate(fn, seconds: float) -> float:
    fn()
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn()
        done += 1
    return done / elapsed


def _read_every_array(deals) -> None:
    for deal in deals:
        deal.current, deal.delta, deal.delta_percent, deal.avg, deal.image  # noqa: B018


def decode_figures(seconds: float = 2.0) -> dict:
    """Pages/s: records from parsed JSON; that plus reading every array (the checks a deal defers to its
    first read, see keepa_api.deal); the client's parse alone (orjson) and the standard library's beside
    it; the parse plus records."""
    catalogue = Catalogue(1)
    body = {"deals": {"dr": catalogue.feed_page(0, 0)}, "timestamp": 0, "tokensLeft": 1, "refillIn": 0,
            "refillRate": 5}
    raw = json.dumps(body).encode()
    assert len(decode_deals(body)) == 150
    return {
        "page_kib": len(raw) / 1024,
        "decode": _rate(lambda: decode_deals(body), seconds),
        "decode_and_read": _rate(lambda: _read_every_array(decode_deals(body)), seconds),
        "parse": _rate(lambda: load_body(raw), seconds),
        "parse_stdlib": _rate(lambda: json.loads(raw), seconds),
        "parse_and_decode": _rate(lambda: decode_deals(load_body(raw)), seconds),
    }


def _client(url: str, path: str, params: dict, stop_at: float) -> tuple[int, int, int]:
    ok = told = other = 0
    with requests.Session() as session:
        while time.time() < stop_at:
            response = session.get(url + path, params=params, timeout=10)
            if response.status_code == 200:
                ok += 1
                told += response.json()["tokensConsumed"]
            else:
                other += 1
    return ok, told, other


def _load(url: str, path: str, params: dict, seconds: float) -> tuple[int, int, int]:
    """(requests answered 200, sum of tokensConsumed told, other statuses) from CLIENTS client
    processes: separate processes, so the clients' own Python does not share one GIL and cap the
    figure below what the server can do."""
    stop_at = time.time() + seconds
    with multiprocessing.get_context("spawn").Pool(CLIENTS) as pool:
        results = pool.starmap(_client, [(url, path, params, stop_at)] * CLIENTS)
    return tuple(sum(column) for column in zip(*results, strict=True))


def server_figures(seconds: float = LOAD_SECONDS) -> list[tuple[str, float, int, int, int]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "keepa_deals.cli", "fake-keepa", "--port", "0", "--start-tokens", str(BIG),
         "--max-tokens", str(BIG)], stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        asins = ",".join(Catalogue(1).asin(i) for i in range(10))
        rows, told_total = [], 0
        for name, path, params in [
            ("/product peek, 10 ASINs", "/product", {"key": "k", "asin": asins, "history": 0, "stats": 90}),
            ("/token", "/token", {"key": "k"}),
            ("/deal page (150 deals)", "/deal", {"key": "k", "selection": json.dumps({"priceTypes": [1]})}),
        ]:
            start = time.perf_counter()
            ok, told, other = _load(url, path, params, seconds)
            elapsed = time.perf_counter() - start
            told_total += told
            rows.append((name, ok / elapsed, ok, told, other))
        books = requests.get(url + "/_admin/books", timeout=10).json()
        rows.append((books["charged_to_callers_total"], books["spent_total"], told_total,
                     BIG - books["balance"]))
        return rows
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> None:
    d = decode_figures()
    print(f"decode a full 150-deal page ({d['page_kib']:.0f} KiB JSON, 36 price types)")
    print(f"  {'records from parsed JSON':<34} {d['decode']:>9,.0f} pages/s   (issue 3: >= 2,000)")
    print(f"  {'  + read every price array':<34} {d['decode_and_read']:>9,.0f} pages/s")
    print(f"  {'parse alone (load_body: orjson)':<34} {d['parse']:>9,.0f} pages/s")
    print(f"  {'  json.loads (stdlib), same page':<34} {d['parse_stdlib']:>9,.0f} pages/s   "
          f"(orjson {d['parse'] / d['parse_stdlib']:.1f}x)")
    print(f"  {'parse + records':<34} {d['parse_and_decode']:>9,.0f} pages/s")
    rows = server_figures()
    books = rows.pop()
    print(f"embedded server on loopback, {CLIENTS} concurrent clients, {LOAD_SECONDS:g} s each")
    print(f"  {'call':<34} {'req/s':>9} {'answered':>9} {'tokens told':>12} {'non-200':>8}")
    for name, rate, ok, told, other in rows:
        print(f"  {name:<34} {rate:>9,.0f} {ok:>9,} {told:>12,} {other:>8}")
    charged, spent, told, drop = books
    exact = charged == spent == told == drop
    print(f"token accounting: charged {charged:,}, bucket spent {spent:,}, balance drop {drop:,}, "
          f"sum of tokensConsumed {told:,} -> {'exact' if exact else 'MISMATCH'}")


if __name__ == "__main__":
    main()
