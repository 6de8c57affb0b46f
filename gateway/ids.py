"""Identifiers (a prefix and time-ordered, URL- and S3-key-safe characters) and the
timestamp format the API writes."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime

# what new_id("upl") makes: routes that take an upload id match exactly this
UPLOAD_ID_PATTERN = r"^upl_[0-9a-f]{24}$"


def utc_timestamp(dt: datetime) -> str:
    """``2026-12-01T20:53:04Z``: every timestamp the API writes, and S3's POST policy
    expiration."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_id(prefix: str) -> str:
    # 12 hex digits of milliseconds (sortable), 12 random hex digits
    return f"{prefix}_{int(time.time() * 1000):012x}{secrets.token_hex(6)}"
