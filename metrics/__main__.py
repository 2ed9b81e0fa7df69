"""``python -m metrics``: the ``metrics`` Procfile line."""

from __future__ import annotations

import logging
import sys

from keepa_base.errors import ConfigError
from keepa_deals.settings import load_settings
from metrics.exporter import serve


def main() -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"keepa-deals metrics: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
