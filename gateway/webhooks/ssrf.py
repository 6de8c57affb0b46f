"""Where webhooks may go: never to the gateway's own network (SSRF).

A webhook URL whose host resolves to a loopback, private, link-local (the cloud
metadata service at 169.254.169.254 among them), shared (100.64/10), multicast,
reserved or unspecified address is refused: at creation (``check_url``, a 422) and
again at every connection the delivery client opens (``GuardedResolver``), since a
name's DNS answer can change after it was checked. The connection goes to the very
address that was checked (no second lookup between check and connect); TLS still
verifies the certificate against the URL's host name. ``allow_private``
(``GATEWAY_WEBHOOK_ALLOW_PRIVATE=true``, which ``gateway dev`` sets) lifts the rule
for receivers on one's own machine or network.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# metadata services that sit at public-looking or odd addresses
_METADATA = {
    ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack (link-local)
    ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    ipaddress.ip_address("192.0.0.192"),  # Oracle Cloud
}


def forbidden(ip: IPAddress) -> bool:
    """An address a webhook must not reach unless private targets are allowed."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (
        ip in _METADATA
        or not ip.is_global
        or ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


class Resolver(Protocol):
    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses ``host`` resolves to (an IP literal resolves to itself)."""
        ...


class SystemResolver:
    """The operating system's resolver (``getaddrinfo`` in a thread)."""

    async def resolve(self, host: str, port: int) -> list[str]:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        return list(dict.fromkeys(str(info[4][0]) for info in infos))


class Refused(Exception):
    """A webhook URL the policy does not let the gateway call; the message says why."""


@dataclass
class AddressPolicy:
    allow_private: bool = False
    resolver: Resolver = field(default_factory=SystemResolver)

    async def addresses(self, host: str, port: int) -> list[str]:
        """The addresses to connect to for ``host``: all of them allowed, else
        ``Refused``."""
        literal: IPAddress | None
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            found = [str(literal)]
        else:
            try:
                found = await self.resolver.resolve(host, port)
            except (OSError, UnicodeError) as exc:
                raise Refused(f"the host {host!r} does not resolve ({exc})") from None
            if not found:
                raise Refused(f"the host {host!r} does not resolve")
        if not self.allow_private:
            bad = [a for a in found if forbidden(ipaddress.ip_address(a.split("%", 1)[0]))]
            if bad:
                raise Refused(
                    f"the host {host!r} resolves to {bad[0]}, a loopback, private, "
                    "link-local or metadata address (GATEWAY_WEBHOOK_ALLOW_PRIVATE=true "
                    "allows it)"
                )
        return found


def url_parts(url: str) -> tuple[str, int]:
    """Host and port of an acceptable webhook URL; ValueError saying what is wrong."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("must name a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials (user:password@)")
    if parts.fragment:
        raise ValueError("must not have a #fragment")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def check_url(url: str, policy: AddressPolicy) -> None:
    """Raises ValueError (a 422) for a URL the gateway will not call."""
    host, port = url_parts(url)
    try:
        await policy.addresses(host, port)
    except Refused as exc:
        raise ValueError(str(exc)) from None


class RefusedAddress(OSError):
    """What the guarded resolver raises (the delivery client reports it as an error
    to connect, with this message)."""


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, answering only addresses the policy allows: every new
    connection of the delivery client resolves through it (its DNS cache is off),
    and connects to the very address it answered. aiohttp does not resolve IP
    literals; the deliverer checks those itself (``AddressPolicy.addresses``)."""

    def __init__(self, policy: AddressPolicy) -> None:
        self.policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            addresses = await self.policy.addresses(host, port)
        except Refused as exc:
            # (errno, text): aiohttp's error shows the OSError's strerror
            raise RefusedAddress(errno.EACCES, f"refused: {exc}") from None
        return [
            {
                "hostname": host,
                "host": a,
                "port": port,
                "family": socket.AF_INET6 if ":" in a else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for a in addresses
        ]

    async def close(self) -> None:
        pass


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


__all__ = [
    "AddressPolicy",
    "GuardedResolver",
    "Refused",
    "RefusedAddress",
    "Resolver",
    "SystemResolver",
    "check_url",
    "forbidden",
    "is_ip_literal",
    "url_parts",
]
