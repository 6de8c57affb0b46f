"""Request and response bodies (msgspec Structs), shared by the API and services.

Inputs are validated here by msgspec constraints; outputs are separate types. /schema
documents every one of them as msgspec renders it (``gateway.api.openapi``), so the
constraints written here are the ones the schema states.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from gateway import limits

MAX_BYTES = 2**63 - 1
TENANT_ID_PATTERN = r"^[A-Za-z0-9._:@-]{1,128}$"
FILENAME_PATTERN = r"^(?!\.{1,2}$)[^/\\\x00-\x1f\x7f]+$"
CONTENT_TYPE_PATTERN = r"^[\w.+-]+/[\w.+-]+(\s*;\s*[\w.+-]+=[\w.+\"-]+)*$"
CHECKSUM_PATTERN = r"^[A-Za-z0-9+/]{43}=$"
EMAIL_PATTERN = r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+$"
# no control characters (no object key the gateway writes has one; Postgres text
# cannot hold NUL)
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]*$"
# visible ASCII, spaces only inside: what an HTTP header carries unchanged
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$"

TenantId = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=128,
        pattern=TENANT_ID_PATTERN,
        description="1 to 128 characters of A-Z, a-z, 0-9 and . _ : @ -",
    ),
]
Bytes = Annotated[int, Meta(ge=0, lt=MAX_BYTES)]
Filename = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=255,
        pattern=FILENAME_PATTERN,
        description="1 to 255 characters: no /, \\ or control characters, not . or ..",
    ),
]
ContentType = Annotated[
    str,
    Meta(min_length=1, max_length=255, pattern=CONTENT_TYPE_PATTERN, description="a media type"),
]
Checksum = Annotated[
    str, Meta(pattern=CHECKSUM_PATTERN, description="the file's SHA-256, base64 (44 characters)")
]
Email = Annotated[str, Meta(max_length=320, pattern=EMAIL_PATTERN)]
FilePath = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=1024,
        pattern=TEXT_PATTERN,
        description="an upload's file_path: the object key without the project prefix",
    ),
]
UploadState = Annotated[
    str,
    Meta(extra_json_schema={"enum": ["pending", "completed", "expired", "cancelled", "rejected"]}),
]
UploadMethod = Annotated[str, Meta(extra_json_schema={"enum": ["PUT", "POST"]})]


class UploadRequest(msgspec.Struct, kw_only=True, frozen=True):
    tenant_id: TenantId
    filename: Filename
    content_type: ContentType = "application/octet-stream"
    # Required when the tenant or its project has a limit (a 422 says so): a rule on
    # stored state, which no JSON Schema keyword can state; its description does.
    size_bytes: (
        Annotated[
            int,
            Meta(
                ge=0,
                lt=MAX_BYTES,
                description=(
                    "The declared size in bytes. Required when the tenant or its project has"
                    " a storage limit (422 without it there); at most the per-file maximum."
                ),
            ),
        ]
        | None
    ) = None
    tenant_email: Email | None = None
    checksum_sha256: Checksum | None = None
    method: Literal["PUT", "POST"] = "PUT"


class UploadResponse(msgspec.Struct, kw_only=True):
    upload_id: str
    presigned_url: str
    method: UploadMethod
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
    status: UploadState
    tenant_id: str
    file_path: str
    key: str
    filename: str
    content_type: str
    method: UploadMethod
    declared_size_bytes: int | None
    actual_size_bytes: int | None
    flagged: bool
    created_at: str
    expires_at: str
    settled_at: str | None


class LimitUpdate(msgspec.Struct, kw_only=True, frozen=True):
    storage_limit_bytes: Bytes | None
    plan: Annotated[str, Meta(max_length=64, pattern=TEXT_PATTERN)] | None = None


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
    file_path: FilePath


class DownloadRequest(msgspec.Struct, kw_only=True, frozen=True):
    file_path: FilePath
    expires_in: Annotated[int, Meta(ge=1, le=604_800)] = 3600


class DownloadResponse(msgspec.Struct, kw_only=True):
    download_url: str
    filename: str
    content_type: str | None
    size_bytes: int | None
    expires_in: int


class Detail(msgspec.Struct, kw_only=True):
    detail: str


# -- error bodies: {detail, code, ...extra}, one shape per status (gateway.errors) ------


class ErrorBody(msgspec.Struct, kw_only=True):
    """Every error: a sentence and a stable code (extra fields may follow)."""

    detail: str
    code: str


class FieldError(msgspec.Struct, kw_only=True):
    """One invalid input: ``field`` as the client sent it (``size_bytes``, ``limit``,
    ``Idempotency-Key``; nested body fields as ``a.b[0]``, the whole body as ``body``)."""

    field: str
    source: Literal["body", "query", "path", "header"]
    message: str


class ValidationErrorBody(msgspec.Struct, kw_only=True):
    """422: the request is not valid. ``detail`` is a sentence naming the first field;
    ``errors`` has one entry per invalid input (empty when the body as a whole is)."""

    detail: str
    code: str
    errors: list[FieldError] = []


class QuotaExceededBody(msgspec.Struct, kw_only=True):
    """413 before any URL exists: the tenant's limit (or, ``project_quota_exceeded``,
    the project's cap) would be passed."""

    detail: str
    code: Literal["quota_exceeded", "project_quota_exceeded"]
    storage_limit_bytes: int
    storage_used_bytes: int
    storage_reserved_bytes: int
    requested_bytes: int


class FileTooLargeBody(msgspec.Struct, kw_only=True):
    """413: over the per-file maximum."""

    detail: str
    code: Literal["file_too_large"]
    max_file_size_bytes: int
    requested_bytes: int


class RequestTooLargeBody(msgspec.Struct, kw_only=True):
    """413: the request body itself is over the gateway's limit (1 MiB)."""

    detail: str
    code: Literal["request_too_large"]


class StorageRefusedBody(msgspec.Struct, kw_only=True):
    """502: S3 refused the gateway itself (credentials, bucket, policy)."""

    detail: str
    code: Literal["storage_refused"]
    s3_code: str


class DependencyUnavailableBody(msgspec.Struct, kw_only=True):
    """503 with Retry-After: Postgres, Redis or S3 is down or did not answer in time."""

    detail: str
    code: Literal["dependency_unavailable"]
    dependency: str


class Readiness(msgspec.Struct, kw_only=True):
    status: Literal["ok"]
    checks: dict[str, str]


class NotReadyBody(msgspec.Struct, kw_only=True):
    """/readyz's 503 with Retry-After: what each dependency answered."""

    detail: str
    code: Literal["not_ready"]
    status: Literal["unavailable"]
    checks: dict[str, str]


class Liveness(msgspec.Struct, kw_only=True):
    status: Literal["ok"]


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
