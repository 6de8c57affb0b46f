"""moto's bucket notifications into an SQS queue: real S3 event bodies for the tests."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import boto3


@contextlib.contextmanager
def event_queue(
    endpoint_url: str, s3_client: Any, bucket: str, prefix: str
) -> Iterator[tuple[str, Any]]:
    """A fresh queue receiving ``bucket``'s created/removed events while the block runs
    (emptied first); yields its URL and an SQS client. The notification is removed after."""
    sqs = boto3.client("sqs", endpoint_url=endpoint_url, region_name="us-east-1")
    url = sqs.create_queue(QueueName=f"{prefix}-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    s3_client.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {"QueueArn": arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}
            ]
        },
    )
    drain(sqs, url)
    try:
        yield url, sqs
    finally:
        s3_client.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={})


def drain(sqs: Any, url: str) -> list[str]:
    """All message bodies now in the queue (deleted from it)."""
    bodies: list[str] = []
    while True:
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        )
        if not msgs:
            return bodies
        for m in msgs:
            bodies.append(m["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
