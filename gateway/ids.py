"""Identifiers: a prefix and time-ordered, URL- and S3-key-safe characters."""

from __future__ import annotations

import secrets
import time


def new_id(prefix: str) -> str:
    # 12 hex digits of milliseconds (sortable), 12 random hex digits
    return f"{prefix}_{int(time.time() * 1000):012x}{secrets.token_hex(6)}"
