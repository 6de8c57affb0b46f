"""A browser upload demo and the small backend it talks to.

``demo_router(gateway_url=..., api_key=...)`` is a Litestar router that serves a page
(multi-file picker, drag and drop, per-file progress, the tenant's usage bar, a file
list) and, under ``{path}/api/``, the few endpoints a SaaS backend adds in front of the
gateway. The browser talks only to this backend, on its own origin, and straight to S3
with the presigned URL it is handed; the project API key stays on the server.

It is a client of the gateway's public HTTP API (httpx), nothing more: it can be mounted
inside the gateway itself (``gateway dev`` does) or in any other Litestar app
(``examples/saas_backend``). It is not part of the gateway's package: the page and its
script live in ``devtools/static/demo``; the usage bar is the product's own
(``gateway/static/storage-usage-bar.js``, which the gateway serves under ``/static/``).

Demo simplifications, kept on purpose:
- The tenant is fixed (``tenant_id``) or read from the request by ``tenant_of``; a real
  backend takes it from its session.
- The gateway has no "list files" endpoint, so the list of a tenant's completed uploads
  is kept in this process's memory: it is empty after a restart and not shared between
  workers. A real backend keeps its own table of files (it usually has one anyway).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import msgspec
from litestar import Controller, MediaType, Request, Response, Router, delete, get, post
from litestar.di import Provide
from litestar.params import Parameter
from litestar.response import Redirect

from gateway.ids import UPLOAD_ID_PATTERN, utc_timestamp

TenantResolver = Callable[[Request[Any, Any, Any]], str]
UploadId = Annotated[str, Parameter(pattern=UPLOAD_ID_PATTERN, description="upl_… id")]

_ASSETS: Mapping[str, tuple[str, str, str]] = {
    # name served under {path}/assets/ -> (package, file under its static/, media type)
    "demo.js": ("devtools", "demo/demo.js", "text/javascript"),
    "demo.css": ("devtools", "demo/demo.css", "text/css"),
    "storage-usage-bar.js": ("gateway", "storage-usage-bar.js", "text/javascript"),
}
_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Scripts only from this origin; uploads go to whatever S3 endpoint the URL names.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "connect-src 'self' http: https:; img-src 'self' data:; frame-ancestors 'none'"
    ),
}


class NewUpload(msgspec.Struct, kw_only=True, frozen=True):
    """What the page asks for; the tenant is never taken from the browser."""

    filename: str
    content_type: str = "application/octet-stream"
    size_bytes: Annotated[int, msgspec.Meta(ge=0)]


class UploadTicket(msgspec.Struct, kw_only=True, frozen=True):
    upload_id: str
    method: str
    url: str
    headers: dict[str, str]
    fields: dict[str, str] | None
    expires_at: str


class DemoFile(msgspec.Struct, kw_only=True, frozen=True):
    upload_id: str
    filename: str
    content_type: str
    size_bytes: int
    uploaded_at: str


class FileList(msgspec.Struct, kw_only=True, frozen=True):
    tenant_id: str
    data: list[DemoFile]


class Completed(msgspec.Struct, kw_only=True, frozen=True):
    status: str
    file: DemoFile


@dataclass
class _Pending:
    filename: str
    content_type: str


@dataclass
class _Stored:
    file: DemoFile
    file_path: str


class GatewayFailure(Exception):
    """The gateway answered an error (or not at all): sent on to the page as JSON."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        super().__init__(body.get("detail"))
        self.status, self.body, self.headers = status, body, headers or {}

    def response(self) -> Response[Any]:
        return Response(
            content=self.body,
            status_code=self.status,
            headers=self.headers,
            media_type=MediaType.JSON,
        )


