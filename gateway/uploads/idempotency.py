"""Idempotency: the earlier answer to a request whose Idempotency-Key was used before.

A URL is replayed only for an upload that was admitted (docs/quota.md, "No
reservation without a request"): while the first request with the key is still being
judged, a replay waits for its verdict, up to the admission window; a refused or
failed first request leaves the key free, and the replay is judged itself. A key is
kept ``IDEMPOTENCY_WINDOW``; the same key with another body is a conflict (409).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from datetime import UTC, datetime, timedelta

import msgspec

from gateway import keys
from gateway.api.schemas import UploadRequest, UploadResponse
from gateway.db import Database, Q
from gateway.errors import IdempotencyConflict, UploadInProgress
from gateway.quota import QuotaStore
from gateway.uploads.urls import UploadUrls
from gateway.uploads.windows import ADMISSION_WINDOW, AUDIT_AGE

IDEMPOTENCY_WINDOW = timedelta(hours=24)
_encoder = msgspec.json.Encoder()


def request_hash(req: UploadRequest) -> bytes:
    """What the key is bound to: a replay must ask for the very same upload."""
    return hashlib.sha256(_encoder.encode(req)).digest()


class Idempotency:
    def __init__(self, db: Database, quota: QuotaStore, urls: UploadUrls) -> None:
        self.db = db
        self.quota = quota
        self.urls = urls
        # idempotent requests being judged here: replays of their key wait for them
        self._in_flight: dict[str, asyncio.Event] = {}

    def judging(self, upload_id: str) -> None:
        """The request that wrote this upload (with a key) is being judged here."""
        self._in_flight[upload_id] = asyncio.Event()

    def judged(self, upload_id: str) -> None:
        """It has its verdict (and, if refused or failed, its row is gone)."""
        self._in_flight.pop(upload_id).set()

    async def replay(
        self,
        project_id: str,
        max_file: int,
        req: UploadRequest,
        idem: str | None,
    ) -> UploadResponse | None:
        """The earlier upload for this key, or None when the key is free again (the
        caller's insert found the key taken: ``idem`` is never None here)."""
        assert idem is not None
        hashed = request_hash(req)
        give_up = time.monotonic() + ADMISSION_WINDOW
        while True:
            row = await self.db.fetchrow(Q.get_upload_by_idempotency_key, project_id, idem)
            if row is None:  # released, or its request refused or failed
                return None
            if row["created_at"] < datetime.now(UTC) - IDEMPOTENCY_WINDOW:
                await self.db.execute(Q.release_idempotency_key, project_id, idem)
                return None
            if bytes(row["request_hash"] or b"") != hashed:
                raise IdempotencyConflict()
            if row["status"] != "pending":
                break
            (held,) = await self.quota.holds([(project_id, req.tenant_id, row["id"])])
            old = row["created_at"] < datetime.now(UTC) - timedelta(seconds=AUDIT_AGE)
            if held or (held is None and old):
                break  # admitted, or a hash rebuilt from Postgres will count this row
            if old:  # its request failed and could not remove the row: it had no URL
                await self.db.fetch(Q.forget_unadmitted, [row["id"]], AUDIT_AGE)
                return None
            if time.monotonic() > give_up:
                raise UploadInProgress()
            await self._wait_for_verdict(row["id"])
        created: datetime = row["created_at"]
        size = req.size_bytes
        signed = self.urls.presign(
            req.method,
            row["object_key"],
            req.content_type,
            size,
            req.checksum_sha256,
            created,
            max_file,
        )
        file_path = keys.file_path_of(row["object_key"])
        return self.urls.response(
            row["id"],
            signed,
            row["object_key"],
            file_path,
            req.tenant_id,
            False,
            size,
            created,
            row["expires_at"],
        )

    async def _wait_for_verdict(self, upload_id: str) -> None:
        """Until the request that wrote this upload (in this process, or on another
        replica: polled) has its verdict."""
        done = self._in_flight.get(upload_id)
        if done is None:
            await asyncio.sleep(0.05)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), ADMISSION_WINDOW)


__all__ = ["IDEMPOTENCY_WINDOW", "Idempotency", "request_hash"]
