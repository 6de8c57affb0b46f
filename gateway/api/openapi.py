"""/schema: the OpenAPI document and its two browsable UIs, with nothing from outside.

Litestar builds the document from the handlers: their bodies, parameters and the
``responses=`` each declares with :func:`errors` (every status the route can answer,
with its body). :func:`finish` then makes it say what the server does where
Litestar's generator does not, once, before the first request:

- paths under ``/api/`` carry the trailing slash the contract writes (Litestar's
  routes drop it; both spellings are served);
- every body is documented as msgspec renders the Struct the server decodes or
  encodes with, so each pattern, range and required field msgspec enforces is stated
  (Litestar's own rendering drops constraints equal to 0 and list lengths:
  litestar-org/litestar#3999, #4514);
- no ``400``: the gateway answers every bad input with 422 (``gateway.api.errors``),
  where Litestar documents a 400 body of its own;
- ``Retry-After`` on every 429 and 503 (and on 409, for ``upload_in_progress``);
- the S3 event webhook, a plain ASGI route Litestar leaves out.

The UIs (Scalar at /schema, Swagger UI at /schema/swagger) load their scripts from
``/static/vendor/`` (pinned builds vendored from the npm registry, with their
licences: ``scripts/vendor-docs-ui.sh``), and are told not to fetch fonts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import (
    Components,
    OpenAPI,
    OpenAPIHeader,
    OpenAPIResponse,
    OpenAPIType,
    Parameter,
    PathItem,
    Schema,
    SecurityScheme,
)

from gateway.api import schemas
from gateway.api.schemas import (
    DependencyUnavailableBody,
    ErrorBody,
    FileTooLargeBody,
    QuotaExceededBody,
    RequestTooLargeBody,
    StorageRefusedBody,
    ValidationErrorBody,
)

PROJECT_KEY = "projectKey"
WEBHOOK_SECRET = "webhookSecret"
# what the API's controllers declare (the health routes need no key)
PROJECT_SECURITY: list[dict[str, list[str]]] = [{PROJECT_KEY: []}]

_REF = "#/components/schemas/{name}"
VENDOR = "/static/vendor"
# Pinned builds under gateway/static/vendor/ (VERSIONS.txt there, scripts/vendor-docs-ui.sh)
SCALAR_JS = f"{VENDOR}/scalar/standalone.js"
SWAGGER_JS = f"{VENDOR}/swagger-ui/swagger-ui-bundle.js"
SWAGGER_PRESET_JS = f"{VENDOR}/swagger-ui/swagger-ui-standalone-preset.js"
SWAGGER_CSS = f"{VENDOR}/swagger-ui/swagger-ui.css"
DOCS_CSS = "/static/docs.css"
# no favicon request at all (Litestar's default is an image on a CDN)
_NO_FAVICON = "<link rel='icon' href='data:,'>"

# -- the statuses a route can answer besides its success, with their bodies ----------

_ERRORS: dict[int, ResponseSpec] = {
    401: ResponseSpec(
        ErrorBody,
        description="A missing, malformed, unknown or revoked API key (`invalid_api_key`).",
        generate_examples=False,
    ),
    404: ResponseSpec(
        ErrorBody,
        description="No such resource in this project (`not_found`); another project's is"
        " answered the same way.",
        generate_examples=False,
    ),
    409: ResponseSpec(
        ErrorBody,
        description="A conflict with the resource's state.",
        generate_examples=False,
    ),
    413: ResponseSpec(
        RequestTooLargeBody,
        description="The request body is over the gateway's limit (`request_too_large`).",
        generate_examples=False,
    ),
    415: ResponseSpec(
        ErrorBody,
        description="The body is not JSON (`unsupported_media_type`): send application/json.",
        generate_examples=False,
    ),
    422: ResponseSpec(
        ValidationErrorBody,
        description="The request is not valid (`validation_error`): a missing or malformed"
        " body, a wrong type, a value out of range or not of the required form. `detail`"
        " names the field as it was sent.",
        generate_examples=False,
    ),
    429: ResponseSpec(
        ErrorBody,
        description="A rate rule was hit (`rate_limited`): retry after `Retry-After` seconds.",
        generate_examples=False,
    ),
    502: ResponseSpec(
        StorageRefusedBody,
        description="S3 refused the gateway itself (`storage_refused`): its credentials,"
        " bucket or policy. Retrying does not mend it.",
        generate_examples=False,
    ),
    503: ResponseSpec(
        DependencyUnavailableBody,
        description="Postgres, Redis or S3 is down or did not answer in time"
        " (`dependency_unavailable`); nothing was changed or reserved. Retry after"
        " `Retry-After` seconds.",
        generate_examples=False,
    ),
}

UPLOAD_413 = ResponseSpec(
    QuotaExceededBody | FileTooLargeBody | RequestTooLargeBody,  # type: ignore[arg-type]
    description="Refused before any URL exists, nothing reserved: the tenant's limit or the"
    " project's cap would be passed (`quota_exceeded`, `project_quota_exceeded`, with the"
    " numbers), the file is over the per-file maximum (`file_too_large`), or the request"
    " body is over the gateway's limit (`request_too_large`).",
    generate_examples=False,
)


def errors(*statuses: int, **descriptions: str | ResponseSpec) -> dict[int, ResponseSpec]:
    """``responses=`` for a handler: the error statuses it can answer, each with its
    body. A keyword ``s409="…"`` gives that status a description of its own; a
    ResponseSpec there replaces the status's body too."""
    out: dict[int, ResponseSpec] = {}
    for status in statuses:
        given = descriptions.get(f"s{status}")
        if isinstance(given, ResponseSpec):
            out[status] = given
            continue
        spec = _ERRORS[status]
        if given is not None:
            spec = ResponseSpec(spec.data_container, description=given, generate_examples=False)
        out[status] = spec
    return out


