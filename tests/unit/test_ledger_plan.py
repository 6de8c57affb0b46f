"""gateway.ledger.plan: what a batch of object changes writes, without Postgres or Redis
(the rules in the module's docstring; tests/integration/test_ledger_concurrency.py and
test_events.py run the same batches through the real transaction)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from gateway.changes import ChangeKind
from gateway.ledger.plan import (
    Batch,
    ObjectChange,
    ObjectRow,
    Policy,
    UploadOutcome,
    UploadRow,
    Writes,
    is_newer,
    plan_batch,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
UPL = "upl_0123456789abcdef01234567"
KEY = f"prj_a/t/{UPL}/report.pdf"
PAIR = ("prj_a", "t")


def created(size: int, seq: str | None = None, t: datetime = T0, key: str = KEY) -> ObjectChange:
    return ObjectChange(
        kind=ChangeKind.CREATED, key=key, event_time=t, size=size, etag="e", sequencer=seq
    )


def removed(seq: str | None = None, t: datetime = T0, key: str = KEY) -> ObjectChange:
    return ObjectChange(kind=ChangeKind.REMOVED, key=key, event_time=t, sequencer=seq)


def stored(size: int, seq: str | None = None, t: datetime = T0) -> ObjectRow:
    return ObjectRow("prj_a", "t", UPL, size, "e", None, True, seq, t)


def tombstone(seq: str | None = None, t: datetime = T0) -> ObjectRow:
    return ObjectRow("prj_a", "t", UPL, 0, None, None, False, seq, t)


def pending(
    declared: int | None = 100, status: str = "pending", project: str = "prj_a"
) -> UploadRow:
    return UploadRow(UPL, project, status, declared)


def plan(
    *changes: ObjectChange,
    row: ObjectRow | None = None,
    upload: UploadRow | None = None,
    policy: Policy = Policy(),  # noqa: B008  (frozen)
    cancel_pending: bool = False,
) -> Writes:
    return plan_batch(
        Batch.of(changes),
        {KEY: row} if row else {},
        {UPL: upload} if upload else {},
        policy,
        cancel_pending=cancel_pending,
    )


# --- which change is newer ------------------------------------------------------------


def test_the_sequencer_orders_when_both_sides_have_different_ones() -> None:
    assert is_newer(created(1, "0002", T0), stored(1, "0001", T0 + timedelta(days=1)))
    assert not is_newer(created(1, "0001", T0 + timedelta(days=1)), stored(1, "0002", T0))


def test_time_orders_without_sequencers_or_with_a_constant_one() -> None:
    later, earlier = T0 + timedelta(milliseconds=1), T0
    assert is_newer(created(1, None, later), stored(1, None, earlier))
    assert not is_newer(created(1, None, earlier), stored(1, None, later))
    assert is_newer(created(1, "0055AED6", later), stored(1, "0055AED6", earlier))  # LocalStack
    assert not is_newer(created(1, "0055AED6", earlier), stored(1, "0055AED6", later))
    assert not is_newer(created(1, "01", earlier), stored(1, None, later))  # one side only
    assert is_newer(created(1, None, T0), stored(1, None, T0))  # ties re-apply: idempotent
    assert is_newer(created(1, "01", T0), None)


# --- which keys -----------------------------------------------------------------------


def test_keys_outside_the_layout_or_of_unknown_projects_are_ignored() -> None:
    batch = Batch.of(
        [created(1, key="random"), created(1, key="prj_a/only"), created(1), removed()]
    )
    assert batch.ignored == 2
    assert list(batch.changes) == [KEY] and len(batch.changes[KEY]) == 2
    assert batch.pairs() == [PAIR] and batch.upload_ids() == [UPL]
    other = "prj_b/u/manual/x.bin"  # written by other means: the tenant's, no upload
    both = Batch.of([created(5, key=other), created(1)])
    assert both.upload_ids() == [UPL] and both.pairs() == [PAIR, ("prj_b", "u")]
    known = both.only_projects({"prj_a"})
    assert list(known.changes) == [KEY] and known.ignored == 1 and known.pairs() == [PAIR]
    assert both.only_projects({"prj_a", "prj_b"}) is both


# --- usage ----------------------------------------------------------------------------


def test_a_new_object_is_charged_and_inserted() -> None:
    w = plan(created(40, "01"))
    assert (w.applied, w.stale) == (1, 0)
    assert w.objects == {KEY: ObjectRow("prj_a", "t", UPL, 40, "e", None, True, "01", T0)}
    assert w.new_keys == [KEY]
    assert w.usage == {PAIR: (40, 1)}
    assert w.touched == {PAIR}


def test_an_overwrite_charges_only_the_difference() -> None:
    w = plan(created(25, "02"), row=stored(40, "01"))
    assert w.usage == {PAIR: (-15, 0)}
    assert w.new_keys == []  # the row exists: updated, not inserted
    assert w.objects[KEY].size == 25


def test_a_removal_refunds_and_leaves_a_tombstone_an_older_creation_cannot_undo() -> None:
    w = plan(removed("02", T0 + timedelta(seconds=5)), row=stored(40, "01"))
    assert w.usage == {PAIR: (-40, -1)}
    assert w.objects[KEY] == tombstone("02", T0 + timedelta(seconds=5))
    late = plan(created(40, "01"), row=w.objects[KEY])  # the creation, delivered late
    assert (late.applied, late.stale) == (0, 1)
    assert late.objects == {} and late.usage == {}
    assert late.touched == {PAIR}  # its usage is still pushed to Redis (repairs a retry)


def test_a_removal_keeps_the_sequencer_and_the_latest_time_it_knows() -> None:
    w = plan(removed(None, T0), row=stored(40, "07", T0 + timedelta(seconds=1)))
    # no sequencer on the removal and an older time: not newer, nothing changes
    assert w.stale == 1 and w.objects == {}
    w = plan(removed(None, T0 + timedelta(seconds=2)), row=stored(40, "07", T0))
    assert w.objects[KEY] == tombstone("07", T0 + timedelta(seconds=2))


def test_a_removal_of_an_unknown_key_writes_a_tombstone_and_moves_no_usage() -> None:
    w = plan(removed("05"))
    assert w.objects[KEY] == tombstone("05") and w.new_keys == [KEY]
    assert w.usage == {}  # zero deltas are left out


def test_usage_adds_up_per_tenant_across_keys() -> None:
    a, b = "prj_a/t/manual/a", "prj_a/t/manual/b"
    other = "prj_a/u/manual/c"
    w = plan_batch(
        Batch.of([created(3, key=a), created(4, key=b), created(5, key=other), removed(key=a)]),
        {},
        {},
        Policy(),
    )
    assert w.usage == {PAIR: (4, 1), ("prj_a", "u"): (5, 1)}
    assert list(w.objects) == [a, b, other]  # keys in order of arrival
    assert w.uploads == {} and w.release == {}  # none of them belongs to an upload


# --- order and duplicates within a batch ----------------------------------------------


def test_a_keys_changes_apply_in_sequencer_order_whatever_their_arrival() -> None:
    w = plan(removed("03"), created(9, "02"), created(7, "01"))
    assert (w.applied, w.stale) == (3, 0)
    assert w.objects[KEY] == tombstone("03")
    assert w.usage == {}  # created twice and removed: nothing stored


def test_without_sequencers_the_event_time_orders() -> None:
    t1 = T0 + timedelta(milliseconds=1)
    w = plan(created(9, None, t1), removed(None, T0))  # the removal first, then this
    assert w.objects[KEY].present and w.objects[KEY].size == 9
    assert (w.applied, w.stale) == (2, 0)
    assert w.usage == {PAIR: (9, 1)}


def test_a_duplicate_in_a_batch_applies_twice_and_charges_once() -> None:
    w = plan(created(40, "01"), created(40, "01"))
    assert (w.applied, w.stale) == (2, 0)  # a tie re-applies the same state
    assert w.usage == {PAIR: (40, 1)}
    assert w.new_keys == [KEY]


def test_a_redelivered_batch_changes_nothing() -> None:
    first = plan(created(40, "01"), upload=pending())
    again = plan(created(40, "01"), row=first.objects[KEY], upload=pending(status="completed"))
    assert again.usage == {} and again.new_keys == [] and again.uploads == {}
    assert again.objects == first.objects  # the same row, written again
    assert again.release == {PAIR: [UPL]}  # its reservation, if any is left, ends


@given(
    st.permutations(range(6)),
    st.lists(st.integers(1, 5), min_size=6, max_size=6),
    st.lists(st.booleans(), min_size=6, max_size=6),
    st.integers(1, 6),
)
def test_any_order_and_batching_ends_in_the_newest_state_with_usage_that_adds_up(
    order: list[int], sizes: list[int], removals: list[bool], batch_size: int
) -> None:
    changes = [
        removed(f"{i:02}") if removals[i] else created(sizes[i], f"{i:02}") for i in range(6)
    ]
    row: ObjectRow | None = None
    bytes_, files = 0, 0
    arrival = [changes[i] for i in order]
    for start in range(0, 6, batch_size):
        w = plan(*arrival[start : start + batch_size], row=row)
        row = w.objects.get(KEY, row)
        moved = w.usage.get(PAIR, (0, 0))
        bytes_, files = bytes_ + moved[0], files + moved[1]
    newest = changes[-1]
    assert row is not None and row.sequencer == newest.sequencer
    assert row.present == (newest.kind is ChangeKind.CREATED)
    assert (bytes_, files) == ((row.size, 1) if row.present else (0, 0))


# --- uploads --------------------------------------------------------------------------


def test_a_stored_object_completes_its_pending_upload_and_ends_the_reservation() -> None:
    w = plan(created(40, "01"), upload=pending(declared=100))
    assert w.uploads == {UPL: UploadOutcome(40, "completed", False)}
    assert w.release == {PAIR: [UPL]}
    assert w.delete == []


def test_larger_than_declared_is_rejected_deleted_and_refunded_by_default() -> None:
    w = plan(created(25, "01"), upload=pending(declared=10))
    assert w.uploads == {UPL: UploadOutcome(25, "rejected", True)}
    assert w.delete == [KEY]
    assert w.usage == {}  # charged and refunded in the same batch
    assert w.objects[KEY] == tombstone("01")  # gone, as far as the ledger goes
    assert w.new_keys == [KEY]
    assert w.release == {PAIR: [UPL]}


def test_a_rejected_overwrite_refunds_what_the_key_held() -> None:
    w = plan(created(25, "02"), row=stored(5, "01"), upload=pending(declared=10))
    assert w.delete == [KEY] and w.usage == {PAIR: (-5, -1)}


def test_larger_than_declared_is_kept_and_flagged_under_the_keep_policy() -> None:
    w = plan(created(25, "01"), upload=pending(declared=10), policy=Policy(oversize="keep"))
    assert w.uploads == {UPL: UploadOutcome(25, "completed", True)}
    assert w.delete == [] and w.usage == {PAIR: (25, 1)}
    assert w.objects[KEY].present


def test_exactly_the_declared_size_or_no_declared_size_is_not_oversize() -> None:
    assert plan(created(10), upload=pending(declared=10)).uploads[UPL].flagged is False
    assert plan(created(10**12), upload=pending(declared=None)).uploads[UPL] == UploadOutcome(
        10**12, "completed", False
    )


def test_a_removal_cancels_the_pending_upload_only_when_asked() -> None:
    asked = plan(removed("01"), upload=pending(), cancel_pending=True)
    assert asked.uploads == {UPL: UploadOutcome(0, "cancelled", False)}
    assert asked.release == {PAIR: [UPL]}
    left = plan(removed("01"), upload=pending())
    assert left.uploads == {} and left.release == {}  # stays pending; it expires


def test_a_stale_removal_does_not_cancel_an_object_that_is_stored() -> None:
    w = plan(removed("01"), row=stored(40, "02"), upload=pending(), cancel_pending=True)
    assert w.stale == 1
    assert w.uploads == {UPL: UploadOutcome(40, "completed", False)}


def test_created_and_removed_again_the_upload_completed_with_nothing_stored() -> None:
    w = plan(created(40, "01"), removed("02"), upload=pending())
    assert w.uploads == {UPL: UploadOutcome(40, "completed", False)}
    assert w.usage == {}


def test_a_removal_that_overtook_the_creation_still_completes_the_upload() -> None:
    w = plan(created(40, "01"), row=tombstone("02"), upload=pending())
    assert w.stale == 1
    assert w.uploads == {UPL: UploadOutcome(40, "completed", False)}
    assert w.usage == {}


def test_an_upload_no_longer_pending_or_of_another_project_is_released_not_settled() -> None:
    for upload in (pending(status="expired"), pending(project="prj_other")):
        w = plan(created(40, "01"), upload=upload)
        assert w.uploads == {}
        assert w.release == {PAIR: [UPL]}
        assert w.usage == {PAIR: (40, 1)}  # the object is charged all the same


def test_an_upload_row_that_is_missing_settles_nothing() -> None:
    w = plan(created(40, "01"))
    assert w.uploads == {} and w.release == {} and w.usage == {PAIR: (40, 1)}
