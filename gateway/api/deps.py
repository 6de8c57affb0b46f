"""Providers: services from app.state, and the authenticated project."""

from __future__ import annotations

from litestar import Request
from litestar.datastructures import State
from litestar.di import Provide

from gateway import auth
from gateway.projects import ProjectService
from gateway.tenants import TenantService
from gateway.uploads import UploadService


async def provide_project_id(request: Request[object, object, State]) -> str:
    presented = auth.parse_bearer(request.headers.get("authorization"))
    projects: ProjectService = request.app.state.projects
    return await projects.authenticate(presented)


def provide_uploads(state: State) -> UploadService:
    service: UploadService = state.uploads
    return service


def provide_tenants(state: State) -> TenantService:
    service: TenantService = state.tenants
    return service


DEPENDENCIES = {
    "project_id": Provide(provide_project_id),
    "uploads": Provide(provide_uploads, sync_to_thread=False),
    "tenants": Provide(provide_tenants, sync_to_thread=False),
}
