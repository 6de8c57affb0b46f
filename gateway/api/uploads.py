"""Upload URLs and their lifecycle."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, delete, get, post
from litestar.params import HeaderParameter, Parameter

from gateway import auth
from gateway.api.body import strict_body
from gateway.api.openapi import PROJECT_SECURITY, UPLOAD_413, errors
from gateway.api.schemas import (
    IDEMPOTENCY_KEY_PATTERN,
    UploadRequest,
    UploadResponse,
    UploadStatus,
)
from gateway.ids import UPLOAD_ID_PATTERN
from gateway.uploads import AdmissionService, LifecycleService

UploadId = Annotated[
    str,
    Parameter(pattern=UPLOAD_ID_PATTERN, description="An upload id: `upl_` and 24 hex digits"),
]
IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        required=False,
        min_length=1,
        max_length=255,
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description=(
            "1 to 255 visible ASCII characters (spaces only inside). The same key and body"
            " within 24 h return the same upload and reserve nothing twice (so a retry is"
            " safe); the same key with another body is a 409."
        ),
    ),
]
_NO_SUCH_UPLOAD = "No such upload in this project (`not_found`)."


class UploadController(Controller):
    path = "/api/storage"
    tags = ["uploads"]
    security = PROJECT_SECURITY

    @post(
        "/upload/",
        operation_id="createUpload",
        status_code=200,
        summary="Ask for a presigned upload",
        description=(
            "Judges the tenant's quota and answers a presigned PUT (size and content type"
            " signed in) or POST policy, or a 413 before any URL exists."
        ),
        responses=errors(
            401,
            409,
            413,
            415,
            422,
            429,
            503,
            s409="The Idempotency-Key was used with another body (`idempotency_key_reused`),"
            " or its first request is still being judged (`upload_in_progress`, with"
            " Retry-After).",
            s413=UPLOAD_413,
            s422="The request is not valid (`validation_error`), or `size_bytes` is missing"
            " for a tenant with a storage limit.",
            s429="A rate rule was hit (`rate_limited`): retry after `Retry-After` seconds.",
        ),
    )
    async def create_upload(
        self,
        request: Request[Any, Any, Any],
        data: UploadRequest,
        admission: AdmissionService,
        idempotency_key: IdempotencyKey = None,
    ) -> UploadResponse:
        # Authentication is folded into the upload path's first query (one round trip).
        presented = auth.parse_bearer(request.headers.get("authorization"))
        metrics = request.app.state.metrics
        try:
            body = await strict_body(request, UploadRequest)
            response = await admission.request_upload(presented, body, idempotency_key)
        except Exception as exc:
            metrics.uploads.labels(getattr(exc, "code", "error")).inc()
            raise
        metrics.uploads.labels("admitted").inc()
        return response

    @get(
        "/uploads/{upload_id:str}/",
        operation_id="getUpload",
        summary="An upload's status",
        responses=errors(401, 404, 422, 503, s404=_NO_SUCH_UPLOAD),
    )
    async def get_upload(
        self, project_id: str, upload_id: UploadId, lifecycle: LifecycleService
    ) -> UploadStatus:
        return await lifecycle.status(project_id, upload_id)

    @post(
        "/uploads/{upload_id:str}/complete/",
        operation_id="completeUpload",
        status_code=200,
        summary="Settle an upload now, by asking S3",
        responses=errors(
            401,
            404,
            409,
            422,
            502,
            503,
            s404=_NO_SUCH_UPLOAD,
            s409="The object is not in S3 yet (`object_not_uploaded`).",
        ),
    )
    async def complete_upload(
        self, project_id: str, upload_id: UploadId, lifecycle: LifecycleService
    ) -> UploadStatus:
        return await lifecycle.complete(project_id, upload_id)

    @delete(
        "/uploads/{upload_id:str}/",
        operation_id="cancelUpload",
        status_code=200,
        summary="Cancel a pending upload and free its reservation",
        description=(
            "Idempotent. The upload stays readable (`status: cancelled`); a settled one is"
            " answered as it is."
        ),
        responses=errors(401, 404, 422, 503, s404=_NO_SUCH_UPLOAD),
    )
    async def cancel_upload(
        self, project_id: str, upload_id: UploadId, lifecycle: LifecycleService
    ) -> UploadStatus:
        return await lifecycle.cancel(project_id, upload_id)
