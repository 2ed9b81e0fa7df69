"""The text of a histogram bucket's ``le`` label, written the way Prometheus clients write it.

Prometheus reads ``le`` as a float, but the label value is part of the series' identity: a bound
written ``1`` in one scrape and ``1.0`` in the next would start a new series. So every bound is
written one way, the way the Prometheus client libraries do and Prometheus' text exposition format
documents for ``+Inf`` ("Exposition formats", prometheus.io/docs/instrumenting/exposition_formats):

- the positive infinity of the last bucket is ``+Inf`` (``-Inf`` for its negative);
- a finite bound is its shortest round-trip decimal, always with a fraction (``0.5``, ``1.0``,
  ``3600.0``), switching to an exponent as Go's ``strconv.FormatFloat(v, 'g', -1, 64)`` does, from
  a million up (``1e+06``, ``1.5e+07``) and under 0.0001 (``1e-05``).
"""

from __future__ import annotations

import math
from decimal import Decimal

GO_EXPONENT_FROM = 6    # Go's shortest %g writes an exponent from 10**6 up
GO_EXPONENT_BELOW = -4  # ... and below 10**-4


def bucket_bound_label(bound: float) -> str:
    """``bound`` as an ``le`` label value; ValueError for NaN, which is no bucket bound."""
    value = float(bound)
    if math.isnan(value):
        raise ValueError("a histogram bucket bound cannot be NaN")
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    shortest = repr(value)  # Python's repr is the shortest text that reads back as the same float
    if value == 0:
        return shortest
    sign, digits, exponent = Decimal(shortest).normalize().as_tuple()
    leading = len(digits) + exponent - 1  # the power of ten of the first significant digit
    if GO_EXPONENT_BELOW <= leading < GO_EXPONENT_FROM:
        return shortest  # repr writes exponents only under 1e-4 and from 1e16: none in this range
    mantissa = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if len(digits) > 1 else "")
    return f"{'-' if sign else ''}{mantissa}e{'+' if leading >= 0 else '-'}{abs(leading):02d}"

