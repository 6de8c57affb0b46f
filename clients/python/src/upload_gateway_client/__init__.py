"""A typed client for the upload gateway's HTTP API (sync and async).

from upload_gateway_client import GatewayClient, QuotaExceeded, UploadRequest

with GatewayClient("http://127.0.0.1:8080", api_key) as gw:
    try:
        upload = gw.create_upload(UploadRequest(tenant_id="user_123",
                                                filename="report.pdf",
                                                size_bytes=1_048_576))
    except QuotaExceeded as full:
        print(full.storage_used_bytes, full.storage_limit_bytes)
"""

from upload_gateway_client._core import NO_RETRY, SINGLE_UPLOAD_LIMIT, Retry, UploadResult
from upload_gateway_client.client import AsyncGatewayClient, GatewayClient, new_idempotency_key
from upload_gateway_client.errors import (
    ClientError,
    Conflict,
    FileTooLarge,
    GatewayError,
    GatewayUnreachable,
    IdempotencyKeyReused,
    InvalidApiKey,
    NotFound,
    ObjectNotUploaded,
    ProjectQuotaExceeded,
    QuotaExceeded,
    RateLimited,
    RequestTooLarge,
    ServiceUnavailable,
    StorageRefused,
    UnsupportedMediaType,
    UploadFailed,
    UploadInProgress,
    ValidationFailed,
)
from upload_gateway_client.types import (
    DownloadResponse,
    FieldError,
    ProjectUsage,
    RecalculatedUsage,
    TenantPage,
    TenantUsage,
    UploadRequest,
    UploadResponse,
    UploadStatus,
)

__version__ = "0.1.0"

__all__ = [
    "NO_RETRY",
    "SINGLE_UPLOAD_LIMIT",
    "AsyncGatewayClient",
    "ClientError",
    "Conflict",
    "DownloadResponse",
    "FieldError",
    "FileTooLarge",
    "GatewayClient",
    "GatewayError",
    "GatewayUnreachable",
    "IdempotencyKeyReused",
    "InvalidApiKey",
    "NotFound",
    "ObjectNotUploaded",
    "ProjectQuotaExceeded",
    "ProjectUsage",
    "QuotaExceeded",
    "RateLimited",
    "RecalculatedUsage",
    "RequestTooLarge",
    "Retry",
    "ServiceUnavailable",
    "StorageRefused",
    "TenantPage",
    "TenantUsage",
    "UnsupportedMediaType",
    "UploadFailed",
    "UploadInProgress",
    "UploadRequest",
    "UploadResponse",
    "UploadResult",
    "UploadStatus",
    "ValidationFailed",
    "new_idempotency_key",
]
