"""The project's bottom layer: what every other package shares and nothing of the project's own.

    errors.py      the one error tree (every error keepa-deals raises on purpose)
    domains.py     the Amazon locales Keepa serves, by Keepa's domain id
    calls.py       the names of Keepa call endpoints and outcomes, as messages and metrics spell them
    redis_keys.py  the Redis keys one process writes and another reads

Its modules import only the standard library (``tests/test_layers.py`` checks), so the wire
(``keepa_api``), storage and the governor's policy can import them without importing what stands
above them.
"""
