"""GatewayClient (sync) against a live gateway: every operation, typed answers, and
errors as exceptions carrying their fields."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from upload_gateway_client import (
    FileTooLarge,
    GatewayClient,
    IdempotencyKeyReused,
    InvalidApiKey,
    NotFound,
    ObjectNotUploaded,
    ProjectQuotaExceeded,
    QuotaExceeded,
    TenantUsage,
    UploadRequest,
    ValidationFailed,
)

from gateway.config import Settings
from tests.conftest import BUCKET, ProjectKey, make_project
from tests.e2e.conftest import new_tenant
from tests.support.services import Server


@pytest.fixture
def gw(gateway_server: Server, project: ProjectKey) -> Iterator[GatewayClient]:
    with GatewayClient(gateway_server.base_url, project.api_key) as client:
        yield client


def test_limits_and_usage(gw: GatewayClient) -> None:
    tenant = new_tenant("sync")
    fresh = gw.get_tenant_usage(tenant)
    assert isinstance(fresh, TenantUsage)
    assert fresh.storage_used_bytes == 0 and fresh.storage_limit_bytes is None
    limited = gw.set_tenant_limit(tenant, 1000)
    assert limited.storage_limit_bytes == 1000 and limited.storage_available_bytes == 1000
    assert gw.set_tenant_limit(tenant, None).storage_limit_bytes is None


def test_upload_file_end_to_end(
    gw: GatewayClient, local_file: Path, project: ProjectKey, s3_client: Any
) -> None:
    tenant = new_tenant("sync")
    result = gw.upload_file(local_file, tenant_id=tenant, checksum=True)
    assert result.strategy == "single"
    assert result.upload.headers["Content-Type"] == "text/plain"
    assert result.status is not None and result.status.status == "completed"
    assert result.status.actual_size_bytes == local_file.stat().st_size
    stored = s3_client.get_object(Bucket=BUCKET, Key=result.upload.key)["Body"].read()
    assert stored == local_file.read_bytes()
    usage = gw.get_tenant_usage(tenant)
    assert usage.storage_used_bytes == local_file.stat().st_size and usage.total_files == 1

    download = gw.create_download(result.upload.file_path, expires_in=60)
    assert httpx.get(download.download_url).content == local_file.read_bytes()
    assert gw.delete_file(result.upload.file_path).detail == "File deleted successfully"
    assert gw.get_tenant_usage(tenant).storage_used_bytes == 0
    with pytest.raises(NotFound) as gone:
        gw.delete_file(result.upload.file_path)
    assert gone.value.status == 404 and gone.value.code == "not_found"


def test_upload_file_with_a_post_policy(gw: GatewayClient, local_file: Path) -> None:
    result = gw.upload_file(local_file, tenant_id=new_tenant("post"), method="POST")
    assert result.upload.method == "POST" and result.upload.fields
    assert result.status is not None and result.status.status == "completed"


def test_upload_file_without_completing(gw: GatewayClient, local_file: Path) -> None:
    result = gw.upload_file(local_file, tenant_id=new_tenant("async"), complete=False)
    assert result.status is None
    assert gw.get_upload(result.upload.upload_id).status == "pending"
    assert gw.complete_upload(result.upload.upload_id).status == "completed"


def test_quota_exceeded_carries_its_numbers(gw: GatewayClient, local_file: Path) -> None:
    tenant = new_tenant("full")
    gw.set_tenant_limit(tenant, 100)
    with pytest.raises(QuotaExceeded) as full:
        gw.upload_file(local_file, tenant_id=tenant)
    e = full.value
    assert type(e) is QuotaExceeded and e.scope == "tenant"
    assert (e.storage_limit_bytes, e.storage_used_bytes, e.storage_reserved_bytes) == (100, 0, 0)
    assert e.requested_bytes == local_file.stat().st_size
    assert e.detail == "Storage quota exceeded for this tenant" and e.request_id
    assert gw.get_tenant_usage(tenant).storage_reserved_bytes == 0  # nothing reserved


async def test_project_limits_raise_their_own_errors(
    gateway_server: Server, state: Any, local_file: Path
) -> None:
    capped = await make_project(state, storage_limit=50)
    small = await make_project(state, max_file_size=10)
    with GatewayClient(gateway_server.base_url, capped.api_key) as gw:
        with pytest.raises(ProjectQuotaExceeded) as cap:
            gw.upload_file(local_file, tenant_id="t1")
        assert cap.value.scope == "project" and cap.value.storage_limit_bytes == 50
    with GatewayClient(gateway_server.base_url, small.api_key) as gw:
        with pytest.raises(FileTooLarge) as big:
            gw.upload_file(local_file, tenant_id="t1")
        assert big.value.max_file_size_bytes == 10
        assert big.value.requested_bytes == local_file.stat().st_size


def test_uploads_lifecycle_and_their_errors(gw: GatewayClient) -> None:
    request = UploadRequest(tenant_id=new_tenant("life"), filename="a.bin", size_bytes=3)
    upload = gw.create_upload(request, idempotency_key="life-1")
    assert gw.create_upload(request, idempotency_key="life-1").upload_id == upload.upload_id
    other = UploadRequest(tenant_id=request.tenant_id, filename="b.bin", size_bytes=3)
    with pytest.raises(IdempotencyKeyReused):
        gw.create_upload(other, idempotency_key="life-1")
    with pytest.raises(ObjectNotUploaded):
        gw.complete_upload(upload.upload_id)
    assert gw.cancel_upload(upload.upload_id).status == "cancelled"
    with pytest.raises(NotFound):
        gw.get_upload("upl_000000000000000000000000")


def test_validation_errors_name_the_field(gw: GatewayClient) -> None:
    with pytest.raises(ValidationFailed) as bad:
        gw.create_upload(UploadRequest(tenant_id="not a tenant", filename="a"))
    assert bad.value.errors[0].field == "tenant_id"
    assert bad.value.errors[0].source == "body"
    assert bad.value.detail.startswith("The field 'tenant_id' must be")
    with pytest.raises(ValidationFailed) as low:
        gw.set_tenant_limit("t1", -1)
    assert low.value.detail == "The field 'storage_limit_bytes' must be at least 0."


def test_a_bad_key_is_invalid_api_key(gateway_server: Server) -> None:
    with (
        GatewayClient(gateway_server.base_url, "gwk_nope") as gw,
        pytest.raises(InvalidApiKey) as denied,
    ):
        gw.get_project_usage()
    assert denied.value.status == 401


async def test_listing_and_totals(gateway_server: Server, state: Any) -> None:
    p = await make_project(state)
    with GatewayClient(gateway_server.base_url, p.api_key) as gw:
        for i in range(5):
            gw.set_tenant_limit(f"tenant_{i}", 1000 * (i + 1))
        page = gw.list_tenants(limit=2, order="-tenant_id")
        assert page.count == 2 and page.totalCount == 5 and page.next
        assert [u.tenant_id for u in page.data] == ["tenant_4", "tenant_3"]
        assert [u.tenant_id for u in gw.iter_tenants(page_size=2)] == [
            f"tenant_{i}" for i in range(5)
        ]
        assert gw.list_tenants(min_percentage=0.0).totalCount == 5
        totals = gw.get_project_usage()
        assert totals.project_id == p.project_id and totals.total_tenants == 5
        assert gw.recalculate_tenant("tenant_0").drift_bytes == 0


def test_operations_routes(gw: GatewayClient, settings: Settings) -> None:
    assert gw.healthz().status == "ok"
    ready = gw.readyz()
    assert ready.status == "ok" and set(ready.checks) == {"postgres", "redis", "s3"}
    assert "gateway_" in gw.metrics()
    test_event = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"}).encode()
    out = gw.ingest_s3_events(test_event, webhook_secret=settings.webhook_secret or "")
    assert (out.records, out.applied, out.ignored) == (1, 0, 1)
    with pytest.raises(InvalidApiKey):
        gw.ingest_s3_events(test_event, webhook_secret="wrong")
