"""`gateway dev`: the newcomer's one command serves, and its printed curl works.

Run as `make dev` runs it: the venv's `gateway` console script (the editable install
makes the checkout's devtools/ importable; nothing depends on the working directory).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx

from gateway.config import Settings
from tests.support.services import free_port, wait_http


def test_gateway_dev_prints_a_working_key_and_curl(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "GATEWAY_DATABASE_URL": settings.database_url,
        "GATEWAY_REDIS_URL": settings.redis_url,
        "GATEWAY_LOG_FORMAT": "json",
    }
    env.pop("GATEWAY_S3_ENDPOINT_URL", None)
    log = tmp_path / "dev.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "gateway"), "dev", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        text = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "API docs" not in text:
            time.sleep(0.2)
            text = log.read_text()
            assert proc.poll() is None, text
        key = re.search(r"API key: (gwk_\S+)", text)
        assert key, text
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/healthz")
        # the printed curl command, run as printed
        block = text[
            text.index("curl -s -X POST") : text.index("curl -s " + base + "/api/storage/tenants")
        ]
        cmd = shlex.split(block.replace("\\\n", " "))
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        import json

        out_json = json.loads(r.stdout)
        assert out_json["tenant_id"] == "user_123" and out_json["presigned_url"]
        put = httpx.put(out_json["presigned_url"], content=b"hello", headers=out_json["headers"])
        assert put.status_code == 200
        # the in-process S3's event reaches the in-process SQS queue; the server settles
        body: dict[str, object] = {}
        for _ in range(100):
            usage = httpx.get(
                f"{base}/api/storage/tenants/user_123/usage/",
                headers={"Authorization": f"Bearer {key.group(1)}"},
            )
            assert usage.status_code == 200
            body = usage.json()
            if body["storage_used_bytes"] == 5:
                break
            time.sleep(0.2)
        assert body["storage_used_bytes"] == 5 and body["storage_reserved_bytes"] == 0, body
        # the demo page (devtools/static/demo) and the product's usage bar beside it
        page = httpx.get(f"{base}/demo/")
        assert page.status_code == 200 and "<storage-usage-bar" in page.text
        for asset in ("demo.js", "storage-usage-bar.js"):
            assert httpx.get(f"{base}/demo/assets/{asset}").status_code == 200, asset
        bar = httpx.get(f"{base}/static/storage-usage-bar.js")
        assert bar.status_code == 200 and "customElements.define" in bar.text
        assert httpx.get(f"{base}/static/demo/index.html").status_code == 404  # not shipped
    finally:
        proc.terminate()
        proc.wait(10)
    # quiet by default: the in-process S3 served the PUT and the SQS polls above, and
    # logged none of them (its access lines come with --verbose)
    assert not re.search(r'"(GET|PUT|POST) /\S* HTTP/1\.1"', log.read_text()), log.read_text()
