"""create_app(settings) -> Litestar: the HTTP layer (routes, middleware, errors,
OpenAPI) over the services of a gateway.runtime.Runtime, which its lifespan enters."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar, Request
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.static_files import create_static_files_router

from gateway import __version__
from gateway.api.body import check_json_content_type
from gateway.api.deps import DEPENDENCIES
from gateway.api.errors import EXCEPTION_HANDLERS
from gateway.api.events import FAST_PATHS, WEBHOOK_OPERATION, Webhook, ingest_s3_events
from gateway.api.events import PATH as WEBHOOK_PATH
from gateway.api.files import FileController
from gateway.api.health import HealthController
from gateway.api.tenants import TenantController
from gateway.api.uploads import UploadController
from gateway.config import Settings
from gateway.observability import (
    Metrics,
    RequestContextMiddleware,
    RequestRecorder,
    configure_logging,
    flush_logs,
)
from gateway.runtime import Runtime


async def _require_json(request: Request[Any, Any, Any]) -> None:
    check_json_content_type(
        request.method,
        request.headers.get("content-type"),
        request.headers.get("content-length"),
    )


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
    seconds, unless 0) and, when GATEWAY_SQS_QUEUE_URL is set, an SQS poller."""
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        runtime = Runtime(
            settings,
            metrics=metrics,
            sweeper=settings.sweep_interval > 0,
            sqs_queue_url=settings.sqs_queue_url,
        )
        async with runtime:
            state = app.state
            state.runtime = runtime
            for name in STATE_SERVICES:
                setattr(state, name, getattr(runtime, name))
            # The webhook is a plain ASGI route, which Litestar leaves out of /schema.
            if app.openapi_schema.paths is not None:
                app.openapi_schema.paths[WEBHOOK_PATH.rstrip("/")] = WEBHOOK_OPERATION
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
            ingest_s3_events,
            static_router(),
            *(extra_route_handlers or []),
        ],
        dependencies=DEPENDENCIES,
        exception_handlers=EXCEPTION_HANDLERS,
        before_request=_require_json,
        lifespan=[lifespan],
        state=State({"settings": settings, "metrics": metrics}),
        middleware=[DefineMiddleware(RequestContextMiddleware, metrics=metrics)],
        openapi_config=OpenAPIConfig(
            title="Upload gateway",
            version=__version__,
            description="Presigned uploads with per-tenant storage quotas.",
            path="/schema",
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
        ),
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
