"""The ``le`` label text of histogram buckets (metrics/bucket_label.py), written as Prometheus
clients write it so a bucket's series keeps one identity across scrapes and releases."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from governor.snapshot import WAIT_BUCKETS_S
from metrics.bucket_label import bucket_bound_label


def test_the_governor_wait_buckets_read_as_prometheus_clients_write_them():
    assert [bucket_bound_label(le) for le in WAIT_BUCKETS_S] == [
        "0.1", "1.0", "5.0", "15.0", "60.0", "300.0", "900.0", "1800.0", "3600.0", "7200.0", "+Inf"]


@pytest.mark.parametrize(("bound", "label"), [
    (0.5, "0.5"), (1, "1.0"), (2.5, "2.5"), (0.0, "0.0"), (999_999, "999999.0"), (0.0001, "0.0001"),
    (1e6, "1e+06"), (1.5e7, "1.5e+07"), (123_456_789, "1.23456789e+08"), (1e16, "1e+16"),
    (1e-5, "1e-05"), (2.5e-7, "2.5e-07"), (float("inf"), "+Inf"), (float("-inf"), "-Inf"), (-2.5, "-2.5"),
])
def test_finite_bounds_take_a_fraction_and_switch_to_an_exponent_where_go_does(bound, label):
    assert bucket_bound_label(bound) == label


@given(st.floats(min_value=1e-300, max_value=1e300, allow_nan=False, allow_infinity=False))
def test_every_finite_label_reads_back_as_the_same_bound(bound):
    label = bucket_bound_label(bound)
    assert float(label) == bound
    assert "." in label or "e" in label  # never a bare integer like "1", which would be another series


def test_nan_is_refused_as_a_bucket_bound():
    with pytest.raises(ValueError, match="NaN"):
        bucket_bound_label(math.nan)
