"""UploadUrls: an upload's presigned request and the answer that carries it, the same
for a newly admitted upload and for a replay of its Idempotency-Key."""

from __future__ import annotations

from datetime import datetime

from gateway.api.schemas import UploadResponse
from gateway.ids import utc_timestamp
from gateway.storage.base import PresignedRequest, Presigner


class UploadUrls:
    def __init__(self, presigner: Presigner, *, bucket: str, url_ttl: int) -> None:
        self.presigner = presigner
        self.bucket = bucket
        self.url_ttl = url_ttl  # seconds an upload URL is valid (GATEWAY_UPLOAD_URL_TTL)

    def presign(
        self,
        method: str,
        key: str,
        content_type: str,
        size: int | None,
        checksum: str | None,
        signed_at: datetime,
        max_file: int,
    ) -> PresignedRequest:
        ttl = self.url_ttl
        if method == "POST":
            return self.presigner.presign_post(
                key,
                content_type=content_type,
                content_length=size,
                expires_in=ttl,
                signed_at=signed_at,
                max_content_length=max_file,
            )
        return self.presigner.presign_put(
            key,
            content_type=content_type,
            content_length=size,
            checksum_sha256=checksum,
            expires_in=ttl,
            signed_at=signed_at,
        )

    def response(
        self,
        upload_id: str,
        signed: PresignedRequest,
        key: str,
        file_path: str,
        tenant_id: str,
        is_new_tenant: bool,
        size: int | None,
        created: datetime,
        expires_at: datetime,
    ) -> UploadResponse:
        return UploadResponse(
            upload_id=upload_id,
            presigned_url=signed.url,
            method=signed.method,
            bucket=self.bucket,
            key=key,
            headers=signed.headers,
            fields=signed.fields,
            file_path=file_path,
            tenant_id=tenant_id,
            is_new_tenant=is_new_tenant,
            size_bytes=size,
            expires_in=self.url_ttl,
            expires_at=utc_timestamp(expires_at),
        )


__all__ = ["UploadUrls"]
