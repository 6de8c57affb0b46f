"""Webhook secrets and signatures: what any Standard Webhooks library verifies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.fernet import Fernet
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from gateway.webhooks.delivery import DeliveryConfig, backoff
from gateway.webhooks.signing import SecretBox, SecretUnreadable, new_secret, sign

bodies = st.text(min_size=0, max_size=300)
ids = st.from_regex(r"evt_[0-9a-f]{24}", fullmatch=True)


@given(body=bodies, msg_id=ids, skew=st.integers(min_value=-200, max_value=200))
def test_every_signature_verifies_with_the_library_and_a_change_breaks_it(
    body: str, msg_id: str, skew: int
) -> None:
    secret = new_secret()
    at = datetime.now(UTC) + timedelta(seconds=skew)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": sign([secret], msg_id, at, body),
    }
    Webhook(secret).verify(body.encode(), headers, json_parse=False)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify((body + "x").encode(), headers, json_parse=False)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body.encode(), headers, json_parse=False)


def test_two_secrets_sign_twice_and_either_verifies() -> None:
    old, new = new_secret(), new_secret()
    at = datetime.now(UTC)
    header = sign([new, old], "evt_" + "a" * 24, at, "{}")
    assert len(header.split(" ")) == 2 and all(s.startswith("v1,") for s in header.split(" "))
    headers = {
        "webhook-id": "evt_" + "a" * 24,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": header,
    }
    Webhook(old).verify(b"{}", headers)
    Webhook(new).verify(b"{}", headers)


def test_secrets_look_like_standard_webhooks_secrets() -> None:
    s = new_secret()
    assert s.startswith("whsec_") and len(s) == len("whsec_") + 44
    assert new_secret() != s


def test_the_box_seals_with_the_first_key_and_opens_with_any() -> None:
    k1, k2 = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    secret = new_secret()
    sealed = SecretBox([k1]).seal(secret)
    assert sealed.startswith("fernet:") and secret not in sealed
    # k2 put first (rotation): old secrets still open, new ones sealed with k2
    rotated = SecretBox([k2, k1])
    assert rotated.unseal(sealed) == secret
    with pytest.raises(SecretUnreadable):
        SecretBox([k2]).unseal(sealed)
    with pytest.raises(SecretUnreadable):
        SecretBox().unseal(sealed)  # no keys configured
    plain = SecretBox().seal(secret)
    assert plain == "plain:" + secret and rotated.unseal(plain) == secret
    assert not SecretBox().encrypts and rotated.encrypts


def test_backoff_grows_and_is_capped() -> None:
    config = DeliveryConfig()
    lows = [backoff(n, config) for n in range(1, 20)]
    assert 4.0 <= lows[0] <= 6.0
    assert all(d <= config.max_retry * 1.2 for d in lows)
    assert backoff(15, config) >= config.max_retry * 0.8
    # retried for at least a day: the attempts it takes to pass 24 h stay reasonable
    total, n = 0.0, 0
    while total < 86_400:
        n += 1
        total += backoff(n, config)
    assert 20 <= n <= 40


def test_encryption_keys_are_checked_and_never_echoed() -> None:
    from gateway.config import ConfigError, Settings

    key = Fernet.generate_key().decode()
    s = Settings.from_env({"GATEWAY_WEBHOOK_ENCRYPTION_KEYS": f"{key}, {key}"})
    assert s.webhook_encryption_keys == (key, key)
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"GATEWAY_WEBHOOK_ENCRYPTION_KEYS": "not-a-key-hunter2"})
    assert "GATEWAY_WEBHOOK_ENCRYPTION_KEYS" in str(info.value)
    assert "hunter2" not in str(info.value)
    with pytest.raises(ConfigError):
        Settings.from_env({"GATEWAY_WEBHOOK_TIMEOUT": "0"})
    d = Settings.from_env({})
    assert (d.webhook_timeout, d.webhook_retry_for, d.webhook_allow_private) == (
        10.0,
        86400.0,
        False,
    )
