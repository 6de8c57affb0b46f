"""S3 event reconciliation: webhook and SQS, on moto's real notifications."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from gateway.app import create_app
from gateway.config import Settings
from gateway.events.sqs import SqsPoller, sqs_client
from tests.conftest import BUCKET, ProjectKey, make_project, running
from tests.support.events import drain, event_queue

WEBHOOK = "/api/storage/events/s3/"
SECRET = {"Authorization": "Bearer test-webhook-secret"}


@pytest.fixture(scope="module")
def queue(s3: Any, s3_client: Any) -> Iterator[tuple[str, Any]]:
    """moto: bucket notifications → an SQS queue (real moto event bodies)."""
    with event_queue(s3.endpoint_url, s3_client, BUCKET, "events") as q:
        yield q


def minio_body(record: dict[str, Any]) -> dict[str, Any]:
    """A MinIO webhook body around one record (MinIO sends one record per request)."""
    return {
        "EventName": "s3:" + record["eventName"],
        "Key": f"{record['s3']['bucket']['name']}/{record['s3']['object']['key']}",
        "Records": [record],
    }


def records_of(bodies: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for b in bodies:
        doc = json.loads(b)
        out.extend(doc.get("Records", []))
    return out


async def usage(client: httpx.AsyncClient, p: ProjectKey, tenant: str) -> dict[str, Any]:
    r = await client.get(f"/api/storage/tenants/{tenant}/usage/", headers=p.headers)
    assert r.status_code == 200
    result: dict[str, Any] = r.json()
    return result


async def upload(
    client: httpx.AsyncClient, p: ProjectKey, tenant: str, data: bytes, name: str = "f.bin"
) -> dict[str, Any]:
    r = await client.post(
        "/api/storage/upload/",
        headers=p.headers,
        json={"tenant_id": tenant, "filename": name, "size_bytes": len(data)},
    )
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    put = httpx.put(out["presigned_url"], content=data, headers=out["headers"])
    assert put.status_code == 200
    return out


async def test_webhook_minio_bodies_settle_and_are_idempotent(
    client: httpx.AsyncClient, project: ProjectKey, queue: tuple[str, Any]
) -> None:
    url, sqs = queue
    out = await upload(client, project, "w1", b"x" * 100)
    recs = records_of(drain(sqs, url))
    assert recs, "moto sent no event"
    for _ in range(3):  # duplicates change nothing
        for rec in recs:
            r = await client.post(WEBHOOK, json=minio_body(rec), headers=SECRET)
            assert r.status_code == 200, r.text
    u = await usage(client, project, "w1")
    assert (u["storage_used_bytes"], u["total_files"], u["storage_reserved_bytes"]) == (100, 1, 0)
    st_ = (
        await client.get(f"/api/storage/uploads/{out['upload_id']}/", headers=project.headers)
    ).json()
    assert st_["status"] == "completed" and st_["actual_size_bytes"] == 100

    # API delete, then the ObjectRemoved event: the bytes are freed once
    r = await client.request(
        "DELETE",
        "/api/storage/files/",
        headers=project.headers,
        json={"file_path": out["file_path"]},
    )
    assert r.status_code == 200
    for rec in records_of(drain(sqs, url)):
        assert (await client.post(WEBHOOK, json=minio_body(rec), headers=SECRET)).status_code == 200
    for rec in recs:  # a stale created event arriving late does not resurrect it
        await client.post(WEBHOOK, json=minio_body(rec), headers=SECRET)
    u = await usage(client, project, "w1")
    assert (u["storage_used_bytes"], u["total_files"]) == (0, 0)


async def test_overwrite_charges_the_difference_and_raw_records_body(
    client: httpx.AsyncClient, project: ProjectKey, queue: tuple[str, Any], s3_client: Any
) -> None:
    url, sqs = queue
    out = await upload(client, project, "w2", b"a" * 300)
    time.sleep(0.005)
    s3_client.put_object(Bucket=BUCKET, Key=out["key"], Body=b"b" * 120)  # overwrite
    bodies = drain(sqs, url)
    for b in reversed(bodies):  # reordered, as raw {"Records": [...]} bodies
        r = await client.post(
            WEBHOOK, content=b, headers={**SECRET, "Content-Type": "application/json"}
        )
        assert r.status_code == 200
    u = await usage(client, project, "w2")
    assert (u["storage_used_bytes"], u["total_files"]) == (120, 1)


async def test_objects_without_reservation_count_even_over_limit(
    client: httpx.AsyncClient, project: ProjectKey, queue: tuple[str, Any], s3_client: Any
) -> None:
    url, sqs = queue
    await client.patch(
        "/api/storage/tenants/w3/limit/", json={"storage_limit_bytes": 10}, headers=project.headers
    )
    s3_client.put_object(Bucket=BUCKET, Key=f"{project.project_id}/w3/manual/x.bin", Body=b"z" * 50)
    s3_client.put_object(Bucket=BUCKET, Key="not-a-project/whatever", Body=b"z")
    for b in drain(sqs, url):
        assert (await client.post(WEBHOOK, content=b, headers=SECRET)).status_code == 200
    u = await usage(client, project, "w3")
    assert u["storage_used_bytes"] == 50 and u["over_limit"] is True
    r = await client.post(
        "/api/storage/upload/",
        headers=project.headers,
        json={"tenant_id": "w3", "filename": "y", "size_bytes": 1},
    )
    assert r.status_code == 413


async def test_webhook_auth_and_bad_bodies(client: httpx.AsyncClient) -> None:
    body: dict[str, list[object]] = {"Records": []}
    assert (await client.post(WEBHOOK, json=body)).status_code == 401
    r = await client.post(WEBHOOK, json=body, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    r = await client.post(WEBHOOK, content=b"{bad", headers=SECRET)
    assert r.status_code == 422 and r.json()["detail"]
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": BUCKET}
    r = await client.post(WEBHOOK, json=test_event, headers=SECRET)
    assert r.status_code == 200 and r.json()["applied"] == 0


async def test_postgres_down_during_webhook_then_retry_applies_once(
    client: httpx.AsyncClient, project: ProjectKey, queue: tuple[str, Any], settings: Settings
) -> None:
    url, sqs = queue
    await upload(client, project, "w4", b"q" * 64)
    bodies = drain(sqs, url)
    from tests.support.services import free_port

    broken = Settings.from_env(
        {
            "GATEWAY_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/nope",
            "GATEWAY_REDIS_URL": settings.redis_url,
            "GATEWAY_S3_ENDPOINT_URL": settings.s3_endpoint_url or "",
            "GATEWAY_WEBHOOK_SECRET": "test-webhook-secret",
            "GATEWAY_DB_TIMEOUT": "1",
            "GATEWAY_SWEEP_INTERVAL": "0",
            "GATEWAY_LOG_LEVEL": "error",
        }
    )
    async with running(create_app(broken)) as down:
        for b in bodies:
            r = await down.post(WEBHOOK, content=b, headers=SECRET)
            assert r.status_code == 503 and r.headers["retry-after"]
    for _ in range(2):  # the sender retries (twice): applied exactly once
        for b in bodies:
            assert (await client.post(WEBHOOK, content=b, headers=SECRET)).status_code == 200
    assert (await usage(client, project, "w4"))["storage_used_bytes"] == 64


async def test_sqs_worker_end_to_end(
    client: httpx.AsyncClient,
    project: ProjectKey,
    queue: tuple[str, Any],
    settings: Settings,
    state: Any,
) -> None:
    url, sqs = queue
    out = await upload(client, project, "q1", b"s" * 2048)
    async with sqs_client(settings) as c:
        poller = SqsPoller(state.ingestor, c, url, wait_seconds=1)
        handled = 0
        for _ in range(5):
            handled += await poller.poll_once()
            if handled:
                break
    assert handled >= 1
    u = await usage(client, project, "q1")
    assert (u["storage_used_bytes"], u["storage_reserved_bytes"]) == (2048, 0)
    assert (
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])[
            "Attributes"
        ]["ApproximateNumberOfMessages"]
        == "0"
    )
    status = (
        await client.get(f"/api/storage/uploads/{out['upload_id']}/", headers=project.headers)
    ).json()["status"]
    assert status == "completed"


async def test_several_receivers_drain_the_queue_and_usage_adds_up(
    client: httpx.AsyncClient,
    project: ProjectKey,
    queue: tuple[str, Any],
    settings: Settings,
    state: Any,
    s3_client: Any,
) -> None:
    url, sqs = queue
    drain(sqs, url)  # what earlier tests left
    sizes = [100 + i for i in range(40)]
    for i, size in enumerate(sizes):
        s3_client.put_object(
            Bucket=BUCKET, Key=f"{project.project_id}/mr/manual/{i}.bin", Body=b"m" * size
        )
    async with sqs_client(settings) as c:
        poller = SqsPoller(state.ingestor, c, url, wait_seconds=1, receivers=4)
        stop = asyncio.Event()
        task = asyncio.create_task(poller.run(stop))
        try:
            for _ in range(100):
                u = await usage(client, project, "mr")
                if u["total_files"] == len(sizes):
                    break
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=5)
            # The stopped receivers' long polls (1 s) go on inside the SQS server and
            # would hide the next test's messages for the visibility timeout.
            await asyncio.sleep(1.5)
    assert poller.processed >= len(sizes)  # (plus any message an earlier test left)
    u = await usage(client, project, "mr")
    assert (u["storage_used_bytes"], u["total_files"]) == (sum(sizes), len(sizes))
    left = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])[
        "Attributes"
    ]["ApproximateNumberOfMessages"]
    assert left == "0"


async def test_sqs_poller_stops_cleanly(
    settings: Settings, state: Any, queue: tuple[str, Any]
) -> None:
    _, sqs = queue
    url = sqs.create_queue(QueueName=f"idle-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    async with sqs_client(settings) as c:
        poller = SqsPoller(state.ingestor, c, url, wait_seconds=5)
        stop = asyncio.Event()
        task = asyncio.create_task(poller.run(stop))
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.wait_for(task, timeout=3)  # does not wait out the long poll


# -- convergence property ------------------------------------------------------------

op = st.tuples(st.sampled_from(["put", "put", "delete"]), st.integers(0, 3), st.integers(0, 5000))


@hsettings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=st.lists(op, min_size=1, max_size=12), seed=st.integers(0, 2**32 - 1))
async def test_usage_converges_to_what_s3_holds(
    client: httpx.AsyncClient,
    state: Any,
    queue: tuple[str, Any],
    s3_client: Any,
    history: list[tuple[str, int, int]],
    seed: int,
) -> None:
    """Uploads, overwrites and deletes; events duplicated, shuffled and delivered late
    through both paths: usage and file counts equal the truth listed from S3."""
    url, sqs = queue
    p = await make_project(state)
    tenant = "prop"
    prefix = f"{p.project_id}/{tenant}/"
    for action, slot, size in history:
        key = f"{prefix}manual/obj{slot}"
        if action == "put":
            s3_client.put_object(Bucket=BUCKET, Key=key, Body=b"x" * size)
        else:
            s3_client.delete_object(Bucket=BUCKET, Key=key)
        time.sleep(0.003)  # moto's event times have millisecond resolution
    bodies = drain(sqs, url)
    rng = random.Random(seed)
    deliveries = bodies + rng.sample(bodies, k=len(bodies) // 2)  # duplicates
    rng.shuffle(deliveries)
    for i, b in enumerate(deliveries):
        if i % 2:
            assert (await client.post(WEBHOOK, content=b, headers=SECRET)).status_code == 200
        else:
            await state.ingestor.ingest(b)
    listed = s3_client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    u = await usage(client, p, tenant)
    assert u["storage_used_bytes"] == sum(o["Size"] for o in listed)
    assert u["total_files"] == len(listed)
    project_total = (await client.get("/api/storage/usage/", headers=p.headers)).json()
    assert project_total["storage_used_bytes"] == u["storage_used_bytes"]
