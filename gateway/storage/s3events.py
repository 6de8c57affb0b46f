"""Parse S3 event notifications into typed records — pure functions, no I/O.

One entry point, :func:`parse_notification`, is shared by the webhook endpoint
(``POST /api/storage/events/s3/``) and the SQS worker. It accepts every body shape
those two see:

* a raw S3 notification ``{"Records": [...]}`` (AWS ``eventVersion`` 2.x, also what
  an SQS queue receives straight from S3 or from SNS with raw message delivery);
* ``s3:TestEvent`` (``{"Service": "Amazon S3", "Event": "s3:TestEvent", ...}``), sent
  when a notification configuration is saved — counted as ignored;
* an SNS envelope: ``Type: Notification`` (its ``Message`` is one of the shapes
  above, as a JSON string) and ``SubscriptionConfirmation`` /
  ``UnsubscribeConfirmation`` (returned as :class:`SnsConfirmation`; the parser
  never visits the URL — and neither should the caller without checking its host);
* a MinIO webhook body ``{"EventName": ..., "Key": "bucket/key", "Records": [...]}``
  (only ``Records`` is read; MinIO posts one record per request).

What the different servers send (checked against their source or a live capture):

* **AWS** — ``eventName`` without the ``s3:`` prefix, ``eventTime`` like
  ``2026-01-01T12:00:00.000Z``, keys URL-encoded with ``+`` for space. Delete events
  carry no ``size`` and no ``eTag``; ``sequencer`` is set on PUTs and DELETEs.
* **MinIO** (``eventSource: "minio:s3"``) — ``eventName`` with the ``s3:`` prefix,
  keys encoded with Go's ``url.QueryEscape`` (``/`` → ``%2F``, space → ``+``),
  ``sequencer`` = upper-case hex of the object's mtime in Unix nanoseconds. Its
  ``size`` field is ``omitempty``, so a created 0-byte object arrives *without* a
  size: for MinIO CREATED records a missing size is therefore read as ``0``.
  Removed events carry no size or eTag. ``ObjectCreated:PutTagging`` /
  ``PutRetention`` / ``PutLegalHold`` / ``DeleteTagging`` change no bytes and are
  ignored, as is ``ObjectRemoved:NoOP`` (delete of a missing object);
  ``ObjectRemoved:DeleteAllVersions`` is REMOVED.
* **moto** (5.x, captured through ``mock_aws`` S3 → SQS and S3 → SNS → SQS) — no
  ``sequencer``, no ``versionId``, ``eventTime`` with milliseconds and ``Z``, keys
  ``quote_plus``-ed (``/`` → ``%2F``). Its delete events *do* carry ``size`` and
  ``eTag``; deleting a key in a versioned bucket (delete marker) sends no event;
  completing a multipart upload sends both ``ObjectCreated:Put`` and
  ``ObjectCreated:CompleteMultipartUpload`` for the same object. Consumers must
  therefore be idempotent and fall back to ``event_time`` when ``sequencer`` is None.
* **LocalStack** sends the constant sequencer ``"0055AED6DCD90281E5"`` on every
  event, so equal sequencers must never be taken to mean "same event" / "already
  applied": compare them only to discard events that are strictly older.

A REMOVED record that carries a ``version_id`` may concern a noncurrent version
(AWS ``ObjectRemoved:Delete`` / ``LifecycleExpiration:Delete`` of a specific
version): the consumer decides, by version, whether visible bytes went away. A
``DeleteMarkerCreated`` (its ``version_id`` is the marker's) removes the current
version from view, so it is REMOVED.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Final
from urllib.parse import unquote_plus

import msgspec

from gateway.changes import ChangeKind

__all__ = [
    "SEQUENCER_KEY_WIDTH",
    "ChangeKind",
    "ParsedBody",
    "S3EventError",
    "S3Record",
    "SnsConfirmation",
    "parse_notification",
    "sequencer_order_key",
]


class S3EventError(ValueError):
    """The body is not an S3 event notification this parser understands."""


# Event names (without the "s3:" prefix) that change what a bucket holds.
# Everything else — ObjectRestore, Replication, ObjectTagging, ObjectAcl,
# LifecycleTransition, IntelligentTiering, MinIO's ObjectAccessed/Scanner/
# PutTagging/NoOP, ... — is counted as ignored.
_KINDS: Final[dict[str, ChangeKind]] = {
    "ObjectCreated:Put": ChangeKind.CREATED,
    "ObjectCreated:Post": ChangeKind.CREATED,
    "ObjectCreated:Copy": ChangeKind.CREATED,
    "ObjectCreated:CompleteMultipartUpload": ChangeKind.CREATED,
    "ObjectRemoved:Delete": ChangeKind.REMOVED,
    "ObjectRemoved:DeleteMarkerCreated": ChangeKind.REMOVED,
    "ObjectRemoved:DeleteAllVersions": ChangeKind.REMOVED,  # MinIO
    "LifecycleExpiration:Delete": ChangeKind.REMOVED,
    "LifecycleExpiration:DeleteMarkerCreated": ChangeKind.REMOVED,
}

_SNS_CONFIRMATION_TYPES: Final = frozenset({"SubscriptionConfirmation", "UnsubscribeConfirmation"})
_HEX: Final = re.compile(r"[0-9A-Fa-f]+")

#: Width that :func:`sequencer_order_key` pads to. Real sequencers are 16-18
#: hex digits (AWS, MinIO), so this leaves ample room.
SEQUENCER_KEY_WIDTH: Final = 32


@dataclass(frozen=True, slots=True)
class S3Record:
    kind: ChangeKind
    #: What the server sent, minus a leading ``s3:``, e.g. ``ObjectCreated:Put``.
    event_name: str
    bucket: str
    #: Decoded with ``urllib.parse.unquote_plus`` (strict UTF-8).
    key: str
    #: None when the event carries none (AWS and MinIO delete events).
    size: int | None
    #: Without surrounding quotes; None when absent or empty.
    etag: str | None
    version_id: str | None
    #: As sent; None when missing, empty or not hexadecimal. Order with
    #: :func:`sequencer_order_key`, and only between events of the same key.
    sequencer: str | None
    #: Timezone-aware, in UTC.
    event_time: datetime


@dataclass(frozen=True, slots=True)
class SnsConfirmation:
    subscribe_url: str
    topic_arn: str
    #: ``SubscriptionConfirmation`` or ``UnsubscribeConfirmation``.
    type: str
    #: For the ``ConfirmSubscription`` API call (an alternative to visiting the URL).
    token: str | None = None


@dataclass(slots=True)
class ParsedBody:
    records: list[S3Record] = field(default_factory=list)
    #: Test events, non-S3 records and S3 event types that change no bytes.
    ignored: int = 0
    confirmations: list[SnsConfirmation] = field(default_factory=list)


def sequencer_order_key(seq: str) -> str:
    """Normalise an S3 sequencer so plain string comparison orders events of one key.

    AWS: "right pad the shorter value with zeros, and then do a lexicographical
    comparison". The result is upper-case hex right-padded with ``0`` to
    :data:`SEQUENCER_KEY_WIDTH` characters; a longer sequencer first loses its
    trailing zeros (which never change its order) and is otherwise kept whole, so
    the key stays exact for any length. Raises :class:`S3EventError` (a
    ``ValueError``) for anything that is not a non-empty hex string.
    """
    if not _HEX.fullmatch(seq):
        raise S3EventError(f"sequencer {seq!r} is not a hexadecimal string")
    return seq.upper().rstrip("0").ljust(SEQUENCER_KEY_WIDTH, "0")


# --- wire format (only the fields we read; msgspec skips the rest) -----------


class _WireBucket(msgspec.Struct):
    name: str


class _WireObject(msgspec.Struct, rename="camel"):
    key: str
    size: Annotated[int, msgspec.Meta(ge=0)] | None = None
    e_tag: str | None = None
    version_id: str | None = None
    sequencer: str | None = None


class _WireS3(msgspec.Struct):
    bucket: _WireBucket
    object: _WireObject


class _WireRecord(msgspec.Struct, rename="camel"):
    event_source: str | None = None
    event_name: str | None = None
    event_time: datetime | None = None
    s3: _WireS3 | None = None


class _PeekRecord(msgspec.Struct, rename="camel"):
    """Just enough of a record that failed validation to decide whether it matters."""

    event_source: object = None
    event_name: object = None


class _Envelope(msgspec.Struct):
    records: list[msgspec.Raw] | None = msgspec.field(default=None, name="Records")
    # SNS
    type: str | None = msgspec.field(default=None, name="Type")
    message: str | None = msgspec.field(default=None, name="Message")
    topic_arn: str | None = msgspec.field(default=None, name="TopicArn")
    subscribe_url: str | None = msgspec.field(default=None, name="SubscribeURL")
    token: str | None = msgspec.field(default=None, name="Token")
    # s3:TestEvent
    event: str | None = msgspec.field(default=None, name="Event")


_ENVELOPE: Final = msgspec.json.Decoder(_Envelope)
_RECORD: Final = msgspec.json.Decoder(_WireRecord)
_PEEK: Final = msgspec.json.Decoder(_PeekRecord)


def parse_notification(body: bytes | str) -> ParsedBody:
    """Parse one webhook request body or SQS message body.

    Raises :class:`S3EventError` (with a human message) on malformed input, and
    never any other exception for any ``bytes`` or ``str`` input.
    """
    out = ParsedBody()
    try:
        _parse_into(body, out, where="")
    except RecursionError:
        raise S3EventError("body is nested too deeply to be an S3 event notification") from None
    return out


def _parse_into(body: bytes | str, out: ParsedBody, *, where: str) -> None:
    try:
        env = _ENVELOPE.decode(body)
    except msgspec.ValidationError as exc:
        raise S3EventError(f"{where}not an S3 event notification: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise S3EventError(f"{where}body is not valid JSON: {exc}") from exc

    if env.type == "Notification":
        if where:
            raise S3EventError(f"{where}an SNS envelope inside an SNS message is not supported")
        if env.message is None:
            raise S3EventError("SNS Notification has no Message")
        _parse_into(env.message, out, where="SNS Message: ")
        return
    if env.type in _SNS_CONFIRMATION_TYPES:
        if where:
            raise S3EventError(f"{where}an SNS envelope inside an SNS message is not supported")
        if not env.subscribe_url or not env.topic_arn:
            raise S3EventError(f"SNS {env.type} lacks SubscribeURL or TopicArn")
        out.confirmations.append(
            SnsConfirmation(
                subscribe_url=env.subscribe_url,
                topic_arn=env.topic_arn,
                type=env.type,
                token=env.token,
            )
        )
        return
    if env.records is not None:
        for index, raw in enumerate(env.records):
            _parse_record(raw, out, where=f"{where}Records[{index}]: ")
        return
    if env.event == "s3:TestEvent":
        out.ignored += 1
        return
    raise S3EventError(
        f"{where}not an S3 event notification: expected a body with Records, "
        "an s3:TestEvent or an SNS message"
    )


def _parse_record(raw: msgspec.Raw, out: ParsedBody, *, where: str) -> None:
    try:
        rec = _RECORD.decode(raw)
    except msgspec.ValidationError as exc:
        # A record of another service, or an S3 event type we skip anyway, may look
        # different: ignore it. Otherwise the S3 record is malformed.
        try:
            peek = _PEEK.decode(raw)
        except msgspec.ValidationError:
            raise S3EventError(f"{where}{exc}") from exc
        source, name = peek.event_source, peek.event_name
        if (isinstance(source, str) and not source.endswith(":s3")) or (
            isinstance(name, str) and name.removeprefix("s3:") not in _KINDS
        ):
            out.ignored += 1
            return
        raise S3EventError(f"{where}{exc}") from exc

    source = rec.event_source
    if source is not None and not source.endswith(":s3"):
        out.ignored += 1  # another service's record ("aws:s3", "minio:s3", "ceph:s3" are ours)
        return
    if rec.event_name is None:
        raise S3EventError(f"{where}S3 event record has no eventName")
    event_name = rec.event_name.removeprefix("s3:")
    kind = _KINDS.get(event_name)
    if kind is None:
        out.ignored += 1
        return
    if rec.s3 is None:
        raise S3EventError(f"{where}{event_name} record has no s3 object")
    if rec.event_time is None:
        raise S3EventError(f"{where}{event_name} record has no eventTime")

    bucket = rec.s3.bucket.name
    if not bucket:
        raise S3EventError(f"{where}bucket name is empty")
    obj = rec.s3.object
    key = obj.key
    if "%" in key or "+" in key:
        try:
            key = unquote_plus(key, errors="strict")
        except UnicodeDecodeError as exc:
            raise S3EventError(f"{where}object key {key!r} is not percent-encoded UTF-8") from exc
    if not key:
        raise S3EventError(f"{where}object key is empty")

    size = obj.size
    if size is None and kind is ChangeKind.CREATED and source == "minio:s3":
        size = 0  # MinIO drops "size" when it is 0 (json omitempty)
    etag = (obj.e_tag.strip('"') or None) if obj.e_tag else None
    sequencer = obj.sequencer if obj.sequencer and _HEX.fullmatch(obj.sequencer) else None
    event_time = rec.event_time
    if event_time.tzinfo is None:
        event_time = event_time.replace(tzinfo=UTC)
    elif event_time.tzinfo is not UTC:
        try:
            event_time = event_time.astimezone(UTC)
        except OverflowError as exc:
            raise S3EventError(f"{where}eventTime is out of range") from exc

    out.records.append(
        S3Record(
            kind=kind,
            event_name=event_name,
            bucket=bucket,
            key=key,
            size=size,
            etag=etag,
            version_id=obj.version_id or None,
            sequencer=sequencer,
            event_time=event_time,
        )
    )
