"""The demo page against an S3 that checks what moto does not: LocalStack's S3 with
``S3_SKIP_SIGNATURE_VALIDATION=0`` (signatures, expiry) and bucket CORS rules.

What LocalStack enforces (see tests/integration/test_localstack_s3_enforcement.py): the
CORS rule on the preflight (an origin outside the rule gets 403, so the browser never
sends the PUT), the SigV4 signature of a presigned PUT and its expiry.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import boto3
import httpx
import pytest
from botocore.config import Config
from litestar import Litestar
from playwright.async_api import expect

from devtools.demo import demo_router
from tests.conftest import ProjectKey, make_project
from tests.e2e.conftest import new_tenant, tenant_from_cookie, use_tenant
from tests.e2e.servers import ThreadedServer, serve_in_thread
from tests.support.services import Server, free_port, start_server

# Registers the session fixture `localstack_endpoint` (once, however many modules ask).
pytest_plugins = ["tests.support.localstack"]
pytestmark = [pytest.mark.browser, pytest.mark.localstack]

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}


@dataclass
class Strict:
    s3: Any
    bucket: str
    project: ProjectKey
    gateway: Server  # a `gateway serve` on LocalStack
    short_gateway: Server  # the same with presigned URLs valid for 1 s
    demo: ThreadedServer  # the page's backend: /demo → gateway, /short → short_gateway

    @property
    def allowed_origin(self) -> str:
        return self.demo.base_url  # http://127.0.0.1:PORT

    @property
    def other_origin(self) -> str:
        return f"http://localhost:{self.demo.port}"  # the same server, another origin

    def objects(self, tenant: str) -> list[str]:
        prefix = f"{self.project.project_id}/{tenant}/"
        listing = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return [o["Key"] for o in listing.get("Contents", [])]

    async def usage(self, tenant: str) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.gateway.base_url) as c:
            r = await c.get(f"/api/storage/tenants/{tenant}/usage/", headers=self.project.headers)
        assert r.status_code == 200, r.text
        result: dict[str, Any] = r.json()
        return result


@pytest.fixture(scope="module")
def ls_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("localstack-e2e")


@pytest.fixture(scope="module")
async def strict_project(state: Any) -> ProjectKey:
    return await make_project(state)


@pytest.fixture(scope="module")
def strict(
    localstack_endpoint: str,
    server_env: dict[str, str],
    ls_log_dir: Path,
    strict_project: ProjectKey,
) -> Iterator[Strict]:
    s3 = boto3.client(
        "s3",
        endpoint_url=localstack_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    bucket = f"e2e-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=bucket)
    env = {
        **server_env,
        **CREDENTIALS,
        "GATEWAY_S3_ENDPOINT_URL": localstack_endpoint,
        "GATEWAY_S3_BUCKET": bucket,
    }
    gateway = start_server(env, ls_log_dir, name="gateway-localstack")
    short = start_server(
        {**env, "GATEWAY_UPLOAD_URL_TTL": "1"}, ls_log_dir, name="gateway-localstack-ttl1"
    )
    port = free_port()
    s3.put_bucket_cors(
        Bucket=bucket,
        CORSConfiguration={
            "CORSRules": [
                {
                    "AllowedOrigins": [f"http://127.0.0.1:{port}"],
                    "AllowedMethods": ["PUT", "POST", "GET", "HEAD"],
                    "AllowedHeaders": ["*"],
                    "ExposeHeaders": ["ETag"],
                }
            ]
        },
    )
    key = strict_project.api_key
    app = Litestar(
        route_handlers=[
            demo_router(gateway_url=gateway.base_url, api_key=key, tenant_of=tenant_from_cookie),
            demo_router(
                gateway_url=short.base_url, api_key=key, path="/short", tenant_of=tenant_from_cookie
            ),
        ]
    )
    demo = serve_in_thread(app, port)
    try:
        yield Strict(s3, bucket, strict_project, gateway, short, demo)
    finally:
        demo.stop()
        short.stop()
        gateway.stop()


async def open_demo(
    context: Any, origin: str, tenant: str, path: str = "/demo/"
) -> tuple[Any, list[str]]:
    """The page for ``tenant`` and the console messages it logs."""
    await use_tenant(context, origin, tenant)
    page = await context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text))
    await page.goto(origin + path)
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    return page, console


async def upload(page: Any, name: str, body: bytes, mime: str = "application/pdf") -> Any:
    await page.set_input_files(
        "#file-input",
        files=[
            {"name": name, "mimeType": mime, "buffer": body},
        ],
    )
    return page.locator("#upload-list li").filter(has_text=name)


async def test_allowed_origin_uploads_with_a_checked_signature(
    context: Any, strict: Strict
) -> None:
    tenant = new_tenant()
    page, _ = await open_demo(context, strict.allowed_origin, tenant)
    body = b"%PDF-1.4 " + bytes(range(256)) * 40
    row = await upload(page, "signed.pdf", body)
    await expect(row).to_have_attribute("data-state", "done")
    [key] = strict.objects(tenant)
    head = strict.s3.head_object(Bucket=strict.bucket, Key=key)
    assert (head["ContentLength"], head["ContentType"]) == (len(body), "application/pdf")
    await expect(page.locator("#usage-bar")).to_have_attribute("used", str(len(body)))


async def test_origin_outside_the_cors_rule_is_blocked(context: Any, strict: Strict) -> None:
    tenant = new_tenant()
    page, console = await open_demo(context, strict.other_origin, tenant)
    row = await upload(page, "blocked.pdf", b"x" * 2048)
    await expect(row).to_have_attribute("data-state", "error")
    await expect(row.locator(".status")).to_contain_text("CORS")
    assert any("blocked by CORS policy" in m for m in console), console
    assert strict.objects(tenant) == []
    usage = await strict.usage(tenant)  # the page cancelled: nothing stays reserved
    assert (usage["storage_used_bytes"], usage["storage_reserved_bytes"]) == (0, 0)


def _tamper_signature(url: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    sig = query["X-Amz-Signature"]
    query["X-Amz-Signature"] = ("0" if sig[0] != "0" else "1") + sig[1:]
    return urlunsplit(parts._replace(query=urlencode(query)))


async def test_tampered_url_fails_visibly(context: Any, strict: Strict) -> None:
    tenant = new_tenant()
    page, _ = await open_demo(context, strict.allowed_origin, tenant)

    async def tamper(route: Any) -> None:
        response = await route.fetch()
        ticket = await response.json()
        ticket["url"] = _tamper_signature(ticket["url"])
        await route.fulfill(response=response, body=json.dumps(ticket))

    await page.route("**/demo/api/uploads/", tamper)
    row = await upload(page, "tampered.pdf", b"y" * 1000)
    await expect(row).to_have_attribute("data-state", "error")
    await expect(row.locator(".status")).to_contain_text(
        "storage refused the upload: SignatureDoesNotMatch"
    )
    assert strict.objects(tenant) == []
    assert (await strict.usage(tenant))["storage_reserved_bytes"] == 0


async def test_expired_url_fails_visibly(context: Any, strict: Strict) -> None:
    tenant = new_tenant()
    page, _ = await open_demo(context, strict.allowed_origin, tenant, path="/short/")

    async def hold(route: Any) -> None:
        response = await route.fetch()
        await asyncio.sleep(2.2)  # the URL is valid for 1 s (whole seconds in X-Amz-Date)
        await route.fulfill(response=response)

    await page.route("**/short/api/uploads/", hold)
    row = await upload(page, "late.pdf", b"z" * 1000)
    await expect(row).to_have_attribute("data-state", "error", timeout=20_000)
    await expect(row.locator(".status")).to_contain_text("storage refused the upload: AccessDenied")
    await expect(row.locator(".status")).to_contain_text("expired")
    assert strict.objects(tenant) == []
    assert (await strict.usage(tenant))["storage_reserved_bytes"] == 0
