"""What the rest of the gateway needs from object storage, as small Protocols.

Unit tests hand in fakes; integration tests use the real S3 implementations.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol


@dataclass(frozen=True, slots=True)
class FrozenCredentials:
    access_key: str
    secret_key: str
    token: str | None = None


class CredentialSource(Protocol):
    """Returns credentials valid right now (refreshing temporary ones as needed)."""

    def current(self) -> FrozenCredentials: ...


@dataclass(frozen=True, slots=True)
class PresignedRequest:
    url: str
    method: Literal["PUT", "POST", "GET"]
    # Headers the client must send with the request (PUT), e.g. Content-Type.
    headers: dict[str, str]
    # Form fields for a presigned POST (None for PUT/GET).
    fields: dict[str, str] | None = None


class Presigner(Protocol):
    def presign_put(
        self,
        key: str,
        *,
        content_type: str,
        content_length: int | None,
        checksum_sha256: str | None,
        expires_in: int,
        signed_at: datetime,
    ) -> PresignedRequest: ...

    def presign_post(
        self,
        key: str,
        *,
        content_type: str,
        content_length: int | None,
        expires_in: int,
        signed_at: datetime,
        max_content_length: int | None = None,
    ) -> PresignedRequest: ...

    def presign_get(
        self,
        key: str,
        *,
        expires_in: int,
        signed_at: datetime,
        download_filename: str | None = None,
    ) -> str: ...


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    etag: str | None
    last_modified: datetime | None
    version_id: str | None = None


class ObjectStore(Protocol):
    async def head(self, key: str) -> ObjectInfo | None: ...

    async def delete(self, key: str) -> None: ...

    def list_prefix(self, prefix: str) -> AsyncIterator[ObjectInfo]: ...

    async def ping(self) -> None: ...
