"""Outbound webhooks: telling the SaaS backend what happened, signed, at least once.

* ``outbox``: events written in the transaction of the change they tell of;
* ``endpoints``: the endpoints' CRUD, secrets, the deliveries log;
* ``delivery``: the workers that send the outbox (every server, and
  ``gateway webhooks deliver``);
* ``signing``: secrets (sealed at rest) and Standard Webhooks signatures;
* ``ssrf``: where a webhook may go.

``Webhooks(settings, db, metrics)`` builds them all on one pooled HTTP client session
(made on the running loop); the Runtime opens one and closes it. docs/webhooks.md
tells the whole story.
"""

from __future__ import annotations

from gateway.config import Settings
from gateway.db import Database
from gateway.observability import Metrics
from gateway.webhooks.delivery import Deliverer, DeliveryConfig, WebhookMetrics, make_session
from gateway.webhooks.endpoints import EndpointService
from gateway.webhooks.outbox import Outbox
from gateway.webhooks.signing import SecretBox
from gateway.webhooks.ssrf import AddressPolicy


def delivery_config(settings: Settings) -> DeliveryConfig:
    return DeliveryConfig(
        timeout=settings.webhook_timeout,
        max_in_flight=settings.webhook_max_in_flight,
        endpoint_in_flight=settings.webhook_endpoint_in_flight,
        poll_interval=settings.webhook_poll_interval,
        retry_for=settings.webhook_retry_for,
        first_retry=settings.webhook_first_retry,
        disable_after=settings.webhook_disable_after,
        retention=settings.webhook_retention,
    )


class Webhooks:
    def __init__(self, settings: Settings, db: Database, metrics: Metrics) -> None:
        self.config = delivery_config(settings)
        self.box = SecretBox(settings.webhook_encryption_keys)
        self.policy = AddressPolicy(allow_private=settings.webhook_allow_private)
        self.outbox = Outbox()
        self.endpoints = EndpointService(db, self.box, self.policy)
        self.metrics = WebhookMetrics(metrics.registry)
        self.session = make_session(self.policy, self.config)  # needs the running loop
        self.deliverer = Deliverer(
            db, self.session, self.policy, self.box, self.metrics, self.config
        )
        self.outbox.on_record = self.deliverer.wake

    async def close(self) -> None:
        await self.deliverer.close()
        await self.session.close()


__all__ = ["Webhooks", "delivery_config"]
