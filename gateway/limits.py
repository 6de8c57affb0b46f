"""The quota rules that need no I/O, written once: effective limits, the per-file
maximum, what is available, whether a tenant is over its limit, the percentage used.

The same rules are applied in SQL where Postgres filters or orders by them
(``list_tenants`` in ``gateway/db/queries.sql``); tests/unit/test_limits.py holds the
two to each other.
"""

from __future__ import annotations


def effective_tenant_limit(
    limit_set: bool | None, tenant_limit: int | None, default_limit: int | None
) -> int | None:
    """A tenant's own limit once one was PATCHed for it (``None`` there = unlimited),
    else its project's default tenant limit (``None`` = unlimited)."""
    return tenant_limit if limit_set else default_limit


def max_file_size(gateway_max: int, project_max: int | None) -> int:
    """The per-file maximum: the smaller of the gateway's and the project's."""
    return gateway_max if project_max is None else min(gateway_max, project_max)


def available(limit: int | None, used: int, reserved: int) -> int | None:
    """Bytes that may still be admitted (``None`` when unlimited; never negative)."""
    return None if limit is None else max(limit - used - reserved, 0)


def over_limit(limit: int | None, used: int) -> bool:
    return limit is not None and used > limit


def percentage(used: int, limit: int | None) -> float | None:
    """Used as a percentage of the limit, rounded half up to 2 decimals, exactly as
    ``list_tenants`` computes it to filter and order (``None`` when unlimited; a zero
    limit is 100 % as soon as anything is stored)."""
    if limit is None:
        return None
    if limit == 0:
        return 100.0 if used > 0 else 0.0
    hundredths = (used * 20_000 + limit) // (2 * limit)  # round half up, in integers
    return hundredths / 100
