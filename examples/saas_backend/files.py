"""The signed-in user's files: a page and the few endpoints a SaaS backend adds in
front of the gateway, every gateway call made with the typed client
(``upload_gateway_client``, clients/python). The user is the tenant.

Simplification, kept on purpose: the gateway has no "list files" endpoint, so the
list of a user's files lives in this process's memory (lost on restart, not shared
between workers). A real backend keeps its own table, written on ``complete``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import msgspec
from litestar import Controller, MediaType, Request, Response, Router, delete, get, post
from litestar.di import Provide
from litestar.params import Parameter
from litestar.response import Redirect
from upload_gateway_client import (
    AsyncGatewayClient,
    GatewayError,
    GatewayUnreachable,
    InvalidApiKey,
    NotFound,
    TenantUsage,
    UploadRequest,
)

STATIC = Path(__file__).with_name("static")
UploadId = Annotated[str, Parameter(pattern=r"^upl_[0-9a-f]{24}$")]
TenantOf = Callable[[Request[Any, Any, Any]], str]


class NewUpload(msgspec.Struct, kw_only=True, frozen=True):
    """What the page asks for; the tenant is the session's user, never the page's word."""

    filename: str
    content_type: str = "application/octet-stream"
    size_bytes: Annotated[int, msgspec.Meta(ge=0)]


class Ticket(msgspec.Struct, kw_only=True, frozen=True):
    upload_id: str
    method: str
    url: str
    headers: dict[str, str]
    fields: dict[str, str] | None
    expires_at: str


class StoredFile(msgspec.Struct, kw_only=True, frozen=True):
    upload_id: str
    filename: str
    content_type: str
    size_bytes: int
    uploaded_at: str


class FileList(msgspec.Struct, kw_only=True, frozen=True):
    tenant_id: str
    data: list[StoredFile]


@dataclass
class Files:
    """This backend's side: the gateway client and who has which files."""

    gateway: AsyncGatewayClient
    tenant_of: TenantOf
    pending: dict[tuple[str, str], str] = field(default_factory=dict)  # (user, id) → name
    stored: dict[str, dict[str, tuple[StoredFile, str]]] = field(default_factory=dict)

    def stored_file(self, user: str, upload_id: str) -> tuple[StoredFile, str]:
        found = self.stored.get(user, {}).get(upload_id)
        if found is None:
            raise _not_yours()
        return found


def _not_yours() -> GatewayError:
    return NotFound(404, {"detail": "No such file for this user", "code": "not_found"})


