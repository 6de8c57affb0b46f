"""The one place domain and framework errors become responses."""

from __future__ import annotations

from typing import Any

import structlog
from litestar import MediaType, Request, Response
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    NotFoundException,
    ValidationException,
)
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from gateway.errors import DependencyUnavailable, GatewayError

log = structlog.get_logger(__name__)


def _json(
    body: dict[str, Any], status: int, headers: dict[str, str] | None = None
) -> Response[Any]:
    return Response(content=body, status_code=status, headers=headers, media_type=MediaType.JSON)


def gateway_error_parts(exc: GatewayError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, ``{detail, code, ...}`` body and headers of a ``GatewayError``'s
    response (also for the routes answered before Litestar's router)."""
    if isinstance(exc, DependencyUnavailable):
        log.warning("dependency unavailable", dependency=exc.dependency, cause=exc.cause)
    return exc.status, exc.body(), exc.headers


def gateway_error(_: Request[Any, Any, Any], exc: GatewayError) -> Response[Any]:
    status, body, headers = gateway_error_parts(exc)
    return _json(body, status, headers)


def validation_error(_: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    errors = exc.extra if isinstance(exc.extra, list) else []
    message = exc.detail or "The request is not valid"
    fields = [e.get("key") for e in errors if isinstance(e, dict) and e.get("key")]
    code = "validation_error"
    if "JSON is malformed" in message or "malformed" in message.lower():
        code = "invalid_json"
    detail = message
    if errors and isinstance(errors[0], dict) and errors[0].get("message"):
        first = errors[0]
        detail = f"{first.get('key') or 'body'}: {first['message']}"
    return _json({"detail": detail, "code": code, "errors": errors, "fields": fields}, 422)


def http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    codes = {
        400: "bad_request",
        401: "invalid_api_key",
        404: "not_found",
        405: "method_not_allowed",
        413: "request_too_large",
        415: "unsupported_media_type",
        429: "rate_limited",
    }
    if status == 400:  # Litestar's body/query decoding errors: bad input → 422
        status = 422
        code = "invalid_request"
    else:
        code = codes.get(status, "http_error")
    detail = exc.detail or "Error"
    if isinstance(exc, NotFoundException) and detail == "Not Found":
        detail = "Not found"
    headers = dict(exc.headers or {})
    return _json({"detail": detail, "code": code}, status, headers)


def internal_error_body(exc: Exception) -> dict[str, Any]:
    """Logs an unexpected error with its traceback (call it in the ``except``
    block); the body of the 500 response."""
    log.exception("unhandled error", error=type(exc).__name__)
    return {"detail": "Internal error", "code": "internal_error"}


def internal_error(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    return _json(internal_error_body(exc), HTTP_500_INTERNAL_SERVER_ERROR)


EXCEPTION_HANDLERS: Any = {
    GatewayError: gateway_error,
    ValidationException: validation_error,
    NotAuthorizedException: http_error,
    HTTPException: http_error,
    Exception: internal_error,
}
