"""Tests for gateway.storage.s3events — the S3 event notification parser.

Fixtures in fixtures/s3events/:
* ``aws_*``   — AWS's documented record layout (eventVersion 2.1-2.3).
* ``minio_*`` — built field for field from MinIO's ``internal/event/event.go`` and
  ``internal/event/target/webhook.go`` (body ``{EventName, Key, Records}``, keys
  escaped with Go's ``url.QueryEscape``, sequencer = hex of mtime in ns, ``size``
  omitted when 0).
* ``moto_*``  — real bodies captured from moto 5.x ``mock_aws`` (S3 → SQS and
  S3 → SNS → SQS); ``test_moto_live_events_parse`` re-captures them on every run.
* ``sns_*``   — SNS HTTP confirmation messages as documented by AWS.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.changes import ChangeKind
from gateway.storage.s3events import (
    SEQUENCER_KEY_WIDTH,
    ParsedBody,
    S3EventError,
    S3Record,
    SnsConfirmation,
    parse_notification,
    sequencer_order_key,
)

FIXTURES = Path(__file__).parent / "fixtures" / "s3events"


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def parse_fixture(name: str) -> ParsedBody:
    return parse_notification(load(name))


def record(**overrides: Any) -> dict[str, Any]:
    """A minimal valid AWS record; nested keys via "s3.object.size"-style names."""
    rec: dict[str, Any] = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventTime": "2026-01-01T12:00:00.000Z",
        "eventName": "ObjectCreated:Put",
        "s3": {
            "bucket": {"name": "uploads"},
            "object": {"key": "a/b.txt", "size": 3, "eTag": "abc", "sequencer": "00AB"},
        },
    }
    for path, value in overrides.items():
        *parents, leaf = path.split(".")
        target = rec
        for part in parents:
            target = target[part]
        if value is _DELETE:
            del target[leaf]
        else:
            target[leaf] = value
    return rec


_DELETE = object()
_HANDLED_NAMES = [
    "ObjectCreated:Put",
    "s3:ObjectCreated:Post",
    "ObjectCreated:Copy",
    "s3:ObjectCreated:CompleteMultipartUpload",
    "ObjectRemoved:Delete",
    "s3:ObjectRemoved:DeleteMarkerCreated",
    "s3:ObjectRemoved:DeleteAllVersions",
    "LifecycleExpiration:Delete",
    "LifecycleExpiration:DeleteMarkerCreated",
]


def body_of(*records: dict[str, Any]) -> bytes:
    return json.dumps({"Records": list(records)}).encode()


def only(parsed: ParsedBody) -> S3Record:
    assert len(parsed.records) == 1, parsed
    return parsed.records[0]


# --- fixture shapes -----------------------------------------------------------


def test_aws_put() -> None:
    parsed = parse_fixture("aws_put.json")
    assert parsed.ignored == 0
    assert parsed.confirmations == []
    assert parsed.records == [
        S3Record(
            kind=ChangeKind.CREATED,
            event_name="ObjectCreated:Put",
            bucket="uploads",
            key="prj_1/user_123/résumé final + notes.pdf",
            size=1048576,
            etag="d41d8cd98f00b204e9800998ecf8427e",
            version_id="3HL4kqtJlcpXroDTDmjVBH40Nrjfkd",
            sequencer="0065A1B2C3D4E5F601",
            event_time=datetime(2026, 1, 1, 12, 0, tzinfo=UTC),
        )
    ]


def test_aws_mixed_records_kinds_and_ignored() -> None:
    parsed = parse_fixture("aws_mixed_records.json")
    got = [(r.event_name, r.kind, r.key, r.size, r.etag, r.version_id) for r in parsed.records]
    created, removed = ChangeKind.CREATED, ChangeKind.REMOVED
    assert got == [
        ("ObjectCreated:Post", created, "t1/post.bin", 5, "5d41402abc4b2a76b9719d911017c592", None),
        ("ObjectCreated:Copy", created, "t1/copy.bin", 0, "d41d8cd98f00b204e9800998ecf8427e", None),
        (
            "ObjectCreated:CompleteMultipartUpload",
            created,
            "t1/big.bin",
            5368709120,
            "b54357faf0632cce46e942fa68356b38-3",
            None,
        ),
        ("ObjectRemoved:Delete", removed, "t1/post.bin", None, None, None),
        (
            "ObjectRemoved:DeleteMarkerCreated",
            removed,
            "t1/copy.bin",
            None,
            None,
            "Ox1S8nOdLw8iXbzu9c2dfjRBdyPB9ai0",
        ),
        ("LifecycleExpiration:Delete", removed, "t1/old.bin", None, None, None),
        (
            "LifecycleExpiration:DeleteMarkerCreated",
            removed,
            "t1/older.bin",
            None,
            None,
            "nU3oyAaTYvTQLUOHqXB2hXVxVAw6MiPa",
        ),
    ]
    # ObjectRestore:Completed, ObjectTagging:Put, Replication:OperationFailedReplication
    assert parsed.ignored == 3
    assert [r.sequencer for r in parsed.records] == [f"0065A1B2C3D4E5F60{i}" for i in range(2, 9)]


@pytest.mark.parametrize(
    "name", ["aws_test_event.json", "moto_sqs_test_event.json", "moto_sns_test_event.json"]
)
def test_test_events_are_ignored(name: str) -> None:
    assert parse_fixture(name) == ParsedBody(records=[], ignored=1, confirmations=[])


def test_sns_subscription_confirmation() -> None:
    parsed = parse_fixture("sns_subscription_confirmation.json")
    assert parsed.records == []
    assert parsed.ignored == 0
    [conf] = parsed.confirmations
    assert conf.type == "SubscriptionConfirmation"
    assert conf.topic_arn == "arn:aws:sns:us-east-1:123456789012:uploads-events"
    assert conf.subscribe_url.startswith(
        "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn="
    )
    assert conf.token is not None and conf.token.startswith("2336412f37fb687f")


def test_sns_unsubscribe_confirmation() -> None:
    [conf] = parse_fixture("sns_unsubscribe_confirmation.json").confirmations
    assert conf.type == "UnsubscribeConfirmation"
    assert conf.topic_arn == "arn:aws:sns:us-east-1:123456789012:uploads-events"


def test_minio_put() -> None:
    assert only(parse_fixture("minio_put.json")) == S3Record(
        kind=ChangeKind.CREATED,
        event_name="ObjectCreated:Put",  # MinIO sends "s3:ObjectCreated:Put"
        bucket="uploads",
        key="prj_1/user_123/summer trip + été.jpg",
        size=204800,
        etag="5fc7298143efe1276d39a3466d4e255f",
        version_id=None,
        sequencer="1886999C3DFD4A00",
        event_time=datetime(2026, 1, 1, 12, 0, 0, 131000, tzinfo=UTC),
    )


def test_minio_empty_object_has_size_zero() -> None:
    # MinIO's Object.Size is `json:"size,omitempty"`: a 0-byte upload has no size field.
    assert b'"size"' not in load("minio_put_empty.json")
    rec = only(parse_fixture("minio_put_empty.json"))
    assert rec.kind is ChangeKind.CREATED
    assert rec.size == 0


def test_minio_complete_multipart_with_version() -> None:
    rec = only(parse_fixture("minio_complete_multipart.json"))
    assert rec.event_name == "ObjectCreated:CompleteMultipartUpload"
    assert (rec.kind, rec.size, rec.version_id) == (
        ChangeKind.CREATED,
        104857600,
        "f7c3a8f0-5a8e-4b49-9c7c-2b1f0e4d8a61",
    )


def test_minio_delete_has_no_size_or_etag() -> None:
    rec = only(parse_fixture("minio_delete.json"))
    assert (rec.kind, rec.event_name, rec.key) == (
        ChangeKind.REMOVED,
        "ObjectRemoved:Delete",
        "prj_1/user_123/summer trip + été.jpg",
    )
    assert rec.size is None
    assert rec.etag is None
    assert rec.sequencer is not None


def test_minio_delete_marker_is_removed() -> None:
    rec = only(parse_fixture("minio_delete_marker.json"))
    assert rec.kind is ChangeKind.REMOVED
    assert rec.event_name == "ObjectRemoved:DeleteMarkerCreated"
    assert rec.version_id == "0e1d2c3b-4a59-4687-9a8b-7c6d5e4f3a2b"


def test_minio_put_tagging_is_ignored() -> None:
    assert parse_fixture("minio_put_tagging.json") == ParsedBody(ignored=1)


def test_moto_put_via_sqs() -> None:
    rec = only(parse_fixture("moto_sqs_put.json"))
    assert rec.kind is ChangeKind.CREATED
    assert rec.bucket == "uploads"
    # moto quote_plus-es the whole key: "/" -> %2F, " " -> +, "+" -> %2B, "%" -> %25
    assert rec.key == "user_123/résumé final +1%2B.pdf"
    assert (rec.size, rec.etag) == (11, "5eb63bbbe01eeed093cb22bb8f5acdc3")
    # moto sends neither a sequencer nor a versionId; eventTime has milliseconds.
    assert rec.sequencer is None
    assert rec.version_id is None
    assert rec.event_time.tzinfo is UTC
    assert rec.event_time.microsecond % 1000 == 0


def test_moto_put_via_sns_matches_sqs() -> None:
    via_sns = only(parse_fixture("moto_sns_put.json"))
    via_sqs = only(parse_fixture("moto_sqs_put.json"))
    assert via_sns.key == via_sqs.key
    assert (via_sns.kind, via_sns.size, via_sns.etag) == (via_sqs.kind, via_sqs.size, via_sqs.etag)


def test_moto_complete_multipart_and_delete() -> None:
    mpu = only(parse_fixture("moto_sqs_complete_multipart.json"))
    assert (mpu.kind, mpu.event_name, mpu.key, mpu.size) == (
        ChangeKind.CREATED,
        "ObjectCreated:CompleteMultipartUpload",
        "user_123/big.bin",
        10,
    )
    deleted = only(parse_fixture("moto_sqs_delete.json"))
    assert deleted.kind is ChangeKind.REMOVED
    # Unlike AWS, moto's delete events carry the deleted object's size.
    assert deleted.size == 11


def test_every_fixture_parses_the_same_from_bytes_and_str() -> None:
    names = sorted(p.name for p in FIXTURES.glob("*.json"))
    assert len(names) >= 17
    for name in names:
        raw = load(name)
        from_bytes = parse_notification(raw)
        assert from_bytes == parse_notification(raw.decode()), name
        # Every fixture yields something: a record, an ignored event or a confirmation.
        assert from_bytes.records or from_bytes.ignored or from_bytes.confirmations, name


def test_sqs_body_holding_an_sns_envelope_string() -> None:
    # What the SQS worker sees without raw message delivery: the envelope as a str.
    inner = {"Records": [record()]}
    envelope = {"Type": "Notification", "TopicArn": "arn:x", "Message": json.dumps(inner)}
    assert only(parse_notification(json.dumps(envelope))).key == "a/b.txt"


def test_many_records_and_non_s3_records() -> None:
    body = body_of(
        record(**{"s3.object.key": "one"}),
        {"eventSource": "aws:sqs", "eventName": "INSERT", "eventTime": 12},
        {"eventSource": "aws:dynamodb", "eventName": "INSERT", "dynamodb": {"Keys": {}}},
        record(**{"s3.object.key": "two", "eventName": "ObjectRemoved:Delete"}),
    )
    parsed = parse_notification(body)
    assert [(r.key, r.kind) for r in parsed.records] == [
        ("one", ChangeKind.CREATED),
        ("two", ChangeKind.REMOVED),
    ]
    assert parsed.ignored == 2


def test_ignored_s3_event_types_are_not_validated() -> None:
    # An event type we skip anyway must not reject the batch for its odd fields.
    body = body_of(
        record(**{"eventName": "ObjectAcl:Put", "s3.object.size": "n/a"}),
        record(**{"eventName": "s3:Scanner:ManyVersions", "s3": _DELETE}),
        record(**{"eventName": "ObjectRemoved:NoOP"}),
        record(),
    )
    parsed = parse_notification(body)
    assert parsed.ignored == 3
    assert len(parsed.records) == 1


def test_empty_records_list() -> None:
    assert parse_notification(b'{"Records": []}') == ParsedBody()


# --- keys -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        ("a+b", "a b"),
        ("a%2Bb", "a+b"),
        ("a%252B", "a%2B"),
        ("dir%2Ffile.txt", "dir/file.txt"),
        ("dir/file.txt", "dir/file.txt"),
        ("caf%C3%A9", "café"),
        ("%E2%9C%93+%F0%9F%98%80", "✓ 😀"),
        ("%E6%97%A5%E6%9C%AC%E8%AA%9E.txt", "日本語.txt"),
        ("100%25", "100%"),
        ("tab%09and%0Anewline", "tab\tand\nnewline"),
    ],
)
def test_key_is_url_decoded(encoded: str, decoded: str) -> None:
    assert only(parse_notification(body_of(record(**{"s3.object.key": encoded})))).key == decoded


@given(
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=60),
)
def test_any_key_round_trips(key: str) -> None:
    body = body_of(record(**{"s3.object.key": quote_plus(key, safe="/")}))
    assert only(parse_notification(body)).key == key


@pytest.mark.parametrize("encoded", ["%FF", "bad%C3", "%ED%A0%80"])
def test_key_that_is_not_utf8_is_rejected(encoded: str) -> None:
    with pytest.raises(S3EventError, match="percent-encoded UTF-8"):
        parse_notification(body_of(record(**{"s3.object.key": encoded})))


def test_empty_key_and_bucket_are_rejected() -> None:
    with pytest.raises(S3EventError, match="key is empty"):
        parse_notification(body_of(record(**{"s3.object.key": ""})))
    with pytest.raises(S3EventError, match="bucket name is empty"):
        parse_notification(body_of(record(**{"s3.bucket.name": ""})))


# --- optional fields ------------------------------------------------------------


def test_missing_size_is_none_except_for_minio_creates() -> None:
    aws_put = record(**{"s3.object.size": _DELETE})
    minio_put = record(**{"s3.object.size": _DELETE, "eventSource": "minio:s3"})
    minio_delete = record(
        **{
            "s3.object.size": _DELETE,
            "eventSource": "minio:s3",
            "eventName": "s3:ObjectRemoved:Delete",
        }
    )
    sizes = [r.size for r in parse_notification(body_of(aws_put, minio_put, minio_delete)).records]
    assert sizes == [None, 0, None]


def test_null_and_empty_optionals() -> None:
    rec = only(
        parse_notification(
            body_of(
                record(
                    **{
                        "s3.object.size": None,
                        "s3.object.eTag": '""',
                        "s3.object.versionId": None,
                        "s3.object.sequencer": "",
                    }
                )
            )
        )
    )
    assert (rec.size, rec.etag, rec.version_id, rec.sequencer) == (None, None, None, None)


def test_etag_quotes_are_stripped_and_version_kept() -> None:
    rec = only(
        parse_notification(
            body_of(record(**{"s3.object.eTag": '"abc-2"', "s3.object.versionId": "null"}))
        )
    )
    assert rec.etag == "abc-2"
    assert rec.version_id == "null"  # the real id of a null-version object


@pytest.mark.parametrize(("sent", "kept"), [("00ab", "00ab"), ("xyz", None), ("0x1F", None)])
def test_sequencer_kept_only_when_hex(sent: str, kept: str | None) -> None:
    assert (
        only(parse_notification(body_of(record(**{"s3.object.sequencer": sent})))).sequencer == kept
    )


def test_localstack_constant_sequencer_is_kept() -> None:
    body = body_of(*(record(**{"s3.object.sequencer": "0055AED6DCD90281E5"}) for _ in range(2)))
    first, second = parse_notification(body).records
    assert first.sequencer == second.sequencer == "0055AED6DCD90281E5"


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ("2026-01-01T12:00:00.000Z", datetime(2026, 1, 1, 12, tzinfo=UTC)),  # AWS, moto
        ("2026-01-01T12:00:00.123Z", datetime(2026, 1, 1, 12, 0, 0, 123000, tzinfo=UTC)),  # MinIO
        ("2019-10-22T09:27:27Z", datetime(2019, 10, 22, 9, 27, 27, tzinfo=UTC)),  # old MinIO
        ("2026-01-01T12:00:00.123456789Z", datetime(2026, 1, 1, 12, 0, 0, 123457, tzinfo=UTC)),
        ("2026-01-01T14:00:00+02:00", datetime(2026, 1, 1, 12, tzinfo=UTC)),
        ("2026-01-01T12:00:00", datetime(2026, 1, 1, 12, tzinfo=UTC)),  # naive: read as UTC
    ],
)
def test_event_time_formats(sent: str, expected: datetime) -> None:
    got = only(parse_notification(body_of(record(eventTime=sent)))).event_time
    assert got == expected
    assert got.utcoffset() == timedelta(0)
    assert got.tzinfo is UTC


# --- malformed input --------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"not json", b"\xff\xfe{}", b'{"Records": [}', "{'Records': []}"],
)
def test_bad_json(body: bytes | str) -> None:
    with pytest.raises(S3EventError, match="not valid JSON"):
        parse_notification(body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[]", "Expected `object`, got `array`"),
        (b"[1,2", "Expected `object`, got `array`"),
        (b"null", "Expected `object`, got `null`"),
        (b"5", "Expected `object`"),
        (b"{}", "expected a body with Records"),
        (b'{"Event": "s3:Other"}', "expected a body with Records"),
        (b'{"Records": {}}', r"at `\$.Records`"),
        (b'{"Records": [5]}', r"Records\[0\]: Expected `object`, got `int`"),
        (b'{"Type": "Notification"}', "SNS Notification has no Message"),
        (b'{"Type": "Notification", "Message": {"Records": []}}', r"at `\$.Message`"),
        (b'{"Type": "Notification", "Message": "{oops"}', "SNS Message: body is not valid JSON"),
        (
            json.dumps({"Type": "Notification", "Message": json.dumps({"Type": "Notification"})}),
            "SNS envelope inside an SNS message",
        ),
        (b'{"Type": "SubscriptionConfirmation", "TopicArn": "arn:x"}', "lacks SubscribeURL"),
    ],
)
def test_malformed_envelopes(body: bytes | str, message: str) -> None:
    with pytest.raises(S3EventError, match=message):
        parse_notification(body)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"s3.object.size": "12"},
            r"Records\[1\]: Expected `int \| null`, got `str` - at `\$.s3.object.size`",
        ),
        ({"s3.object.size": 1.5}, "at `\\$.s3.object.size`"),
        ({"s3.object.size": True}, "at `\\$.s3.object.size`"),
        ({"s3.object.size": -1}, "at `\\$.s3.object.size`"),
        ({"s3.object.key": 5}, "at `\\$.s3.object.key`"),
        ({"s3.object.key": _DELETE}, "missing required field `key`"),
        ({"s3.bucket": _DELETE}, "missing required field `bucket`"),
        ({"s3.object.eTag": 7}, "at `\\$.s3.object.eTag`"),
        ({"s3.object.sequencer": 255}, "at `\\$.s3.object.sequencer`"),
        ({"eventTime": "yesterday"}, "at `\\$.eventTime`"),
        ({"eventTime": 1767268800}, "at `\\$.eventTime`"),
        ({"eventTime": _DELETE}, "ObjectCreated:Put record has no eventTime"),
        ({"eventTime": "0001-01-01T00:00:00+01:00"}, "eventTime is out of range"),
        ({"eventName": _DELETE}, "S3 event record has no eventName"),
        ({"eventName": 3}, "at `\\$.eventName`"),
        ({"eventSource": 3}, "at `\\$.eventSource`"),
        ({"s3": _DELETE}, "ObjectCreated:Put record has no s3 object"),
        ({"s3": []}, "at `\\$.s3`"),
    ],
)
def test_wrong_types_in_s3_records(overrides: dict[str, Any], message: str) -> None:
    body = body_of(record(), record(**overrides))
    with pytest.raises(S3EventError, match=message) as info:
        parse_notification(body)
    assert "Records[1]" in str(info.value)


def test_errors_inside_sns_say_so() -> None:
    inner = {"Records": [record(**{"s3.object.size": "big"})]}
    envelope = {"Type": "Notification", "Message": json.dumps(inner)}
    with pytest.raises(S3EventError, match=r"^SNS Message: Records\[0\]: .*size"):
        parse_notification(json.dumps(envelope))


def test_deeply_nested_body_is_an_s3_event_error() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    for body in (b'{"Records": [' + deep + b"]}", b'{"x": ' + deep + b"}"):
        with pytest.raises(S3EventError, match="nested too deeply"):
            parse_notification(body)


def test_s3_event_error_is_a_value_error() -> None:
    assert issubclass(S3EventError, ValueError)


# --- property tests: only S3EventError or success ------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=12)
)
json_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_EVENT_NAMES = [*_HANDLED_NAMES, "ObjectRestore:Post", "s3:ObjectCreated:PutTagging", "", "x"]
_offsets = st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12))])


def _mostly(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``usual`` about seven times in eight, else ``odd``."""
    return st.integers(0, 7).flatmap(lambda n: odd if n == 0 else usual)


