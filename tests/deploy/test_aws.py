"""deploy/aws: the CORS rule, notification, queue policy and IAM policy, through
botocore's validators and applied in moto.

Applied in the suite's moto server (the ``s3`` fixture), not in ``mock_aws``: that
resets moto's in-process backends when it ends, which are also the server's, and so
would drop the bucket (and its CORS rule) of every test that runs after it."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_plus

import boto3
import botocore.session
from botocore.validate import ParamValidator

from devtools.s3 import EmbeddedS3
from tests.deploy.files import AWS


def _validate(service_name: str, operation: str, params: dict[str, Any]) -> None:
    model = botocore.session.get_session().get_service_model(service_name)
    report = ParamValidator().validate(params, model.operation_model(operation).input_shape)
    assert not report.has_errors(), report.generate_report()


def test_aws_cors_rule_is_valid_and_allows_browser_uploads() -> None:
    cors = json.loads((AWS / "cors.json").read_text())
    _validate("s3", "PutBucketCors", {"Bucket": "my-uploads-bucket", "CORSConfiguration": cors})
    (rule,) = cors["CORSRules"]
    assert {"PUT", "POST"} <= set(rule["AllowedMethods"])
    assert rule["ExposeHeaders"] == ["ETag"]


def test_aws_notification_delivers_created_and_removed_events_to_sqs(s3: EmbeddedS3) -> None:
    notification = json.loads((AWS / "notification.json").read_text())
    _validate(
        "s3",
        "PutBucketNotificationConfiguration",
        {"Bucket": "my-uploads-bucket", "NotificationConfiguration": notification},
    )
    (queue_config,) = notification["QueueConfigurations"]
    assert set(queue_config["Events"]) == {"s3:ObjectCreated:*", "s3:ObjectRemoved:*"}
    # The example's account and region are moto's defaults, so it applies as written.
    arn = queue_config["QueueArn"]
    _, _, _, region, _, queue_name = arn.split(":")
    sqs = boto3.client("sqs", region_name=region, endpoint_url=s3.endpoint_url)
    bucket = boto3.client("s3", region_name=region, endpoint_url=s3.endpoint_url)
    queue_url = sqs.create_queue(QueueName=queue_name)["QueueUrl"]
    assert (
        sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        == arn
    )
    bucket.create_bucket(Bucket="my-uploads-bucket")
    bucket.put_bucket_cors(
        Bucket="my-uploads-bucket",
        CORSConfiguration=json.loads((AWS / "cors.json").read_text()),
    )
    bucket.put_bucket_notification_configuration(
        Bucket="my-uploads-bucket", NotificationConfiguration=notification
    )
    key = "user_1/a report.txt"
    bucket.put_object(Bucket="my-uploads-bucket", Key=key, Body=b"hello")
    bucket.delete_object(Bucket="my-uploads-bucket", Key=key)
    events: list[tuple[str, str]] = []
    for _ in range(5):
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get(
            "Messages", []
        )
        for message in messages:
            body = json.loads(message["Body"])
            events += [
                # S3 URL-encodes keys in event records (a space arrives as '+').
                (r["eventName"], unquote_plus(r["s3"]["object"]["key"]))
                for r in body.get("Records", [])
            ]
        if len(events) >= 2:
            break
    assert ("ObjectCreated:Put", key) in events
    assert ("ObjectRemoved:Delete", key) in events


def test_aws_queue_policy_lets_only_the_bucket_send() -> None:
    policy = json.loads((AWS / "sqs-queue-policy.json").read_text())
    (statement,) = policy["Statement"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    notification = json.loads((AWS / "notification.json").read_text())
    assert statement["Resource"] == notification["QueueConfigurations"][0]["QueueArn"]
    assert statement["Condition"]["ArnLike"]["aws:SourceArn"] == "arn:aws:s3:::my-uploads-bucket"


def test_aws_iam_policy_grants_what_the_gateway_needs_and_no_more(s3: EmbeddedS3) -> None:
    document = (AWS / "iam-policy.json").read_text()
    policy = json.loads(document)
    grants = {
        action: set(statement["Resource"])
        for statement in policy["Statement"]
        for action in statement["Action"]
    }
    bucket = {"arn:aws:s3:::my-uploads-bucket"}
    objects = {"arn:aws:s3:::my-uploads-bucket/*"}
    queue = {
        json.loads((AWS / "notification.json").read_text())["QueueConfigurations"][0]["QueueArn"]
    }
    assert grants == {
        "s3:ListBucket": bucket,
        "s3:PutObject": objects,
        "s3:GetObject": objects,
        "s3:DeleteObject": objects,
        "sqs:ReceiveMessage": queue,
        "sqs:DeleteMessage": queue,
    }
    assert all(st["Effect"] == "Allow" for st in policy["Statement"])
    # IAM rejects a malformed document
    iam = boto3.client("iam", region_name="us-east-1", endpoint_url=s3.endpoint_url)
    iam.create_policy(PolicyName="upload-gateway", PolicyDocument=document)
