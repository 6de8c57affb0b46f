"""The gateway's errors as exceptions, with the fields of their bodies.

Every answer that is not a success raises a :class:`GatewayError` subclass chosen by
its ``code`` (then by its status): ``except QuotaExceeded as e: e.storage_used_bytes``,
``except RateLimited as e: e.retry_after``. ``detail`` is the gateway's sentence,
``body`` the whole decoded body, ``request_id`` the ``X-Request-ID`` to quote in a
bug report.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from upload_gateway_client import types as t


class ClientError(Exception):
    """Anything this client raises."""


class GatewayUnreachable(ClientError):
    """No answer from the gateway (connection refused, timed out, cut), after the
    retries the policy allows."""


class UploadFailed(ClientError):
    """:meth:`upload_file`: the bytes did not reach S3 (its status and answer); the
    upload was cancelled, so nothing stays reserved."""

    def __init__(self, message: str, *, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class GatewayError(ClientError):
    """An error answer: ``{"detail", "code", ...}``."""

    status_code: ClassVar[int] = 0

    def __init__(
        self,
        status: int,
        body: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.detail: str = str(body.get("detail") or f"The gateway answered {status}")
        self.code: str = str(body.get("code") or "error")
        self.request_id: str | None = self.headers.get("x-request-id")
        super().__init__(f"{status} {self.code}: {self.detail}")

    def _as(self, model: type[Any]) -> Any:
        try:
            return msgspec.convert(self.body, model)
        except msgspec.ValidationError:
            return None


def _retry_after(headers: dict[str, str]) -> float | None:
    value = headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class InvalidApiKey(GatewayError):
    """401: the key is missing, malformed, unknown or revoked."""

    status_code = 401


class NotFound(GatewayError):
    """404: no such upload, file or route in this project."""

    status_code = 404


class Conflict(GatewayError):
    """409."""

    status_code = 409


class IdempotencyKeyReused(Conflict):
    """409: this Idempotency-Key was used with another body."""


class UploadInProgress(Conflict):
    """409: the first request with this Idempotency-Key is still being judged."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        super().__init__(status, body, headers)
        self.retry_after = _retry_after(self.headers)


class ObjectNotUploaded(Conflict):
    """409: ``complete`` before the object is in S3."""


class QuotaExceeded(GatewayError):
    """413 before any URL exists: the tenant's limit would be passed."""

    status_code = 413
    scope: ClassVar[str] = "tenant"

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        super().__init__(status, body, headers)
        fields = self._as(t.QuotaExceededBody)
        self.storage_limit_bytes: int | None = fields.storage_limit_bytes if fields else None
        self.storage_used_bytes: int | None = fields.storage_used_bytes if fields else None
        self.storage_reserved_bytes: int | None = fields.storage_reserved_bytes if fields else None
        self.requested_bytes: int | None = fields.requested_bytes if fields else None


class ProjectQuotaExceeded(QuotaExceeded):
    """413: the project's cap (all its tenants together) would be passed."""

    scope = "project"


class FileTooLarge(GatewayError):
    """413: over the per-file maximum."""

    status_code = 413

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        super().__init__(status, body, headers)
        fields = self._as(t.FileTooLargeBody)
        self.max_file_size_bytes: int | None = fields.max_file_size_bytes if fields else None
        self.requested_bytes: int | None = fields.requested_bytes if fields else None


class RequestTooLarge(GatewayError):
    """413: the request body itself is over the gateway's limit."""

    status_code = 413


class UnsupportedMediaType(GatewayError):
    status_code = 415


class ValidationFailed(GatewayError):
    """422: ``errors`` names each invalid field as it was sent."""

    status_code = 422

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        super().__init__(status, body, headers)
        fields = self._as(t.ValidationErrorBody)
        self.errors: list[t.FieldError] = fields.errors if fields else []


class RateLimited(GatewayError):
    """429: a rate rule was hit; ``retry_after`` seconds until it would pass."""

    status_code = 429

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        super().__init__(status, body, headers)
        self.retry_after = _retry_after(self.headers)


class StorageRefused(GatewayError):
    """502: S3 refused the gateway itself (its credentials, bucket or policy)."""

    status_code = 502

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        super().__init__(status, body, headers)
        self.s3_code: str | None = body.get("s3_code")


class ServiceUnavailable(GatewayError):
    """503: a dependency of the gateway is down; nothing was changed. ``retry_after``
    seconds; ``dependency`` names it (``postgres``, ``redis``, ``s3``, ``quota``)."""

    status_code = 503

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        super().__init__(status, body, headers)
        self.retry_after = _retry_after(self.headers)
        self.dependency: str | None = body.get("dependency")


BY_CODE: dict[str, type[GatewayError]] = {
    "invalid_api_key": InvalidApiKey,
    "idempotency_key_reused": IdempotencyKeyReused,
    "upload_in_progress": UploadInProgress,
    "object_not_uploaded": ObjectNotUploaded,
    "quota_exceeded": QuotaExceeded,
    "project_quota_exceeded": ProjectQuotaExceeded,
    "file_too_large": FileTooLarge,
    "request_too_large": RequestTooLarge,
    "rate_limited": RateLimited,
    "storage_refused": StorageRefused,
}
BY_STATUS: dict[int, type[GatewayError]] = {
    cls.status_code: cls
    for cls in (
        InvalidApiKey,
        NotFound,
        Conflict,
        UnsupportedMediaType,
        ValidationFailed,
        RateLimited,
        StorageRefused,
        ServiceUnavailable,
    )
}


def error_for(status: int, body: Any, headers: dict[str, str]) -> GatewayError:
    """The exception for an error answer (``body`` its decoded JSON, if any)."""
    if not isinstance(body, dict):
        body = {"detail": f"The gateway answered {status}", "code": "error"}
    cls = BY_CODE.get(str(body.get("code")))
    if cls is None or cls.status_code != status:
        cls = BY_STATUS.get(status, GatewayError)
    return cls(status, body, headers)
