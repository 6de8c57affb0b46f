"""Tenants: usage, limits, listing, project totals, recalculation."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from litestar import Controller, Request, get, patch, post
from litestar.params import Parameter

from gateway.api.body import strict_body
from gateway.api.schemas import (
    TENANT_ID_PATTERN,
    LimitUpdate,
    Page,
    ProjectUsage,
    RecalculatedUsage,
    TenantUsage,
)
from gateway.tenants import Order, TenantService

TenantIdParam = Annotated[str, Parameter(pattern=TENANT_ID_PATTERN, max_length=128)]


class TenantController(Controller):
    path = "/api/storage"
    tags = ["tenants"]

    @get("/tenants/{tenant_id:str}/usage/", operation_id="getTenantUsage")
    async def usage(
        self, project_id: str, tenant_id: TenantIdParam, tenants: TenantService
    ) -> TenantUsage:
        return await tenants.usage(project_id, tenant_id)

    @patch("/tenants/{tenant_id:str}/limit/", operation_id="setTenantLimit")
    async def set_limit(
        self,
        request: Request[Any, Any, Any],
        project_id: str,
        tenant_id: TenantIdParam,
        data: LimitUpdate,
        tenants: TenantService,
    ) -> TenantUsage:
        body = await strict_body(request, LimitUpdate)
        return await tenants.set_limit(project_id, tenant_id, body)

    @post(
        "/tenants/{tenant_id:str}/recalculate/", operation_id="recalculateTenant", status_code=200
    )
    async def recalculate(
        self, project_id: str, tenant_id: TenantIdParam, tenants: TenantService
    ) -> RecalculatedUsage:
        return await tenants.recalculate(project_id, tenant_id)

    @get("/tenants/", operation_id="listTenants")
    async def list_tenants(
        self,
        request: Request[Any, Any, Any],
        project_id: str,
        tenants: TenantService,
        offset: Annotated[int, Parameter(ge=0, le=10_000_000)] = 0,
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 50,
        order: Order = "tenant_id",
        over_limit: bool | None = None,
        min_percentage: Annotated[float | None, Parameter(ge=0, le=1_000_000)] = None,
    ) -> Page:
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

    @get("/usage/", operation_id="getProjectUsage")
    async def project_usage(self, project_id: str, tenants: TenantService) -> ProjectUsage:
        return await tenants.project_usage(project_id)