# -- the config: security schemes and the two UIs on vendored assets -----------------


def openapi_config(version: str) -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Upload gateway",
        version=version,
        description=(
            "Presigned uploads with per-tenant storage quotas. Errors are"
            ' `{"detail": "<sentence>", "code": "<stable_snake_case>", ...}`; 429 and 503'
            " carry `Retry-After`. Every path also answers without its trailing slash."
        ),
        path="/schema",
        components=Components(
            security_schemes={
                PROJECT_KEY: SecurityScheme(
                    type="http",
                    scheme="bearer",
                    description="A project API key (`gwk_…`), shown once by"
                    " `gateway projects create` or `gateway keys create`.",
                ),
                WEBHOOK_SECRET: SecurityScheme(
                    type="http",
                    scheme="bearer",
                    description="The webhook secret (`GATEWAY_WEBHOOK_SECRET`), sent by"
                    " MinIO or an SNS relay; also accepted bare.",
                ),
            }
        ),
        render_plugins=[
            ScalarRenderPlugin(
                js_url=SCALAR_JS,
                css_url=DOCS_CSS,
                favicon=_NO_FAVICON,
                # Nothing from Scalar's servers: the system's fonts rather than its CDN's,
                # and none of its hosted features (AI agent, MCP, developer tools,
                # telemetry), which it shows on localhost.
                options={
                    "withDefaultFonts": False,
                    "telemetry": False,
                    "agent": {"disabled": True},
                    "mcp": {"disabled": True},
                    "showDeveloperTools": "never",
                    "hideClientButton": True,
                },
            ),
            SwaggerRenderPlugin(
                path="/swagger",
                js_url=SWAGGER_JS,
                css_url=SWAGGER_CSS,
                standalone_preset_js_url=SWAGGER_PRESET_JS,
                favicon=_NO_FAVICON,
            ),
        ],
    )


# -- finishing the document Litestar built -------------------------------------------


