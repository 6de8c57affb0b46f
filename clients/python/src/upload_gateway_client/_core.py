"""What the sync and async clients share: the operations as request descriptions
(:class:`Call`), how an answer becomes a value or an exception, and when to retry."""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from upload_gateway_client import types as t
from upload_gateway_client.errors import (
    ClientError,
    GatewayError,
    RateLimited,
    ServiceUnavailable,
    UploadInProgress,
    error_for,
)

T = TypeVar("T")
USER_AGENT = "upload-gateway-client/0.1.0"
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API request and the type of its answer."""

    method: str
    path: str
    answer: type[T]
    body: bytes | None = None
    params: Mapping[str, str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # safe to send again when the answer was lost (the gateway may have acted on it)
    resendable: bool = True
    # the bearer token, when not the client's API key (the S3 event webhook's secret)
    token: str | None = None


@dataclass(frozen=True)
class Retry:
    """When to try a request again: on 429 and 503 (the gateway did nothing, and says
    when to come back: ``Retry-After``), on 409 ``upload_in_progress`` (the same
    Idempotency-Key is still being judged), and when the gateway did not answer — a
    connection that never opened always, a lost answer only for requests that are safe
    to repeat (every one but ``delete_file``; uploads are, by their Idempotency-Key).

    ``attempts`` counts every try. Without ``Retry-After`` the waits grow
    ``backoff``, doubling each time up to ``max_backoff``, with jitter; a ``Retry-After``
    longer than ``max_retry_after`` is not waited for (the error is raised)."""

    attempts: int = 4
    backoff: float = 0.5
    max_backoff: float = 8.0
    max_retry_after: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float | None:
        """Seconds to wait after try ``attempt`` (1, 2, …) failed, or None: give up."""
        if attempt >= self.attempts:
            return None
        if retry_after is not None:
            return max(retry_after, 0.0) if retry_after <= self.max_retry_after else None
        ceiling = min(self.max_backoff, self.backoff * 2.0 ** (attempt - 1))
        return ceiling * (0.5 + random.random() / 2)  # jitter, not a secret


NO_RETRY = Retry(attempts=1)


def wait_for(retry: Retry, attempt: int, error: GatewayError) -> float | None:
    """How long to wait before trying again after ``error``, or None: raise it."""
    if isinstance(error, RateLimited | ServiceUnavailable | UploadInProgress):
        return retry.delay(attempt, error.retry_after)
    return None


def wait_after_transport_error(
    retry: Retry, attempt: int, exc: httpx.TransportError, call: Call[Any]
) -> float | None:
    never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    if never_sent or call.resendable:
        return retry.delay(attempt)
    return None


def outcome(call: Call[T], response: httpx.Response) -> T | GatewayError:
    """The answer's value, or the exception it stands for (returned, not raised)."""
    if response.is_success:
        if call.answer is str:
            return response.text  # type: ignore[return-value]
        if call.answer is type(None):  # 204
            return None
        return msgspec.json.decode(response.content, type=call.answer)
    try:
        body = msgspec.json.decode(response.content)
    except msgspec.DecodeError:
        body = None
    headers = {k.lower(): v for k, v in response.headers.items()}
    return error_for(response.status_code, body, headers)


def request_headers(call: Call[Any], api_key: str) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {call.token or api_key}", **call.headers}
    if call.body is not None:
        headers["Content-Type"] = "application/json"
    return headers


def _seg(value: str) -> str:
    return quote(value, safe="")


# -- the operations (one per operationId of /schema) -----------------------------------


def create_upload(req: t.UploadRequest, idempotency_key: str) -> Call[t.UploadResponse]:
    return Call(
        "POST",
        "/api/storage/upload/",
        t.UploadResponse,
        body=_encode(req),
        headers={"Idempotency-Key": idempotency_key},
    )


def get_upload(upload_id: str) -> Call[t.UploadStatus]:
    return Call("GET", f"/api/storage/uploads/{_seg(upload_id)}/", t.UploadStatus)


