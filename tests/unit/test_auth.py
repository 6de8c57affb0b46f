from __future__ import annotations

from gateway import auth


def test_generated_keys_parse_and_match() -> None:
    new = auth.generate_key()
    assert new.api_key.startswith("gwk_") and new.key_id.startswith("key_")
    presented = auth.parse_bearer(f"Bearer {new.api_key}")
    assert presented is not None and presented.key_id == new.key_id
    assert auth.matches(new.secret_hash, presented)
    assert new.secret_hash != new.api_key.encode()  # only a hash is stored


def test_wrong_secret_or_shape_does_not_match() -> None:
    new = auth.generate_key()
    other = auth.generate_key()
    forged = new.api_key[:21] + other.api_key[21:]  # "gwk_" + 16 hex + "_" + secret
    presented = auth.parse_key(forged)
    assert presented is not None and not auth.matches(new.secret_hash, presented)
    for bad in ("", "gwk_", "Bearer", "gwk_zz_x", new.api_key + "x", new.api_key.upper()):
        assert auth.parse_key(bad) is None
    assert auth.parse_bearer(f"Basic {new.api_key}") is None
    assert auth.parse_bearer(None) is None
