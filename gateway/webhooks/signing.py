"""Signing secrets: made, sealed at rest, and used to sign (Standard Webhooks).

A secret is ``whsec_<base64 of 32 random bytes>``, shown once (at creation and at
rotation). It has to be stored so that it can sign: sealed with Fernet (AES-128-CBC
+ HMAC-SHA256, the ``cryptography`` package) under ``GATEWAY_WEBHOOK_ENCRYPTION_KEYS``
when that is set (several keys, comma-separated: the first seals, all unseal, so a
key can be rotated), as ``fernet:<token>``; without keys it is stored as
``plain:whsec_…`` and only the database's own protection covers it (README says so).

Signatures are made by the ``standardwebhooks`` package (the reference
implementation): ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, several
separated by spaces while a rotated-out secret still signs.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from standardwebhooks.webhooks import Webhook

PREFIX = "whsec_"


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


class SecretUnreadable(Exception):
    """A stored secret that the configured keys cannot unseal."""


class SecretBox:
    """Seals secrets for the database and unseals them for signing."""

    def __init__(self, keys: Sequence[str] = ()) -> None:
        self._fernet = MultiFernet([Fernet(k) for k in keys]) if keys else None

    @property
    def encrypts(self) -> bool:
        return self._fernet is not None

    def seal(self, secret: str) -> str:
        if self._fernet is None:
            return "plain:" + secret
        return "fernet:" + self._fernet.encrypt(secret.encode()).decode()

    def unseal(self, stored: str) -> str:
        kind, _, value = stored.partition(":")
        if kind == "plain":
            return value
        if kind == "fernet" and self._fernet is not None:
            try:
                return self._fernet.decrypt(value.encode()).decode()
            except InvalidToken:
                pass
        raise SecretUnreadable(
            "a webhook secret cannot be unsealed with GATEWAY_WEBHOOK_ENCRYPTION_KEYS"
        )


def sign(secrets_: Sequence[str], msg_id: str, timestamp: datetime, body: str) -> str:
    """The ``webhook-signature`` header: one ``v1,…`` per secret, space-separated."""
    when = timestamp.astimezone(UTC)
    return " ".join(Webhook(s).sign(msg_id, when, body) for s in secrets_)


__all__ = ["PREFIX", "SecretBox", "SecretUnreadable", "new_secret", "sign"]
