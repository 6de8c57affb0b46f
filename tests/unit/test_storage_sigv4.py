"""The hand-written SigV4 presigner must give byte-identical results to botocore.

botocore reads the clock through ``get_current_datetime`` (imported by name into
``botocore.auth`` for the signers and ``botocore.signers`` for the POST policy
expiration), so freezing those two names gives botocore the same signing time we
pass as ``signed_at``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from typing import Any, Literal
from unittest import mock
from urllib.parse import parse_qsl, quote, urlsplit

import botocore.session
import pytest
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials, RefreshableCredentials
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gateway.storage import sigv4
from gateway.storage.base import Presigner
from gateway.storage.presigner import (
    BotocoreCredentialSource,
    S3Presigner,
    StaticCredentialSource,
    content_disposition_attachment,
)

Addressing = Literal["path", "virtual"]

REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-2", "cn-north-1"]
ENDPOINTS: list[str | None] = [
    None,
    "http://127.0.0.1:9000",
    "http://localhost:9000",
    "https://minio.example.com",
    "https://Minio.Example.com:443/",
    "http://minio:9000/s3/",
]
BUCKETS = ["uploads", "my-bucket", "my.bucket", "Legacy_Bucket"]
# botocore drops exactly this Content-Type from presigned URLs; we sign it (see below).
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"

# botocore is slow (client creation, ~1 ms per URL), so no per-example deadline.
SIGV4 = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=150)

# Key fragments that are easy to get wrong: reserved and unreserved characters,
# percent signs, spaces, non-ASCII, and empty path segments ("//", leading "/").
_FRAGMENTS = ["a", "Z9", "ü", "日本", "😀", "+", "%", "%2F", " ", "~", "/", "//", "?", "#"]
_FRAGMENTS += ["&", "=", ";", "*", "'", "(", ")", "!", "$", ",", ":", "@", "\\", ".", ".."]
_text = st.characters(exclude_categories=["Cs"])  # surrogates cannot be UTF-8 encoded
keys = st.one_of(
    st.text(_text, min_size=1, max_size=40),
    st.lists(st.sampled_from(_FRAGMENTS), min_size=1, max_size=12).map("".join),
)
access_keys = st.from_regex(r"(AKIA|ASIA)[A-Z0-9]{16}", fullmatch=True)
_b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
secret_keys = st.text(_b64, min_size=40, max_size=40)
tokens = st.one_of(st.none(), st.text(_b64, min_size=1, max_size=400))
content_types = st.one_of(
    st.sampled_from(["application/pdf", "text/plain; charset=utf-8", "image/png", "a  b "]),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=40),
).filter(lambda ct: ct != FORM_CONTENT_TYPE)
checksums = st.one_of(
    st.none(), st.binary(min_size=32, max_size=32).map(lambda b: base64.b64encode(b).decode())
)
_zones = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
)
signing_times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=_zones
)
filenames = st.text(st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=40)


@cache
def botocore_client(
    region: str,
    endpoint_url: str | None,
    addressing: Addressing,
    access_key: str,
    secret_key: str,
    token: str | None,
) -> Any:
    """A real botocore S3 client configured the way the presigner is."""
    session = botocore.session.get_session()
    return session.create_client(
        "s3",
        region_name=region,
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        aws_session_token=token,
        config=Config(signature_version="s3v4", s3={"addressing_style": addressing}),
    )


@contextmanager
def botocore_clock(moment: datetime) -> Iterator[None]:
    naive_utc = moment.astimezone(UTC).replace(tzinfo=None)
    with (
        mock.patch("botocore.auth.get_current_datetime", return_value=naive_utc),
        mock.patch("botocore.signers.get_current_datetime", return_value=naive_utc),
    ):
        yield


def make_presigner(
    bucket: str,
    region: str,
    endpoint_url: str | None,
    addressing: Addressing,
    access_key: str,
    secret_key: str,
    token: str | None,
) -> S3Presigner:
    return S3Presigner(
        bucket=bucket,
        region=region,
        endpoint_url=endpoint_url,
        addressing=addressing,
        credentials=StaticCredentialSource(access_key, secret_key, token),
    )


def is_ip_dotted_virtual(endpoint: str | None, bucket: str, addressing: str) -> bool:
    # The one place we deliberately differ from botocore (tested separately below).
    return endpoint == "http://127.0.0.1:9000" and "." in bucket and addressing == "virtual"


locations = st.tuples(
    st.sampled_from(BUCKETS),
    st.sampled_from(REGIONS),
    st.sampled_from(ENDPOINTS),
    st.sampled_from(["path", "virtual"]),
)
# Random credentials for the signer-level test; a fixed handful for tests that need a
# botocore client (creating one takes ~50 ms, so one per example would be slow).
identities = st.tuples(access_keys, secret_keys, tokens)
client_identities = st.sampled_from(
    [
        ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", None),
        ("ASIAZZZZZZZZZZZZZZZZ", "s3cr3t+/=", "FwoGZXIvYXdzE+/=" * 40),
        ("ASIA0000000000000000", "x" * 40, "tok~en_with-.unreserved"),
    ]
)


@SIGV4
@given(
    location=locations,
    identity=client_identities,
    key=keys,
    content_type=content_types,
    content_length=st.integers(min_value=0, max_value=5 * 1024**4),
    checksum=checksums,
    expires_in=st.integers(min_value=1, max_value=sigv4.MAX_EXPIRES),
    signed_at=signing_times,
)
def test_put_url_is_byte_identical_to_generate_presigned_url(
    location: tuple[str, str, str | None, Addressing],
    identity: tuple[str, str, str | None],
    key: str,
    content_type: str,
    content_length: int,
    checksum: str | None,
    expires_in: int,
    signed_at: datetime,
) -> None:
    bucket, region, endpoint, addressing = location
    assume(not is_ip_dotted_virtual(endpoint, bucket, addressing))
    ours = make_presigner(bucket, region, endpoint, addressing, *identity).presign_put(
        key,
        content_type=content_type,
        content_length=content_length,
        checksum_sha256=checksum,
        expires_in=expires_in,
        signed_at=signed_at,
    )

    params: dict[str, Any] = {
        "Bucket": bucket,
        "Key": key,
        "ContentType": content_type,
        "ContentLength": content_length,
    }
    if checksum is not None:
        params["ChecksumSHA256"] = checksum
    client = botocore_client(region, endpoint, addressing, *identity)
    with botocore_clock(signed_at):
        expected = client.generate_presigned_url("put_object", Params=params, ExpiresIn=expires_in)

    assert ours.url == expected
    assert ours.method == "PUT"
    want_headers = {"Content-Type": content_type, "Content-Length": str(content_length)}
    if checksum is not None:
        want_headers["x-amz-checksum-sha256"] = checksum
    assert ours.headers == want_headers
    assert ours.fields is None


@SIGV4
@given(
    location=locations,
    identity=identities,
    key=keys,
    content_type=content_types,
    content_length=st.integers(min_value=0, max_value=5 * 1024**4),
    checksum=checksums,
    expires_in=st.integers(min_value=1, max_value=sigv4.MAX_EXPIRES),
    signed_at=signing_times,
)
def test_put_url_is_byte_identical_to_s3_sigv4_query_auth(
    location: tuple[str, str, str | None, Addressing],
    identity: tuple[str, str, str | None],
    key: str,
    content_type: str,
    content_length: int,
    checksum: str | None,
    expires_in: int,
    signed_at: datetime,
) -> None:
    """Drive botocore's signer class directly on the same unsigned request.

    This is exactly what ``generate_presigned_url`` does after serialising the
    operation: ``RequestSigner.generate_presigned_url`` builds an ``AWSRequest``
    from the request dict (endpoint URL + percent-encoded key; the ContentType,
    ContentLength and ChecksumSHA256 params become the Content-Type,
    Content-Length and x-amz-checksum-sha256 headers), picks ``S3SigV4QueryAuth``
    for ``s3v4`` presigning (``get_auth_instance`` with the frozen credentials,
    signing name "s3", the client region and ``expires=ExpiresIn``) and calls
    ``add_auth`` on it. Here the unsigned URL comes from our presigner, so this
    test isolates the signing arithmetic from endpoint resolution.
    """
    bucket, region, endpoint, addressing = location
    access_key, secret_key, token = identity
    presigner = make_presigner(bucket, region, endpoint, addressing, *identity)
    ours = presigner.presign_put(
        key,
        content_type=content_type,
        content_length=content_length,
        checksum_sha256=checksum,
        expires_in=expires_in,
        signed_at=signed_at,
    )

    headers = {"Content-Type": content_type, "Content-Length": str(content_length)}
    if checksum is not None:
        headers["x-amz-checksum-sha256"] = checksum
    request = AWSRequest(method="PUT", url=presigner.object_url(key), headers=headers)
    signer = S3SigV4QueryAuth(
        Credentials(access_key, secret_key, token), "s3", region, expires=expires_in
    )
    with botocore_clock(signed_at):
        signer.add_auth(request)
    assert ours.url == request.url


@SIGV4
@given(
    location=locations,
    identity=client_identities,
    key=keys,
    filename=st.one_of(st.none(), filenames),
    expires_in=st.integers(min_value=1, max_value=sigv4.MAX_EXPIRES),
    signed_at=signing_times,
)
def test_get_url_is_byte_identical_to_generate_presigned_url(
    location: tuple[str, str, str | None, Addressing],
    identity: tuple[str, str, str | None],
    key: str,
    filename: str | None,
    expires_in: int,
    signed_at: datetime,
) -> None:
    bucket, region, endpoint, addressing = location
    assume(not is_ip_dotted_virtual(endpoint, bucket, addressing))
    ours = make_presigner(bucket, region, endpoint, addressing, *identity).presign_get(
        key, expires_in=expires_in, signed_at=signed_at, download_filename=filename
    )

    params = {"Bucket": bucket, "Key": key}
    if filename is not None:
        params["ResponseContentDisposition"] = content_disposition_attachment(filename)
    client = botocore_client(region, endpoint, addressing, *identity)
    with botocore_clock(signed_at):
        expected = client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_in)
    assert ours == expected


@SIGV4
@given(
    location=locations,
    identity=client_identities,
    key=keys,
    content_type=st.one_of(content_types, st.text(_text, min_size=1, max_size=20)),
    content_length=st.integers(min_value=0, max_value=5 * 1024**4),
    expires_in=st.integers(min_value=1, max_value=sigv4.MAX_EXPIRES),
    signed_at=signing_times,
)
def test_post_policy_is_identical_to_generate_presigned_post(
    location: tuple[str, str, str | None, Addressing],
    identity: tuple[str, str, str | None],
    key: str,
    content_type: str,
    content_length: int,
    expires_in: int,
    signed_at: datetime,
) -> None:
    bucket, region, endpoint, addressing = location
    assume(not is_ip_dotted_virtual(endpoint, bucket, addressing))
    assume("${filename}" not in key)
    ours = make_presigner(bucket, region, endpoint, addressing, *identity).presign_post(
        key,
        content_type=content_type,
        content_length=content_length,
        expires_in=expires_in,
        signed_at=signed_at,
    )

    client = botocore_client(region, endpoint, addressing, *identity)
    with botocore_clock(signed_at):
        expected = client.generate_presigned_post(
            bucket,
            key,
            Fields={"Content-Type": content_type},
            Conditions=[
                {"Content-Type": content_type},
                ["content-length-range", content_length, content_length],
            ],
            ExpiresIn=expires_in,
        )
    assert ours.url == expected["url"]
    assert ours.method == "POST"
    assert ours.headers == {}
    assert ours.fields is not None
    assert list(ours.fields.items()) == list(expected["fields"].items())


@given(raw=st.one_of(st.text(_text), keys, st.binary().map(lambda b: b.decode("latin-1"))))
def test_percent_encoding_matches_urllib_quote(raw: str) -> None:
    assert sigv4.encode_path(raw) == quote(raw, safe="/~")
    assert sigv4.encode_query(raw) == quote(raw, safe="-_.~")


# --- fixed expectations, independent of botocore ---------------------------------


def test_matches_aws_documented_example() -> None:
    """The worked example in the S3 docs ("Authenticating Requests: Using Query
    Parameters"): GET examplebucket/test.txt, 24 h, 2013-05-24T00:00:00Z."""
    presigner = S3Presigner(
        bucket="examplebucket",
        region="us-east-1",
        endpoint_url=None,
        addressing="virtual",
        credentials=StaticCredentialSource(
            "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
        ),
    )
    url = presigner.presign_get(
        "test.txt", expires_in=86400, signed_at=datetime(2013, 5, 24, tzinfo=UTC)
    )
    assert url == (
        "https://examplebucket.s3.amazonaws.com/test.txt"
        "?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    )


def test_signing_key_matches_aws_documented_example() -> None:
    # "Examples of how to derive a signing key for Signature Version 4" (AWS docs).
    key = sigv4.signing_key(
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam"
    )
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


def test_botocore_signs_content_length_and_type_for_put_object() -> None:
    """The premise of the PUT comparison: botocore's own presigned put_object URL
    signs Content-Length and Content-Type when they are passed as Params."""
    client = botocore_client("eu-west-1", None, "virtual", "AKIDEXAMPLE", "secret", None)
    url = client.generate_presigned_url(
        "put_object",
        Params={"Bucket": "b-1", "Key": "k", "ContentType": "text/plain", "ContentLength": 5},
    )
    query = dict(parse_qsl(urlsplit(url).query))
    assert query["X-Amz-SignedHeaders"] == "content-length;content-type;host"


@pytest.mark.parametrize(
    ("region", "endpoint", "addressing", "origin_and_path"),
    [
        ("us-east-1", None, "virtual", "https://uploads.s3.amazonaws.com/k"),
        ("us-east-1", None, "path", "https://s3.amazonaws.com/uploads/k"),
        ("eu-west-1", None, "virtual", "https://uploads.s3.eu-west-1.amazonaws.com/k"),
        ("eu-west-1", None, "path", "https://s3.eu-west-1.amazonaws.com/uploads/k"),
        ("eu-west-1", "http://127.0.0.1:9000", "virtual", "http://127.0.0.1:9000/uploads/k"),
        ("eu-west-1", "http://localhost:9000", "virtual", "http://uploads.localhost:9000/k"),
        ("eu-west-1", "http://localhost:9000", "path", "http://localhost:9000/uploads/k"),
    ],
)
def test_bucket_url_styles(
    region: str, endpoint: str | None, addressing: Addressing, origin_and_path: str
) -> None:
    presigner = make_presigner("uploads", region, endpoint, addressing, "AKID", "secret", None)
    assert presigner.object_url("k") == origin_and_path
    url = presigner.presign_get("k", expires_in=60, signed_at=datetime(2026, 1, 1, tzinfo=UTC))
    assert url.startswith(origin_and_path + "?")


def test_ip_endpoint_with_dotted_bucket_stays_path_style() -> None:
    # botocore would give http://my.bucket.127.0.0.1:9000/k, which cannot resolve.
    presigner = make_presigner(
        "my.bucket", "eu-west-1", "http://127.0.0.1:9000", "virtual", "AKID", "secret", None
    )
    assert presigner.object_url("k") == "http://127.0.0.1:9000/my.bucket/k"


def test_form_urlencoded_content_type_is_still_signed() -> None:
    # botocore drops this one Content-Type from presigned URLs; we keep it signed so
    # the declared type cannot be swapped.
    presigner = make_presigner("uploads", "eu-west-1", None, "virtual", "AKID", "secret", None)
    put = presigner.presign_put(
        "k",
        content_type=FORM_CONTENT_TYPE,
        content_length=3,
        checksum_sha256=None,
        expires_in=60,
        signed_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    query = dict(parse_qsl(urlsplit(put.url).query))
    assert query["X-Amz-SignedHeaders"] == "content-length;content-type;host"
    assert put.headers["Content-Type"] == FORM_CONTENT_TYPE


def test_same_inputs_same_url_and_time_matters() -> None:
    presigner: Presigner = make_presigner(
        "uploads", "eu-west-1", None, "virtual", "AKID", "secret", "tok"
    )
    at = datetime(2026, 3, 4, 5, 6, 7, 890, tzinfo=UTC)

    def put(when: datetime) -> str:
        return presigner.presign_put(
            "t/f.pdf",
            content_type="application/pdf",
            content_length=10,
            checksum_sha256=None,
            expires_in=3600,
            signed_at=when,
        ).url

    assert put(at) == put(at.replace(microsecond=0))  # X-Amz-Date has whole seconds
    assert put(at) == put(at.astimezone(timezone(timedelta(hours=-3))))
    assert put(at) == put(at.replace(tzinfo=None))  # naive = UTC
    assert put(at) != put(at + timedelta(seconds=1))
    query = dict(parse_qsl(urlsplit(put(at)).query))
    assert query["X-Amz-Date"] == "20260304T050607Z"
    assert query["X-Amz-Security-Token"] == "tok"


def test_post_policy_document_pins_key_size_and_type() -> None:
    presigner = make_presigner("uploads", "eu-west-1", None, "virtual", "AKID", "secret", None)
    post = presigner.presign_post(
        "t/f.pdf",
        content_type="application/pdf",
        content_length=1234,
        expires_in=600,
        signed_at=datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC),
    )
    assert post.url == "https://uploads.s3.eu-west-1.amazonaws.com/"
    assert post.fields is not None
    policy = json.loads(base64.b64decode(post.fields["policy"]))
    assert policy["expiration"] == "2026-03-04T05:16:07Z"
    assert {"Content-Type": "application/pdf"} in policy["conditions"]
    assert ["content-length-range", 1234, 1234] in policy["conditions"]
    assert {"key": "t/f.pdf"} in policy["conditions"]
    assert {"bucket": "uploads"} in policy["conditions"]
    assert "x-amz-security-token" not in post.fields


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("report.pdf", 'attachment; filename="report.pdf"'),
        ('a "b" \\c.txt', 'attachment; filename="a \\"b\\" \\\\c.txt"'),
        (
            "résumé.pdf",
            "attachment; filename=\"resume.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf",
        ),
        ("日本.txt", "attachment; filename=\".txt\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC.txt"),
        ("日本", "attachment; filename=\"download\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC"),
    ],
)
def test_content_disposition(filename: str, expected: str) -> None:
    assert content_disposition_attachment(filename) == expected


