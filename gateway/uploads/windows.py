"""The admission window: the time the upload path, Idempotency-Key replays and the
audit agree on (docs/quota.md, "No reservation without a request").

A request that wrote a pending row gives up (503) rather than hand out a URL later
than ``ADMISSION_WINDOW`` after it began; so a pending row older than this that holds
no reservation can never be admitted, and the audit may remove it once it is older
than ``AUDIT_AGE``.
"""

from __future__ import annotations

ADMISSION_WINDOW = 30.0
# The audit's margin on top of the window, for clock skew between replicas and Postgres.
AUDIT_AGE = ADMISSION_WINDOW + 30.0

__all__ = ["ADMISSION_WINDOW", "AUDIT_AGE"]
