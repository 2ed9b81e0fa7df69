"""keepa-deals: ingest Amazon deals from the Keepa API on any token plan.

Entry points: the ``keepa-deals`` console script (:mod:`keepa_deals.cli`), the governor's pure
policy (:mod:`governor.policy`), the pipeline steps (:mod:`pipeline`), the simulator
(:mod:`simulator`), and Keepa's token model (:mod:`keepa_api.tokens`).
"""

__version__ = "0.1.0"
