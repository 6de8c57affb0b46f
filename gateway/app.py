"""create_app(settings) -> Litestar: the one place things are wired."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any

import structlog
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
from gateway.db import create_database
from gateway.errors import DependencyUnavailable
from gateway.events.ingest import ApplyBatcher, EventIngestor
from gateway.events.sqs import SqsPoller, sqs_client
from gateway.ledger import Ledger
from gateway.observability import (
    Metrics,
    RequestContextMiddleware,
    RequestRecorder,
    configure_logging,
    flush_logs,
)
from gateway.projects import ProjectService
from gateway.quota import QuotaStore, create_redis
from gateway.storage.presigner import BotocoreCredentialSource, S3Presigner
from gateway.storage.s3 import S3ObjectStore
from gateway.tenants import TenantService
from gateway.uploads import PostgresReservationSource, UploadService

log = structlog.get_logger(__name__)


async def _require_json(request: Request[Any, Any, Any]) -> None:
    check_json_content_type(
        request.method,
        request.headers.get("content-type"),
        request.headers.get("content-length"),
    )


class _NoCredentials:
    def current(self) -> Any:
        raise DependencyUnavailable("s3 credentials", cause="no AWS credentials found")


def _credentials(found: Any) -> Any:
    if found is None:
        log.error(
            "no S3 credentials found (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the AWS chain)"
        )
        return _NoCredentials()
    return BotocoreCredentialSource(found)


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
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        state = app.state
        db = create_database(settings)
        await db.open()
        redis = create_redis(settings)
        store = S3ObjectStore(settings)
        await store.open()
        quota = QuotaStore(redis, PostgresReservationSource(db), retry_after=settings.retry_after)
        presigner = S3Presigner(
            bucket=settings.s3_bucket,
            region=settings.s3_region,
            endpoint_url=settings.presign_endpoint_url,
            addressing=settings.s3_addressing,
            credentials=_credentials(store.botocore_credentials()),
        )
        ledger = Ledger(db, quota, store, oversize_policy=settings.oversize_policy)
        state.db, state.redis, state.store, state.quota = db, redis, store, quota
        state.presigner, state.ledger = presigner, ledger
        state.uploads = UploadService(settings, db, quota, presigner, store, ledger)
        state.tenants = TenantService(db, store, ledger, max_file_size=settings.max_file_size)
        state.projects = ProjectService(db)
        batcher = ApplyBatcher(ledger, metrics=metrics)
        state.batcher = batcher
        state.ingestor = EventIngestor(
            batcher,
            bucket=settings.s3_bucket,
            metrics=metrics,
            sns_auto_confirm=settings.sns_auto_confirm,
        )
        tasks: list[asyncio.Task[None]] = []
        stop = asyncio.Event()
        if settings.sweep_interval > 0:
            tasks.append(asyncio.create_task(state.uploads.run_sweeper(settings.sweep_interval)))
        sqs_cm = None
        if settings.sqs_queue_url:
            sqs_cm = sqs_client(settings)
            client = await sqs_cm.__aenter__()
            poller = SqsPoller(
                state.ingestor, client, settings.sqs_queue_url, receivers=settings.sqs_receivers
            )
            poller_task = asyncio.create_task(poller.run(stop))
            tasks.append(poller_task)
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
            stop.set()
            if sqs_cm is not None:  # the poller finishes the batch in hand, then stops
                await asyncio.wait([poller_task], timeout=settings.db_timeout * 2)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if sqs_cm is not None:
                await sqs_cm.__aexit__(None, None, None)
            await batcher.stop()
            await state.uploads.close()
            await store.close()
            with contextlib.suppress(Exception):
                await redis.aclose()
            await db.close()
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