_times = _mostly(
    st.datetimes(timezones=_offsets).map(datetime.isoformat)
    | st.sampled_from(["2026-01-01T12:00:00.000Z", "2026-01-01T12:00:00"]),
    st.sampled_from(
        [
            "2026-13-01T00:00:00Z",
            "yesterday",
            "",
            "0001-01-01T00:00:00+01:00",  # UTC would be year 0
            "9999-12-31T23:59:59-01:00",  # UTC would be year 10000
        ]
    ),
)
_keys = _mostly(
    st.text(min_size=1, max_size=20).map(quote_plus),
    st.text(alphabet="%+/aé0123456789ABCDEF", max_size=12)
    | st.sampled_from(["%FF", "a%C3", "%E2%82", "%ED%A0%80", "%", "%%", "%zz"]),
)
_valid_records = st.fixed_dictionaries(
    {
        "eventName": st.sampled_from(_EVENT_NAMES),
        "eventTime": _times,
        "s3": st.fixed_dictionaries(
            {
                "bucket": st.fixed_dictionaries({"name": st.text(min_size=1, max_size=8)}),
                "object": st.fixed_dictionaries(
                    {"key": _keys},
                    optional={
                        "size": st.integers(min_value=0, max_value=2**63),
                        "eTag": st.none() | st.text(max_size=8),
                        "versionId": st.none() | st.text(max_size=8),
                        "sequencer": st.text(alphabet="0123456789abcdefABCDEFxyz", max_size=20),
                    },
                ),
            }
        ),
    },
    optional={"eventSource": st.sampled_from(["aws:s3", "minio:s3", "ceph:s3", "aws:sqs"])},
)
_MUTABLE_PATHS = [
    "eventSource",
    "eventName",
    "eventTime",
    "s3",
    "s3.bucket",
    "s3.bucket.name",
    "s3.object",
    "s3.object.key",
    "s3.object.size",
    "s3.object.eTag",
    "s3.object.versionId",
    "s3.object.sequencer",
]


