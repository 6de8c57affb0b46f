"""The demo page in Chromium, mounted in the gateway app (as ``gateway dev`` mounts it).

Real Postgres, Redis and an HTTP S3 (moto server); the page uploads straight to S3
with the presigned URL and XHR progress, and only ever talks to its own backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import expect

from tests.conftest import BUCKET
from tests.e2e.conftest import DemoGateway, new_tenant, tenant_objects, use_tenant

pytestmark = pytest.mark.browser


def payload(size: int, seed: int) -> bytes:
    return bytes((i * 31 + seed) % 251 for i in range(size))


class Watch:
    """Every request the page makes and its backend's answers, to check what it talks to."""

    def __init__(self, page: Any, origin: str) -> None:
        self.origin = origin
        self.requests: list[Any] = []
        self.bodies: dict[str, str] = {}  # backend API answers, read as they arrive
        self.unread: list[str] = []
        page.on("request", lambda r: self.requests.append(r))
        page.on("response", self._on_response)

    async def _on_response(self, response: Any) -> None:
        ours = response.url.startswith(self.origin) and "/api/" in response.url
        if ours and not 300 <= response.status < 400:
            try:
                self.bodies[f"{response.request.method} {response.url}"] = await response.text()
            except PlaywrightError:  # the page closed first (the test is over)
                self.unread.append(response.url)

    async def assert_key_never_seen(self, api_key: str) -> None:
        assert self.requests and self.bodies, "the page made no requests"
        for request in self.requests:
            headers = await request.all_headers()
            assert "authorization" not in {h.lower() for h in headers}, request.url
            assert api_key not in request.url
            # Same origin as the gateway here, yet never its API: only the page's backend.
            assert not urlsplit(request.url).path.startswith("/api/storage/"), request.url
        assert not self.unread, self.unread
        for where, text in self.bodies.items():
            assert api_key not in text, where


async def set_limit(gw: DemoGateway, tenant: str, limit: int | None) -> None:
    async with httpx.AsyncClient(base_url=gw.base_url) as c:
        r = await c.patch(
            f"/api/storage/tenants/{tenant}/limit/",
            json={"storage_limit_bytes": limit},
            headers=gw.project.headers,
        )
    assert r.status_code == 200, r.text


async def gateway_usage(gw: DemoGateway, tenant: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=gw.base_url) as c:
        r = await c.get(f"/api/storage/tenants/{tenant}/usage/", headers=gw.project.headers)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


async def open_page(context: Any, url: str) -> tuple[Any, Watch]:
    page = await context.new_page()
    watch = Watch(page, url.split("/", 3)[0] + "//" + urlsplit(url).netloc)
    await page.goto(url)
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    return page, watch


async def test_two_uploads_usage_then_quota_413(
    context: Any, demo_gateway: DemoGateway, s3_client: Any, output_dir: Path
) -> None:
    gw, tenant = demo_gateway, demo_gateway.fixed_tenant
    # Without the trailing slash the page redirects, so its relative URLs resolve.
    page, watch = await open_page(context, f"{gw.base_url}/demo")
    assert page.url == f"{gw.base_url}/demo/"
    bar = page.locator("#usage-bar")
    await expect(page.locator("#tenant-id")).to_have_text(tenant)
    await expect(bar).to_have_attribute("data-band", "none")
    await expect(bar.locator(".quota")).to_have_text("Unlimited")

    a, b = payload(3000, 1), payload(7000, 2)
    await page.set_input_files(
        "#file-input",
        files=[
            {"name": "notes.txt", "mimeType": "text/plain", "buffer": a},
            {"name": "photo.bin", "mimeType": "application/octet-stream", "buffer": b},
        ],
    )
    rows = page.locator("#upload-list li")
    await expect(rows).to_have_count(2)
    for name in ("notes.txt", "photo.bin"):
        row = rows.filter(has_text=name)
        await expect(row).to_have_attribute("data-state", "done")
        await expect(row.locator("progress")).to_have_js_property("value", 100)

    # Both objects are in S3 under the tenant's prefix, byte for byte.
    objects = tenant_objects(s3_client, BUCKET, gw.project.project_id, tenant)
    by_name = {key.rsplit("/", 1)[-1]: body for key, body in objects.items()}
    assert by_name == {"notes.txt": a, "photo.bin": b}
    head = s3_client.head_object(Bucket=BUCKET, Key=next(k for k in objects if "notes" in k))
    assert head["ContentType"] == "text/plain"

    # The usage bar shows the settled total, and the list shows both files.
    await expect(bar).to_have_attribute("used", "10000")
    await expect(bar.locator(".used")).to_have_text("10 kB used")
    await expect(page.locator("#file-list tr")).to_have_count(2)
    await expect(page.locator("#usage-details")).to_have_text("2 files")
    usage = await gateway_usage(gw, tenant)
    assert (usage["storage_used_bytes"], usage["storage_reserved_bytes"]) == (10000, 0)
    await page.screenshot(path=str(output_dir / "demo-two-uploads.png"), full_page=True)

    # A limit the next file would overflow: 413 before any URL, nothing reaches S3.
    await set_limit(gw, tenant, 12_000)
    await page.reload()
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    await expect(bar).to_have_attribute("data-band", "yellow")
    await expect(bar.locator(".quota")).to_have_text("83% of 12 kB")
    await expect(bar.locator(".message")).to_have_text("Running low on storage.")

    puts_before = sum(r.method == "PUT" for r in watch.requests)
    await page.set_input_files(
        "#file-input",
        files=[
            {
                "name": "too-big.bin",
                "mimeType": "application/octet-stream",
                "buffer": payload(5000, 3),
            },
        ],
    )
    rejected = page.locator("#upload-list li").filter(has_text="too-big.bin")
    await expect(rejected).to_have_attribute("data-state", "rejected")
    await expect(rejected.locator(".status")).to_have_text("Not uploaded: storage full")
    alert = page.locator("#quota-alert")
    await expect(alert).to_be_visible()
    await expect(alert).to_contain_text("Storage full — delete files or upgrade your plan")
    await expect(alert).to_contain_text("“too-big.bin” needs 5 kB")
    await expect(alert).to_contain_text("10 kB of 12 kB used")
    assert set(tenant_objects(s3_client, BUCKET, gw.project.project_id, tenant)) == set(objects)
    assert puts_before == 2
    assert sum(r.method == "PUT" for r in watch.requests) == 2, "no PUT may follow a 413"
    assert (await gateway_usage(gw, tenant))["storage_reserved_bytes"] == 0

    await page.screenshot(path=str(output_dir / "demo-quota-413.png"), full_page=True)
    await watch.assert_key_never_seen(gw.project.api_key)


