"""Webhook endpoints: create (the secret shown once), list, change, delete, rotate the
secret, send a test event; the deliveries log and its retry. Every change is in the
audit log, in its own transaction; no secret is ever in it, nor in a log line."""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import msgspec

from gateway import audit
from gateway.audit import Actor
from gateway.db import Database
from gateway.errors import NotFound, ValidationFailed
from gateway.ids import new_id, utc_timestamp
from gateway.webhooks.events import EVENT_TYPES, TEST, EventType, SentEventType, event
from gateway.webhooks.outbox import WQ
from gateway.webhooks.signing import SecretBox, new_secret
from gateway.webhooks.ssrf import AddressPolicy, check_url

ROTATION_OVERLAP = timedelta(hours=24)


class WebhookUrlRefused(ValidationFailed):
    """A URL the gateway will not call (not http(s), credentials in it, or its host
    resolves to a loopback, private, link-local or metadata address)."""

    code = "webhook_url_refused"


class Webhook(msgspec.Struct, kw_only=True):
    id: str
    url: str
    events: list[EventType]
    description: str
    enabled: bool
    disabled_reason: str | None
    created_at: str
    updated_at: str


class CreatedWebhook(Webhook, kw_only=True):
    secret: str  # shown only here


class WebhookDelivery(msgspec.Struct, kw_only=True):
    event_id: str
    type: SentEventType
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: str | None  # while pending
    created_at: str
    delivered_at: str | None


def _endpoint(row: Mapping[str, Any]) -> Webhook:
    return Webhook(**_endpoint_fields(row))


def _endpoint_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "url": row["url"],
        "events": list(row["events"]),
        "description": row["description"],
        "enabled": row["enabled"],
        "disabled_reason": row["disabled_reason"],
        "created_at": utc_timestamp(row["created_at"]),
        "updated_at": utc_timestamp(row["updated_at"]),
    }


def _audited(row: Mapping[str, Any]) -> dict[str, Any]:
    """An endpoint as the audit log shows it: no secret."""
    return {
        "id": row["id"],
        "url": row["url"],
        "events": list(row["events"]),
        "description": row["description"],
        "enabled": row["enabled"],
    }


def _delivery(row: Mapping[str, Any]) -> WebhookDelivery:
    pending = row["status"] == "pending"
    return WebhookDelivery(
        event_id=row["event_id"],
        type=row["type"],
        status=row["status"],
        attempts=row["attempts"],
        last_status_code=row["last_status_code"],
        last_error=row["last_error"],
        next_attempt_at=utc_timestamp(row["next_attempt_at"]) if pending else None,
        created_at=utc_timestamp(row["created_at"]),
        delivered_at=utc_timestamp(row["delivered_at"]) if row["delivered_at"] else None,
    )


def check_events(events: Sequence[str]) -> list[str]:
    """The subscription as stored: ``["*"]`` (a list with ``*`` in it means every
    type) or known types, each once."""
    if not events:
        raise ValidationFailed(
            'events: give at least one event type, or ["*"] for all',
            extra={"event_types": list(EVENT_TYPES)},
        )
    if "*" in events:
        return ["*"]
    unknown = [e for e in events if e not in EVENT_TYPES]
    if unknown:
        raise ValidationFailed(
            f"events: unknown event type {unknown[0]!r}",
            extra={"event_types": list(EVENT_TYPES)},
        )
    return list(dict.fromkeys(events))


