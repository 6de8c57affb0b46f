"""LifecycleService: an upload after its URL was issued: its status, its completion
(settled from what S3 holds, through the ledger), its cancellation."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway import keys
from gateway.api.schemas import UploadStatus
from gateway.changes import ChangeKind
from gateway.db import Database, Q
from gateway.errors import DependencyUnavailable, NotFound, ObjectNotUploaded
from gateway.ids import utc_timestamp
from gateway.ledger import Ledger, ObjectChange
from gateway.quota import QuotaStore
from gateway.storage.base import ObjectStore
from gateway.webhooks.outbox import Outbox


class LifecycleService:
    # set by the Runtime: a cancellation is told in its transaction
    outbox: Outbox | None = None

    def __init__(self, db: Database, quota: QuotaStore, store: ObjectStore, ledger: Ledger) -> None:
        self.db = db
        self.quota = quota
        self.store = store
        self.ledger = ledger

    async def status(self, project_id: str, upload_id: str) -> UploadStatus:
        row = await self.db.fetchrow(Q.get_upload, upload_id, project_id)
        if row is None:
            raise NotFound("No such upload", extra={"upload_id": upload_id})
        status: str = row["status"]
        if status == "pending" and row["expires_at"] < datetime.now(UTC):
            status = "expired"  # not swept yet, but the URL no longer works
        return UploadStatus(
            upload_id=row["id"],
            status=status,
            tenant_id=row["tenant_id"],
            file_path=keys.file_path_of(row["object_key"]),
            key=row["object_key"],
            filename=row["filename"],
            content_type=row["content_type"],
            method=row["method"],
            declared_size_bytes=row["declared_size"],
            actual_size_bytes=row["actual_size"],
            flagged=row["flagged"],
            created_at=utc_timestamp(row["created_at"]),
            expires_at=utc_timestamp(row["expires_at"]),
            settled_at=utc_timestamp(row["settled_at"]) if row["settled_at"] else None,
        )

    async def complete(self, project_id: str, upload_id: str) -> UploadStatus:
        row = await self.db.fetchrow(Q.get_upload, upload_id, project_id)
        if row is None:
            raise NotFound("No such upload", extra={"upload_id": upload_id})
        info = await self.store.head(row["object_key"])
        if info is None:
            raise ObjectNotUploaded(extra={"upload_id": upload_id})
        await self.ledger.settle(
            [
                ObjectChange(
                    kind=ChangeKind.CREATED,
                    key=row["object_key"],
                    event_time=info.last_modified or datetime.now(UTC),
                    size=info.size,
                    etag=info.etag,
                    version_id=info.version_id,
                )
            ]
        )
        return await self.status(project_id, upload_id)

    async def cancel(self, project_id: str, upload_id: str) -> UploadStatus:
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(Q.finish_upload, upload_id, project_id, "cancelled")
            if row is not None and self.outbox is not None:
                await self.outbox.record(conn, settled=[upload_id])
        if row is None:
            current = await self.status(project_id, upload_id)  # 404 if unknown
            if current.status != "pending":
                return current
            raise DependencyUnavailable("postgres", retry_after=1, cause="cancel race")
        await self.quota.release([(project_id, row["tenant_id"], upload_id)])
        return await self.status(project_id, upload_id)


__all__ = ["LifecycleService"]