async def test_progress_download_and_delete(
    context: Any, demo_gateway: DemoGateway, s3_client: Any
) -> None:
    gw, tenant = demo_gateway, new_tenant()
    await use_tenant(context, gw.base_url, tenant)
    page, watch = await open_page(context, f"{gw.base_url}/t/")
    await expect(page.locator("#tenant-id")).to_have_text(tenant)

    # Record what the progress bar showed on its way to 100 %.
    await page.evaluate(
        """() => {
            window.progressSeen = [];
            new MutationObserver(() => {
                const p = document.querySelector('#upload-list progress');
                if (p) window.progressSeen.push(p.value);
            }).observe(document.getElementById('upload-list'),
                       {subtree: true, childList: true, attributes: true,
                        characterData: true});
        }"""
    )
    # Slow the upload down (Chrome's network emulation) so progress has steps to show.
    cdp = await context.new_cdp_session(page)
    await cdp.send("Network.enable")
    await cdp.send(
        "Network.emulateNetworkConditions",
        {
            "offline": False,
            "latency": 0,
            "downloadThroughput": -1,
            "uploadThroughput": 1_000_000,
        },
    )
    big = payload(2_000_000, 4)
    await page.set_input_files(
        "#file-input",
        files=[
            {"name": "big.bin", "mimeType": "application/octet-stream", "buffer": big},
        ],
    )
    row = page.locator("#upload-list li").first
    await expect(row).to_have_attribute("data-state", "done", timeout=30_000)
    seen: list[float] = await page.evaluate("window.progressSeen")
    assert seen and seen[-1] == 100
    steps = sorted({v for v in seen if 0 < v < 100})
    assert len(steps) >= 2, seen  # it moved in steps, not straight to 100
    assert seen == sorted(seen)  # and never backwards
    await cdp.send(
        "Network.emulateNetworkConditions",
        {
            "offline": False,
            "latency": 0,
            "downloadThroughput": -1,
            "uploadThroughput": -1,
        },
    )
    await expect(page.locator("#upload-list .status")).to_have_text(["Uploaded"])

    files = page.locator("#file-list tr")
    await expect(files).to_have_count(1)
    async with page.expect_download() as info:
        await files.first.locator("a.download").click()
    download = await info.value
    assert download.suggested_filename == "big.bin"
    assert Path(await download.path()).read_bytes() == big

    await files.first.locator("button.delete").click()
    await expect(files).to_have_count(0)
    await expect(page.locator("#no-files")).to_be_visible()
    await expect(page.locator("#usage-bar")).to_have_attribute("used", "0")
    assert tenant_objects(s3_client, BUCKET, gw.project.project_id, tenant) == {}
    assert (await gateway_usage(gw, tenant))["storage_used_bytes"] == 0
    await watch.assert_key_never_seen(gw.project.api_key)


