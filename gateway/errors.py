"""Domain errors: each carries a stable code and an HTTP status.

Services raise these; ``gateway.api.errors`` turns them into responses in one place.
"""

from __future__ import annotations

from typing import Any, ClassVar


class GatewayError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    default_detail: ClassVar[str] = "Internal error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.detail = detail or self.default_detail
        self.extra = extra or {}
        self.headers = headers or {}
        super().__init__(self.detail)

    def body(self) -> dict[str, Any]:
        return {"detail": self.detail, "code": self.code, **self.extra}


class BadRequest(GatewayError):
    status = 400
    code = "bad_request"
    default_detail = "The request could not be read"


class Unauthorized(GatewayError):
    status = 401
    code = "invalid_api_key"
    default_detail = "A valid API key is required (Authorization: Bearer <key>)"


class NotFound(GatewayError):
    status = 404
    code = "not_found"
    default_detail = "Not found"


class MethodNotAllowed(GatewayError):
    status = 405
    code = "method_not_allowed"
    default_detail = "Use POST to deliver S3 event notifications"

    def __init__(self) -> None:
        super().__init__(headers={"Allow": "POST"})


class Conflict(GatewayError):
    status = 409
    code = "conflict"
    default_detail = "Conflict"


class IdempotencyConflict(Conflict):
    code = "idempotency_key_reused"
    default_detail = "This Idempotency-Key was already used with a different request body"


class UploadInProgress(Conflict):
    code = "upload_in_progress"
    default_detail = "An upload with this Idempotency-Key is still being admitted; retry shortly"

    def __init__(self, *, retry_after: int = 1) -> None:
        super().__init__(headers={"Retry-After": str(retry_after)})


class ObjectNotUploaded(Conflict):
    code = "object_not_uploaded"
    default_detail = "The object has not been uploaded to storage yet"


class UploadNotPending(Conflict):
    code = "upload_not_pending"
    default_detail = "The upload is no longer pending"


class QuotaExceeded(GatewayError):
    status = 413
    code = "quota_exceeded"
    default_detail = "Storage quota exceeded for this tenant"


class ProjectQuotaExceeded(QuotaExceeded):
    code = "project_quota_exceeded"
    default_detail = "Storage quota exceeded for this project"


class FileTooLarge(GatewayError):
    status = 413
    code = "file_too_large"
    default_detail = "The file is larger than the per-file maximum"


class PayloadTooLarge(GatewayError):
    status = 413
    code = "request_too_large"
    default_detail = "The request body is too large"


class UnsupportedMediaType(GatewayError):
    status = 415
    code = "unsupported_media_type"
    default_detail = "Send the request body as application/json"


class ValidationFailed(GatewayError):
    status = 422
    code = "validation_error"
    default_detail = "The request is not valid"


class WebhookDisabled(GatewayError):
    status = 404
    code = "webhook_disabled"
    default_detail = "The S3 event webhook is not enabled (set GATEWAY_WEBHOOK_SECRET)"


class StorageRefused(GatewayError):
    """S3 answered, and refused the gateway itself (its credentials, its bucket): a
    misconfiguration that retrying does not mend, so not a 503."""

    status = 502
    code = "storage_refused"
    default_detail = "S3 refused the gateway's request"

    def __init__(self, s3_code: str) -> None:
        super().__init__(
            f"S3 refused the gateway's request ({s3_code}): check the gateway's S3"
            " credentials, bucket name and bucket policy",
            extra={"s3_code": s3_code},
        )


class NotReady(GatewayError):
    """/readyz: a dependency does not answer."""

    status = 503
    code = "not_ready"
    default_detail = "A dependency is unavailable"

    def __init__(self, checks: dict[str, str], *, retry_after: int) -> None:
        super().__init__(
            extra={"status": "unavailable", "checks": checks},
            headers={"Retry-After": str(retry_after)},
        )


class DependencyUnavailable(GatewayError):
    status = 503
    code = "dependency_unavailable"
    default_detail = "A dependency is unavailable; try again shortly"

    def __init__(self, dependency: str, *, retry_after: int = 2, cause: str | None = None) -> None:
        super().__init__(
            f"{dependency} is unavailable; try again shortly",
            extra={"dependency": dependency},
            headers={"Retry-After": str(retry_after)},
        )
        self.dependency = dependency
        self.cause = cause
