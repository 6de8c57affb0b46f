"""The docs UIs' assets are vendored, pinned and unchanged since they were vendored
(scripts/vendor-docs-ui.sh), and /schema's pages name no other origin."""

from __future__ import annotations

import hashlib
import re

from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin

from gateway.api.openapi import openapi_config
from tests.support.services import ROOT

STATIC = ROOT / "gateway" / "static"
VENDOR = STATIC / "vendor"


def test_every_vendored_file_is_the_one_pinned() -> None:
    lines = (VENDOR / "VERSIONS.txt").read_text().splitlines()
    pins = [line for line in lines if re.fullmatch(r"\S+ \d+\.\d+\.\d+ \S+", line)]
    assert [p.split()[0] for p in pins] == ["@scalar/api-reference", "swagger-ui-dist"]
    listed = {}
    for line in lines:
        if m := re.fullmatch(r"([0-9a-f]{64})  (\S+)", line):
            listed[m[2]] = m[1]
    on_disk = {str(p.relative_to(VENDOR)) for p in VENDOR.rglob("*") if p.is_file()} - {
        "VERSIONS.txt"
    }
    assert set(listed) == on_disk
    for name, digest in listed.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name
    assert {"scalar/LICENSE", "swagger-ui/LICENSE", "swagger-ui/NOTICE"} <= on_disk


def test_the_pages_load_only_the_gateways_own_files() -> None:
    plugins = openapi_config("0").render_plugins
    urls: list[str] = []
    for plugin in plugins:
        if isinstance(plugin, ScalarRenderPlugin):
            urls += [plugin.js_url, plugin.css_url]
        elif isinstance(plugin, SwaggerRenderPlugin):
            urls += [plugin.js_url, plugin.css_url, plugin.standalone_preset_js_url]
        assert "http" not in plugin.favicon
    assert len(urls) == 5
    for url in urls:
        assert url.startswith("/static/"), url
        assert (STATIC / url.removeprefix("/static/")).is_file(), url