def _mutate(rec: dict[str, Any], path: str | None, value: Any) -> dict[str, Any]:
    """Replace (or with _DELETE remove) the value at one dotted path, if it exists."""
    if path is None:
        return rec
    *parents, leaf = path.split(".")
    target: Any = rec
    for part in parents:
        target = target.get(part) if isinstance(target, dict) else None
    if isinstance(target, dict):
        if value is _DELETE:
            target.pop(leaf, None)
        else:
            target[leaf] = value
    return rec


# A valid record, most often with one field replaced by any JSON value or removed.
_records = st.builds(
    _mutate,
    _valid_records,
    _mostly(st.none(), st.sampled_from(_MUTABLE_PATHS)),
    st.just(_DELETE) | json_values,
)
_s3_bodies = st.fixed_dictionaries({"Records": st.lists(_records, min_size=1, max_size=3)})
_sns_bodies = st.fixed_dictionaries(
    {
        "Type": _mostly(
            st.sampled_from(
                ["Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"]
            ),
            st.just("Other") | json_values,
        ),
        "Message": _mostly(
            (_s3_bodies | st.just({"Event": "s3:TestEvent"})).map(json.dumps), json_values
        ),
        "SubscribeURL": _mostly(st.text(min_size=1, max_size=8), json_values),
        "TopicArn": _mostly(st.text(min_size=1, max_size=8), json_values),
    },
    optional={"Token": st.text(max_size=8) | json_values},
)
bodies = _s3_bodies | _sns_bodies | json_values


