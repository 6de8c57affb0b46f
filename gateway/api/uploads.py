"""Upload URLs and their lifecycle."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, delete, get, post
from litestar.params import HeaderParameter, Parameter

from gateway import auth
from gateway.api.body import strict_body
from gateway.api.schemas import UploadRequest, UploadResponse, UploadStatus
from gateway.errors import ValidationFailed
from gateway.ids import UPLOAD_ID_PATTERN
from gateway.uploads import AdmissionService, LifecycleService

UploadId = Annotated[str, Parameter(pattern=UPLOAD_ID_PATTERN, description="upl_… id")]


class UploadController(Controller):
    path = "/api/storage"
    tags = ["uploads"]

    @post(
        "/upload/",
        operation_id="createUpload",
        status_code=200,
        summary="Ask for a presigned upload",
    )
    async def create_upload(
        self,
        request: Request[Any, Any, Any],
        data: UploadRequest,
        admission: AdmissionService,
        idempotency_key: Annotated[
            str | None, HeaderParameter(name="Idempotency-Key", required=False, max_length=255)
        ] = None,
    ) -> UploadResponse:
        # Authentication is folded into the upload path's first query (one round trip).
        presented = auth.parse_bearer(request.headers.get("authorization"))
        if idempotency_key is not None and (
            not idempotency_key.strip() or not idempotency_key.isprintable()
        ):
            raise ValidationFailed("Idempotency-Key must be printable text, not empty")
        metrics = request.app.state.metrics
        try:
            body = await strict_body(request, UploadRequest)
            response = await admission.request_upload(presented, body, idempotency_key)
        except Exception as exc:
            metrics.uploads.labels(getattr(exc, "code", "error")).inc()
            raise
        metrics.uploads.labels("admitted").inc()
        return response

    @get("/uploads/{upload_id:str}/", operation_id="getUpload")
    async def get_upload(
        self, project_id: str, upload_id: UploadId, lifecycle: LifecycleService
    ) -> UploadStatus:
        return await lifecycle.status(project_id, upload_id)

    @post("/uploads/{upload_id:str}/complete/", operation_id="completeUpload", status_code=200)
    async def complete_upload(
        self, project_id: str, upload_id: UploadId, lifecycle: LifecycleService
    ) -> UploadStatus:
        return await lifecycle.complete(project_id, upload_id)

    @delete("/uploads/{upload_id:str}/", operation_id="cancelUpload", status_code=200)
    async def cancel_upload(
        self, project_id: str, upload_id: UploadId, lifecycle: LifecycleService
    ) -> UploadStatus:
        return await lifecycle.cancel(project_id, upload_id)
