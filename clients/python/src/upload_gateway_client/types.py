"""The API's bodies as typed Structs: what the client sends and what it gets back.

Named as /schema/openapi.json names them (``Page`` there is :class:`TenantPage`
here); tests/integration/test_client_schema.py checks that the two agree, field by
field. Responses ignore fields they do not know, so a newer gateway does not break
an older client; requests leave out the fields left at their default.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

UploadMethod = Literal["PUT", "POST"]
UploadState = Literal["pending", "completed", "expired", "cancelled", "rejected"]
TenantOrder = Literal[
    "tenant_id",
    "-tenant_id",
    "storage_used_bytes",
    "-storage_used_bytes",
    "percentage_used",
    "-percentage_used",
]

# what a webhook endpoint subscribes to ("*" = every type) and the types events have
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
DeliveryState = Literal["pending", "delivered", "failed"]


# -- requests --------------------------------------------------------------------------


class UploadRequest(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """``POST /api/storage/upload/``. ``size_bytes`` is required for a tenant (or
    project) with a storage limit."""

    tenant_id: str
    filename: str
    content_type: str = "application/octet-stream"
    size_bytes: int | None = None
    tenant_email: str | None = None
    checksum_sha256: str | None = None
    method: UploadMethod = "PUT"


class LimitUpdate(msgspec.Struct, kw_only=True, frozen=True):
    """``PATCH …/limit/``: ``storage_limit_bytes`` None = unlimited (always sent)."""

    storage_limit_bytes: int | None
    plan: str | None = None


class FileRef(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    file_path: str


class DownloadRequest(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    file_path: str
    expires_in: int = 3600


class WebhookCreate(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """``POST /api/storage/webhooks/``."""

    url: str
    events: list[EventType]
    description: str = ""


class WebhookUpdate(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """``PATCH /api/storage/webhooks/{id}/``: only the fields given are sent."""

    url: str | msgspec.UnsetType = msgspec.UNSET
    events: list[EventType] | msgspec.UnsetType = msgspec.UNSET
    description: str | msgspec.UnsetType = msgspec.UNSET
    enabled: bool | msgspec.UnsetType = msgspec.UNSET


# -- responses -------------------------------------------------------------------------


class UploadResponse(msgspec.Struct, kw_only=True, frozen=True):
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


class UploadStatus(msgspec.Struct, kw_only=True, frozen=True):
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


class TenantUsage(msgspec.Struct, kw_only=True, frozen=True):
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


class RecalculatedUsage(TenantUsage, frozen=True, kw_only=True):
    drift_bytes: int
    drift_files: int


class TenantPage(msgspec.Struct, kw_only=True, frozen=True):
    """A page of :class:`TenantUsage` (``count`` on it, ``totalCount`` in all)."""

    count: int
    totalCount: int  # the API's name
    next: str | None
    previous: str | None
    data: list[TenantUsage]


class ProjectUsage(msgspec.Struct, kw_only=True, frozen=True):
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


class DownloadResponse(msgspec.Struct, kw_only=True, frozen=True):
    download_url: str
    filename: str
    content_type: str | None
    size_bytes: int | None
    expires_in: int


class Detail(msgspec.Struct, kw_only=True, frozen=True):
    detail: str


class Liveness(msgspec.Struct, kw_only=True, frozen=True):
    status: Literal["ok"]


class Readiness(msgspec.Struct, kw_only=True, frozen=True):
    status: Literal["ok"]
    checks: dict[str, str]


class IngestResponse(msgspec.Struct, kw_only=True, frozen=True):
    records: int
    applied: int
    ignored: int


# -- error bodies (the exceptions of upload_gateway_client.errors carry their fields) --


class ErrorBody(msgspec.Struct, kw_only=True, frozen=True):
    detail: str
    code: str


class FieldError(msgspec.Struct, kw_only=True, frozen=True):
    field: str
    source: Literal["body", "query", "path", "header"]
    message: str


class ValidationErrorBody(msgspec.Struct, kw_only=True, frozen=True):
    detail: str
    code: str
    errors: list[FieldError] = []


class QuotaExceededBody(msgspec.Struct, kw_only=True, frozen=True):
    detail: str
    code: Literal["quota_exceeded", "project_quota_exceeded"]
    storage_limit_bytes: int
    storage_used_bytes: int
    storage_reserved_bytes: int
    requested_bytes: int


class FileTooLargeBody(msgspec.Struct, kw_only=True, frozen=True):
    detail: str
    code: Literal["file_too_large"]
    max_file_size_bytes: int
    requested_bytes: int


class RequestTooLargeBody(msgspec.Struct, kw_only=True, frozen=True):
    detail: str
    code: Literal["request_too_large"]


class StorageRefusedBody(msgspec.Struct, kw_only=True, frozen=True):
    detail: str
    code: Literal["storage_refused"]
    s3_code: str


class DependencyUnavailableBody(msgspec.Struct, kw_only=True, frozen=True):
    detail: str
    code: Literal["dependency_unavailable"]
    dependency: str


class NotReadyBody(msgspec.Struct, kw_only=True, frozen=True):
    detail: str
    code: Literal["not_ready"]
    status: Literal["unavailable"]
    checks: dict[str, str]


class Actor(msgspec.Struct, kw_only=True, frozen=True):
    """Who made a change: an API key (``id`` its ``key_…``), the ``gateway`` command
    (``id`` the operator's login name, if known) or the gateway itself."""

    type: Literal["api_key", "cli", "system"]
    id: str | None


class AuditEntry(msgspec.Struct, kw_only=True, frozen=True):
    id: str
    at: str
    action: str
    actor: Actor
    tenant_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    request_id: str | None


class AuditPage(msgspec.Struct, kw_only=True, frozen=True):
    count: int
    totalCount: int
    next: str | None
    previous: str | None
    data: list[AuditEntry]


class Webhook(msgspec.Struct, kw_only=True, frozen=True):
    id: str
    url: str
    events: list[EventType]
    description: str
    enabled: bool
    disabled_reason: str | None
    created_at: str
    updated_at: str


class CreatedWebhook(Webhook, kw_only=True, frozen=True):
    secret: str  # shown only here: keep it to verify the signatures


class WebhookPage(msgspec.Struct, kw_only=True, frozen=True):
    count: int
    totalCount: int
    next: str | None
    previous: str | None
    data: list[Webhook]


class WebhookDelivery(msgspec.Struct, kw_only=True, frozen=True):
    event_id: str
    type: SentEventType
    status: DeliveryState
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: str | None
    created_at: str
    delivered_at: str | None


class WebhookDeliveryPage(msgspec.Struct, kw_only=True, frozen=True):
    count: int
    totalCount: int
    next: str | None
    previous: str | None
    data: list[WebhookDelivery]


class WebhookTestEvent(msgspec.Struct, kw_only=True, frozen=True):
    event_id: str


class RotatedSecret(msgspec.Struct, kw_only=True, frozen=True):
    secret: str
    previous_secret_valid_until: str
