"""Outbound webhook endpoints, their deliveries, test events and secret rotation."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, delete, get, patch, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import Parameter
from msgspec import UNSET, Meta, UnsetType

from gateway.api.audit import no_empty
from gateway.api.body import strict_body
from gateway.api.openapi import PROJECT_SECURITY, errors
from gateway.api.paging import page_links
from gateway.audit import Actor
from gateway.webhooks.endpoints import (
    CreatedWebhook,
    EndpointService,
    Webhook,
    WebhookDelivery,
)
from gateway.webhooks.events import EventType

WEBHOOK_ID_PATTERN = r"^whk_[0-9a-f]{24}$"
EVENT_ID_PATTERN = r"^evt_[0-9a-f]{24}$"

Url = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=2048,
        pattern=r"^https?://\S+$",
        description="where the events go: http(s), no credentials; a host that resolves"
        " to a loopback, private, link-local or metadata address is refused (422"
        " `webhook_url_refused`) unless the gateway allows private targets",
    ),
]
EventTypes = Annotated[
    list[EventType],
    Meta(min_length=1, max_length=16, description='the types to send, or ["*"] for all'),
]
Description = Annotated[str, Meta(max_length=500)]
WebhookId = Annotated[
    str, Parameter(pattern=WEBHOOK_ID_PATTERN, description="`whk_` and 24 hex digits")
]
EventId = Annotated[
    str, Parameter(pattern=EVENT_ID_PATTERN, description="`evt_` and 24 hex digits")
]


class WebhookCreate(msgspec.Struct, kw_only=True, frozen=True):
    url: Url
    events: EventTypes
    description: Description = ""


class WebhookUpdate(msgspec.Struct, kw_only=True, frozen=True):
    url: Url | UnsetType = UNSET
    events: EventTypes | UnsetType = UNSET
    description: Description | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET


class WebhookPage(msgspec.Struct, kw_only=True):
    count: int
    totalCount: int
    next: str | None
    previous: str | None
    data: list[Webhook]


class WebhookDeliveryPage(msgspec.Struct, kw_only=True):
    count: int
    totalCount: int
    next: str | None
    previous: str | None
    data: list[WebhookDelivery]


class WebhookTestEvent(msgspec.Struct, kw_only=True):
    event_id: str


class RotatedSecret(msgspec.Struct, kw_only=True):
    secret: str
    previous_secret_valid_until: str


def provide_webhooks(state: State) -> EndpointService:
    service: EndpointService = state.webhooks.endpoints
    return service


def _given(value: Any) -> Any:
    return None if value is UNSET else value


Offset = Annotated[int, Parameter(ge=0, le=10_000_000)]
Limit = Annotated[int, Parameter(ge=1, le=1000)]


class WebhookController(Controller):
    path = "/api/storage/webhooks"
    tags = ["webhooks"]
    security = PROJECT_SECURITY
    dependencies = {"webhooks": Provide(provide_webhooks, sync_to_thread=False)}

    @post(
        "/",
        operation_id="createWebhook",
        status_code=201,
        summary="Add a webhook endpoint",
        description="Answers the endpoint with its signing `secret` (`whsec_…`), shown"
        " only here. Events are signed as Standard Webhooks says.",
        responses=errors(401, 413, 415, 422, 503),
    )
    async def create(
        self,
        request: Request[Any, Any, Any],
        project_id: str,
        data: WebhookCreate,
        webhooks: EndpointService,
        actor: Actor,
    ) -> CreatedWebhook:
        body = await strict_body(request, WebhookCreate)
        return await webhooks.create(
            project_id,
            url=body.url,
            events=body.events,
            description=body.description,
            actor=actor,
        )

    @get(
        "/",
        operation_id="listWebhooks",
        summary="A page of the project's webhook endpoints",
        responses=errors(401, 422, 503),
    )
    async def list_webhooks(
        self,
        request: Request[Any, Any, Any],
        project_id: str,
        webhooks: EndpointService,
        offset: Offset = 0,
        limit: Limit = 50,
    ) -> WebhookPage:
        items, total = await webhooks.list(project_id, offset=offset, limit=limit)
        nxt, prev = page_links(request, offset=offset, limit=limit, total=total)
        return WebhookPage(count=len(items), totalCount=total, next=nxt, previous=prev, data=items)

    @get(
        "/{webhook_id:str}/",
        operation_id="getWebhook",
        summary="A webhook endpoint",
        responses=errors(401, 404, 422, 503),
    )
    async def get_webhook(
        self, project_id: str, webhook_id: WebhookId, webhooks: EndpointService
    ) -> Webhook:
        return await webhooks.get(project_id, webhook_id)

    @patch(
        "/{webhook_id:str}/",
        operation_id="updateWebhook",
        summary="Change a webhook endpoint",
        description="Any of `url`, `events`, `description`, `enabled`; a field left out"
        " is unchanged. Enabling an endpoint clears its failure record.",
        responses=errors(401, 404, 413, 415, 422, 503),
    )
    async def update(
        self,
        request: Request[Any, Any, Any],
        project_id: str,
        webhook_id: WebhookId,
        data: WebhookUpdate,
        webhooks: EndpointService,
        actor: Actor,
    ) -> Webhook:
        body = await strict_body(request, WebhookUpdate)
        return await webhooks.update(
            project_id,
            webhook_id,
            url=_given(body.url),
            events=_given(body.events),
            description=_given(body.description),
            enabled=_given(body.enabled),
            actor=actor,
        )

    @delete(
        "/{webhook_id:str}/",
        operation_id="deleteWebhook",
        status_code=204,
        summary="Remove a webhook endpoint (and its pending deliveries)",
        responses=errors(401, 404, 422, 503),
    )
    async def delete_webhook(
        self, project_id: str, webhook_id: WebhookId, webhooks: EndpointService, actor: Actor
    ) -> None:
        await webhooks.delete(project_id, webhook_id, actor=actor)

    @post(
        "/{webhook_id:str}/test/",
        operation_id="sendWebhookTest",
        status_code=202,
        summary="Send a webhook.test event to this endpoint",
        responses=errors(401, 404, 422, 503),
    )
    async def send_test(
        self, project_id: str, webhook_id: WebhookId, webhooks: EndpointService
    ) -> WebhookTestEvent:
        return WebhookTestEvent(event_id=await webhooks.send_test(project_id, webhook_id))

    @post(
        "/{webhook_id:str}/rotate-secret/",
        operation_id="rotateWebhookSecret",
        status_code=200,
        summary="A new signing secret",
        description="Shown only here. Until `previous_secret_valid_until` (24 h)"
        " deliveries carry signatures by both the old and the new secret.",
        responses=errors(401, 404, 422, 503),
    )
    async def rotate_secret(
        self, project_id: str, webhook_id: WebhookId, webhooks: EndpointService, actor: Actor
    ) -> RotatedSecret:
        secret, until = await webhooks.rotate_secret(project_id, webhook_id, actor=actor)
        return RotatedSecret(secret=secret, previous_secret_valid_until=until)

    @get(
        "/{webhook_id:str}/deliveries/",
        operation_id="listWebhookDeliveries",
        summary="The endpoint's deliveries, newest first",
        responses=errors(401, 404, 422, 503),
    )
    async def deliveries(
        self,
        request: Request[Any, Any, Any],
        project_id: str,
        webhook_id: WebhookId,
        webhooks: EndpointService,
        status: Annotated[
            Literal["pending", "delivered", "failed"] | None,
            Parameter(description="only deliveries in this state"),
        ] = None,
        offset: Offset = 0,
        limit: Limit = 50,
    ) -> WebhookDeliveryPage:
        no_empty(request, "status", nulls=("status",))
        items, total = await webhooks.deliveries(
            project_id, webhook_id, status=status, offset=offset, limit=limit
        )
        nxt, prev = page_links(request, offset=offset, limit=limit, total=total)
        return WebhookDeliveryPage(
            count=len(items), totalCount=total, next=nxt, previous=prev, data=items
        )

    @post(
        "/{webhook_id:str}/deliveries/{event_id:str}/retry/",
        operation_id="retryWebhookDelivery",
        status_code=202,
        summary="Deliver this event again now",
        description="Due at once, with a fresh retry window (a delivered one is sent"
        " again). One in flight is answered as it is.",
        responses=errors(401, 404, 422, 503),
    )
    async def retry(
        self,
        project_id: str,
        webhook_id: WebhookId,
        event_id: EventId,
        webhooks: EndpointService,
    ) -> WebhookDelivery:
        return await webhooks.retry(project_id, webhook_id, event_id)


# the bodies of these routes, for /schema (gateway/api/openapi.py renders them as
# msgspec does, constraints and all)
SCHEMA_TYPES: list[type[msgspec.Struct]] = [
    WebhookCreate,
    WebhookUpdate,
    Webhook,
    CreatedWebhook,
    WebhookPage,
    WebhookDelivery,
    WebhookDeliveryPage,
    WebhookTestEvent,
    RotatedSecret,
]
