"""The ledger's pure rules: key → tenant, and which of two changes is newer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.changes import ChangeKind
from gateway.keys import parse_object_key
from gateway.ledger import ObjectChange, _newer, _Row

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def row(seq: str | None, t: datetime) -> _Row:
    return _Row("prj_a", "t", None, 1, None, None, True, seq, t)


def change(seq: str | None, t: datetime) -> ObjectChange:
    return ObjectChange(kind=ChangeKind.CREATED, key="k", event_time=t, sequencer=seq)


def test_keys_map_back_to_tenants() -> None:
    kp = parse_object_key("prj_1/user_123/upl_0123456789abcdef01234567/report.pdf")
    assert kp is not None and (kp.project_id, kp.tenant_id) == ("prj_1", "user_123")
    assert kp.upload_id == "upl_0123456789abcdef01234567"
    other = parse_object_key("prj_1/user_123/manual/x.bin")
    assert other is not None and other.upload_id is None and other.tenant_id == "user_123"
    for outside in ("x/y/z", "prj_1/only", "prj_1//a/b", "prj_1/t/", "random"):
        assert parse_object_key(outside) is None


def test_sequencer_orders_when_both_differ() -> None:
    assert _newer(change("0002", T0), row("0001", T0 + timedelta(days=1)))
    assert not _newer(change("0001", T0 + timedelta(days=1)), row("0002", T0))


def test_time_orders_without_sequencers_or_with_a_constant_one() -> None:
    later, earlier = T0 + timedelta(milliseconds=1), T0
    assert _newer(change(None, later), row(None, earlier))
    assert not _newer(change(None, earlier), row(None, later))
    assert _newer(change("0055AED6", later), row("0055AED6", earlier))  # LocalStack
    assert not _newer(change("0055AED6", earlier), row("0055AED6", later))
    assert _newer(change(None, T0), row(None, T0))  # ties re-apply: idempotent
    assert _newer(change("01", T0), None)
