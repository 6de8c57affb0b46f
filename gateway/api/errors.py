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

from gateway.api.body import invalid
from gateway.api.messages import Source, parameter_error, sentence
from gateway.api.schemas import FieldError
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


_SOURCES: dict[str, Source] = {"body": "body", "query": "query", "path": "path", "header": "header"}


def _field_errors(request: Request[Any, Any, Any], exc: ValidationException) -> list[FieldError]:
    """Litestar's errors (``{"message", "key", "source"}``, msgspec's wording, Python
    names) as FieldErrors naming each input as the client sent it."""
    parameters = request.route_handler.parsed_fn_signature.parameters
    out: list[FieldError] = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if not isinstance(item, dict):
            continue
        key = str(item.get("key") or "data")
        raw_source = item.get("source") or "body"  # a ParamType for parameters
        source = _SOURCES.get(str(getattr(raw_source, "value", raw_source)), "body")
        if source == "body":
            data = parameters.get("data")
            annotation = data.annotation if data is not None else None
        else:
            definition = parameters.get(key)
            annotation = definition.annotation if definition is not None else None
            kwarg = definition.kwarg_definition if definition is not None else None
            # Parameter(query="x") / Parameter(header="X") / HeaderParameter(name="X")
            for attribute in (source, "name"):
                alias = getattr(kwarg, attribute, None)
                if isinstance(alias, str) and alias:
                    key = alias
                    break
        out.append(
            parameter_error(
                str(item.get("message") or ""), name=key, source=source, annotation=annotation
            )
        )
    return out


def validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    errors = _field_errors(request, exc) or [
        FieldError(field="body", source="body", message="The request is not valid.")
    ]
    return gateway_error(request, invalid(*errors))


def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
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
    if status == 400:  # Litestar's body decoding errors: bad input → 422
        message = sentence(exc.detail or "", field=None, source="body")
        return gateway_error(
            request, invalid(FieldError(field="body", source="body", message=message))
        )
    code = codes.get(status, "http_error")
    detail = exc.detail or "Error"
    headers = dict(exc.headers or {})
    if isinstance(exc, NotFoundException) and detail == "Not Found":
        detail = "Not found"
    elif status == 405:
        allowed = headers.get("Allow") or headers.get("allow") or ""
        methods = ", ".join(sorted(m.strip() for m in allowed.split(",") if m.strip()))
        detail = f"{request.method} is not allowed here" + (f"; use {methods}" if methods else "")
    elif status == 413:
        detail = "The request body is too large"
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
