"""How a validation failure reads: msgspec's messages as sentences.

msgspec (and Litestar, which validates parameters with it) says what failed in its
own terms (``Expected `int` >= 0 - at `$.size_bytes```). The client gets a sentence
that names the field as it sent it: ``The field 'size_bytes' must be at least 0.``
:func:`sentence` does the wording; :func:`body_errors` and :func:`parameter_error`
find the field.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from gateway.api.schemas import (
    CHECKSUM_PATTERN,
    CONTENT_TYPE_PATTERN,
    EMAIL_PATTERN,
    FILENAME_PATTERN,
    IDEMPOTENCY_KEY_PATTERN,
    TENANT_ID_PATTERN,
    TEXT_PATTERN,
    FieldError,
)
from gateway.ids import UPLOAD_ID_PATTERN

Source = Literal["body", "query", "path", "header"]

# what each pattern the API enforces means, as a sentence ends: "... must be <this>."
PATTERNS: dict[str, str] = {
    TENANT_ID_PATTERN: "1 to 128 characters of A-Z, a-z, 0-9 and . _ : @ -",
    UPLOAD_ID_PATTERN: "an upload id: upl_ and 24 hex digits",
    FILENAME_PATTERN: "a file name without /, \\ or control characters, and not . or ..",
    CONTENT_TYPE_PATTERN: "a media type such as application/pdf",
    CHECKSUM_PATTERN: "the file's SHA-256 in base64 (44 characters ending in =)",
    EMAIL_PATTERN: "an email address",
    IDEMPOTENCY_KEY_PATTERN: "visible ASCII characters, with spaces only inside",
    TEXT_PATTERN: "text without control characters",
}
# msgspec quotes a pattern as Python's repr would (backslashes doubled)
_QUOTED_PATTERNS = {repr(p)[1:-1]: text for p, text in PATTERNS.items()}
_TYPES = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "null": "null",
    "object": "a JSON object",
    "array": "an array",
}
_BOUNDS = {">=": "at least", "<=": "at most", ">": "greater than", "<": "less than"}
_AT = re.compile(r"^(?P<message>.*?) - at `(?P<path>[^`]*)`(?: in `[^`]*`)?$", re.S)


def _type(spec: str, *, got: bool = False) -> str:
    names = [n.strip() for n in spec.split("|")]
    words = ["a boolean" if got and n == "bool" else _TYPES.get(n, n) for n in names]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _subject(field: str | None, source: Source) -> str:
    if source == "body":
        return f"The field '{field}'" if field else "The request body"
    if source == "header":
        return f"The {field} header"
    return f"The {source} parameter '{field}'"


def _joined(path: str | None, name: str) -> str:
    return f"{path}.{name}" if path else name


def sentence(
    message: str,
    *,
    field: str | None,
    source: Source,
    allowed: Sequence[Any] | None = None,
) -> str:
    """msgspec's ``message`` about ``field`` (None: the whole body) as a sentence."""
    subject = _subject(field, source)
    if m := re.fullmatch(r"Object missing required field `(.+)`", message):
        return f"The field '{_joined(field, m[1])}' is required."
    if m := re.fullmatch(r"Object contains unknown field `(.+)`", message):
        return f"The field '{_joined(field, m[1])}' is not one this API takes."
    if m := re.fullmatch(r"Expected `([^`]+)`, got `([^`]+)`", message):
        return f"{subject} must be {_type(m[1])}, not {_type(m[2], got=True)}."
    if m := re.fullmatch(r"Expected `(array|object)` of length (>=|<=) (\d+)", message):
        unit = "items" if m[1] == "array" else "fields"
        return f"{subject} must have {_BOUNDS[m[2]]} {m[3]} {unit}."
    if m := re.fullmatch(r"Expected `[^`]+` of length (>=|<=) (\d+)", message):
        unit = "character" if m[2] == "1" else "characters"
        return f"{subject} must be {_BOUNDS[m[1]]} {m[2]} {unit} long."
    if m := re.fullmatch(r"Expected `[^`]+` (>=|<=|>|<) (\S+)", message):
        bound = m[2].removesuffix(".0")
        return f"{subject} must be {_BOUNDS[m[1]]} {bound}."
    if m := re.fullmatch(r"Expected `[^`]+` that's a multiple of (\S+)", message):
        return f"{subject} must be a multiple of {m[1]}."
    if m := re.fullmatch(r"Expected `str` matching regex '(.*)'", message, re.S):
        rule = PATTERNS.get(m[1]) or _QUOTED_PATTERNS.get(m[1]) or f"text matching {m[1]}"
        return f"{subject} must be {rule}."
    if m := re.fullmatch(r"Invalid enum value (.+)", message, re.S):
        if allowed:
            choices = ", ".join(str(a) for a in allowed)
            return f"{subject} must be one of {choices}, not {m[1]}."
        return f"{subject} cannot be {m[1]}."
    if message == "Input data was truncated":
        return "The request body is not valid JSON: it ends too soon."
    if m := re.fullmatch(r"JSON is malformed: (.*)", message, re.S):
        return f"The request body is not valid JSON ({m[1]})."
    return f"{subject} is not valid: {message}."


