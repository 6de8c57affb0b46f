"""Providers: services from app.state, and the authenticated project."""

from __future__ import annotations

from litestar import Request
from litestar.datastructures import State
from litestar.di import Provide

from gateway import auth
from gateway.api.audit import provide_actor, provide_audit
from gateway.files import FileService
from gateway.projects import ProjectService
from gateway.tenants import TenantService
from gateway.uploads import AdmissionService, LifecycleService


async def provide_project_id(request: Request[object, object, State]) -> str:
    presented = auth.parse_bearer(request.headers.get("authorization"))
    projects: ProjectService = request.app.state.projects
    return await projects.authenticate(presented)


def provide_admission(state: State) -> AdmissionService:
    service: AdmissionService = state.admission
    return service


def provide_lifecycle(state: State) -> LifecycleService:
    service: LifecycleService = state.lifecycle
    return service


def provide_files(state: State) -> FileService:
    service: FileService = state.files
    return service


def provide_tenants(state: State) -> TenantService:
    service: TenantService = state.tenants
    return service


DEPENDENCIES = {
    "project_id": Provide(provide_project_id),
    "admission": Provide(provide_admission, sync_to_thread=False),
    "lifecycle": Provide(provide_lifecycle, sync_to_thread=False),
    "files": Provide(provide_files, sync_to_thread=False),
    "tenants": Provide(provide_tenants, sync_to_thread=False),
    "actor": Provide(provide_actor),
    "audit": Provide(provide_audit, sync_to_thread=False),
}
