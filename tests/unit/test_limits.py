"""The quota rules of gateway.limits (the SQL copy of percentage is held to it in
tests/integration/test_tenants_api.py)."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from gateway import limits


def test_effective_tenant_limit() -> None:
    assert limits.effective_tenant_limit(True, 5, 100) == 5
    assert limits.effective_tenant_limit(True, None, 100) is None  # PATCHed to unlimited
    assert limits.effective_tenant_limit(False, 5, 100) == 100  # never PATCHed: the default
    assert limits.effective_tenant_limit(None, None, None) is None  # no tenant row yet


def test_max_file_size() -> None:
    assert limits.max_file_size(1000, None) == 1000
    assert limits.max_file_size(1000, 10) == 10
    assert limits.max_file_size(1000, 10_000) == 1000


def test_available_and_over_limit() -> None:
    assert limits.available(None, 10, 5) is None
    assert limits.available(100, 10, 5) == 85
    assert limits.available(100, 90, 50) == 0  # never negative
    assert not limits.over_limit(None, 10**12)
    assert not limits.over_limit(100, 100)
    assert limits.over_limit(100, 101)


def test_percentage_edges() -> None:
    assert limits.percentage(5, None) is None
    assert limits.percentage(0, 0) == 0.0
    assert limits.percentage(1, 0) == 100.0
    assert limits.percentage(1, 32) == 3.13  # 3.125 rounds half up (round() gives 3.12)
    assert limits.percentage(2, 3) == 66.67
    assert limits.percentage(7, 5) == 140.0


@given(st.integers(0, 2**62), st.integers(1, 2**62))
def test_percentage_is_the_exact_value_rounded_half_up(used: int, limit: int) -> None:
    used = min(used, limit * 10_000)  # up to 1,000,000 %: a float holds its hundredths
    exact = Fraction(used * 100, limit)
    got = limits.percentage(used, limit)
    assert got is not None
    hundredths = round(got * 100)
    assert (
        Fraction(hundredths, 100) - Fraction(1, 200)
        <= exact
        < Fraction(hundredths, 100) + Fraction(1, 200)
    )
