"""Tenants: usage, limits, listing, project totals, recalculation."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from litestar import Controller, Request, delete, get, patch, post
from litestar.params import Parameter

from gateway.api.body import invalid, strict_body
from gateway.api.messages import parameter_error
from gateway.api.openapi import PROJECT_SECURITY, errors
from gateway.api.schemas import (
    TENANT_ID_PATTERN,
    LimitUpdate,
    Page,
    ProjectUsage,
    RecalculatedUsage,
    TenantUsage,
)
from gateway.audit import Actor
from gateway.tenants import Order, TenantService

TenantIdParam = Annotated[
    str,
    Parameter(
        pattern=TENANT_ID_PATTERN,
        min_length=1,
        max_length=128,
        description="1 to 128 characters of A-Z, a-z, 0-9 and . _ : @ -",
    ),
]


def _no_nulls(request: Request[Any, Any, Any], **kinds: str) -> None:
    """Litestar reads ``?over_limit=null`` (or an empty value) as the parameter left
    out; a query string has no null, so refuse them as the values they are."""
    for name, kind in kinds.items():
        if any(v in ("", "null") for v in request.query_params.getall(name, [])):
            message = f"Expected `{kind}`, got `str`"
            raise invalid(parameter_error(message, name=name, source="query"))


class TenantController(Controller):
    path = "/api/storage"
    tags = ["tenants"]
    security = PROJECT_SECURITY

    @get(
        "/tenants/{tenant_id:str}/usage/",
        operation_id="getTenantUsage",
        summary="A tenant's usage and limit",
        description="A tenant never seen before answers zeros and its effective limit.",
        responses=errors(401, 422, 503),
    )
    async def usage(
        self, project_id: str, tenant_id: TenantIdParam, tenants: TenantService
    ) -> TenantUsage:
        return await tenants.usage(project_id, tenant_id)

    @patch(
        "/tenants/{tenant_id:str}/limit/",
        operation_id="setTenantLimit",
        summary="Set a tenant's storage limit",
        description=(
            "`null` = unlimited. Creates the tenant if needed; effective on the next upload"
            " request on every replica. A limit below current usage is allowed (the tenant"
            " is then `over_limit`)."
        ),
        responses=errors(401, 413, 415, 422, 503),
    )
    async def set_limit(
        self,
        request: Request[Any, Any, Any],
        project_id: str,
        tenant_id: TenantIdParam,
        data: LimitUpdate,
        tenants: TenantService,
        actor: Actor,
    ) -> TenantUsage:
        body = await strict_body(request, LimitUpdate)
        return await tenants.set_limit(project_id, tenant_id, body, actor=actor)

    @delete(
        "/tenants/{tenant_id:str}/limit/",
        operation_id="clearTenantLimit",
        status_code=200,
        summary="Drop a tenant's own storage limit",
        description="The project's default tenant limit applies again. Creates the tenant"
        " if needed; answers the usage body.",
        responses=errors(401, 422, 503),
    )
    async def clear_limit(
        self, project_id: str, tenant_id: TenantIdParam, tenants: TenantService, actor: Actor
    ) -> TenantUsage:
        return await tenants.clear_limit(project_id, tenant_id, actor=actor)

    @post(
        "/tenants/{tenant_id:str}/recalculate/",
        operation_id="recalculateTenant",
        status_code=200,
        summary="Rebuild a tenant's usage from S3",
        description="Rescans the tenant's objects and reports the drift it corrected.",
        responses=errors(401, 422, 502, 503),
    )
    async def recalculate(
        self, project_id: str, tenant_id: TenantIdParam, tenants: TenantService
    ) -> RecalculatedUsage:
        return await tenants.recalculate(project_id, tenant_id)

    @get(
        "/tenants/",
        operation_id="listTenants",
        summary="A page of tenants' usage",
        responses=errors(401, 422, 503),
    )
    async def list_tenants(
        self,
        request: Request[Any, Any, Any],
        project_id: str,
        tenants: TenantService,
        offset: Annotated[int, Parameter(ge=0, le=10_000_000)] = 0,
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 50,
        order: Annotated[Order, Parameter(description="`-` first: descending")] = "tenant_id",
        over_limit: Annotated[
            bool | None, Parameter(description="only tenants over (or within) their limit")
        ] = None,
        # schema_extra: Litestar drops a bound of 0 of an optional parameter (#3999)
        min_percentage: Annotated[
            float | None,
            Parameter(
                ge=0,
                le=1_000_000,
                schema_extra={"minimum": 0},
                description="only tenants with a limit using at least this percentage of it",
            ),
        ] = None,
    ) -> Page:
        _no_nulls(request, over_limit="bool", min_percentage="float")
        items, total = await tenants.list(
            project_id,
            offset=offset,
            limit=limit,
            order=order,
            over_limit=over_limit,
            min_percentage=min_percentage,
        )

        def link(new_offset: int) -> str:
            params = {k: v for k, v in request.query_params.items() if k not in ("offset", "limit")}
            params.update(offset=str(new_offset), limit=str(limit))
            return f"{str(request.url).split('?', 1)[0]}?{urlencode(params)}"

        nxt = link(offset + limit) if offset + limit < total else None
        prev = link(max(offset - limit, 0)) if offset > 0 else None
        return Page(count=len(items), totalCount=total, next=nxt, previous=prev, data=items)

    @get(
        "/usage/",
        operation_id="getProjectUsage",
        summary="The project's totals",
        responses=errors(401, 503),
    )
    async def project_usage(self, project_id: str, tenants: TenantService) -> ProjectUsage:
        return await tenants.project_usage(project_id)
