"""What happened to an object: one vocabulary for S3 event records and the ledger."""

from __future__ import annotations

import enum


class ChangeKind(enum.Enum):
    CREATED = "created"
    REMOVED = "removed"