@dataclass
class DemoBackend:
    """The server side of the demo: holds the key, scopes everything to one tenant."""

    gateway_url: str
    api_key: str
    tenant_of: TenantResolver
    timeout: float = 10.0
    pending: dict[str, dict[str, _Pending]] = field(default_factory=dict)
    stored: dict[str, dict[str, _Stored]] = field(default_factory=dict)

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """One gateway API call; its JSON body, or GatewayFailure."""
        try:
            async with httpx.AsyncClient(
                base_url=self.gateway_url.rstrip("/"),
                headers={"Authorization": f"Bearer {self.api_key}"},
                timeout=self.timeout,
            ) as client:
                response = await client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise GatewayFailure(
                503,
                {
                    "detail": f"The storage gateway did not answer ({type(exc).__name__})",
                    "code": "gateway_unavailable",
                },
                {"Retry-After": "2"},
            ) from exc
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.is_success:
            if isinstance(payload, dict):
                return payload
            raise GatewayFailure(
                502, {"detail": "The gateway's answer was not JSON", "code": "bad_gateway_answer"}
            )
        if response.status_code == 401:
            # The key is this server's, not the user's: say so without showing it.
            raise GatewayFailure(
                502,
                {
                    "detail": "The gateway rejected this backend's API key",
                    "code": "backend_misconfigured",
                },
            )
        if not isinstance(payload, dict):
            payload = {
                "detail": f"The gateway answered {response.status_code}",
                "code": "gateway_error",
            }
        if response.status_code >= 500:
            raise GatewayFailure(
                503, payload, {"Retry-After": response.headers.get("Retry-After", "2")}
            )
        headers = {k: v for k, v in response.headers.items() if k.lower() == "retry-after"}
        raise GatewayFailure(response.status_code, payload, headers)

    def _not_found(self) -> GatewayFailure:
        return GatewayFailure(404, {"detail": "No such upload for this user", "code": "not_found"})

    async def usage(self, tenant: str) -> Any:
        return await self.call("GET", f"/api/storage/tenants/{quote(tenant, safe='')}/usage/")

    async def new_upload(self, tenant: str, req: NewUpload) -> UploadTicket:
        out = await self.call(
            "POST",
            "/api/storage/upload/",
            {
                "tenant_id": tenant,
                "filename": req.filename,
                "content_type": req.content_type,
                "size_bytes": req.size_bytes,
                "method": "PUT",
            },
        )
        self.pending.setdefault(tenant, {})[out["upload_id"]] = _Pending(
            filename=req.filename, content_type=req.content_type
        )
        return UploadTicket(
            upload_id=out["upload_id"],
            method=out["method"],
            url=out["presigned_url"],
            headers=out["headers"],
            fields=out["fields"],
            expires_at=out["expires_at"],
        )

    async def complete(self, tenant: str, upload_id: str) -> Completed:
        pending = self.pending.get(tenant, {})
        if upload_id not in pending:
            raise self._not_found()
        out = await self.call("POST", f"/api/storage/uploads/{upload_id}/complete/")
        del pending[upload_id]
        file = DemoFile(
            upload_id=upload_id,
            filename=out["filename"],
            content_type=out["content_type"],
            size_bytes=out["actual_size_bytes"] or out["declared_size_bytes"],
            uploaded_at=out["settled_at"] or _now(),
        )
        if out["status"] == "completed":
            self.stored.setdefault(tenant, {})[upload_id] = _Stored(file, out["file_path"])
        return Completed(status=out["status"], file=file)

    async def cancel(self, tenant: str, upload_id: str) -> Any:
        if upload_id not in self.pending.get(tenant, {}):
            raise self._not_found()
        out = await self.call("DELETE", f"/api/storage/uploads/{upload_id}/")
        del self.pending[tenant][upload_id]
        return out

    def _stored(self, tenant: str, upload_id: str) -> _Stored:
        found = self.stored.get(tenant, {}).get(upload_id)
        if found is None:
            raise self._not_found()
        return found

    def list_files(self, tenant: str) -> FileList:
        data = sorted(
            (s.file for s in self.stored.get(tenant, {}).values()),
            key=lambda f: f.uploaded_at,
            reverse=True,
        )
        return FileList(tenant_id=tenant, data=data)

    async def delete_file(self, tenant: str, upload_id: str) -> Any:
        stored = self._stored(tenant, upload_id)
        try:
            out = await self.call("DELETE", "/api/storage/files/", {"file_path": stored.file_path})
        except GatewayFailure as exc:
            if exc.status != 404:
                raise
            out = {"detail": "File was already gone"}
        self.stored[tenant].pop(upload_id, None)
        return out

    async def download_url(self, tenant: str, upload_id: str) -> str:
        stored = self._stored(tenant, upload_id)
        out = await self.call(
            "POST", "/api/storage/download/", {"file_path": stored.file_path, "expires_in": 300}
        )
        url: str = out["download_url"]
        return url


def _now() -> str:
    return utc_timestamp(dt.datetime.now(dt.UTC))


def _read_static(package: str, name: str) -> bytes:
    return files(package).joinpath("static").joinpath(name).read_bytes()


async def _failures(call: Any) -> Any:
    try:
        return await call
    except GatewayFailure as exc:
        return exc.response()


