"""Deleting and downloading stored files."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, delete, post

from gateway.api.body import strict_body
from gateway.api.schemas import Detail, DownloadRequest, DownloadResponse, FileRef
from gateway.files import FileService


class FileController(Controller):
    path = "/api/storage"
    tags = ["files"]

    @delete("/files/", operation_id="deleteFile", status_code=200)
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

    @post("/download/", operation_id="createDownload", status_code=200)
    async def download(
        self,
        request: Request[Any, Any, Any],
        project_id: str,
        data: DownloadRequest,
        files: FileService,
    ) -> DownloadResponse:
        body = await strict_body(request, DownloadRequest)
        return await files.download(project_id, body)