def _struct_types(extra: Iterable[type[msgspec.Struct]]) -> dict[str, type[msgspec.Struct]]:
    found = {
        value.__name__: value
        for value in vars(schemas).values()
        if isinstance(value, type)
        and issubclass(value, msgspec.Struct)
        and value.__module__ == schemas.__name__
    }
    found.update({t.__name__: t for t in extra})
    return found


def _clean(schema: Any) -> Any:
    """msgspec's JSON Schema as the document writes it: no ``default: null`` (the same
    as no default) and no ``title`` inside properties."""
    if isinstance(schema, dict):
        return {k: _clean(v) for k, v in schema.items() if not (k == "default" and v is None)}
    if isinstance(schema, list):
        return [_clean(v) for v in schema]
    return schema


def body_schemas(
    names: Iterable[str], extra: Iterable[type[msgspec.Struct]] = ()
) -> dict[str, Any]:
    """msgspec's JSON Schema of the named Structs of gateway.api.schemas (and of
    ``extra``), with every Struct they refer to, as OpenAPI components."""
    types = _struct_types(extra)
    wanted = [types[n] for n in names if n in types]
    if not wanted:
        return {}
    _, components = msgspec.json.schema_components(wanted, ref_template=_REF)
    return {name: _clean(schema) for name, schema in components.items()}


_RETRY_AFTER = {
    "Retry-After": OpenAPIHeader(
        schema=Schema(type=OpenAPIType.INTEGER, minimum=1),
        description="Seconds to wait before retrying.",
        required=True,
    )
}
_RETRY_AFTER_SOMETIMES = {
    "Retry-After": OpenAPIHeader(
        schema=Schema(type=OpenAPIType.INTEGER, minimum=1),
        description="With `upload_in_progress`: seconds to wait before retrying.",
        required=False,
    )
}
_API_PATH = re.compile(r"^/api/.*[^/]$")


def _not_nullable(schema: Schema) -> None:
    """An optional parameter is one that may be left out: Litestar writes it as
    ``oneOf: [T, null]``, but no query string or header can carry a JSON null."""
    variants = schema.one_of or []
    kept = [v for v in variants if not (isinstance(v, Schema) and v.type == OpenAPIType.NULL)]
    if len(variants) == 2 and len(kept) == 1 and isinstance(kept[0], Schema):
        schema.one_of = None
        schema.type = kept[0].type


def finish(
    openapi: OpenAPI,
    *,
    extra_paths: Mapping[str, PathItem] | None = None,
    extra_types: Iterable[type[msgspec.Struct]] = (),
) -> None:
    """Make the document Litestar built say what the server does (module docstring).
    Safe to call twice."""
    paths = openapi.paths or {}
    renamed: dict[str, PathItem] = {}
    for path, item in {**paths, **(extra_paths or {})}.items():
        renamed[f"{path}/" if _API_PATH.match(path) else path] = item
    openapi.paths = renamed

    for item in renamed.values():
        for method in ("get", "put", "post", "delete", "patch"):
            operation = getattr(item, method, None)
            if operation is None or not operation.responses:
                continue
            for parameter in operation.parameters or []:
                if isinstance(parameter, Parameter) and isinstance(parameter.schema, Schema):
                    _not_nullable(parameter.schema)
            operation.responses.pop("400", None)
            for status, response in operation.responses.items():
                if not isinstance(response, OpenAPIResponse):
                    continue
                if status in ("429", "503"):
                    response.headers = {**(response.headers or {}), **_RETRY_AFTER}
                elif status == "409":
                    response.headers = {**(response.headers or {}), **_RETRY_AFTER_SOMETIMES}
                elif not response.headers:
                    response.headers = None

    extra_types = list(extra_types)
    components = openapi.components
    current: dict[str, Any] = dict(components.schemas or {})
    current.update(body_schemas([*current, *(t.__name__ for t in extra_types)], extra_types))
    components.schemas = dict(sorted(current.items()))
