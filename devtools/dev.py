"""``gateway dev`` (``make dev``): the newcomer's one command, from a source checkout.

Local Postgres and Redis (the configured URLs), an in-process S3 (moto's server mode,
real HTTP) with the bucket and its CORS rule made and its events sent to an SQS queue
that the server consumes (so uploads settle by themselves, as in production),
migrations applied, a ``dev`` project with a fresh key, then the server on
127.0.0.1:8080.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import msgspec

from devtools.s3 import (
    DEV_ACCESS_KEY,
    DEV_SECRET_KEY,
    prepare_bucket,
    prepare_event_queue,
    start_embedded_s3,
)
from gateway.config import Settings, redact_url


async def ensure_dev_project(settings: Settings, name: str = "dev") -> tuple[str, str]:
    """The dev project (made if missing) and a fresh key for it."""
    from gateway.db import create_database
    from gateway.db.migrate import migrate
    from gateway.projects import ProjectService

    await migrate(settings.database_url)
    db = create_database(settings)
    try:
        service = ProjectService(db)
        existing = await service.find_by_name(name)
        if existing is None:
            created = await service.create(name)
            return created.project_id, created.api_key
        _, api_key = await service.create_key(existing["id"])
        return str(existing["id"]), api_key
    finally:
        await db.close()


def run_dev(
    settings: Settings, *, host: str, port: int, s3_port: int = 0, verbose: bool = False
) -> int:
    import uvicorn

    from gateway.app import create_app

    os.environ.setdefault("AWS_ACCESS_KEY_ID", DEV_ACCESS_KEY)
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", DEV_SECRET_KEY)
    os.environ.setdefault("AWS_DEFAULT_REGION", settings.s3_region)
    # receivers on one's own machine (the example SaaS backend) are the point here
    changes: dict[str, Any] = {"webhook_allow_private": True}
    s3 = None
    if settings.s3_endpoint_url is None:
        try:
            s3 = start_embedded_s3(port=s3_port, access_log=verbose)
        except ModuleNotFoundError as exc:
            if exc.name is None or exc.name.split(".")[0] != "moto":
                raise
            print(
                "gateway dev: the in-process S3 needs moto, which is not installed here: "
                "pip install -e '.[dev]' (make dev installs it), or set "
                "GATEWAY_S3_ENDPOINT_URL to an S3 of your own.",
                file=sys.stderr,
            )
            return 1
        changes.update(s3_endpoint_url=s3.endpoint_url, s3_addressing="path")
    settings = msgspec.structs.replace(settings, **changes)
    try:
        prepare_bucket(settings.s3_endpoint_url or "", settings.s3_bucket, settings.s3_region)
        if s3 is not None and settings.sqs_queue_url is None:
            # the in-process S3 notifies an in-process SQS queue; the server consumes it
            queue = prepare_event_queue(s3.endpoint_url, settings.s3_bucket, settings.s3_region)
            settings = msgspec.structs.replace(
                settings, sqs_queue_url=queue, sqs_endpoint_url=s3.endpoint_url
            )
        try:
            project_id, api_key = asyncio.run(ensure_dev_project(settings))
        except OSError as exc:
            print(
                f"gateway dev: cannot reach Postgres at {redact_url(settings.database_url)} "
                f"({exc}).\n"
                "Start it, e.g.: pg_ctlcluster --skip-systemctl-redirect "
                "$(ls /etc/postgresql) main start",
                file=sys.stderr,
            )
            return 1
        base = f"http://{host}:{port}"
        print(
            f"""
  Upload gateway (dev) on {base}
  in-process S3: {settings.s3_endpoint_url}   bucket: {settings.s3_bucket}
  S3 events: {settings.sqs_queue_url or "off"}
  webhooks may call loopback/private addresses (GATEWAY_WEBHOOK_ALLOW_PRIVATE=true)
  project: {project_id}
  API key: {api_key}

  Try it:
    curl -s -X POST {base}/api/storage/upload/ \\
      -H 'Authorization: Bearer {api_key}' -H 'Content-Type: application/json' \\
      -d '{{"tenant_id": "user_123", "filename": "hello.txt", \
           "content_type": "text/plain", "size_bytes": 5}}'
    curl -s {base}/api/storage/tenants/user_123/usage/ -H 'Authorization: Bearer {api_key}'

  API docs: {base}/schema
  Demo page (browser uploads, usage bar): {base}/demo/
""",
            flush=True,
        )
        from devtools.demo import demo_router

        own_url = f"http://127.0.0.1:{port}" if host in ("0.0.0.0", "::") else base
        app = create_app(
            settings, extra_route_handlers=[demo_router(gateway_url=own_url, api_key=api_key)]
        )
        uvicorn.run(app, host=host, port=port, log_config=None, access_log=False)
    finally:
        if s3 is not None:
            s3.stop()
    return 0
