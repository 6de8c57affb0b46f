"""A failure at any step of the upload or webhook path: the right answer, and nothing
left reserved (docs/quota.md, "No reservation without a request").

Each test breaks one step of the real app (real Postgres, Redis and moto) by wrapping
the call that step makes, the way the fault shows up in production: a connection cut
in the middle of a statement (asyncpg's InternalClientError), a Redis reply lost after
the script ran, an unexpected exception, S3 credentials gone, a Postgres that cannot
be reached to delete a refused upload's row, a failed commit, a failed Redis mirror.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from redis import exceptions as redis_errors

from gateway.api.schemas import LimitUpdate
from gateway.audit import cli_actor
from gateway.db import Q
from gateway.errors import DependencyUnavailable
from gateway.quota.reservations import tenant_key
from gateway.uploads import AdmissionService
from tests.conftest import ProjectKey, make_project, put_object
from tests.support.services import assert_503

UPLOAD = "/api/storage/upload/"
WEBHOOK = "/api/storage/events/s3/"
SECRET = {"Authorization": "Bearer test-webhook-secret"}
CUT = "cannot switch to state 12; another operation (2) is in progress"


def body(tenant: str, size: int) -> dict[str, Any]:
    return {"tenant_id": tenant, "filename": "f.bin", "size_bytes": size}


async def limited(state: Any, tenant: str, limit: int) -> ProjectKey:
    p = await make_project(state)
    await state.tenants.set_limit(
        p.project_id, tenant, LimitUpdate(storage_limit_bytes=limit), actor=cli_actor()
    )
    return p


async def state_of(
    client: httpx.AsyncClient, state: Any, p: ProjectKey, tenant: str
) -> tuple[int, int, int]:
    """(reserved bytes in the usage body, pending rows, reserved bytes in Redis)."""
    r = await client.get(f"/api/storage/tenants/{tenant}/usage/", headers=p.headers)
    assert r.status_code == 200, r.text
    rows = await state.db.fetchval(
        "SELECT count(*) FROM uploads WHERE project_id = $1 AND status = 'pending'",
        p.project_id,
    )
    res = await state.redis.hget(tenant_key(p.project_id, tenant), "res")
    return r.json()["storage_reserved_bytes"], rows, int(res or 0)


async def settles_to(
    client: httpx.AsyncClient, state: Any, p: ProjectKey, tenant: str, want: tuple[int, int, int]
) -> None:
    deadline = time.monotonic() + 5
    got = await state_of(client, state, p, tenant)
    while got != want and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        got = await state_of(client, state, p, tenant)
    assert got == want, f"(usage reserved, pending rows, Redis reserved) = {got}, want {want}"


def then_raise(
    real: Callable[..., Awaitable[Any]], exc: BaseException, times: int = 1
) -> Callable[..., Awaitable[Any]]:
    """The real call runs (its effect happens), then its caller sees ``exc``."""
    left = [times]

    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        result = await real(*args, **kwargs)
        if left[0] > 0:
            left[0] -= 1
            raise exc
        return result

    return wrapped


@pytest.mark.parametrize("calls", [1, 6], ids=["alone", "batched"])
async def test_insert_cut_mid_statement(
    client: httpx.AsyncClient, state: Any, monkeypatch: pytest.MonkeyPatch, calls: int
) -> None:
    """The rows are written, then the connection dies: nobody will hear of them."""
    p = await limited(state, "t", 100)
    real = AdmissionService._insert
    monkeypatch.setattr(
        state.admission,
        "_insert",
        then_raise(real, asyncpg.exceptions.InternalClientError(CUT)),
    )
    answers = await asyncio.gather(
        *(client.post(UPLOAD, json=body("t", 10), headers=p.headers) for _ in range(calls))
    )
    for r in answers:
        assert_503(r, "postgres")
    await settles_to(client, state, p, "t", (0, 0, 0))
    monkeypatch.undo()
    ok = [await client.post(UPLOAD, json=body("t", 10), headers=p.headers) for _ in range(10)]
    assert [r.status_code for r in ok] == [200] * 10  # all its room is there


@pytest.mark.parametrize(
    ("exc", "status"),
    [(redis_errors.ConnectionError("Connection reset by peer"), 503), (RuntimeError("bug"), 500)],
    ids=["redis-reply-lost", "unexpected-error"],
)
async def test_judge_fails_after_the_script_ran(
    client: httpx.AsyncClient,
    state: Any,
    monkeypatch: pytest.MonkeyPatch,
    exc: BaseException,
    status: int,
) -> None:
    """The script admitted the upload, then its reply was lost (or anything at all
    failed): the reservation must not outlive the request."""
    p = await limited(state, "t", 30)
    monkeypatch.setattr(state.quota, "_reserve", then_raise(state.quota._reserve, exc))
    r = await client.post(UPLOAD, json=body("t", 30), headers=p.headers)
    assert r.status_code == status, r.text
    if status == 503:
        assert_503(r, "redis")
    await settles_to(client, state, p, "t", (0, 0, 0))
    r = await client.post(UPLOAD, json=body("t", 30), headers=p.headers)
    assert r.status_code == 200, r.text


async def test_presign_fails(
    client: httpx.AsyncClient, state: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = await limited(state, "t", 30)

    class NoCredentials:
        def presign_put(self, *_: Any, **__: Any) -> Any:
            raise DependencyUnavailable("s3 credentials", cause="no AWS credentials found")

    monkeypatch.setattr(state.admission.urls, "presigner", NoCredentials())
    assert_503(await client.post(UPLOAD, json=body("t", 30), headers=p.headers), "s3 credentials")
    await settles_to(client, state, p, "t", (0, 0, 0))
    monkeypatch.undo()
    assert (await client.post(UPLOAD, json=body("t", 30), headers=p.headers)).status_code == 200


async def test_tenant_email_write_fails(
    client: httpx.AsyncClient, state: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = await limited(state, "t", 30)
    real = state.db.execute

    async def execute(sql: str, *args: Any) -> Any:
        if sql == Q.set_tenant_email:
            raise DependencyUnavailable("postgres", cause="connection reset")
        return await real(sql, *args)

    monkeypatch.setattr(state.db, "execute", execute)
    r = await client.post(
        UPLOAD, json={**body("t", 30), "tenant_email": "new@example.com"}, headers=p.headers
    )
    assert_503(r, "postgres")
    await settles_to(client, state, p, "t", (0, 0, 0))


async def test_refused_upload_whose_row_cannot_be_deleted_yet(
    client: httpx.AsyncClient, state: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis refuses the upload, and Postgres is cut just then: the answer is still
    413 (it is the truth), and the row goes as soon as Postgres answers again."""
    p = await limited(state, "t", 10)
    first = await client.post(UPLOAD, json=body("t", 6), headers=p.headers)
    assert first.status_code == 200
    real = state.db.fetch
    failures = [4]

    async def fetch(sql: str, *args: Any) -> Any:
        if sql == Q.forget_uploads and failures[0] > 0:
            failures[0] -= 1
            raise DependencyUnavailable("postgres", cause="connection reset")
        return await real(sql, *args)

    monkeypatch.setattr(state.db, "fetch", fetch)
    r = await client.post(UPLOAD, json=body("t", 6), headers=p.headers)
    assert r.status_code == 413 and r.json()["code"] == "quota_exceeded", r.text
    await settles_to(client, state, p, "t", (6, 1, 6))  # only the admitted one
    assert failures[0] == 0  # the janitor kept trying until Postgres answered
    assert (await client.post(UPLOAD, json=body("t", 4), headers=p.headers)).status_code == 200


