"""AsyncGatewayClient against a live gateway, and its retries against a real outage."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from upload_gateway_client import (
    AsyncGatewayClient,
    QuotaExceeded,
    Retry,
    ServiceUnavailable,
    UploadRequest,
)

from gateway.app import create_app
from gateway.config import Settings
from tests.conftest import BUCKET, ProjectKey, running
from tests.e2e.conftest import new_tenant
from tests.support.services import Server, free_port, settings_on


@pytest.fixture
async def agw(gateway_server: Server, project: ProjectKey) -> AsyncIterator[AsyncGatewayClient]:
    async with AsyncGatewayClient(gateway_server.base_url, project.api_key) as client:
        yield client


async def test_async_upload_file_end_to_end(
    agw: AsyncGatewayClient, local_file: Path, s3_client: Any
) -> None:
    tenant = new_tenant("async")
    result = await agw.upload_file(local_file, tenant_id=tenant, checksum=True)
    assert result.status is not None and result.status.status == "completed"
    body = s3_client.get_object(Bucket=BUCKET, Key=result.upload.key)["Body"].read()
    assert body == local_file.read_bytes()
    usage = await agw.get_tenant_usage(tenant)
    assert usage.storage_used_bytes == len(body)
    page = await agw.list_tenants(min_percentage=0)  # no limit: not listed
    assert tenant not in [u.tenant_id for u in page.data]
    assert [u.tenant_id async for u in agw.iter_tenants() if u.tenant_id == tenant] == [tenant]
    await agw.delete_file(result.upload.file_path)
    assert (await agw.get_tenant_usage(tenant)).storage_used_bytes == 0


async def test_async_errors_carry_fields(agw: AsyncGatewayClient) -> None:
    tenant = new_tenant("afull")
    await agw.set_tenant_limit(tenant, 10)
    with pytest.raises(QuotaExceeded) as full:
        await agw.create_upload(UploadRequest(tenant_id=tenant, filename="x", size_bytes=11))
    assert full.value.storage_limit_bytes == 10 and full.value.requested_bytes == 11


class Recording(AsyncGatewayClient):
    """Notes the waits instead of sleeping them."""

    slept: list[float]

    async def _sleep(self, seconds: float) -> None:
        self.slept = [*getattr(self, "slept", []), seconds]


async def test_a_503_is_retried_after_retry_after(settings: Settings, project: ProjectKey) -> None:
    # the gateway with its Redis gone: every upload request answers 503 + Retry-After
    down = settings_on(settings, GATEWAY_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    async with running(create_app(down)) as asgi:
        client = Recording("http://gateway.test", project.api_key, http=asgi, retry=Retry(3))
        with pytest.raises(ServiceUnavailable) as unavailable:
            await client.create_upload(UploadRequest(tenant_id="t1", filename="a", size_bytes=1))
        e = unavailable.value
        assert e.dependency == "redis" and e.retry_after == down.retry_after
        assert client.slept == [down.retry_after, down.retry_after]  # 3 tries in all
        none = Recording("http://gateway.test", project.api_key, http=asgi, retry=Retry(1))
        with pytest.raises(ServiceUnavailable):
            await none.create_upload(UploadRequest(tenant_id="t1", filename="a", size_bytes=1))
        assert getattr(none, "slept", []) == []
