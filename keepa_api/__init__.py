"""Keepa's side of the wire.

Entry points: :class:`keepa_api.tokens.TokenBucket` (Keepa's token rules, pure) and
:class:`keepa_api.tokens.Envelope` (the token fields every response carries);
:class:`keepa_api.client.KeepaClient` (deal pages, peek, commit, token; typed records from
:mod:`keepa_api.records` and :mod:`keepa_api.deal`, field checks in :mod:`keepa_api.fields`);
:class:`keepa_api.server.FakeKeepa` (the embedded Keepa server, built on :mod:`keepa_api.service`
and the synthetic :mod:`keepa_api.catalogue`).
"""