def _json_path(path: str) -> str | None:
    """``$.a[0].b`` → ``a[0].b``; ``$`` → None (the body itself)."""
    if path in ("", "$"):
        return None
    return path[2:] if path.startswith("$.") else path.lstrip("$")


def _unwrap(tp: Any) -> Any:
    """``Annotated[T, ...]`` and ``T | None`` → ``T``."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
                continue
        return tp


def literal_values(tp: Any) -> list[Any] | None:
    """The values of a ``Literal`` type (through ``Annotated`` and ``| None``)."""
    tp = _unwrap(tp)
    if typing.get_origin(tp) is Literal:
        return list(typing.get_args(tp))
    return None


def _field_type(model: Any, path: str | None) -> Any:
    """The declared type of the body field at ``path`` (plain ``a.b`` names only)."""
    tp = model
    for part in (path or "").split("."):
        if not part or "[" in part:
            return None
        tp = _unwrap(tp)
        if not (isinstance(tp, type) and issubclass(tp, msgspec.Struct)):
            return None
        hints = typing.get_type_hints(tp, include_extras=True)
        if part not in hints:
            return None
        tp = hints[part]
    return tp


def body_error(message: str, model: Any) -> FieldError:
    """One error of msgspec decoding the body into ``model``."""
    m = _AT.match(message)
    text, path = (m["message"], _json_path(m["path"])) if m else (message, None)
    allowed = literal_values(_field_type(model, path)) if path else None
    field = path
    if named := re.fullmatch(r"Object (?:missing required|contains unknown) field `(.+)`", text):
        field = _joined(path, named[1])
    return FieldError(
        field=field or "body",
        source="body",
        message=sentence(text, field=path, source="body", allowed=allowed),
    )


BODY_REQUIRED = FieldError(field="body", source="body", message="A JSON request body is required.")


def parameter_error(
    message: str,
    *,
    name: str,
    source: Source,
    annotation: Any = None,
) -> FieldError:
    """One error of Litestar validating a parameter (or, ``source="body"``, a body
    field: Litestar strips msgspec's ``- at `$…``` and names the field itself)."""
    if source == "body":
        if name == "data" and re.fullmatch(r"'data'|Expected `object`, got `null`", message):
            return BODY_REQUIRED
        return body_error(f"{message} - at `$.{name}`" if name != "data" else message, annotation)
    allowed = literal_values(annotation)
    if m := re.fullmatch(r"Expected `([^`]+)`, got `str`", message):
        # a parameter always arrives as text: say what it must be, not that it was text
        text = f"{_subject(name, source)} must be {_type(m[1])}."
        return FieldError(field=name, source=source, message=text)
    return FieldError(
        field=name,
        source=source,
        message=sentence(message, field=name, source=source, allowed=allowed),
    )
