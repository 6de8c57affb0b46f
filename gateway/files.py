"""FileService: deleting a stored file and presigning its download."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway import keys
from gateway.api.schemas import DownloadRequest, DownloadResponse
from gateway.changes import ChangeKind
from gateway.db import Database, Q
from gateway.errors import NotFound
from gateway.keys import parse_object_key
from gateway.ledger import Ledger, ObjectChange
from gateway.storage.base import ObjectStore, Presigner


def _key_for(project_id: str, file_path: str) -> str:
    if not keys.is_safe_file_path(file_path):
        raise NotFound("No such file", extra={"file_path": file_path})
    return keys.object_key(project_id, file_path)


class FileService:
    def __init__(
        self, db: Database, store: ObjectStore, presigner: Presigner, ledger: Ledger
    ) -> None:
        self.db = db
        self.store = store
        self.presigner = presigner
        self.ledger = ledger

    async def delete(self, project_id: str, file_path: str) -> None:
        key = _key_for(project_id, file_path)
        parts = parse_object_key(key)
        upload_id = parts.upload_id if parts else None
        known = await self.db.fetchval(Q.file_is_known, key, upload_id or "")
        if not known and await self.store.head(key) is None:
            raise NotFound("No such file", extra={"file_path": file_path})
        await self.store.delete(key)
        await self.ledger.settle(
            [ObjectChange(kind=ChangeKind.REMOVED, key=key, event_time=datetime.now(UTC))],
            cancel_pending=True,
        )

    async def download(self, project_id: str, req: DownloadRequest) -> DownloadResponse:
        key = _key_for(project_id, req.file_path)
        row = await self.db.fetchrow(Q.stored_file, key)
        size: int | None
        content_type: str | None
        if row is None:
            info = await self.store.head(key)
            if info is None:
                raise NotFound("No such file", extra={"file_path": req.file_path})
            size, content_type = info.size, None
        else:
            size, content_type = row["size_bytes"], row["content_type"]
        filename = keys.filename_of(key)
        url = self.presigner.presign_get(
            key, expires_in=req.expires_in, signed_at=datetime.now(UTC), download_filename=filename
        )
        return DownloadResponse(
            download_url=url,
            filename=filename,
            content_type=content_type,
            size_bytes=size,
            expires_in=req.expires_in,
        )


__all__ = ["FileService"]
