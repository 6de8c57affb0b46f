"""Strict JSON bodies.

Litestar converts ``data`` leniently (``"10"`` would pass for an integer); the
contract wants wrong types refused, so handlers decode the raw body strictly here.
``data`` stays in the signatures so that /schema documents the bodies.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from litestar import Request

from gateway.errors import UnsupportedMediaType, ValidationFailed

T = TypeVar("T")

_JSON_TYPES = ("application/json", "text/plain")  # text/plain: SNS posts JSON as text


def check_json_content_type(
    method: str, content_type: str | None, content_length: str | None
) -> None:
    """Bodies are JSON: another declared content type is a 415 (none at all is let
    through, as is a bodiless DELETE with one)."""
    if method not in ("POST", "PATCH", "PUT", "DELETE") or content_type is None:
        return
    main = content_type.split(";", 1)[0].strip().lower()
    if main in _JSON_TYPES or main.endswith("+json"):
        return
    if method == "DELETE" and not content_length:
        return
    raise UnsupportedMediaType(f"Send the request body as application/json, not {main!r}")


async def strict_body(request: Request[Any, Any, Any], model: type[T]) -> T:
    raw = await request.body()
    if not raw.strip():
        raise ValidationFailed("A JSON request body is required")
    try:
        return msgspec.json.decode(raw, type=model, strict=True)
    except msgspec.ValidationError as exc:
        raise ValidationFailed(f"Invalid request body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ValidationFailed(f"The body is not valid JSON: {exc}") from None
