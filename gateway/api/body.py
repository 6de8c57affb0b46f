"""Strict JSON bodies.

Litestar converts ``data`` leniently (``"10"`` would pass for an integer); the
contract wants wrong types refused, so handlers decode the raw body strictly here.
``data`` stays in the signatures so that /schema documents the bodies.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from litestar import Request

from gateway.errors import ValidationFailed

T = TypeVar("T")


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
