"""examples/saas_backend: sign in, upload from the browser, the user is the tenant.

Runs the example exactly as its README says (``python -m examples.saas_backend.app``)
against a real ``gateway serve`` process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import expect
from upload_gateway_client import GatewayClient

from tests.conftest import BUCKET, ProjectKey
from tests.e2e.conftest import new_tenant, tenant_objects
from tests.support.services import ROOT, Server, free_port, start_server, wait_http

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def gateway_process(server_env: dict[str, str], log_dir: Path) -> Iterator[Server]:
    server = start_server(server_env, log_dir, name="gateway-example")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("example-logs")


@pytest.fixture(scope="module")
def example_app(gateway_process: Server, demo_project: ProjectKey, log_dir: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "GATEWAY_URL": gateway_process.base_url,
        "GATEWAY_API_KEY": demo_project.api_key,
        "PORT": str(port),
    }
    log_path = log_dir / "example.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "examples.saas_backend.app"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/")
    except RuntimeError:
        proc.kill()
        raise RuntimeError(f"the example did not start:\n{log_path.read_text()}") from None
    yield base
    proc.terminate()
    proc.wait(10)


async def _cookies(context: Any) -> dict[str, str]:
    return {c["name"]: c["value"] for c in await context.cookies()}


async def test_sign_in_upload_and_see_usage(
    context: Any,
    example_app: str,
    gateway_process: Server,
    demo_project: ProjectKey,
    s3_client: Any,
    output_dir: Path,
) -> None:
    user = new_tenant("alice")
    page = await context.new_page()
    await page.goto(example_app + "/files/")
    assert page.url == example_app + "/"  # not signed in: sent to the sign-in page
    await page.fill("input[name=user]", user)
    await page.click("button[type=submit]")
    await page.wait_for_url(example_app + "/files/")
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    await expect(page.locator("#tenant-id")).to_have_text(user)

    body = b"hello from the example backend\n"
    await page.set_input_files(
        "#file-input",
        files=[
            {"name": "hello.txt", "mimeType": "text/plain", "buffer": body},
        ],
    )
    await expect(page.locator("#upload-list li")).to_have_attribute("data-state", "done")
    await expect(page.locator("#usage-bar")).to_have_attribute("used", str(len(body)))
    objects = tenant_objects(s3_client, BUCKET, demo_project.project_id, user)
    assert list(objects.values()) == [body]
    assert next(iter(objects)).endswith("/hello.txt")

    # Over the limit: the gateway's 413 reaches the page with its numbers.
    with GatewayClient(gateway_process.base_url, demo_project.api_key) as gw:
        gw.set_tenant_limit(user, len(body) + 5)
    await page.set_input_files(
        "#file-input", files=[{"name": "big.txt", "mimeType": "text/plain", "buffer": b"x" * 10}]
    )
    await expect(page.locator("#upload-list li").nth(1)).to_have_attribute("data-state", "failed")
    await expect(page.locator("#quota-alert")).to_contain_text("Storage full")
    # the page learns the new limit, and the gateway's usage bar (its script and styles
    # allowed by the page's CSP) renders it
    limit = str(len(body) + 5)
    await expect(page.locator("#usage-bar")).to_have_attribute("limit", limit)
    await page.wait_for_function(
        """(limit) => (document.querySelector('#usage-bar').shadowRoot
            ?.querySelector('[part~="quota"]')?.textContent ?? '').includes(limit)""",
        arg=limit,
    )
    await page.screenshot(path=str(output_dir / "saas-example.png"), full_page=True)

    # Download and delete through the backend.
    async with httpx.AsyncClient(base_url=example_app, cookies=await _cookies(context)) as me:
        listed = (await me.get("/files/api/files/")).json()["data"]
        assert [f["filename"] for f in listed] == ["hello.txt"]
        r = await me.get(f"/files/api/files/{listed[0]['upload_id']}/download/")
        assert r.status_code == 302
        assert httpx.get(r.headers["location"]).content == body
    await page.locator("#file-list button", has_text="Delete").click()
    await expect(page.locator("#no-files")).to_be_visible()
    await expect(page.locator("#usage-bar")).to_have_attribute("used", "0")

    # The backend's API answers nobody who is not signed in.
    async with httpx.AsyncClient(base_url=example_app) as anonymous:
        r = await anonymous.get("/files/api/usage/")
        assert r.status_code == 401 and r.json()["code"] == "not_signed_in"
        r = await anonymous.post(
            "/files/api/uploads/",
            json={"filename": "x.txt", "content_type": "text/plain", "size_bytes": 1},
        )
        assert r.status_code == 401

    await page.goto(example_app + "/")
    await page.click("text=Sign out")
    await page.goto(example_app + "/files/")
    assert page.url == example_app + "/"