class DemoController(Controller):
    path = "/"
    include_in_schema = False

    @get("/", media_type=MediaType.HTML, operation_id="demoPage")
    async def page(self, request: Request[Any, Any, Any], demo_page: bytes) -> Response[Any]:
        # Litestar routes /demo and /demo/ alike; the page's relative URLs (assets/…,
        # api/…) resolve right only under the trailing slash, so send the browser there.
        raw = request.scope.get("raw_path") or request.url.path.encode()
        raw_path = raw.decode("latin-1").split("?", 1)[0]
        if not raw_path.endswith("/"):
            query = f"?{request.url.query}" if request.url.query else ""
            return Redirect(path=f"{raw_path}/{query}", status_code=308)
        return Response(content=demo_page, media_type=MediaType.HTML, headers=_PAGE_HEADERS)

    @get("/assets/{name:str}", operation_id="demoAsset")
    async def asset(self, name: str, demo_assets: dict[str, tuple[bytes, str]]) -> Response[Any]:
        found = demo_assets.get(name)
        if found is None:
            return Response(
                content={"detail": "Not found", "code": "not_found"},
                status_code=404,
                media_type=MediaType.JSON,
            )
        content, media_type = found
        return Response(content=content, media_type=media_type, headers=_PAGE_HEADERS)

    @get("/api/usage/", operation_id="demoUsage")
    async def usage(self, request: Request[Any, Any, Any], demo: DemoBackend) -> Any:
        return await _failures(demo.usage(demo.tenant_of(request)))

    @post("/api/uploads/", status_code=200, operation_id="demoNewUpload")
    async def new_upload(
        self, request: Request[Any, Any, Any], data: NewUpload, demo: DemoBackend
    ) -> Any:
        return await _failures(demo.new_upload(demo.tenant_of(request), data))

    @post("/api/uploads/{upload_id:str}/complete/", status_code=200, operation_id="demoComplete")
    async def complete(
        self, request: Request[Any, Any, Any], upload_id: UploadId, demo: DemoBackend
    ) -> Any:
        return await _failures(demo.complete(demo.tenant_of(request), upload_id))

    @delete("/api/uploads/{upload_id:str}/", status_code=200, operation_id="demoCancel")
    async def cancel(
        self, request: Request[Any, Any, Any], upload_id: UploadId, demo: DemoBackend
    ) -> Any:
        return await _failures(demo.cancel(demo.tenant_of(request), upload_id))

    @get("/api/files/", operation_id="demoFiles")
    async def list_files(self, request: Request[Any, Any, Any], demo: DemoBackend) -> FileList:
        return demo.list_files(demo.tenant_of(request))

    @delete("/api/files/{upload_id:str}/", status_code=200, operation_id="demoDeleteFile")
    async def delete_file(
        self, request: Request[Any, Any, Any], upload_id: UploadId, demo: DemoBackend
    ) -> Any:
        return await _failures(demo.delete_file(demo.tenant_of(request), upload_id))

    @get("/api/files/{upload_id:str}/download/", operation_id="demoDownload")
    async def download(
        self, request: Request[Any, Any, Any], upload_id: UploadId, demo: DemoBackend
    ) -> Any:
        try:
            url = await demo.download_url(demo.tenant_of(request), upload_id)
        except GatewayFailure as exc:
            return exc.response()
        return Redirect(path=url, status_code=302)


def demo_router(
    *,
    gateway_url: str,
    api_key: str,
    tenant_id: str = "demo_user",
    path: str = "/demo",
    tenant_of: TenantResolver | None = None,
) -> Router:
    """The demo page and its backend, mounted at ``path``.

    ``gateway_url`` is the gateway's base URL as this server reaches it; ``api_key`` a
    project key, used only server-side. Every request acts for ``tenant_id``, or for
    ``tenant_of(request)`` when given (e.g. the signed-in user from a session cookie).
    """
    backend = DemoBackend(
        gateway_url=gateway_url,
        api_key=api_key,
        tenant_of=tenant_of or (lambda _request: tenant_id),
    )
    page = _read_static("devtools", "demo/index.html")
    assets = {
        name: (_read_static(package, file), media)
        for name, (package, file, media) in _ASSETS.items()
    }
    return Router(
        path=path,
        route_handlers=[DemoController],
        dependencies={
            "demo": Provide(lambda: backend, use_cache=True, sync_to_thread=False),
            "demo_page": Provide(lambda: page, use_cache=True, sync_to_thread=False),
            "demo_assets": Provide(lambda: assets, use_cache=True, sync_to_thread=False),
        },
        tags=["demo"],
    )


__all__ = ["DemoBackend", "demo_router"]
