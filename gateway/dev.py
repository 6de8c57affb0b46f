"""``gateway dev``: the newcomer's one command.

Local Postgres and Redis (the configured URLs), an in-process S3 (moto's server mode,
real HTTP) with the bucket and its CORS rule made and its events sent to an SQS queue
that the server consumes (so uploads settle by themselves, as in production),
migrations applied, a ``dev`` project with a fresh key, then the server on
127.0.0.1:8080.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from dataclasses import dataclass
from typing import Any

import msgspec

from gateway.config import Settings, redact_url

DEV_ACCESS_KEY = "dev-access-key"
DEV_SECRET_KEY = "dev-secret-key"
CORS_RULE: dict[str, Any] = {
    "AllowedOrigins": ["*"],
    "AllowedMethods": ["GET", "PUT", "POST", "HEAD"],
    "AllowedHeaders": ["*"],
    "ExposeHeaders": ["ETag"],
    "MaxAgeSeconds": 3000,
}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class EmbeddedS3:
    endpoint_url: str
    server: Any

    def stop(self) -> None:
        self.server.stop()


def start_embedded_s3(host: str = "127.0.0.1", port: int = 0) -> EmbeddedS3:
    """moto in server mode, in a thread of this process."""
    from moto.server import ThreadedMotoServer

    port = port or free_port(host)
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    return EmbeddedS3(endpoint_url=f"http://{host}:{port}", server=server)


def _client(service: str, endpoint_url: str, region: str) -> Any:
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", DEV_ACCESS_KEY),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", DEV_SECRET_KEY),
    )


def prepare_bucket(endpoint_url: str, bucket: str, region: str) -> None:
    s3 = _client("s3", endpoint_url, region)
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=bucket)
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [CORS_RULE]})


def prepare_event_queue(endpoint_url: str, bucket: str, region: str) -> str:
    """An SQS queue receiving the bucket's created/removed events (as on AWS)."""
    sqs = _client("sqs", endpoint_url, region)
    url: str = sqs.create_queue(QueueName="gateway-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    _client("s3", endpoint_url, region).put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {"QueueArn": arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}
            ]
        },
    )
    return url


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


def run_dev(settings: Settings, *, host: str, port: int, s3_port: int = 0) -> int:
    import uvicorn

    from gateway.app import create_app

    os.environ.setdefault("AWS_ACCESS_KEY_ID", DEV_ACCESS_KEY)
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", DEV_SECRET_KEY)
    os.environ.setdefault("AWS_DEFAULT_REGION", settings.s3_region)
    changes: dict[str, Any] = {}
    s3 = None
    if settings.s3_endpoint_url is None:
        s3 = start_embedded_s3(port=s3_port)
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
        from gateway.demo import demo_router

        own_url = f"http://127.0.0.1:{port}" if host in ("0.0.0.0", "::") else base
        app = create_app(
            settings, extra_route_handlers=[demo_router(gateway_url=own_url, api_key=api_key)]
        )
        uvicorn.run(app, host=host, port=port, log_config=None, access_log=False)
    finally:
        if s3 is not None:
            s3.stop()
    return 0