def _check_only_s3_event_error(body: bytes | str) -> None:
    try:
        parsed = parse_notification(body)
    except S3EventError as exc:
        assert str(exc)
        return
    assert isinstance(parsed, ParsedBody)
    assert parsed.ignored >= 0
    for rec in parsed.records:
        assert isinstance(rec.kind, ChangeKind)
        assert rec.key
        assert rec.bucket
        assert rec.size is None or rec.size >= 0
        assert rec.event_time.tzinfo is UTC
        assert not rec.event_name.startswith("s3:")
        if rec.sequencer is not None:
            sequencer_order_key(rec.sequencer)
    for conf in parsed.confirmations:
        assert isinstance(conf, SnsConfirmation)
        assert conf.subscribe_url
        assert conf.topic_arn


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(bodies)
def test_random_json_only_raises_s3_event_error(body: Any) -> None:
    encoded = json.dumps(body)
    _check_only_s3_event_error(encoded)
    _check_only_s3_event_error(encoded.encode())


@given(st.binary(max_size=200) | st.text(max_size=200))
def test_random_bytes_only_raise_s3_event_error(body: bytes | str) -> None:
    _check_only_s3_event_error(body)


# --- sequencer ordering -------------------------------------------------------------


def test_sequencer_key_pads_and_upper_cases() -> None:
    key = sequencer_order_key("0055aed6dcd90281e5")
    assert key == "0055AED6DCD90281E5".ljust(SEQUENCER_KEY_WIDTH, "0")
    assert len(key) == SEQUENCER_KEY_WIDTH


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        ("0065A1B2C3D4E5F601", "0065A1B2C3D4E5F602"),
        ("0065A1B2C3D4E5F6", "0065A1B2C3D4E5F601"),  # shorter = right-padded with zeros
        ("100", "FF"),  # "100" vs "FF0": not numeric order, AWS's padded lexical order
        ("9", "a"),  # digits before letters, case-insensitive
        ("00ff", "00FF01"),
        ("1" * 40, "1" * 40 + "1"),  # longer than the padding width
    ],
)
def test_sequencer_order(earlier: str, later: str) -> None:
    assert sequencer_order_key(earlier) < sequencer_order_key(later)


