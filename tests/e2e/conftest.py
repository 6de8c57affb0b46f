"""Browser tests: Playwright driving the system's Chromium (Debian's /usr/bin/chromium).

No Chromium (or no Playwright) skips these tests with the reason, except under
``CI=true``, where it fails them: CI must run them.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from devtools.demo import demo_router
from gateway.config import Settings
from tests.conftest import ProjectKey, make_project
from tests.e2e.servers import ThreadedServer, serve_in_thread
from tests.support.services import ROOT, free_port

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
OUTPUT_DIR = ROOT / "test-output"
TENANT_COOKIE = "demo_tenant"


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; under CI=true browser tests must run, not skip")
    pytest.skip(reason)


def find_chromium() -> str | None:
    """$CHROMIUM_PATH if set, else Debian's /usr/bin/chromium or a chromium on PATH."""
    configured = os.environ.get("CHROMIUM_PATH", "").strip()
    if configured:
        candidates = [configured]
    else:
        candidates = ["/usr/bin/chromium"]
        candidates += [shutil.which(n) or "" for n in ("chromium", "chromium-browser")]
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = find_chromium()
    if path is None:
        _unavailable(
            "no Chromium found (install it: apt-get install -y chromium, or set CHROMIUM_PATH)"
        )
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        _unavailable("the playwright package is not installed")
    return path


@pytest.fixture(scope="session")
async def browser(chromium_path: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        await chromium.close()


@pytest.fixture
async def context(browser: Any) -> AsyncIterator[Any]:
    ctx = await browser.new_context(accept_downloads=True)
    ctx.set_default_timeout(15_000)
    yield ctx
    await ctx.close()


@pytest.fixture(scope="session")
def output_dir() -> Path:
    OUTPUT_DIR.mkdir(exist_ok=True)
    return OUTPUT_DIR


def new_tenant(prefix: str = "e2e") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def tenant_from_cookie(request: Any) -> str:
    """Test mounts act for the tenant named in a cookie, so each test has its own."""
    return str(request.cookies.get(TENANT_COOKIE) or "demo_user")


async def use_tenant(context: Any, base_url: str, tenant: str) -> None:
    await context.add_cookies([{"name": TENANT_COOKIE, "value": tenant, "url": base_url}])


@dataclass
class DemoGateway:
    """The gateway app with the demo mounted in it, as ``gateway dev`` mounts it."""

    server: ThreadedServer
    project: ProjectKey
    fixed_tenant: str  # the tenant of the /demo mount (a fixed one, like gateway dev's)

    @property
    def base_url(self) -> str:
        return self.server.base_url


@pytest.fixture(scope="session")
async def demo_project(state: Any) -> ProjectKey:
    return await make_project(state)


@pytest.fixture(scope="session")
def demo_gateway(settings: Settings, demo_project: ProjectKey) -> Iterator[DemoGateway]:
    from gateway.app import create_app

    port = free_port()
    own_url = f"http://127.0.0.1:{port}"
    fixed = new_tenant("demo")
    app = create_app(
        settings,
        extra_route_handlers=[
            demo_router(gateway_url=own_url, api_key=demo_project.api_key, tenant_id=fixed),
            demo_router(
                gateway_url=own_url,
                api_key=demo_project.api_key,
                path="/t",
                tenant_of=tenant_from_cookie,
            ),
        ],
    )
    server = serve_in_thread(app, port)
    yield DemoGateway(server, demo_project, fixed)
    server.stop()


def tenant_objects(s3_client: Any, bucket: str, project_id: str, tenant: str) -> dict[str, bytes]:
    """Every object under the tenant's prefix: key -> body."""
    prefix = f"{project_id}/{tenant}/"
    listing = s3_client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return {
        o["Key"]: s3_client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        for o in listing.get("Contents", [])
    }
