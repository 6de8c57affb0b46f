"""Strict JSON bodies.

Litestar converts ``data`` leniently (``"10"`` would pass for an integer); the
contract wants wrong types refused, so handlers decode the raw body strictly here.
``data`` stays in the signatures so that /schema documents the bodies. A whole
number written as ``224.0`` or ``1e3`` is that integer (JSON has one number type,
and JSON Schema's ``integer`` admits it); ``"224"`` is not a number.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from litestar import Request

from gateway.api.messages import BODY_REQUIRED, body_error, sentence
from gateway.api.schemas import FieldError
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


def invalid(*errors: FieldError) -> ValidationFailed:
    """The 422 for these errors: the first one's sentence, and every one of them."""
    more = f" ({len(errors) - 1} more in errors)" if len(errors) > 1 else ""
    return ValidationFailed(
        errors[0].message + more, extra={"errors": [msgspec.to_builtins(e) for e in errors]}
    )


def _whole_numbers(value: Any) -> Any:
    """JSON numbers with an integral value (``224.0``, ``1e3``) as ints: the request
    bodies have no float fields, so every such number stands for an integer."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    return value


def decode_body(raw: bytes, model: type[T]) -> T:
    """``raw`` as ``model``, strictly; ValidationFailed (a 422 naming the field) if not."""
    if not raw.strip():
        raise invalid(BODY_REQUIRED)
    try:
        return msgspec.json.decode(raw, type=model, strict=True)
    except msgspec.ValidationError as exc:
        if "got `float`" not in str(exc):
            raise invalid(body_error(str(exc), model)) from None
    except msgspec.DecodeError as exc:
        message = sentence(str(exc), field=None, source="body")
        raise invalid(FieldError(field="body", source="body", message=message)) from None
    try:  # a number written with a fraction or an exponent: once more, as integers
        return msgspec.convert(_whole_numbers(msgspec.json.decode(raw)), model, strict=True)
    except msgspec.ValidationError as exc:
        raise invalid(body_error(str(exc), model)) from None


async def strict_body(request: Request[Any, Any, Any], model: type[T]) -> T:
    return decode_body(await request.body(), model)
