"""/schema (Scalar) and /schema/swagger (Swagger UI) render in Chromium with every
request to anywhere but the gateway blocked: their assets are the gateway's own
(gateway/static/vendor, scripts/vendor-docs-ui.sh)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.async_api import expect

from gateway.app import create_app
from gateway.config import Settings
from tests.e2e.conftest import OUTPUT_DIR
from tests.e2e.servers import ThreadedServer, serve_in_thread

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def gateway(settings: Settings) -> Iterator[ThreadedServer]:
    server = serve_in_thread(create_app(settings))
    yield server
    server.stop()


async def offline_page(context: Any, base_url: str) -> tuple[Any, list[str]]:
    """A page on which any request off the gateway's own origin is aborted (and noted)."""
    own = urlsplit(base_url).netloc
    outside: list[str] = []

    async def route(r: Any) -> None:
        url = urlsplit(r.request.url)
        if url.scheme in ("data", "blob") or url.netloc == own:
            await r.continue_()
        else:
            outside.append(r.request.url)
            await r.abort("internetdisconnected")

    await context.route("**/*", route)
    page = await context.new_page()
    return page, outside


async def test_scalar_renders_with_no_network(
    context: Any, gateway: ThreadedServer, output_dir: Any
) -> None:
    page, outside = await offline_page(context, gateway.base_url)
    failed: list[str] = []
    page.on("requestfailed", lambda req: failed.append(req.url))
    await page.goto(gateway.base_url + "/schema")
    # the operation list: the sidebar's groups (the API's tags) and their operations
    sidebar = page.get_by_role("complementary")
    await expect(sidebar.get_by_text("Ask for a presigned upload")).to_be_visible(timeout=30_000)
    for tag in ("uploads", "tenants", "files", "events", "operations"):
        await expect(sidebar.get_by_role("link", name=tag, exact=True)).to_be_visible()
    await page.screenshot(path=str(OUTPUT_DIR / "schema-scalar.png"))
    assert outside == [], outside  # nothing was even attempted
    assert failed == [], failed


async def test_swagger_renders_with_no_network(context: Any, gateway: ThreadedServer) -> None:
    page, outside = await offline_page(context, gateway.base_url)
    await page.goto(gateway.base_url + "/schema/swagger")
    operations = page.locator(".opblock")
    await expect(operations.first).to_be_visible(timeout=30_000)
    assert await operations.count() == 26  # one per operation of /schema
    await expect(page.get_by_text("/api/storage/upload/").first).to_be_visible()
    assert outside == [], outside