async def test_drag_and_drop_and_parallel_uploads(
    context: Any, demo_gateway: DemoGateway, s3_client: Any
) -> None:
    gw, tenant = demo_gateway, new_tenant()
    await use_tenant(context, gw.base_url, tenant)
    page, _ = await open_page(context, f"{gw.base_url}/t/")
    names = [f"dropped-{i}.txt" for i in range(5)]
    handle = await page.evaluate_handle(
        """(names) => {
            const dt = new DataTransfer();
            names.forEach((n, i) => dt.items.add(new File(['x'.repeat(100 * (i + 1))], n,
                                                          {type: 'text/plain'})));
            return dt;
        }""",
        names,
    )
    await page.dispatch_event("#drop-zone", "drop", {"dataTransfer": handle})
    rows = page.locator("#upload-list li")
    await expect(rows).to_have_count(5)
    for name in names:
        await expect(rows.filter(has_text=name)).to_have_attribute("data-state", "done")
    await expect(page.locator("#usage-bar")).to_have_attribute("used", "1500")
    objects = tenant_objects(s3_client, BUCKET, gw.project.project_id, tenant)
    assert sorted(len(v) for v in objects.values()) == [100, 200, 300, 400, 500]


async def test_red_band_and_over_limit_from_the_gateway(
    context: Any, demo_gateway: DemoGateway
) -> None:
    gw, tenant = demo_gateway, new_tenant()
    await use_tenant(context, gw.base_url, tenant)
    page, _ = await open_page(context, f"{gw.base_url}/t/")
    await page.set_input_files(
        "#file-input",
        files=[
            {"name": "a.txt", "mimeType": "text/plain", "buffer": b"a" * 950},
        ],
    )
    await expect(page.locator("#upload-list li")).to_have_attribute("data-state", "done")
    await set_limit(gw, tenant, 1000)
    await page.reload()
    bar = page.locator("#usage-bar")
    await expect(bar).to_have_attribute("data-band", "red")
    await expect(bar.locator(".message")).to_have_text(
        "Storage almost full. Delete files or upgrade your plan."
    )
    await set_limit(gw, tenant, 500)  # below usage: the tenant is over its limit
    await page.reload()
    await expect(bar).to_have_attribute("data-over-limit", "true")
    await expect(bar.locator(".quota")).to_have_text("100% of 500 B")


async def test_backend_scopes_uploads_to_its_tenant(demo_gateway: DemoGateway) -> None:
    """One user cannot complete, cancel, delete or download another user's upload."""
    gw = demo_gateway
    alice, bob = new_tenant("alice"), new_tenant("bob")
    async with httpx.AsyncClient(base_url=f"{gw.base_url}/t") as c:
        as_alice, as_bob = {"demo_tenant": alice}, {"demo_tenant": bob}
        c.cookies.update(as_alice)
        r = await c.post(
            "/api/uploads/",
            json={"filename": "x.txt", "content_type": "text/plain", "size_bytes": 3},
        )
        assert r.status_code == 200, r.text
        ticket = r.json()
        assert set(ticket) == {"upload_id", "method", "url", "headers", "fields", "expires_at"}
        put = httpx.put(ticket["url"], content=b"abc", headers=ticket["headers"])
        assert put.status_code == 200
        uid = ticket["upload_id"]
        c.cookies.clear()
        c.cookies.update(as_bob)
        assert (await c.post(f"/api/uploads/{uid}/complete/")).status_code == 404
        assert (await c.delete(f"/api/uploads/{uid}/")).status_code == 404
        c.cookies.clear()
        c.cookies.update(as_alice)
        r = await c.post(f"/api/uploads/{uid}/complete/")
        assert r.status_code == 200 and r.json()["status"] == "completed"
        c.cookies.clear()
        c.cookies.update(as_bob)
        assert (await c.get(f"/api/files/{uid}/download/")).status_code == 404
        assert (await c.delete(f"/api/files/{uid}/")).status_code == 404
        assert (await c.get("/api/files/")).json()["data"] == []
        c.cookies.clear()
        c.cookies.update(as_alice)
        r = await c.get(f"/api/files/{uid}/download/")
        assert r.status_code == 302 and r.headers["location"].startswith("http")
        assert [f["upload_id"] for f in (await c.get("/api/files/")).json()["data"]] == [uid]


async def test_backend_errors_never_show_the_key(demo_gateway: DemoGateway) -> None:
    """A bad key is the server's fault (502), a dead gateway a 503; no key in either answer."""
    from litestar import Litestar

    from devtools.demo import demo_router

    secret = "gw_wrong_" + new_tenant()
    app = Litestar(
        route_handlers=[
            demo_router(gateway_url=demo_gateway.base_url, api_key=secret),
            demo_router(gateway_url="http://127.0.0.1:9", api_key=secret, path="/down"),
        ]
    )
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://demo.test") as c:
        r = await c.get("/demo/api/usage/")
        assert r.status_code == 502 and r.json()["code"] == "backend_misconfigured"
        assert secret not in r.text
        r = await c.get("/down/api/usage/")
        assert r.status_code == 503 and r.json()["code"] == "gateway_unavailable"
        assert r.headers["Retry-After"] == "2" and secret not in r.text