def complete_upload(upload_id: str) -> Call[t.UploadStatus]:
    return Call("POST", f"/api/storage/uploads/{_seg(upload_id)}/complete/", t.UploadStatus)


def cancel_upload(upload_id: str) -> Call[t.UploadStatus]:
    return Call("DELETE", f"/api/storage/uploads/{_seg(upload_id)}/", t.UploadStatus)


def get_tenant_usage(tenant_id: str) -> Call[t.TenantUsage]:
    return Call("GET", f"/api/storage/tenants/{_seg(tenant_id)}/usage/", t.TenantUsage)


def set_tenant_limit(
    tenant_id: str, storage_limit_bytes: int | None, plan: str | None
) -> Call[t.TenantUsage]:
    body = _encode(t.LimitUpdate(storage_limit_bytes=storage_limit_bytes, plan=plan))
    return Call("PATCH", f"/api/storage/tenants/{_seg(tenant_id)}/limit/", t.TenantUsage, body=body)


def clear_tenant_limit(tenant_id: str) -> Call[t.TenantUsage]:
    return Call("DELETE", f"/api/storage/tenants/{_seg(tenant_id)}/limit/", t.TenantUsage)


def recalculate_tenant(tenant_id: str) -> Call[t.RecalculatedUsage]:
    return Call("POST", f"/api/storage/tenants/{_seg(tenant_id)}/recalculate/", t.RecalculatedUsage)


def list_tenants(
    *,
    offset: int,
    limit: int,
    order: t.TenantOrder,
    over_limit: bool | None,
    min_percentage: float | None,
) -> Call[t.TenantPage]:
    params = {"offset": str(offset), "limit": str(limit), "order": order}
    if over_limit is not None:
        params["over_limit"] = "true" if over_limit else "false"
    if min_percentage is not None:
        params["min_percentage"] = repr(float(min_percentage))
    return Call("GET", "/api/storage/tenants/", t.TenantPage, params=params)


def get_project_usage() -> Call[t.ProjectUsage]:
    return Call("GET", "/api/storage/usage/", t.ProjectUsage)


def delete_file(file_path: str) -> Call[t.Detail]:
    # Not resent after a lost answer: the first may have deleted it (a 404 would follow).
    body = _encode(t.FileRef(file_path=file_path))
    return Call("DELETE", "/api/storage/files/", t.Detail, body=body, resendable=False)


def create_download(file_path: str, expires_in: int) -> Call[t.DownloadResponse]:
    body = _encode(t.DownloadRequest(file_path=file_path, expires_in=expires_in))
    return Call("POST", "/api/storage/download/", t.DownloadResponse, body=body)


def ingest_s3_events(notification: bytes, webhook_secret: str) -> Call[t.IngestResponse]:
    return Call(
        "POST", "/api/storage/events/s3/", t.IngestResponse, body=notification, token=webhook_secret
    )


def list_audit_entries(
    *, offset: int, limit: int, tenant_id: str | None, action: str | None
) -> Call[t.AuditPage]:
    params = {"offset": str(offset), "limit": str(limit)}
    if tenant_id is not None:
        params["tenant_id"] = tenant_id
    if action is not None:
        params["action"] = action
    return Call("GET", "/api/storage/audit/", t.AuditPage, params=params)


_HOOKS = "/api/storage/webhooks/"


def create_webhook(req: t.WebhookCreate) -> Call[t.CreatedWebhook]:
    # Not resent after a lost answer: the first may have made one (with its secret)
    return Call("POST", _HOOKS, t.CreatedWebhook, body=_encode(req), resendable=False)


def list_webhooks(*, offset: int, limit: int) -> Call[t.WebhookPage]:
    params = {"offset": str(offset), "limit": str(limit)}
    return Call("GET", _HOOKS, t.WebhookPage, params=params)


def get_webhook(webhook_id: str) -> Call[t.Webhook]:
    return Call("GET", f"{_HOOKS}{_seg(webhook_id)}/", t.Webhook)