async def _uploaded(
    client: httpx.AsyncClient, p: ProjectKey, tenant: str, data: bytes
) -> dict[str, Any]:
    r = await client.post(UPLOAD, json=body(tenant, len(data)), headers=p.headers)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    assert put_object(out["presigned_url"], out["headers"], data).status_code == 200
    return out


def _created_event(out: dict[str, Any], size: int) -> dict[str, Any]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    record = {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "eventTime": now,
        "eventName": "s3:ObjectCreated:Put",
        "s3": {
            "bucket": {"name": out["bucket"]},
            "object": {"key": out["key"], "size": size, "eTag": "0" * 32},
        },
    }
    return {
        "EventName": "s3:ObjectCreated:Put",
        "Key": f"{out['bucket']}/{out['key']}",
        "Records": [record],
    }


async def test_ledger_commit_fails(
    client: httpx.AsyncClient, state: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = await limited(state, "t", 100)
    out = await _uploaded(client, p, "t", b"x" * 40)
    real = state.db.transaction

    @contextlib.asynccontextmanager
    async def failing_commit() -> AsyncIterator[Any]:
        async with real() as conn:
            yield conn
            raise asyncpg.exceptions.InternalClientError(
                "cannot switch to state 15; another operation (2) is in progress"
            )

    monkeypatch.setattr(state.db, "transaction", failing_commit)
    event = _created_event(out, 40)
    assert_503(await client.post(WEBHOOK, json=event, headers=SECRET), "postgres")
    await settles_to(client, state, p, "t", (40, 1, 40))  # nothing committed
    monkeypatch.undo()
    assert (await client.post(WEBHOOK, json=event, headers=SECRET)).status_code == 200
    await settles_to(client, state, p, "t", (0, 0, 0))
    u = (await client.get("/api/storage/tenants/t/usage/", headers=p.headers)).json()
    assert (u["storage_used_bytes"], u["total_files"]) == (40, 1)


async def test_redis_mirror_fails_after_the_commit(
    client: httpx.AsyncClient, state: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = await limited(state, "t", 100)
    out = await _uploaded(client, p, "t", b"y" * 40)

    async def down(*_: Any, **__: Any) -> Any:
        raise redis_errors.ConnectionError("Connection refused")

    monkeypatch.setattr(state.quota, "_apply", down)
    event = _created_event(out, 40)
    assert_503(await client.post(WEBHOOK, json=event, headers=SECRET), "redis")
    monkeypatch.undo()
    # the sender retries: Postgres already has it (a no-op), Redis is repaired
    assert (await client.post(WEBHOOK, json=event, headers=SECRET)).status_code == 200
    await settles_to(client, state, p, "t", (0, 0, 0))
    used = await state.redis.hget(tenant_key(p.project_id, "t"), "used")
    assert int(used) == 40
    # and the room left is exactly limit - used
    assert (await client.post(UPLOAD, json=body("t", 60), headers=p.headers)).status_code == 200
    assert (await client.post(UPLOAD, json=body("t", 1), headers=p.headers)).status_code == 413