class EndpointService:
    def __init__(self, db: Database, box: SecretBox, policy: AddressPolicy) -> None:
        self.db = db
        self.box = box
        self.policy = policy

    async def _check_url(self, url: str) -> None:
        try:
            await check_url(url, self.policy)
        except ValueError as exc:
            raise WebhookUrlRefused(f"url: {exc}") from None

    async def create(
        self, project_id: str, *, url: str, events: Sequence[str], description: str, actor: Actor
    ) -> CreatedWebhook:
        subscribed = check_events(events)
        await self._check_url(url)
        secret = new_secret()
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(
                WQ.insert_endpoint,
                new_id("whk"),
                project_id,
                url,
                subscribed,
                description,
                self.box.seal(secret),
            )
            assert row is not None
            await audit.record(
                conn,
                project_id=project_id,
                action="webhook.created",
                actor=actor,
                after=_audited(row),
            )
        return CreatedWebhook(**_endpoint_fields(row), secret=secret)

    async def get(self, project_id: str, endpoint_id: str) -> Webhook:
        row = await self.db.fetchrow(WQ.get_endpoint, endpoint_id, project_id)
        if row is None:
            raise NotFound("No such webhook", extra={"id": endpoint_id})
        return _endpoint(row)

    async def list(self, project_id: str, *, offset: int, limit: int) -> tuple[list[Webhook], int]:
        rows = await self.db.fetch(WQ.list_endpoints, project_id, offset, limit)
        total = (
            int(rows[0]["total_count"])
            if rows
            else int(await self.db.fetchval(WQ.count_endpoints, project_id))
        )
        return [_endpoint(r) for r in rows], total

    async def update(
        self,
        project_id: str,
        endpoint_id: str,
        *,
        url: str | None = None,
        events: Sequence[str] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
        actor: Actor,
    ) -> Webhook:
        subscribed = check_events(events) if events is not None else None
        if url is not None:
            await self._check_url(url)
        async with self.db.transaction() as conn:
            before = await conn.fetchrow(WQ.lock_endpoint, endpoint_id, project_id)
            if before is None:
                raise NotFound("No such webhook", extra={"id": endpoint_id})
            row = await conn.fetchrow(
                WQ.update_endpoint, endpoint_id, project_id, url, subscribed, description, enabled
            )
            assert row is not None
            old, new = _audited(before), _audited(row)
            changed = [k for k in new if k != "id" and old[k] != new[k]]
            if changed:
                await audit.record(
                    conn,
                    project_id=project_id,
                    action="webhook.updated",
                    actor=actor,
                    before={"id": endpoint_id, **{k: old[k] for k in changed}},
                    after={"id": endpoint_id, **{k: new[k] for k in changed}},
                )
        return _endpoint(row)

    async def delete(self, project_id: str, endpoint_id: str, *, actor: Actor) -> None:
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(WQ.delete_endpoint, endpoint_id, project_id)
            if row is None:
                raise NotFound("No such webhook", extra={"id": endpoint_id})
            await audit.record(
                conn,
                project_id=project_id,
                action="webhook.deleted",
                actor=actor,
                before=_audited(row),
            )

    async def rotate_secret(
        self, project_id: str, endpoint_id: str, *, actor: Actor
    ) -> tuple[str, str]:
        """A new secret, and until when the old one still signs beside it
        (``ROTATION_OVERLAP``)."""
        secret = new_secret()
        until = datetime.now(UTC) + ROTATION_OVERLAP
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(
                WQ.rotate_secret, endpoint_id, project_id, self.box.seal(secret), until
            )
            if row is None:
                raise NotFound("No such webhook", extra={"id": endpoint_id})
            await audit.record(
                conn,
                project_id=project_id,
                action="webhook.secret_rotated",
                actor=actor,
                after={"id": endpoint_id, "previous_secret_valid_until": utc_timestamp(until)},
            )
        return secret, utc_timestamp(until)

    async def send_test(self, project_id: str, endpoint_id: str) -> str:
        """Queues a ``webhook.test`` event for this endpoint; answers its id."""
        await self.get(project_id, endpoint_id)
        ev = event(project_id, TEST, {"webhook_id": endpoint_id})
        await self.db.execute(WQ.record_test_event, ev.id, project_id, ev.body, endpoint_id)
        return ev.id

    async def deliveries(
        self,
        project_id: str,
        endpoint_id: str,
        *,
        status: str | None,
        offset: int,
        limit: int,
    ) -> tuple[builtins.list[WebhookDelivery], int]:
        await self.get(project_id, endpoint_id)
        rows = await self.db.fetch(WQ.list_deliveries, endpoint_id, status, offset, limit)
        total = (
            int(rows[0]["total_count"])
            if rows
            else int(await self.db.fetchval(WQ.count_deliveries, endpoint_id, status))
        )
        return [_delivery(r) for r in rows], total

    async def retry(self, project_id: str, endpoint_id: str, event_id: str) -> WebhookDelivery:
        """Due again now, with a fresh retry window (a delivered one is sent again:
        a replay). One in flight is answered as it is."""
        await self.get(project_id, endpoint_id)
        row = await self.db.fetchrow(WQ.retry_delivery, endpoint_id, event_id)
        if row is None:
            row = await self.db.fetchrow(WQ.get_delivery, endpoint_id, event_id)
            if row is None:
                raise NotFound("No such delivery", extra={"event_id": event_id})
        return _delivery(row)


__all__ = [
    "CreatedWebhook",
    "EndpointService",
    "Webhook",
    "WebhookDelivery",
    "check_events",
]
