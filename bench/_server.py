"""The gateway as the benchmarks run it: ``create_app`` plus one bare comparison route.

    python -m bench._server --port 8080 [--workers N]

``POST /bench/presign/`` takes the upload body and answers the same JSON shape as
``POST /api/storage/upload/``, but only presigns: no key check, no Postgres, no
Redis. It is the ceiling the full path is measured against. Settings come from
the environment, like ``gateway serve``; uvicorn runs with the same options.

With ``GATEWAY_BENCH_FLOOR=1`` (``bench_events.py --floor``) the webhook path skips
everything around its work: uvicorn hands ``POST /api/storage/events/s3/`` straight
to the ingestor, with no Litestar routing, no request middleware (log line, metrics,
request id), no auth or content checks. What it does cost per event is the floor
of the webhook at one record per request on this stack. Every other path is the
gateway's own app. With ``GATEWAY_BENCH_ROUTED=1`` the webhook's POSTs go through
Litestar's router and the request middleware like every other route (as before
``gateway.api.events.Webhook``), for A/B runs (``--servers
uvicorn,uvicorn@GATEWAY_BENCH_ROUTED=1``).
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from litestar import Litestar, post
from litestar.datastructures import State

from bench._http_layers import send_json
from gateway.api.schemas import UploadRequest, UploadResponse
from gateway.app import create_app
from gateway.config import Settings
from gateway.ids import new_id
from gateway.storage.presigner import S3Presigner


@post("/bench/presign/", status_code=200, include_in_schema=False)
async def presign_only(data: UploadRequest, state: State) -> UploadResponse:
    settings: Settings = state.settings
    presigner: S3Presigner = state.presigner
    now = datetime.now(UTC).replace(microsecond=0)
    upload_id = new_id("upl")
    file_path = f"{data.tenant_id}/{upload_id}/{data.filename}"
    key = f"prj_bench/{file_path}"
    signed = presigner.presign_put(
        key,
        content_type=data.content_type,
        content_length=data.size_bytes if data.size_bytes is not None else -1,
        checksum_sha256=data.checksum_sha256,
        expires_in=settings.upload_url_ttl,
        signed_at=now,
    )
    expires_at = now + timedelta(seconds=settings.upload_url_ttl)
    return UploadResponse(
        upload_id=upload_id,
        presigned_url=signed.url,
        method=signed.method,
        bucket=settings.s3_bucket,
        key=key,
        headers=signed.headers,
        fields=signed.fields,
        file_path=file_path,
        tenant_id=data.tenant_id,
        is_new_tenant=False,
        size_bytes=data.size_bytes,
        expires_in=settings.upload_url_ttl,
        expires_at=expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


def create_bench_app() -> Any:
    """uvicorn factory (``--workers`` needs an import string)."""
    app = create_app(Settings.from_env(), extra_route_handlers=[presign_only])
    if os.environ.get("GATEWAY_BENCH_ROUTED"):  # the webhook's POSTs through Litestar too
        app.webhook = None  # type: ignore[attr-defined]
    return WebhookFloor(app) if os.environ.get("GATEWAY_BENCH_FLOOR") else app


class WebhookFloor:
    """The webhook's work alone (read, parse, apply through the batcher, answer)."""

    PATH = "/api/storage/events/s3/"

    def __init__(self, app: Litestar) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != self.PATH:
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        result = await self.app.state.ingestor.ingest(body)
        await send_json(
            send, {"records": result.records, "applied": result.applied, "ignored": result.ignored}
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--server", choices=("uvicorn", "granian"), default="uvicorn", help="HTTP server"
    )
    parser.add_argument(
        "--loop",
        default="uvloop",
        help="granian's event loop (uvloop, rloop, asyncio); uvicorn always runs uvloop",
    )
    args = parser.parse_args()
    if args.server == "granian":
        run_granian(args.host, args.port, args.workers, args.loop)
        return
    import uvicorn

    # The same options as `gateway serve` (gateway/cli.py), and the same metrics
    # across workers (prometheus_client's multiprocess mode).
    if args.workers > 1:
        from gateway.cli import metrics_directory

        with metrics_directory(os.environ.get("PROMETHEUS_MULTIPROC_DIR")) as directory:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
            uvicorn.run(
                "bench._server:create_bench_app",
                factory=True,
                host=args.host,
                port=args.port,
                workers=args.workers,
                log_config=None,
                access_log=False,
            )
    else:
        uvicorn.run(
            create_bench_app(), host=args.host, port=args.port, log_config=None, access_log=False
        )


def run_granian(host: str, port: int, workers: int, loop: str) -> None:
    """granian's ASGI interface (a worker process even for ``--workers 1``), no
    access log; its own log at warning (start-up and errors only)."""
    from granian import Granian
    from granian.constants import Interfaces, Loops
    from granian.log import LogLevels

    Granian(
        "bench._server:create_bench_app",
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        loop=Loops(loop),
        factory=True,
        log_level=LogLevels.warning,
        log_access=False,
    ).serve()


if __name__ == "__main__":
    main()
