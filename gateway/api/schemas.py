"""Request and response bodies (msgspec Structs), shared by the API and services.

Inputs are validated here by msgspec constraints; outputs are separate types.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from gateway import limits

MAX_BYTES = 2**63 - 1
TENANT_ID_PATTERN = r"^[A-Za-z0-9._:@-]{1,128}$"

TenantId = Annotated[str, Meta(min_length=1, max_length=128, pattern=TENANT_ID_PATTERN)]
Bytes = Annotated[int, Meta(ge=0, lt=MAX_BYTES)]
Filename = Annotated[
    str, Meta(min_length=1, max_length=255, pattern=r"^(?!\.{1,2}$)[^/\\\x00-\x1f\x7f]+$")
]
ContentType = Annotated[
    str,
    Meta(min_length=1, max_length=255, pattern=r"^[\w.+-]+/[\w.+-]+(\s*;\s*[\w.+-]+=[\w.+\"-]+)*$"),
]
Checksum = Annotated[str, Meta(pattern=r"^[A-Za-z0-9+/]{43}=$")]
Email = Annotated[str, Meta(max_length=320, pattern=r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+$")]


class UploadRequest(msgspec.Struct, kw_only=True, frozen=True):
    tenant_id: TenantId
    filename: Filename
    content_type: ContentType = "application/octet-stream"
    size_bytes: Bytes | None = None
    tenant_email: Email | None = None
    checksum_sha256: Checksum | None = None
    method: Literal["PUT", "POST"] = "PUT"


class UploadResponse(msgspec.Struct, kw_only=True):
    upload_id: str
    presigned_url: str
    method: str
    bucket: str
    key: str
    headers: dict[str, str]
    fields: dict[str, str] | None
    file_path: str
    tenant_id: str
    is_new_tenant: bool
    size_bytes: int | None
    expires_in: int
    expires_at: str


class UploadStatus(msgspec.Struct, kw_only=True):
    upload_id: str
    status: str
    tenant_id: str
    file_path: str
    key: str
    filename: str
    content_type: str
    method: str
    declared_size_bytes: int | None
    actual_size_bytes: int | None
    flagged: bool
    created_at: str
    expires_at: str
    settled_at: str | None


class LimitUpdate(msgspec.Struct, kw_only=True, frozen=True):
    storage_limit_bytes: Bytes | None
    plan: Annotated[str, Meta(max_length=64)] | None = None


class TenantUsage(msgspec.Struct, kw_only=True):
    tenant_id: str
    email: str | None
    storage_used_bytes: int
    storage_limit_bytes: int | None
    total_files: int
    storage_reserved_bytes: int
    storage_available_bytes: int | None
    percentage_used: float | None
    plan: str | None
    over_limit: bool


class RecalculatedUsage(TenantUsage, kw_only=True):
    drift_bytes: int
    drift_files: int


class ProjectUsage(msgspec.Struct, kw_only=True):
    project_id: str
    name: str
    storage_used_bytes: int
    storage_limit_bytes: int | None
    storage_reserved_bytes: int
    storage_available_bytes: int | None
    percentage_used: float | None
    over_limit: bool
    total_files: int
    total_tenants: int
    default_tenant_limit_bytes: int | None
    max_file_size_bytes: int


class FileRef(msgspec.Struct, kw_only=True, frozen=True):
    file_path: Annotated[str, Meta(min_length=1, max_length=1024)]


class DownloadRequest(msgspec.Struct, kw_only=True, frozen=True):
    file_path: Annotated[str, Meta(min_length=1, max_length=1024)]
    expires_in: Annotated[int, Meta(ge=1, le=604_800)] = 3600


class DownloadResponse(msgspec.Struct, kw_only=True):
    download_url: str
    filename: str
    content_type: str | None
    size_bytes: int | None
    expires_in: int


class Detail(msgspec.Struct, kw_only=True):
    detail: str


class Page(msgspec.Struct, kw_only=True):
    count: int
    totalCount: int
    next: str | None
    previous: str | None
    data: list[TenantUsage]


def tenant_usage(
    *,
    tenant_id: str,
    email: str | None,
    plan: str | None,
    used: int,
    limit: int | None,
    files: int,
    reserved: int,
) -> TenantUsage:
    return TenantUsage(
        tenant_id=tenant_id,
        email=email,
        storage_used_bytes=used,
        storage_limit_bytes=limit,
        total_files=files,
        storage_reserved_bytes=reserved,
        storage_available_bytes=limits.available(limit, used, reserved),
        percentage_used=limits.percentage(used, limit),
        plan=plan,
        over_limit=limits.over_limit(limit, used),
    )