@pytest.mark.parametrize(("a", "b"), [("0A", "0A00"), ("ab", "AB"), ("1" * 40, "1" * 40 + "000")])
def test_sequencers_equal_after_padding(a: str, b: str) -> None:
    assert sequencer_order_key(a) == sequencer_order_key(b)


@pytest.mark.parametrize("bad", ["", "xyz", "0x1F", " 1F", "1_F", "\uff11"])
def test_sequencer_key_rejects_non_hex(bad: str) -> None:
    with pytest.raises(ValueError, match="not a hexadecimal string"):
        sequencer_order_key(bad)


_hex = st.text(alphabet="0123456789abcdefABCDEF", min_size=1, max_size=48)


@given(_hex, _hex)
def test_sequencer_key_matches_the_aws_rule(a: str, b: str) -> None:
    # AWS: right-pad the shorter with zeros, then compare lexicographically.
    width = max(len(a), len(b))
    pa, pb = a.upper().ljust(width, "0"), b.upper().ljust(width, "0")
    ka, kb = sequencer_order_key(a), sequencer_order_key(b)
    assert (ka < kb, ka == kb) == (pa < pb, pa == pb)


# --- moto, live -------------------------------------------------------------------------


def test_moto_live_events_parse() -> None:
    """Capture fresh moto notifications (S3 → SQS, in process) and parse them.

    Guards the ``moto_*`` fixtures and the docstring's notes against moto upgrades.
    """
    boto3 = pytest.importorskip("boto3")
    moto = pytest.importorskip("moto")

    with moto.mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        s3.create_bucket(Bucket="uploads")
        queue_url = sqs.create_queue(QueueName="events")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        s3.put_bucket_notification_configuration(
            Bucket="uploads",
            NotificationConfiguration={
                "QueueConfigurations": [
                    {"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}
                ]
            },
        )
        key = "t/ä b+c%2B.txt"
        before = datetime.now(UTC) - timedelta(seconds=5)
        s3.put_object(Bucket="uploads", Key=key, Body=b"12345")
        s3.delete_object(Bucket="uploads", Key=key)
        parsed = ParsedBody()
        while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get(
            "Messages", []
        ):
            for message in messages:
                one = parse_notification(message["Body"])
                parsed.records += one.records
                parsed.ignored += one.ignored
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])

    assert parsed.ignored == 1  # the s3:TestEvent sent when the configuration is saved
    assert [(r.kind, r.key, r.size) for r in parsed.records] == [
        (ChangeKind.CREATED, key, 5),
        (ChangeKind.REMOVED, key, 5),
    ]
    for rec in parsed.records:
        assert rec.sequencer is None
        assert before <= rec.event_time <= datetime.now(UTC) + timedelta(seconds=5)