def test_content_disposition_rejects_control_characters() -> None:
    with pytest.raises(ValueError, match="control"):
        content_disposition_attachment("a\r\nSet-Cookie: x")


def test_download_filename_is_signed_into_get_url() -> None:
    presigner = make_presigner("uploads", "eu-west-1", None, "virtual", "AKID", "secret", None)
    url = presigner.presign_get(
        "t/x", expires_in=60, signed_at=datetime(2026, 1, 1, tzinfo=UTC), download_filename="é"
    )
    query = dict(parse_qsl(urlsplit(url).query))
    assert query["response-content-disposition"] == (
        "attachment; filename=\"e\"; filename*=UTF-8''%C3%A9"
    )


@pytest.mark.parametrize(
    "call",
    [
        lambda p, t: p.presign_put(
            "",
            content_type="a/b",
            content_length=1,
            checksum_sha256=None,
            expires_in=1,
            signed_at=t,
        ),
        lambda p, t: p.presign_put(
            "k",
            content_type="a/b",
            content_length=-1,
            checksum_sha256=None,
            expires_in=1,
            signed_at=t,
        ),
        lambda p, t: p.presign_put(
            "k",
            content_type="a/b",
            content_length=1,
            checksum_sha256=None,
            expires_in=0,
            signed_at=t,
        ),
        lambda p, t: p.presign_get("k", expires_in=sigv4.MAX_EXPIRES + 1, signed_at=t),
        lambda p, t: p.presign_post(
            "k/${filename}", content_type="a/b", content_length=1, expires_in=1, signed_at=t
        ),
    ],
)
def test_rejects_bad_arguments(call: Any) -> None:
    presigner = make_presigner("uploads", "eu-west-1", None, "virtual", "AKID", "secret", None)
    with pytest.raises(ValueError):
        call(presigner, datetime(2026, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    ("bucket", "region", "endpoint"),
    [
        ("bad/bucket", "eu-west-1", None),
        ("uploads", "EU WEST", None),
        ("uploads", "eu-west-1", "ftp://example.com"),
        ("uploads", "eu-west-1", "https://example.com/?x=1"),
        ("uploads", "eu-west-1", "https://user:pw@example.com"),
        ("uploads", "eu-west-1", "https://example.com/a/../b"),
        ("uploads", "eu-west-1", "https://example.com:notaport"),
    ],
)
def test_rejects_bad_configuration(bucket: str, region: str, endpoint: str | None) -> None:
    with pytest.raises(ValueError):
        make_presigner(bucket, region, endpoint, "path", "AKID", "secret", None)


# --- credential sources ----------------------------------------------------------


def test_botocore_credential_source_wraps_static_credentials() -> None:
    source = BotocoreCredentialSource(Credentials("AKID", "SECRET", "TOKEN"))
    first = source.current()
    assert (first.access_key, first.secret_key, first.token) == ("AKID", "SECRET", "TOKEN")
    assert source.current() is first  # unchanged credentials are not re-wrapped


def test_botocore_credential_source_refreshes_expiring_credentials() -> None:
    now = datetime.now(UTC)
    issued = iter(["OLD", "NEW"])

    def refresh() -> dict[str, str]:
        name = next(issued)
        # The first set is already expired, so the next read must refresh.
        expiry = now - timedelta(minutes=1) if name == "OLD" else now + timedelta(hours=1)
        return {
            "access_key": f"AK{name}",
            "secret_key": f"SK{name}",
            "token": f"TK{name}",
            "expiry_time": expiry.isoformat(),
        }

    credentials = RefreshableCredentials.create_from_metadata(
        metadata=refresh(), refresh_using=refresh, method="test"
    )
    source = BotocoreCredentialSource(credentials)
    current = source.current()
    assert (current.access_key, current.secret_key, current.token) == ("AKNEW", "SKNEW", "TKNEW")

    presigner = S3Presigner(
        bucket="uploads",
        region="eu-west-1",
        endpoint_url=None,
        addressing="virtual",
        credentials=source,
    )
    url = presigner.presign_get("k", expires_in=60, signed_at=now)
    query = dict(parse_qsl(urlsplit(url).query))
    assert query["X-Amz-Credential"].startswith("AKNEW/")
    assert query["X-Amz-Security-Token"] == "TKNEW"


def test_static_credential_source_treats_empty_token_as_none() -> None:
    assert StaticCredentialSource("AKID", "SECRET", "").current().token is None
    with pytest.raises(ValueError):
        StaticCredentialSource("", "SECRET")
