"""Deleting and downloading stored files."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, delete, post

from gateway.api.body import strict_body
from gateway.api.openapi import PROJECT_SECURITY, errors
from gateway.api.schemas import Detail, DownloadRequest, DownloadResponse, FileRef
from gateway.files import FileService


class FileController(Controller):
    path = "/api/storage"
    tags = ["files"]
    security = PROJECT_SECURITY

    @delete(
        "/files/",
        operation_id="deleteFile",
        status_code=200,
        summary="Delete a stored file and free its bytes",
        responses=errors(
            401,
            404,
            413,
            415,
            422,
            502,
            503,
            s404="No such file in this project (`not_found`).",
        ),
    )
    async def delete_file(
        self,
        request: Request[Any, Any, Any],
        project_id: str,
        data: FileRef,
        files: FileService,
    ) -> Detail:
        body = await strict_body(request, FileRef)
        await files.delete(project_id, body.file_path)
        return Detail(detail="File deleted successfully")

    @post(
        "/download/",
        operation_id="createDownload",
        status_code=200,
        summary="A presigned download URL for a stored file",
        responses=errors(
            401,
            404,
            413,
            415,
            422,
            502,
            503,
            s404="No such file in this project (`not_found`).",
        ),
    )
    async def download(
        self,
        request: Request[Any, Any, Any],
        project_id: str,
        data: DownloadRequest,
        files: FileService,
    ) -> DownloadResponse:
        body = await strict_body(request, DownloadRequest)
        return await files.download(project_id, body)
