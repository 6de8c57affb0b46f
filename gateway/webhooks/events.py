"""The events webhooks tell of, and their bodies: ``{"type", "timestamp", "data"}``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from gateway.ids import new_id, utc_timestamp

UPLOAD_COMPLETED = "upload.completed"
UPLOAD_REJECTED = "upload.rejected"
UPLOAD_EXPIRED = "upload.expired"
UPLOAD_CANCELLED = "upload.cancelled"
FILE_DELETED = "file.deleted"
LIMIT_CHANGED = "tenant.limit.changed"
THRESHOLD = "tenant.quota.threshold"
TEST = "webhook.test"

# what an endpoint can subscribe to ("*" = all of them); webhook.test goes to the
# endpoint it is sent to whatever it subscribes to
EVENT_TYPES = (
    UPLOAD_COMPLETED,
    UPLOAD_REJECTED,
    UPLOAD_EXPIRED,
    UPLOAD_CANCELLED,
    FILE_DELETED,
    LIMIT_CHANGED,
    THRESHOLD,
    TEST,
)

# the type of an event sent
SentEventType = Literal[
    "upload.completed",
    "upload.rejected",
    "upload.expired",
    "upload.cancelled",
    "file.deleted",
    "tenant.limit.changed",
    "tenant.quota.threshold",
    "webhook.test",
]
# what a subscription lists (``*`` = every type)
EventType = Literal[
    "*",
    "upload.completed",
    "upload.rejected",
    "upload.expired",
    "upload.cancelled",
    "file.deleted",
    "tenant.limit.changed",
    "tenant.quota.threshold",
    "webhook.test",
]

# the upload's final status → the event that tells of it
UPLOAD_EVENT = {
    "completed": UPLOAD_COMPLETED,
    "rejected": UPLOAD_REJECTED,
    "expired": UPLOAD_EXPIRED,
    "cancelled": UPLOAD_CANCELLED,
}

DEFAULT_THRESHOLDS = (70, 90, 100)


@dataclass(frozen=True, slots=True)
class Event:
    """One event for the outbox: its id (the ``webhook-id`` of every attempt), the
    project it belongs to, its type and the body that is sent."""

    id: str
    project_id: str
    type: str
    body: str  # JSON text


def event(project_id: str, type_: str, data: dict[str, Any], at: datetime | None = None) -> Event:
    body = {"type": type_, "timestamp": utc_timestamp(at or datetime.now(UTC)), "data": data}
    return Event(new_id("evt"), project_id, type_, msgspec.json.encode(body).decode())


def file_deleted(project_id: str, tenant_id: str, file_path: str, size: int) -> Event:
    return event(
        project_id,
        FILE_DELETED,
        {"tenant_id": tenant_id, "file_path": file_path, "size_bytes": size},
    )


def limit_changed(
    project_id: str, tenant_id: str, old: int | None, new: int | None, plan: str | None
) -> Event:
    return event(
        project_id,
        LIMIT_CHANGED,
        {
            "tenant_id": tenant_id,
            "old_limit_bytes": old,
            "new_limit_bytes": new,
            "plan": plan,
        },
    )


__all__ = [
    "DEFAULT_THRESHOLDS",
    "EVENT_TYPES",
    "UPLOAD_EVENT",
    "Event",
    "EventType",
    "SentEventType",
    "event",
    "file_deleted",
    "limit_changed",
]
