"""Project API keys: ``gwk_<key id>_<secret>``, stored only as a SHA-256 hash.

The key id lets us find the row with an index; the secret is compared in constant
time against the stored hash. Keys carry 256 bits of randomness, so a fast hash is
the right tool (a password hash would only slow every request).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

PREFIX = "gwk_"
_KEY = re.compile(r"^gwk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True, slots=True)
class NewKey:
    key_id: str  # "key_<16 hex>", what `gateway keys revoke` takes
    api_key: str  # shown once
    secret_hash: bytes


@dataclass(frozen=True, slots=True)
class PresentedKey:
    key_id: str
    secret_hash: bytes


def generate_key() -> NewKey:
    short = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return NewKey(
        key_id=f"key_{short}",
        api_key=f"{PREFIX}{short}_{secret}",
        secret_hash=hash_secret(secret),
    )


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def parse_key(raw: str) -> PresentedKey | None:
    m = _KEY.match(raw)
    if m is None:
        return None
    return PresentedKey(key_id=f"key_{m.group(1)}", secret_hash=hash_secret(m.group(2)))


def parse_bearer(header: str | None) -> PresentedKey | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return parse_key(token.strip())


def matches(stored_hash: bytes, presented: PresentedKey) -> bool:
    return hmac.compare_digest(bytes(stored_hash), presented.secret_hash)