def gateway_failure(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """The gateway's errors, passed on to the page (a 413's body unchanged: the page
    shows its numbers), but for those that are this server's fault."""
    if isinstance(exc, GatewayUnreachable):
        body = {"detail": "The storage gateway did not answer", "code": "gateway_unavailable"}
        return Response(body, status_code=503, headers={"Retry-After": "2"})
    assert isinstance(exc, GatewayError)
    if isinstance(exc, InvalidApiKey):  # the key is this server's, not the user's
        body = {"detail": "The gateway rejected this backend's API key", "code": "misconfigured"}
        return Response(body, status_code=502)
    status = 503 if exc.status >= 500 else exc.status
    retry = exc.headers.get("retry-after")
    return Response(exc.body, status_code=status, headers={"Retry-After": retry} if retry else {})


def _page(gateway_url: str) -> bytes:
    html = (STATIC / "files.html").read_text().replace("{gateway_url}", gateway_url.rstrip("/"))
    return html.encode()


class FilesController(Controller):
    path = "/"
    include_in_schema = False

    @get("/", media_type=MediaType.HTML)
    async def page(self, request: Request[Any, Any, Any], files_page: bytes) -> Response[Any]:
        # relative URLs (assets/…, api/…) resolve only under the trailing slash
        raw = request.scope.get("raw_path", b"").decode("latin-1")
        if not raw.endswith("/"):
            return Redirect(path=f"{raw}/", status_code=308)
        return Response(
            files_page, media_type=MediaType.HTML, headers=request.app.state.page_headers
        )

    @get("/assets/{name:str}")
    async def asset(self, name: str) -> Response[Any]:
        types = {"files.js": "text/javascript", "files.css": "text/css"}
        if name not in types:
            return Response({"detail": "Not found", "code": "not_found"}, status_code=404)
        return Response((STATIC / name).read_bytes(), media_type=types[name])

    @get("/api/usage/")
    async def usage(self, request: Request[Any, Any, Any], files: Files) -> TenantUsage:
        return await files.gateway.get_tenant_usage(files.tenant_of(request))

    @post("/api/uploads/", status_code=200)
    async def new_upload(
        self, request: Request[Any, Any, Any], data: NewUpload, files: Files
    ) -> Ticket:
        user = files.tenant_of(request)
        upload = await files.gateway.create_upload(
            UploadRequest(
                tenant_id=user,
                filename=data.filename,
                content_type=data.content_type,
                size_bytes=data.size_bytes,
            )
        )
        files.pending[(user, upload.upload_id)] = data.filename
        return Ticket(
            upload_id=upload.upload_id,
            method=upload.method,
            url=upload.presigned_url,
            headers=upload.headers,
            fields=upload.fields,
            expires_at=upload.expires_at,
        )

    @post("/api/uploads/{upload_id:str}/complete/", status_code=200)
    async def complete(
        self, request: Request[Any, Any, Any], upload_id: UploadId, files: Files
    ) -> StoredFile:
        user = files.tenant_of(request)
        if (user, upload_id) not in files.pending:
            raise _not_yours()
        status = await files.gateway.complete_upload(upload_id)
        del files.pending[(user, upload_id)]
        stored = StoredFile(
            upload_id=upload_id,
            filename=status.filename,
            content_type=status.content_type,
            size_bytes=status.actual_size_bytes or status.declared_size_bytes or 0,
            uploaded_at=status.settled_at or dt.datetime.now(dt.UTC).isoformat(),
        )
        if status.status == "completed":
            files.stored.setdefault(user, {})[upload_id] = (stored, status.file_path)
        return stored

    @delete("/api/uploads/{upload_id:str}/", status_code=200)
    async def cancel(
        self, request: Request[Any, Any, Any], upload_id: UploadId, files: Files
    ) -> dict[str, str]:
        user = files.tenant_of(request)
        if files.pending.pop((user, upload_id), None) is None:
            raise _not_yours()
        status = await files.gateway.cancel_upload(upload_id)
        return {"status": status.status}

    @get("/api/files/")
    async def list_files(self, request: Request[Any, Any, Any], files: Files) -> FileList:
        user = files.tenant_of(request)
        data = sorted(
            (f for f, _ in files.stored.get(user, {}).values()),
            key=lambda f: f.uploaded_at,
            reverse=True,
        )
        return FileList(tenant_id=user, data=data)

    @delete("/api/files/{upload_id:str}/", status_code=200)
    async def delete_file(
        self, request: Request[Any, Any, Any], upload_id: UploadId, files: Files
    ) -> dict[str, str]:
        user = files.tenant_of(request)
        _, file_path = files.stored_file(user, upload_id)
        try:
            out = await files.gateway.delete_file(file_path)
        except NotFound:
            out = None  # already gone
        files.stored[user].pop(upload_id, None)
        return {"detail": out.detail if out else "File was already gone"}

    @get("/api/files/{upload_id:str}/download/")
    async def download(
        self, request: Request[Any, Any, Any], upload_id: UploadId, files: Files
    ) -> Redirect:
        _, file_path = files.stored_file(files.tenant_of(request), upload_id)
        link = await files.gateway.create_download(file_path, expires_in=300)
        return Redirect(path=link.download_url, status_code=302)


def files_router(
    gateway: AsyncGatewayClient, *, gateway_url: str, tenant_of: TenantOf, path: str = "/"
) -> Router:
    """The page and its API at ``path``; every request acts for ``tenant_of(request)``."""
    files = Files(gateway=gateway, tenant_of=tenant_of)
    page = _page(gateway_url)
    return Router(
        path=path,
        route_handlers=[FilesController],
        dependencies={
            "files": Provide(lambda: files, use_cache=True, sync_to_thread=False),
            "files_page": Provide(lambda: page, use_cache=True, sync_to_thread=False),
        },
        exception_handlers={GatewayError: gateway_failure, GatewayUnreachable: gateway_failure},
    )
