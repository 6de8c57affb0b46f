"""create_app(settings) -> Litestar: the HTTP layer (routes, middleware, errors,
OpenAPI) over the services of a gateway.runtime.Runtime, which its lifespan enters."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar, Request, Response
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware
from litestar.routes import HTTPRoute
from litestar.static_files import create_static_files_router

from gateway import __version__
from gateway.api.audit import SCHEMA_TYPES as AUDIT_TYPES
from gateway.api.audit import AuditController
from gateway.api.body import check_json_content_type
from gateway.api.deps import DEPENDENCIES
from gateway.api.errors import EXCEPTION_HANDLERS
from gateway.api.events import (
    FAST_PATHS,
    WEBHOOK_OPERATION,
    IngestResponse,
    Webhook,
    ingest_s3_events,
)
from gateway.api.events import PATH as WEBHOOK_PATH
from gateway.api.files import FileController
from gateway.api.health import HealthController
from gateway.api.openapi import finish as finish_openapi
from gateway.api.openapi import openapi_config
from gateway.api.tenants import TenantController
from gateway.api.uploads import UploadController
from gateway.api.webhooks import SCHEMA_TYPES as WEBHOOK_TYPES
from gateway.api.webhooks import WebhookController
from gateway.config import Settings
from gateway.observability import (
    Metrics,
    RequestContextMiddleware,
    RequestRecorder,
    configure_logging,
    flush_logs,
)
from gateway.runtime import Runtime


async def _before_request(request: Request[Any, Any, Any]) -> Response[None] | None:
    if request.method == "OPTIONS":
        return _options(request)
    check_json_content_type(
        request.method,
        request.headers.get("content-type"),
        request.headers.get("content-length"),
    )
    return None


def _options(request: Request[Any, Any, Any]) -> Response[None]:
    """``OPTIONS``: 204 with every method of the path in ``Allow``. (Litestar 2's own
    answer names only some of them when several handlers share a path:
    litestar-org/litestar#4169.)"""
    template = request.scope.get("path_template")
    methods: set[str] = {"OPTIONS"}
    for route in request.app.routes:
        if isinstance(route, HTTPRoute) and route.path_format == template:
            methods |= set(route.methods)
    return Response(None, status_code=204, headers={"Allow": ", ".join(sorted(methods))})


# What handlers and tests find on app.state, as the Runtime names them.
STATE_SERVICES = (
    "db",
    "redis",
    "store",
    "quota",
    "presigner",
    "ledger",
    "admission",
    "lifecycle",
    "sweeper",
    "files",
    "tenants",
    "projects",
    "batcher",
    "ingestor",
    "audit",
    "webhooks",
)


class GatewayApp(Litestar):
    """Litestar, with the webhook's POSTs answered before its router (``Webhook``:
    the gateway's busiest route, one request per S3 event)."""

    webhook: Webhook | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        webhook = self.webhook
        if (
            webhook is not None
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] in FAST_PATHS
        ):
            await webhook(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings, *, extra_route_handlers: list[Any] | None = None) -> Litestar:
    """Routes, middleware, errors and OpenAPI on top of a Runtime (gateway/runtime.py),
    entered by the lifespan: the services, the sweeper (every GATEWAY_SWEEP_INTERVAL
    seconds, unless 0), the webhook deliverer (unless GATEWAY_WEBHOOK_DELIVERY=false)
    and, when GATEWAY_SQS_QUEUE_URL is set, an SQS poller."""
    metrics = Metrics(multiprocess_dir=settings.prometheus_multiproc_dir)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        runtime = Runtime(
            settings,
            metrics=metrics,
            sweeper=settings.sweep_interval > 0,
            sqs_queue_url=settings.sqs_queue_url,
            webhook_delivery=settings.webhook_delivery,
        )
        async with runtime:
            state = app.state
            state.runtime = runtime
            for name in STATE_SERVICES:
                setattr(state, name, getattr(runtime, name))
            # /schema as the server behaves (gateway/api/openapi.py), with the webhook:
            # a plain ASGI route, which Litestar leaves out.
            finish_openapi(
                app.openapi_schema,
                extra_paths={WEBHOOK_PATH: WEBHOOK_OPERATION},
                extra_types=[IngestResponse, *AUDIT_TYPES, *WEBHOOK_TYPES],
            )
            # Everything built so far lives as long as the process: keep it out of the
            # cyclic collector's full passes, which otherwise stall every request in
            # flight for tens of milliseconds (bench/README.md, "GC pauses").
            gc.collect()
            gc.freeze()
            try:
                yield
            finally:
                flush_logs()

    configure_logging(settings)
    app = GatewayApp(
        route_handlers=[
            UploadController,
            TenantController,
            FileController,
            HealthController,
            AuditController,
            WebhookController,
            ingest_s3_events,
            static_router(),
            *(extra_route_handlers or []),
        ],
        dependencies=DEPENDENCIES,
        exception_handlers=EXCEPTION_HANDLERS,
        before_request=_before_request,
        lifespan=[lifespan],
        state=State({"settings": settings, "metrics": metrics}),
        middleware=[DefineMiddleware(RequestContextMiddleware, metrics=metrics)],
        openapi_config=openapi_config(__version__),
        request_max_body_size=settings.max_body_bytes,
        debug=False,
        logging_config=None,
    )
    if settings.webhook_secret:  # without one, Litestar's route answers 404
        app.webhook = Webhook(app.state, RequestRecorder(metrics))
    return app


def static_router() -> Any:
    from importlib.resources import files

    return create_static_files_router(
        path="/static", directories=[str(files("gateway").joinpath("static"))], name="static"
    )


__all__ = ["CORSConfig", "create_app", "static_router"]
