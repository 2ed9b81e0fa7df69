"""Keepa's side of the wire: the token model (pure), and later the HTTP client and embedded server.

Entry points: :class:`keepa_api.tokens.TokenBucket` (Keepa's token rules) and
:class:`keepa_api.tokens.Envelope` (the token fields every Keepa response carries).
"""