def update_webhook(webhook_id: str, req: t.WebhookUpdate) -> Call[t.Webhook]:
    return Call("PATCH", f"{_HOOKS}{_seg(webhook_id)}/", t.Webhook, body=_encode(req))


def delete_webhook(webhook_id: str) -> Call[None]:
    return Call("DELETE", f"{_HOOKS}{_seg(webhook_id)}/", type(None), resendable=False)


def send_webhook_test(webhook_id: str) -> Call[t.WebhookTestEvent]:
    return Call("POST", f"{_HOOKS}{_seg(webhook_id)}/test/", t.WebhookTestEvent)


def rotate_webhook_secret(webhook_id: str) -> Call[t.RotatedSecret]:
    # Not resent: a second rotation would retire the secret the first one answered
    return Call(
        "POST", f"{_HOOKS}{_seg(webhook_id)}/rotate-secret/", t.RotatedSecret, resendable=False
    )


def list_webhook_deliveries(
    webhook_id: str, *, offset: int, limit: int, status: t.DeliveryState | None
) -> Call[t.WebhookDeliveryPage]:
    params = {"offset": str(offset), "limit": str(limit)}
    if status is not None:
        params["status"] = status
    return Call(
        "GET", f"{_HOOKS}{_seg(webhook_id)}/deliveries/", t.WebhookDeliveryPage, params=params
    )


def retry_webhook_delivery(webhook_id: str, event_id: str) -> Call[t.WebhookDelivery]:
    return Call(
        "POST",
        f"{_HOOKS}{_seg(webhook_id)}/deliveries/{_seg(event_id)}/retry/",
        t.WebhookDelivery,
    )


def healthz() -> Call[t.Liveness]:
    return Call("GET", "/healthz", t.Liveness)


def readyz() -> Call[t.Readiness]:
    return Call("GET", "/readyz", t.Readiness)


def metrics() -> Call[str]:
    return Call("GET", "/metrics", str)


# -- uploading a local file ------------------------------------------------------------

# S3 takes at most 5 GiB in one PUT or POST. Larger files need a multipart upload
# (POST /api/storage/uploads/multipart/ in the contract), which this gateway version
# does not serve yet: ``plan_file_upload`` is where that branch goes, and the clients'
# ``_send_file`` where its parts would be sent.
SINGLE_UPLOAD_LIMIT = 5 * 1024**3


class UploadResult(msgspec.Struct, kw_only=True, frozen=True):
    """What :meth:`upload_file` did: the upload it was handed, and its status once
    completed (None with ``complete=False``: S3 events will settle it)."""

    upload: t.UploadResponse
    status: t.UploadStatus | None
    strategy: Literal["single"]


@dataclass(frozen=True)
class FilePlan:
    path: Path
    size: int
    request: t.UploadRequest
    strategy: Literal["single"]


def sha256_base64(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return base64.b64encode(digest.digest()).decode()


def plan_file_upload(
    path: str | Path,
    *,
    tenant_id: str,
    filename: str | None,
    content_type: str | None,
    tenant_email: str | None,
    checksum: bool,
    method: t.UploadMethod,
) -> FilePlan:
    file = Path(path)
    size = file.stat().st_size
    if size > SINGLE_UPLOAD_LIMIT:
        raise ClientError(
            f"{file} is {size} bytes, over the {SINGLE_UPLOAD_LIMIT} bytes S3 takes in one"
            " upload; multipart uploads are not served by this gateway version yet"
        )
    name = filename or file.name
    guessed = mimetypes.guess_type(name)[0]
    request = t.UploadRequest(
        tenant_id=tenant_id,
        filename=name,
        content_type=content_type or guessed or "application/octet-stream",
        size_bytes=size,
        tenant_email=tenant_email,
        checksum_sha256=sha256_base64(file) if checksum else None,
        method=method,
    )
    return FilePlan(path=file, size=size, request=request, strategy="single")


def storage_failed(response: httpx.Response) -> bool:
    """Whether S3's answer to the PUT/POST is worth another try (its 5xx, 429)."""
    return response.status_code >= 500 or response.status_code == 429
