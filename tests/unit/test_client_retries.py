"""The client's retry policy, on answers scripted with httpx's MockTransport (the
gateway's side of it is tested live in tests/client)."""

from __future__ import annotations

import httpx
import pytest
from upload_gateway_client import (
    GatewayClient,
    GatewayUnreachable,
    RateLimited,
    Retry,
    UploadRequest,
)

USAGE: dict[str, object] = {
    "tenant_id": "t1",
    "email": None,
    "storage_used_bytes": 0,
    "storage_limit_bytes": None,
    "total_files": 0,
    "storage_reserved_bytes": 0,
    "storage_available_bytes": None,
    "percentage_used": None,
    "plan": None,
    "over_limit": False,
}
UPLOAD: dict[str, object] = {
    "upload_id": "upl_000000000000000000000001",
    "presigned_url": "http://s3.test/u",
    "method": "PUT",
    "bucket": "uploads",
    "key": "p/t1/upl_000000000000000000000001/a",
    "headers": {},
    "fields": None,
    "file_path": "t1/upl_000000000000000000000001/a",
    "tenant_id": "t1",
    "is_new_tenant": True,
    "size_bytes": 1,
    "expires_in": 3600,
    "expires_at": "2026-01-01T00:00:00Z",
}


class Scripted(GatewayClient):
    slept: list[float]

    def _sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def client(
    answers: list[httpx.Response | Exception], retry: Retry
) -> tuple[Scripted, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    c = Scripted(
        "http://gw.test",
        "gwk_x",
        retry=retry,
        http=httpx.Client(transport=httpx.MockTransport(handler)),
    )
    c.slept = []
    return c, seen


def test_429_and_503_wait_retry_after_and_keep_the_idempotency_key() -> None:
    c, seen = client(
        [
            httpx.Response(
                429, json={"detail": "x", "code": "rate_limited"}, headers={"Retry-After": "3"}
            ),
            httpx.Response(
                503,
                json={"detail": "x", "code": "dependency_unavailable", "dependency": "redis"},
                headers={"Retry-After": "1"},
            ),
            httpx.Response(200, json=UPLOAD),
        ],
        Retry(attempts=3),
    )
    out = c.create_upload(UploadRequest(tenant_id="t1", filename="a", size_bytes=1))
    assert out.upload_id == UPLOAD["upload_id"]
    assert c.slept == [3.0, 1.0]
    keys = {r.headers["Idempotency-Key"] for r in seen}
    assert len(seen) == 3 and len(keys) == 1  # one upload meant, one key


def test_backoff_grows_without_retry_after_and_stops() -> None:
    retry = Retry(attempts=4, backoff=1.0, max_backoff=3.0)
    waits = [retry.delay(n) for n in (1, 2, 3)]
    assert [
        w is not None and lo <= w <= hi
        for w, (lo, hi) in zip(waits, [(0.5, 1), (1, 2), (1.5, 3)], strict=True)
    ] == [True] * 3
    assert retry.delay(4) is None
    assert Retry(max_retry_after=5).delay(1, retry_after=60) is None  # too long: raise


def test_a_long_retry_after_is_raised_at_once() -> None:
    c, seen = client(
        [
            httpx.Response(
                429, json={"detail": "x", "code": "rate_limited"}, headers={"Retry-After": "120"}
            )
        ],
        Retry(attempts=5, max_retry_after=30),
    )
    with pytest.raises(RateLimited) as limited:
        c.get_tenant_usage("t1")
    assert limited.value.retry_after == 120 and len(seen) == 1 and c.slept == []


def test_connection_errors_are_retried_lost_answers_only_when_safe() -> None:
    c, seen = client(
        [httpx.ConnectError("refused"), httpx.Response(200, json=USAGE)], Retry(attempts=2)
    )
    assert c.get_tenant_usage("t1").tenant_id == "t1" and len(seen) == 2
    # a DELETE whose answer was lost may have deleted the file: not sent again
    c, seen = client([httpx.ReadTimeout("lost")], Retry(attempts=3))
    with pytest.raises(GatewayUnreachable):
        c.delete_file("t1/x")
    assert len(seen) == 1
    # a GET is
    c, seen = client([httpx.ReadTimeout("lost"), httpx.Response(200, json=USAGE)], Retry(3))
    assert c.get_tenant_usage("t1").storage_used_bytes == 0 and len(seen) == 2


def test_other_errors_are_not_retried() -> None:
    c, seen = client([httpx.Response(404, json={"detail": "No", "code": "not_found"})], Retry(4))
    with pytest.raises(Exception) as e:
        c.get_upload("upl_000000000000000000000001")
    assert type(e.value).__name__ == "NotFound" and len(seen) == 1
