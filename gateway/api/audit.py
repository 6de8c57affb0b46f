"""The audit log: ``GET /api/storage/audit/``, this project's entries, newest first."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get
from litestar.datastructures import State
from litestar.params import Parameter

from gateway import auth
from gateway.api.body import invalid
from gateway.api.messages import parameter_error
from gateway.api.openapi import PROJECT_SECURITY, errors
from gateway.api.paging import page_links
from gateway.api.schemas import TENANT_ID_PATTERN
from gateway.audit import Actor, AuditEntry, AuditLog, api_key_actor
from gateway.errors import Unauthorized


def no_empty(request: Request[Any, Any, Any], *names: str, nulls: tuple[str, ...] = ()) -> None:
    """Litestar reads an empty value (and, for ``nulls``, the text ``null``) of an
    optional query parameter as the parameter left out; refuse them as the values they
    are, which the parameter's schema does not admit."""
    for name in names:
        for value in request.query_params.getall(name, []):
            if value == "":
                message = "Expected `str` of length >= 1"
            elif name in nulls and value == "null":
                message = "Invalid enum value 'null'"
            else:
                continue
            raise invalid(parameter_error(message, name=name, source="query"))


class AuditPage(msgspec.Struct, kw_only=True):
    count: int
    totalCount: int
    next: str | None
    previous: str | None
    data: list[AuditEntry]


async def provide_actor(request: Request[Any, Any, State], project_id: str) -> Actor:
    """The API key that made the request (already authenticated: ``project_id``)."""
    presented = auth.parse_bearer(request.headers.get("authorization"))
    if presented is None:  # project_id would have refused it first
        raise Unauthorized()
    return api_key_actor(presented.key_id)


def provide_audit(state: State) -> AuditLog:
    service: AuditLog = state.audit
    return service


class AuditController(Controller):
    path = "/api/storage/audit"
    tags = ["audit"]
    security = PROJECT_SECURITY

    @get(
        "/",
        operation_id="listAuditEntries",
        summary="The project's audit log, newest first",
        description="Every change of limits, project settings, keys and webhooks: who"
        " made it (`actor`), the fields before and after, and the `X-Request-ID` of the"
        " response that carried it.",
        responses=errors(401, 422, 503),
    )
    async def list_entries(
        self,
        request: Request[Any, Any, Any],
        project_id: str,
        audit: AuditLog,
        tenant_id: Annotated[
            str | None,
            Parameter(
                pattern=TENANT_ID_PATTERN,
                min_length=1,
                max_length=128,
                description="only this tenant's entries",
            ),
        ] = None,
        action: Annotated[
            str | None,
            Parameter(
                pattern=r"^[a-z][a-z0-9_.]{0,63}$",
                min_length=1,
                max_length=64,
                description="only entries of this action (`tenant.limit.set`, …)",
            ),
        ] = None,
        offset: Annotated[int, Parameter(ge=0, le=10_000_000)] = 0,
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 50,
    ) -> AuditPage:
        no_empty(request, "tenant_id", "action")
        items, total = await audit.list(
            project_id, tenant_id=tenant_id, action=action, offset=offset, limit=limit
        )
        nxt, prev = page_links(request, offset=offset, limit=limit, total=total)
        return AuditPage(count=len(items), totalCount=total, next=nxt, previous=prev, data=items)


# the bodies of this route, for /schema (as gateway/api/webhooks.py)
SCHEMA_TYPES: list[type[msgspec.Struct]] = [Actor, AuditEntry, AuditPage]
