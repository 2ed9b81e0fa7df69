"""``keepa-deals replay-set-aside``: list the products set aside after malformed answers and put them
back in line (state ``new``, their failure count cleared), all of them or the ASINs named.

A product is set aside when Keepa answered it malformed three times (once in its batch, then twice
alone): no more tokens are spent on it until an operator, having read the reasons, replays it here.
"""

from __future__ import annotations

from keepa_base.errors import ConfigError
from keepa_deals.settings import Settings


def main(settings: Settings, asins: list[str], list_only: bool, store=None) -> int:
    from storage.store import open_store

    store = store or open_store(settings.database_url)
    items = store.set_aside_products()
    known = {item["asin"] for item in items}
    unknown = [asin for asin in asins if asin not in known]
    if unknown:
        raise ConfigError(f"not set aside: {', '.join(unknown[:10])} (see `keepa-deals replay-set-aside --list`)")
    for item in items:
        if not asins or item["asin"] in asins:
            print(f"{item['asin']}  {item['stage']:6}  {item['reason']}")
    if list_only:
        print(f"{len(items)} products set aside")
        return 0
    replayed = store.replay_set_aside(asins or None)
    print(f"{len(replayed)} products back in line: the next peeks ask Keepa for them again")
    return 0
