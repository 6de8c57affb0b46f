"""More reconciliation: the oversize policy, recalculate, SNS envelopes, metrics."""

from __future__ import annotations

import json
from typing import Any

import httpx
import msgspec

from gateway.app import create_app
from gateway.config import Settings
from tests.conftest import BUCKET, ProjectKey, make_project, running

WEBHOOK = "/api/storage/events/s3/"
SECRET = {"Authorization": "Bearer test-webhook-secret"}


def created_event(key: str, size: int, seq: str = "0055AED6DCD90281E5") -> dict[str, Any]:
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2026-11-22T10:00:00.000Z",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": BUCKET},
                    "object": {"key": key, "size": size, "eTag": "abc", "sequencer": seq},
                },
            }
        ]
    }


async def _oversized(c: httpx.AsyncClient, p: ProjectKey, s3_client: Any) -> dict[str, Any]:
    out: dict[str, Any] = (
        await c.post(
            "/api/storage/upload/",
            headers=p.headers,
            json={"tenant_id": "big", "filename": "f.bin", "size_bytes": 10},
        )
    ).json()
    # an S3 that does not enforce the signed length (moto) takes 25 bytes
    s3_client.put_object(Bucket=BUCKET, Key=out["key"], Body=b"x" * 25)
    r = await c.post(WEBHOOK, json=created_event(out["key"], 25), headers=SECRET)
    assert r.status_code == 200, r.text
    return out


async def test_oversize_reject_policy_deletes_and_marks_rejected(
    client: httpx.AsyncClient, project: ProjectKey, s3_client: Any
) -> None:
    out = await _oversized(client, project, s3_client)
    st = (
        await client.get(f"/api/storage/uploads/{out['upload_id']}/", headers=project.headers)
    ).json()
    assert st["status"] == "rejected" and st["actual_size_bytes"] == 25
    assert s3_client.list_objects_v2(Bucket=BUCKET, Prefix=out["key"]).get("KeyCount") == 0
    u = (await client.get("/api/storage/tenants/big/usage/", headers=project.headers)).json()
    assert (u["storage_used_bytes"], u["storage_reserved_bytes"], u["total_files"]) == (0, 0, 0)


async def test_oversize_keep_policy_charges_and_flags(settings: Settings, s3_client: Any) -> None:
    app = create_app(msgspec.structs.replace(settings, oversize_policy="keep"))
    async with running(app) as c:
        p = await make_project(app.state)
        out = await _oversized(c, p, s3_client)
        st = (await c.get(f"/api/storage/uploads/{out['upload_id']}/", headers=p.headers)).json()
        assert st["status"] == "completed" and st["flagged"] is True
        u = (await c.get("/api/storage/tenants/big/usage/", headers=p.headers)).json()
        assert (u["storage_used_bytes"], u["total_files"]) == (25, 1)


async def test_recalculate_reports_and_repairs_drift(
    client: httpx.AsyncClient, project: ProjectKey, s3_client: Any
) -> None:
    prefix = f"{project.project_id}/rc/"
    for i, size in enumerate((100, 200, 300)):  # written behind the gateway's back
        s3_client.put_object(Bucket=BUCKET, Key=f"{prefix}manual/o{i}", Body=b"r" * size)
    url = "/api/storage/tenants/rc/recalculate/"
    r = await client.post(url, headers=project.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["storage_used_bytes"], body["total_files"]) == (600, 3)
    assert (body["drift_bytes"], body["drift_files"]) == (600, 3)
    s3_client.delete_object(Bucket=BUCKET, Key=f"{prefix}manual/o0")
    body = (await client.post(url, headers=project.headers)).json()
    assert (body["storage_used_bytes"], body["drift_bytes"], body["drift_files"]) == (500, -100, -1)
    body = (await client.post(url, headers=project.headers)).json()
    assert (body["drift_bytes"], body["drift_files"]) == (0, 0)  # converged
    total = (await client.get("/api/storage/usage/", headers=project.headers)).json()
    assert total["storage_used_bytes"] == 500


async def test_sns_envelopes_and_confirmations(
    client: httpx.AsyncClient, project: ProjectKey, s3_client: Any
) -> None:
    key = f"{project.project_id}/sns/manual/a.txt"
    s3_client.put_object(Bucket=BUCKET, Key=key, Body=b"s" * 42)
    envelope = {
        "Type": "Notification",
        "MessageId": "m1",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:t",
        "Message": json.dumps(created_event(key, 42, seq="0001")),
    }
    r = await client.post(
        WEBHOOK,
        content=json.dumps(envelope),
        headers={**SECRET, "Content-Type": "text/plain; charset=UTF-8"},
    )
    assert r.status_code == 200, r.text
    u = (await client.get("/api/storage/tenants/sns/usage/", headers=project.headers)).json()
    assert u["storage_used_bytes"] == 42
    confirm = {
        "Type": "SubscriptionConfirmation",
        "MessageId": "m2",
        "Token": "tok",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:t",
        "SubscribeURL": "https://evil.example/confirm",
        "Message": "confirm",
    }
    r = await client.post(WEBHOOK, json=confirm, headers=SECRET)
    assert r.status_code == 200  # acknowledged; not visited (auto-confirm is off)


async def test_events_outside_any_project_are_counted(client: httpx.AsyncClient) -> None:
    r = await client.post(WEBHOOK, json=created_event("prj_doesnotexist/t/x", 5), headers=SECRET)
    assert r.status_code == 200
    r = await client.post(WEBHOOK, json=created_event("no-prefix-at-all", 5), headers=SECRET)
    assert r.status_code == 200
    metrics = (await client.get("/metrics")).text
    line = next(
        x
        for x in metrics.splitlines()
        if x.startswith('gateway_s3_events_total{result="outside_project"}')
    )
    assert float(line.split()[-1]) >= 2
