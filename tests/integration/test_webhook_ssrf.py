"""SSRF: webhooks never reach the gateway's own network unless allowed."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import pytest

from gateway.app import create_app
from gateway.config import Settings
from gateway.webhooks.delivery import DeliveryConfig, make_session
from gateway.webhooks.ssrf import AddressPolicy, Refused, forbidden
from tests.conftest import make_project, running
from tests.support.hooks import hooks_settings
from tests.support.receiver import Receiver

HOOKS = "/api/storage/webhooks/"


class StaticResolver:
    """A DNS that answers what the test says (and can change its mind)."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host not in self.answers:
            raise OSError(f"no such host {host}")
        return self.answers[host]


@pytest.fixture(scope="module")
async def strict(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """An app under the default rule (private addresses refused)."""
    app = create_app(
        hooks_settings(
            settings, GATEWAY_WEBHOOK_ALLOW_PRIVATE="false", GATEWAY_WEBHOOK_FIRST_RETRY="600"
        )
    )
    async with running(app) as c:
        yield c, app.state


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.1.2.3",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fd00:ec2::254",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "224.0.0.1",
    ],
)
def test_private_loopback_link_local_and_metadata_are_forbidden(address: str) -> None:
    assert forbidden(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_are_not(address: str) -> None:
    assert not forbidden(ipaddress.ip_address(address))


async def test_creation_refuses_private_targets_with_422(
    strict: tuple[httpx.AsyncClient, Any],
) -> None:
    c, state = strict
    p = await make_project(state)
    resolver = StaticResolver(
        {"internal.example": ["10.1.2.3"], "mixed.example": ["8.8.8.8", "192.168.0.9"]}
    )
    state.webhooks.policy.resolver = resolver
    for url in (
        "http://127.0.0.1:9/hooks",
        "http://10.0.0.1/hooks",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/x",
        "http://[::ffff:127.0.0.1]/x",
        "https://internal.example/hooks",
        "https://mixed.example/hooks",  # one bad answer is enough
        "https://nowhere.example/hooks",  # does not resolve
        "http://localhost/hooks",
    ):
        if url == "http://localhost/hooks":
            resolver.answers["localhost"] = ["127.0.0.1"]
        r = await c.post(HOOKS, json={"url": url, "events": ["*"]}, headers=p.headers)
        assert r.status_code == 422, (url, r.text)
        assert r.json()["code"] == "webhook_url_refused", url
    assert (await c.get(HOOKS, headers=p.headers)).json()["totalCount"] == 0
    # a public name is taken (it is only resolved, never called here)
    resolver.answers["hooks.example"] = ["8.8.8.8"]
    r = await c.post(
        HOOKS,
        json={"url": "https://hooks.example/x", "events": ["webhook.test"]},
        headers=p.headers,
    )
    assert r.status_code == 201, r.text
    public = r.json()["id"]
    # and a PATCH to a private URL is refused like a creation
    r = await c.patch(f"{HOOKS}{public}/", json={"url": "http://10.9.9.9/"}, headers=p.headers)
    assert r.status_code == 422 and r.json()["code"] == "webhook_url_refused"
    # (gone again: no deliverer on this database may ever find a public endpoint)
    assert (await c.delete(f"{HOOKS}{public}/", headers=p.headers)).status_code == 204


async def test_a_name_that_turns_private_after_creation_is_not_called(
    strict: tuple[httpx.AsyncClient, Any],
) -> None:
    c, state = strict
    p = await make_project(state)
    with Receiver() as rx:
        resolver = StaticResolver({"rebind.example": ["8.8.8.8"]})
        state.webhooks.policy.resolver = resolver
        r = await c.post(
            HOOKS,
            # only test events: nothing is queued for it while the name is public
            json={"url": f"http://rebind.example:{rx.port}/hooks", "events": ["webhook.test"]},
            headers=p.headers,
        )
        assert r.status_code == 201, r.text
        hook = r.json()
        # the DNS answer changes to the receiver on loopback: delivery must not go there
        resolver.answers["rebind.example"] = ["127.0.0.1"]
        sent = (await c.post(f"{HOOKS}{hook['id']}/test/", headers=p.headers)).json()
        await state.webhooks.deliverer.deliver_due()
        assert rx.received() == []
        log = (await c.get(f"{HOOKS}{hook['id']}/deliveries/", headers=p.headers)).json()
        (d,) = log["data"]
        assert d["event_id"] == sent["event_id"] and d["status"] == "pending"
        assert d["attempts"] == 1 and d["last_status_code"] is None
        assert "loopback, private" in d["last_error"]
        assert resolver.asked.count("rebind.example") >= 2  # at creation and at delivery


async def test_the_delivery_session_checks_every_connection() -> None:
    """The session resolves every new connection through the policy (no DNS cache):
    a name resolving to a forbidden address fails before connecting, an allowed one
    goes through (to the address the resolver answered)."""
    config = DeliveryConfig(max_in_flight=2)
    with Receiver() as rx:
        resolver = StaticResolver({"receiver.example": ["127.0.0.1"]})
        url = f"http://receiver.example:{rx.port}/hooks"
        strict = make_session(AddressPolicy(allow_private=False, resolver=resolver), config)
        try:
            with pytest.raises(aiohttp.ClientError, match="refused: "):
                async with strict.post(url, data=b"{}"):
                    pass
        finally:
            await strict.close()
        assert rx.received() == []
        loose = make_session(AddressPolicy(allow_private=True, resolver=resolver), config)
        try:
            async with loose.post(url, data=b"{}") as r:
                assert r.status == 200
        finally:
            await loose.close()
        assert len(rx.received()) == 1 and rx.received()[0].headers["host"].startswith(
            "receiver.example"
        )


async def test_policy_refuses_with_reason() -> None:
    policy = AddressPolicy(resolver=StaticResolver({"a.example": ["192.168.1.5"]}))
    with pytest.raises(Refused, match=re.escape("192.168.1.5")):
        await policy.addresses("a.example", 443)
    assert await AddressPolicy(allow_private=True, resolver=policy.resolver).addresses(
        "a.example", 443
    ) == ["192.168.1.5"]
