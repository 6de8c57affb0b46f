"""The S3 event webhook: MinIO webhook bodies, raw Records bodies and SNS envelopes."""

from __future__ import annotations

import hmac
from typing import Any

from litestar import Controller, Request, post
from litestar.datastructures import State

from gateway.errors import Unauthorized, ValidationFailed, WebhookDisabled
from gateway.events.ingest import EventIngestor
from gateway.storage.s3events import S3EventError


class EventsController(Controller):
    path = "/api/storage/events"
    tags = ["events"]

    @post("/s3/", operation_id="ingestS3Events", status_code=200)
    async def ingest(self, request: Request[Any, Any, State], state: State) -> dict[str, Any]:
        """Answers 2xx only once the events are committed, so senders retry otherwise."""
        secret: str | None = state.settings.webhook_secret
        if not secret:
            raise WebhookDisabled()
        header = request.headers.get("authorization") or ""
        scheme, _, token = header.partition(" ")
        presented = token.strip() if scheme.lower() == "bearer" else header.strip()
        if not hmac.compare_digest(presented.encode(), secret.encode()):
            raise Unauthorized("A valid webhook secret is required (Authorization: Bearer …)")
        body = await request.body()
        ingestor: EventIngestor = state.ingestor
        try:
            result = await ingestor.ingest(body)
        except S3EventError as exc:
            raise ValidationFailed(f"Not an S3 event notification: {exc}") from None
        return {"records": result.records, "applied": result.applied, "ignored": result.ignored}
