"""``GatewayClient`` (sync) and ``AsyncGatewayClient``: one method per operation of
the gateway's API, typed bodies in and out, errors raised as the exceptions of
:mod:`upload_gateway_client.errors`, retries by a :class:`Retry` policy."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
import msgspec

from upload_gateway_client import _core
from upload_gateway_client import types as t
from upload_gateway_client._core import Call, Retry, UploadResult
from upload_gateway_client.errors import GatewayError, GatewayUnreachable, UploadFailed

T = TypeVar("T")


def new_idempotency_key() -> str:
    """A fresh key: one per upload a caller means (retries of it reuse it)."""
    return f"ugc-{uuid.uuid4().hex}"


def _unreachable(call: Call[Any], exc: Exception) -> GatewayUnreachable:
    return GatewayUnreachable(
        f"{call.method} {call.path}: the gateway did not answer ({type(exc).__name__}: {exc})"
    )


class GatewayClient:
    """The gateway's API, synchronously::

        with GatewayClient("https://gateway.example.com", api_key) as gw:
            gw.set_tenant_limit("user_123", 5 * 10**9)
            result = gw.upload_file("report.pdf", tenant_id="user_123")

    ``retry`` is the policy for 429, 503 and lost answers (:class:`Retry`; pass
    ``Retry(attempts=1)`` for none). ``http`` may be an ``httpx.Client`` of your own
    (its base URL and headers are not used: every call names both); uploads to S3 go
    through ``storage_http``, which never carries the API key."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        retry: Retry | None = None,
        http: httpx.Client | None = None,
        storage_http: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.retry = retry or Retry()
        self._http = http or httpx.Client(timeout=timeout)
        self._storage = storage_http or httpx.Client(timeout=max(timeout, 60.0))
        self._owned = [
            c for c, given in ((self._http, http), (self._storage, storage_http)) if given is None
        ]

    def close(self) -> None:
        for c in self._owned:
            c.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def _send(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.request(
                    call.method,
                    self.base_url + call.path,
                    content=call.body,
                    params=call.params,
                    headers={
                        "User-Agent": _core.USER_AGENT,
                        **_core.request_headers(call, self.api_key),
                    },
                )
            except httpx.TransportError as exc:
                wait = _core.wait_after_transport_error(self.retry, attempt, exc, call)
                if wait is None:
                    raise _unreachable(call, exc) from exc
                self._sleep(wait)
                continue
            result = _core.outcome(call, response)
            if not isinstance(result, GatewayError):
                return result
            wait = _core.wait_for(self.retry, attempt, result)
            if wait is None:
                raise result
            self._sleep(wait)

    # -- uploads -----------------------------------------------------------------------

    def create_upload(
        self, request: t.UploadRequest, *, idempotency_key: str | None = None
    ) -> t.UploadResponse:
        """A presigned upload, or :class:`QuotaExceeded` / :class:`FileTooLarge` (413)
        before any URL exists. Without ``idempotency_key`` a fresh one is made, so that
        retries of this call never reserve twice."""
        key = idempotency_key or new_idempotency_key()
        return self._send(_core.create_upload(request, key))

    def get_upload(self, upload_id: str) -> t.UploadStatus:
        return self._send(_core.get_upload(upload_id))

    def complete_upload(self, upload_id: str) -> t.UploadStatus:
        """Settle now by asking S3 (:class:`ObjectNotUploaded` if it is not there)."""
        return self._send(_core.complete_upload(upload_id))

    def cancel_upload(self, upload_id: str) -> t.UploadStatus:
        return self._send(_core.cancel_upload(upload_id))

    def upload_file(
        self,
        path: str | Path,
        *,
        tenant_id: str,
        filename: str | None = None,
        content_type: str | None = None,
        tenant_email: str | None = None,
        checksum: bool = False,
        method: t.UploadMethod = "PUT",
        complete: bool = True,
        idempotency_key: str | None = None,
    ) -> UploadResult:
        """A local file, end to end: ask for the upload (its size declared, the content
        type guessed from the name unless given, its SHA-256 signed in with
        ``checksum=True``), send the bytes to S3, then settle it (``complete=False``
        leaves that to S3 events). A refusal raises before any byte is sent; a failed
        transfer cancels the upload (nothing stays reserved) and raises UploadFailed."""
        plan = _core.plan_file_upload(
            path,
            tenant_id=tenant_id,
            filename=filename,
            content_type=content_type,
            tenant_email=tenant_email,
            checksum=checksum,
            method=method,
        )
        upload = self.create_upload(plan.request, idempotency_key=idempotency_key)
        try:
            self._send_file(plan, upload)
        except BaseException:
            self.cancel_upload(upload.upload_id)
            raise
        status = self.complete_upload(upload.upload_id) if complete else None
        return UploadResult(upload=upload, status=status, strategy=plan.strategy)

    def _send_file(self, plan: _core.FilePlan, upload: t.UploadResponse) -> None:
        # (a multipart plan would send its parts here)
        attempt = 0
        while True:
            attempt += 1
            try:
                with plan.path.open("rb") as f:
                    if upload.method == "POST":
                        files = {"file": (plan.request.filename, f, plan.request.content_type)}
                        response = self._storage.post(
                            upload.presigned_url, data=upload.fields or {}, files=files
                        )
                    else:
                        response = self._storage.put(
                            upload.presigned_url, content=f, headers=upload.headers
                        )
            except httpx.TransportError as exc:
                wait = self.retry.delay(attempt)
                if wait is None:
                    raise UploadFailed(f"S3 did not answer the upload ({exc})") from exc
                self._sleep(wait)
                continue
            if response.is_success:
                return
            wait = self.retry.delay(attempt) if _core.storage_failed(response) else None
            if wait is None:
                raise UploadFailed(
                    f"S3 refused the upload ({response.status_code})",
                    status=response.status_code,
                    body=response.text[:2000],
                )
            self._sleep(wait)

    # -- tenants and the project -------------------------------------------------------

    def get_tenant_usage(self, tenant_id: str) -> t.TenantUsage:
        """A tenant never seen before answers zeros and its effective limit."""
        return self._send(_core.get_tenant_usage(tenant_id))

    def set_tenant_limit(
        self, tenant_id: str, storage_limit_bytes: int | None, *, plan: str | None = None
    ) -> t.TenantUsage:
        """``None`` = unlimited; effective on the next upload request."""
        return self._send(_core.set_tenant_limit(tenant_id, storage_limit_bytes, plan))

    def recalculate_tenant(self, tenant_id: str) -> t.RecalculatedUsage:
        return self._send(_core.recalculate_tenant(tenant_id))

    def list_tenants(
        self,
        *,
        offset: int = 0,
        limit: int = 50,
        order: t.TenantOrder = "tenant_id",
        over_limit: bool | None = None,
        min_percentage: float | None = None,
    ) -> t.TenantPage:
        return self._send(
            _core.list_tenants(
                offset=offset,
                limit=limit,
                order=order,
                over_limit=over_limit,
                min_percentage=min_percentage,
            )
        )

    def iter_tenants(
        self,
        *,
        page_size: int = 200,
        order: t.TenantOrder = "tenant_id",
        over_limit: bool | None = None,
        min_percentage: float | None = None,
    ) -> Iterator[t.TenantUsage]:
        """Every tenant, a page at a time."""
        offset = 0
        while True:
            page = self.list_tenants(
                offset=offset,
                limit=page_size,
                order=order,
                over_limit=over_limit,
                min_percentage=min_percentage,
            )
            yield from page.data
            offset += page.count
            if page.next is None or page.count == 0:
                return

    def get_project_usage(self) -> t.ProjectUsage:
        return self._send(_core.get_project_usage())

    def clear_tenant_limit(self, tenant_id: str) -> t.TenantUsage:
        """Drops the tenant's own limit: the project's default applies again."""
        return self._send(_core.clear_tenant_limit(tenant_id))

    # -- the audit log -----------------------------------------------------------------

    def list_audit_entries(
        self,
        *,
        offset: int = 0,
        limit: int = 50,
        tenant_id: str | None = None,
        action: str | None = None,
    ) -> t.AuditPage:
        """The project's audit log, newest first."""
        return self._send(
            _core.list_audit_entries(offset=offset, limit=limit, tenant_id=tenant_id, action=action)
        )

    # -- outbound webhooks -------------------------------------------------------------

    def create_webhook(
        self, url: str, events: list[t.EventType] | None = None, *, description: str = ""
    ) -> t.CreatedWebhook:
        """An endpoint for the events (all of them by default); its ``secret`` is in
        the answer only: keep it to verify the signatures (``standardwebhooks``)."""
        req = t.WebhookCreate(url=url, events=events or ["*"], description=description)
        return self._send(_core.create_webhook(req))

    def list_webhooks(self, *, offset: int = 0, limit: int = 50) -> t.WebhookPage:
        return self._send(_core.list_webhooks(offset=offset, limit=limit))

    def get_webhook(self, webhook_id: str) -> t.Webhook:
        return self._send(_core.get_webhook(webhook_id))

    def update_webhook(
        self,
        webhook_id: str,
        *,
        url: str | msgspec.UnsetType = msgspec.UNSET,
        events: list[t.EventType] | msgspec.UnsetType = msgspec.UNSET,
        description: str | msgspec.UnsetType = msgspec.UNSET,
        enabled: bool | msgspec.UnsetType = msgspec.UNSET,
    ) -> t.Webhook:
        """Changes the fields given (the others stay as they are)."""
        req = t.WebhookUpdate(url=url, events=events, description=description, enabled=enabled)
        return self._send(_core.update_webhook(webhook_id, req))

    def delete_webhook(self, webhook_id: str) -> None:
        self._send(_core.delete_webhook(webhook_id))

    def send_webhook_test(self, webhook_id: str) -> t.WebhookTestEvent:
        return self._send(_core.send_webhook_test(webhook_id))

    def rotate_webhook_secret(self, webhook_id: str) -> t.RotatedSecret:
        """A new secret; for 24 h deliveries are signed by the old one too."""
        return self._send(_core.rotate_webhook_secret(webhook_id))

    def list_webhook_deliveries(
        self,
        webhook_id: str,
        *,
        offset: int = 0,
        limit: int = 50,
        status: t.DeliveryState | None = None,
    ) -> t.WebhookDeliveryPage:
        return self._send(
            _core.list_webhook_deliveries(webhook_id, offset=offset, limit=limit, status=status)
        )

    def retry_webhook_delivery(self, webhook_id: str, event_id: str) -> t.WebhookDelivery:
        return self._send(_core.retry_webhook_delivery(webhook_id, event_id))

    # -- files -------------------------------------------------------------------------

    def delete_file(self, file_path: str) -> t.Detail:
        """Deletes the object and frees its bytes at once (:class:`NotFound` if none)."""
        return self._send(_core.delete_file(file_path))

    def create_download(self, file_path: str, *, expires_in: int = 3600) -> t.DownloadResponse:
        return self._send(_core.create_download(file_path, expires_in))

    # -- events and operations ---------------------------------------------------------

    def ingest_s3_events(self, notification: bytes, *, webhook_secret: str) -> t.IngestResponse:
        """Post an S3 event notification as S3 or MinIO would (the webhook secret, not
        the API key)."""
        return self._send(_core.ingest_s3_events(notification, webhook_secret))

    def healthz(self) -> t.Liveness:
        return self._send(_core.healthz())

    def readyz(self) -> t.Readiness:
        """:class:`ServiceUnavailable` (``not_ready``) while a dependency is down."""
        return self._send(_core.readyz())

    def metrics(self) -> str:
        return self._send(_core.metrics())


class AsyncGatewayClient:
    """The same API as :class:`GatewayClient`, for asyncio::

    async with AsyncGatewayClient(url, api_key) as gw:
        usage = await gw.get_tenant_usage("user_123")
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        retry: Retry | None = None,
        http: httpx.AsyncClient | None = None,
        storage_http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.retry = retry or Retry()
        self._http = http or httpx.AsyncClient(timeout=timeout)
        self._storage = storage_http or httpx.AsyncClient(timeout=max(timeout, 60.0))
        self._owned = [
            c for c, given in ((self._http, http), (self._storage, storage_http)) if given is None
        ]

    async def aclose(self) -> None:
        for c in self._owned:
            await c.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def _send(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._http.request(
                    call.method,
                    self.base_url + call.path,
                    content=call.body,
                    params=call.params,
                    headers={
                        "User-Agent": _core.USER_AGENT,
                        **_core.request_headers(call, self.api_key),
                    },
                )
            except httpx.TransportError as exc:
                wait = _core.wait_after_transport_error(self.retry, attempt, exc, call)
                if wait is None:
                    raise _unreachable(call, exc) from exc
                await self._sleep(wait)
                continue
            result = _core.outcome(call, response)
            if not isinstance(result, GatewayError):
                return result
            wait = _core.wait_for(self.retry, attempt, result)
            if wait is None:
                raise result
            await self._sleep(wait)

    async def create_upload(
        self, request: t.UploadRequest, *, idempotency_key: str | None = None
    ) -> t.UploadResponse:
        key = idempotency_key or new_idempotency_key()
        return await self._send(_core.create_upload(request, key))

    async def get_upload(self, upload_id: str) -> t.UploadStatus:
        return await self._send(_core.get_upload(upload_id))

    async def complete_upload(self, upload_id: str) -> t.UploadStatus:
        return await self._send(_core.complete_upload(upload_id))

    async def cancel_upload(self, upload_id: str) -> t.UploadStatus:
        return await self._send(_core.cancel_upload(upload_id))

    async def upload_file(
        self,
        path: str | Path,
        *,
        tenant_id: str,
        filename: str | None = None,
        content_type: str | None = None,
        tenant_email: str | None = None,
        checksum: bool = False,
        method: t.UploadMethod = "PUT",
        complete: bool = True,
        idempotency_key: str | None = None,
    ) -> UploadResult:
        """As :meth:`GatewayClient.upload_file` (the file is read in a thread)."""
        plan = await asyncio.to_thread(
            _core.plan_file_upload,
            path,
            tenant_id=tenant_id,
            filename=filename,
            content_type=content_type,
            tenant_email=tenant_email,
            checksum=checksum,
            method=method,
        )
        upload = await self.create_upload(plan.request, idempotency_key=idempotency_key)
        try:
            await self._send_file(plan, upload)
        except BaseException:
            await self.cancel_upload(upload.upload_id)
            raise
        status = await self.complete_upload(upload.upload_id) if complete else None
        return UploadResult(upload=upload, status=status, strategy=plan.strategy)

    async def _send_file(self, plan: _core.FilePlan, upload: t.UploadResponse) -> None:
        # (a multipart plan would send its parts here)
        attempt = 0
        while True:
            attempt += 1
            try:
                if upload.method == "POST":
                    content = await asyncio.to_thread(plan.path.read_bytes)
                    files = {"file": (plan.request.filename, content, plan.request.content_type)}
                    response = await self._storage.post(
                        upload.presigned_url, data=upload.fields or {}, files=files
                    )
                else:
                    response = await self._storage.put(
                        upload.presigned_url, content=_chunks(plan.path), headers=upload.headers
                    )
            except httpx.TransportError as exc:
                wait = self.retry.delay(attempt)
                if wait is None:
                    raise UploadFailed(f"S3 did not answer the upload ({exc})") from exc
                await self._sleep(wait)
                continue
            if response.is_success:
                return
            wait = self.retry.delay(attempt) if _core.storage_failed(response) else None
            if wait is None:
                raise UploadFailed(
                    f"S3 refused the upload ({response.status_code})",
                    status=response.status_code,
                    body=response.text[:2000],
                )
            await self._sleep(wait)

    async def get_tenant_usage(self, tenant_id: str) -> t.TenantUsage:
        return await self._send(_core.get_tenant_usage(tenant_id))

    async def set_tenant_limit(
        self, tenant_id: str, storage_limit_bytes: int | None, *, plan: str | None = None
    ) -> t.TenantUsage:
        return await self._send(_core.set_tenant_limit(tenant_id, storage_limit_bytes, plan))

    async def recalculate_tenant(self, tenant_id: str) -> t.RecalculatedUsage:
        return await self._send(_core.recalculate_tenant(tenant_id))

    async def list_tenants(
        self,
        *,
        offset: int = 0,
        limit: int = 50,
        order: t.TenantOrder = "tenant_id",
        over_limit: bool | None = None,
        min_percentage: float | None = None,
    ) -> t.TenantPage:
        return await self._send(
            _core.list_tenants(
                offset=offset,
                limit=limit,
                order=order,
                over_limit=over_limit,
                min_percentage=min_percentage,
            )
        )

    async def iter_tenants(
        self,
        *,
        page_size: int = 200,
        order: t.TenantOrder = "tenant_id",
        over_limit: bool | None = None,
        min_percentage: float | None = None,
    ) -> AsyncIterator[t.TenantUsage]:
        offset = 0
        while True:
            page = await self.list_tenants(
                offset=offset,
                limit=page_size,
                order=order,
                over_limit=over_limit,
                min_percentage=min_percentage,
            )
            for tenant in page.data:
                yield tenant
            offset += page.count
            if page.next is None or page.count == 0:
                return

    async def get_project_usage(self) -> t.ProjectUsage:
        return await self._send(_core.get_project_usage())

    async def clear_tenant_limit(self, tenant_id: str) -> t.TenantUsage:
        """Drops the tenant's own limit: the project's default applies again."""
        return await self._send(_core.clear_tenant_limit(tenant_id))

    # -- the audit log -----------------------------------------------------------------

    async def list_audit_entries(
        self,
        *,
        offset: int = 0,
        limit: int = 50,
        tenant_id: str | None = None,
        action: str | None = None,
    ) -> t.AuditPage:
        """The project's audit log, newest first."""
        return await self._send(
            _core.list_audit_entries(offset=offset, limit=limit, tenant_id=tenant_id, action=action)
        )

    # -- outbound webhooks -------------------------------------------------------------

    async def create_webhook(
        self, url: str, events: list[t.EventType] | None = None, *, description: str = ""
    ) -> t.CreatedWebhook:
        """An endpoint for the events (all of them by default); its ``secret`` is in
        the answer only: keep it to verify the signatures (``standardwebhooks``)."""
        req = t.WebhookCreate(url=url, events=events or ["*"], description=description)
        return await self._send(_core.create_webhook(req))

    async def list_webhooks(self, *, offset: int = 0, limit: int = 50) -> t.WebhookPage:
        return await self._send(_core.list_webhooks(offset=offset, limit=limit))

    async def get_webhook(self, webhook_id: str) -> t.Webhook:
        return await self._send(_core.get_webhook(webhook_id))

    async def update_webhook(
        self,
        webhook_id: str,
        *,
        url: str | msgspec.UnsetType = msgspec.UNSET,
        events: list[t.EventType] | msgspec.UnsetType = msgspec.UNSET,
        description: str | msgspec.UnsetType = msgspec.UNSET,
        enabled: bool | msgspec.UnsetType = msgspec.UNSET,
    ) -> t.Webhook:
        """Changes the fields given (the others stay as they are)."""
        req = t.WebhookUpdate(url=url, events=events, description=description, enabled=enabled)
        return await self._send(_core.update_webhook(webhook_id, req))

    async def delete_webhook(self, webhook_id: str) -> None:
        await self._send(_core.delete_webhook(webhook_id))

    async def send_webhook_test(self, webhook_id: str) -> t.WebhookTestEvent:
        return await self._send(_core.send_webhook_test(webhook_id))

    async def rotate_webhook_secret(self, webhook_id: str) -> t.RotatedSecret:
        """A new secret; for 24 h deliveries are signed by the old one too."""
        return await self._send(_core.rotate_webhook_secret(webhook_id))

    async def list_webhook_deliveries(
        self,
        webhook_id: str,
        *,
        offset: int = 0,
        limit: int = 50,
        status: t.DeliveryState | None = None,
    ) -> t.WebhookDeliveryPage:
        return await self._send(
            _core.list_webhook_deliveries(webhook_id, offset=offset, limit=limit, status=status)
        )

    async def retry_webhook_delivery(self, webhook_id: str, event_id: str) -> t.WebhookDelivery:
        return await self._send(_core.retry_webhook_delivery(webhook_id, event_id))

    async def delete_file(self, file_path: str) -> t.Detail:
        return await self._send(_core.delete_file(file_path))

    async def create_download(
        self, file_path: str, *, expires_in: int = 3600
    ) -> t.DownloadResponse:
        return await self._send(_core.create_download(file_path, expires_in))

    async def ingest_s3_events(
        self, notification: bytes, *, webhook_secret: str
    ) -> t.IngestResponse:
        return await self._send(_core.ingest_s3_events(notification, webhook_secret))

    async def healthz(self) -> t.Liveness:
        return await self._send(_core.healthz())

    async def readyz(self) -> t.Readiness:
        return await self._send(_core.readyz())

    async def metrics(self) -> str:
        return await self._send(_core.metrics())


async def _chunks(path: Path, size: int = 1 << 20) -> AsyncIterator[bytes]:
    with path.open("rb") as f:  # each read goes to a thread
        while chunk := await asyncio.to_thread(f.read, size):
            yield chunk
