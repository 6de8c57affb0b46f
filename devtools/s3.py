"""An in-process S3 (and SQS): moto in server mode, real HTTP on a loopback port, in a
thread of this process. ``gateway dev``, the tests and the benchmarks use it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any

from devtools.ports import free_port

DEV_ACCESS_KEY = "dev-access-key"
DEV_SECRET_KEY = "dev-secret-key"
CORS_RULE: dict[str, Any] = {
    "AllowedOrigins": ["*"],
    "AllowedMethods": ["GET", "PUT", "POST", "HEAD"],
    "AllowedHeaders": ["*"],
    "ExposeHeaders": ["ETag"],
    "MaxAgeSeconds": 3000,
}


@dataclass
class EmbeddedS3:
    endpoint_url: str
    server: Any

    def stop(self) -> None:
        self.server.stop()


def start_embedded_s3(
    host: str = "127.0.0.1", port: int = 0, *, access_log: bool = False
) -> EmbeddedS3:
    """moto in server mode, in a thread of this process. Its HTTP server (werkzeug)
    logs a line per request, every SQS long poll included, unless ``access_log`` is
    off (the default): then only its warnings and errors."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.INFO if access_log else logging.WARNING)
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
