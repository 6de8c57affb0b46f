"""S3 presigner: presigned PUT / POST / GET for one bucket, without botocore on the hot path.

URLs are byte-identical to what botocore's ``generate_presigned_url`` /
``generate_presigned_post`` give for the same inputs and signing time, for a client
configured with ``Config(signature_version="s3v4", s3={"addressing_style": ...})``
(tests/unit/test_storage_sigv4.py checks this). Two deliberate differences, both only
reachable with inputs botocore mishandles:

* a Content-Type of exactly ``application/x-www-form-urlencoded; charset=utf-8`` is
  still signed (botocore silently drops it from a presigned URL);
* a custom endpoint whose host is an IP address always gets path-style URLs
  (botocore puts a dotted bucket in front of the IP over plain http, e.g.
  ``http://my.bucket.127.0.0.1:9000`` — a host name that cannot resolve).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import quote, urlsplit

from gateway.ids import utc_timestamp
from gateway.storage.base import CredentialSource, FrozenCredentials, PresignedRequest
from gateway.storage.sigv4 import (
    ALGORITHM,
    MAX_EXPIRES,
    QuerySigner,
    amz_timestamp,
    encode_path,
)

if TYPE_CHECKING:
    pass

Addressing = Literal["path", "virtual"]

# botocore.handlers.VALID_BUCKET (the client-side check for plain bucket names).
_VALID_BUCKET = re.compile(r"[a-zA-Z0-9.\-_]{1,255}")
_VALID_REGION = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# botocore.endpoint_provider: VALID_HOST_LABEL_RE and compat.IPV4_RE.
_HOST_LABEL = re.compile(r"(?!-)[a-zA-Z\d-]{1,63}(?<!-)")
_IPV4 = re.compile(r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}")
# An endpoint path prefix we can reproduce exactly: plain segments, no dot segments.
_ENDPOINT_PATH = re.compile(r"(?:/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)*/?")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# RFC 5987 attr-char minus ALPHA / DIGIT (which urllib never encodes).
_RFC5987_SAFE = "!#$&+-.^_`|~"
_FILENAME_PLACEHOLDER = "${filename}"
# Unicode category Cc: C0 controls, DEL and C1 controls.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class BotocoreCredentials(Protocol):
    """What we use of ``botocore.credentials.Credentials`` (or a refreshable one)."""

    def get_frozen_credentials(self) -> Any: ...


class StaticCredentialSource:
    """Fixed credentials (tests, or keys given in configuration)."""

    __slots__ = ("_credentials",)

    def __init__(self, access_key: str, secret_key: str, token: str | None = None) -> None:
        if not access_key or not secret_key:
            raise ValueError("access_key and secret_key must be non-empty")
        self._credentials = FrozenCredentials(access_key, secret_key, token or None)

    def current(self) -> FrozenCredentials:
        return self._credentials


class BotocoreCredentialSource:
    """Wraps botocore credentials from the usual AWS chain (env, profile, IMDS, …).

    ``get_frozen_credentials()`` refreshes temporary credentials when they near
    expiry; that refresh is a blocking call (STS/IMDS) made at most once per
    refresh window, inline on the calling thread. Use synchronous botocore
    credentials here: aiobotocore's credential objects refresh with coroutines.
    """

    __slots__ = ("_credentials", "_last")

    def __init__(self, credentials: BotocoreCredentials) -> None:
        self._credentials = credentials
        self._last: FrozenCredentials | None = None

    def current(self) -> FrozenCredentials:
        frozen = self._credentials.get_frozen_credentials()
        access_key: str = frozen.access_key
        secret_key: str = frozen.secret_key
        token: str | None = frozen.token
        last = self._last
        if (
            last is not None
            and last.access_key == access_key
            and last.secret_key == secret_key
            and last.token == token
        ):
            return last
        self._last = last = FrozenCredentials(access_key, secret_key, token)
        return last


def content_disposition_attachment(filename: str) -> str:
    """``attachment; filename="…"`` with an RFC 6266 ``filename*`` for non-ASCII names."""
    if _CONTROL.search(filename):
        raise ValueError("download filename must not contain control characters")
    if filename.isascii():
        return f'attachment; filename="{_quoted_string(filename)}"'
    fallback = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode()
    fallback = fallback.strip() or "download"
    encoded = quote(filename, safe=_RFC5987_SAFE)
    return f"attachment; filename=\"{_quoted_string(fallback)}\"; filename*=UTF-8''{encoded}"


def _quoted_string(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _to_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _virtual_hostable(bucket: str, *, allow_dots: bool) -> bool:
    """botocore's ``aws.isVirtualHostableS3Bucket``."""
    if len(bucket) < 3 or bucket.lower() != bucket or _IPV4.fullmatch(bucket):
        return False
    labels = bucket.split(".") if allow_dots else [bucket]
    return all(_HOST_LABEL.fullmatch(label) for label in labels)


def _is_ip(hostname: str) -> bool:
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        return bool(_IPV4.fullmatch(hostname))
    return True


@dataclass(frozen=True, slots=True)
class _BucketLocation:
    origin: str  # scheme://authority as it appears in URLs
    base_path: str  # path of the bucket URL ("" for a virtual host without prefix)
    host: str  # signed Host header


def _locate_bucket(
    bucket: str, region: str, endpoint_url: str | None, addressing: Addressing
) -> _BucketLocation:
    """Where botocore's S3 endpoint rules put the bucket (no FIPS / dual-stack)."""
    if endpoint_url is None:
        # botocore's default for presigning: the legacy global endpoint in us-east-1
        # (``us_east_1_regional_endpoint = legacy``), regional endpoints elsewhere.
        dns_suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
        authority = "s3.amazonaws.com" if region == "us-east-1" else f"s3.{region}.{dns_suffix}"
        if addressing == "virtual" and _virtual_hostable(bucket, allow_dots=False):
            host = f"{bucket}.{authority}"
            return _BucketLocation(f"https://{host}", "", host)
        return _BucketLocation(f"https://{authority}", f"/{bucket}", authority)

    parts = urlsplit(endpoint_url)
    if parts.scheme not in _DEFAULT_PORTS:
        raise ValueError(f"endpoint_url must be http(s)://…, got {endpoint_url!r}")
    if not parts.hostname or parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(f"endpoint_url must be scheme://host[:port][/path], got {endpoint_url!r}")
    if not _ENDPOINT_PATH.fullmatch(parts.path):
        raise ValueError(f"unsupported path in endpoint_url {endpoint_url!r}")
    port = parts.port  # raises ValueError for a bad port
    hostname = parts.hostname  # lower-cased by urllib, brackets removed
    is_ip = _is_ip(hostname)
    if ":" in hostname:
        hostname = f"[{hostname}]"
    if port is not None and port != _DEFAULT_PORTS[parts.scheme]:
        hostname = f"{hostname}:{port}"

    virtual = (
        addressing == "virtual"
        and not is_ip
        and (
            _virtual_hostable(bucket, allow_dots=False)
            or (parts.scheme == "http" and _virtual_hostable(bucket, allow_dots=True))
        )
    )
    if virtual:
        return _BucketLocation(
            f"{parts.scheme}://{bucket}.{parts.netloc}", parts.path, f"{bucket}.{hostname}"
        )
    prefix = parts.path if parts.path.endswith("/") else parts.path + "/"
    return _BucketLocation(f"{parts.scheme}://{parts.netloc}", prefix + bucket, hostname)


class S3Presigner:
    """Implements `gateway.storage.base.Presigner` for one bucket."""

    __slots__ = (
        "_bucket",
        "_credentials",
        "_host",
        "_key_prefix",
        "_origin",
        "_post_url",
        "_signer",
    )

    def __init__(
        self,
        *,
        bucket: str,
        region: str,
        endpoint_url: str | None,
        addressing: Addressing,
        credentials: CredentialSource,
    ) -> None:
        if not _VALID_BUCKET.fullmatch(bucket):
            raise ValueError(f"invalid bucket name {bucket!r}")
        if not _VALID_REGION.fullmatch(region):
            raise ValueError(f"invalid region {region!r}")
        if addressing not in ("path", "virtual"):
            raise ValueError(f"addressing must be 'path' or 'virtual', got {addressing!r}")
        location = _locate_bucket(bucket, region, endpoint_url, addressing)
        self._bucket = bucket
        self._credentials = credentials
        self._signer = QuerySigner(region, "s3")
        self._origin = location.origin
        self._host = location.host
        # Object paths are <bucket path without one trailing "/"> + "/" + key, as in
        # botocore's _urljoin; the bucket URL itself ends in "/" when it has no path.
        base = location.base_path
        self._key_prefix = (base[:-1] if base.endswith("/") else base) + "/"
        self._post_url = location.origin + (base or "/")

    @property
    def bucket(self) -> str:
        return self._bucket

    def object_url(self, key: str) -> str:
        """The unsigned URL of ``key`` (what the presigned URLs point at)."""
        return self._origin + self._key_prefix + encode_path(key)

    def presign_put(
        self,
        key: str,
        *,
        content_type: str,
        content_length: int | None,
        checksum_sha256: str | None,
        expires_in: int,
        signed_at: datetime,
    ) -> PresignedRequest:
        """``content_length=None``: the size is unknown (an unlimited tenant) and only
        the content type is signed."""
        if not key:
            raise ValueError("key must be non-empty")
        if content_length is not None and content_length < 0:
            raise ValueError("content_length must be >= 0")
        _check_expires(expires_in)
        headers = {"Content-Type": content_type}
        signed = [("content-type", content_type)]
        if content_length is not None:
            length = str(content_length)
            headers["Content-Length"] = length
            signed.insert(0, ("content-length", length))
        if checksum_sha256 is not None:
            headers["x-amz-checksum-sha256"] = checksum_sha256
            signed.append(("x-amz-checksum-sha256", checksum_sha256))
        creds = self._credentials.current()
        url = self._signer.presign(
            method="PUT",
            origin=self._origin,
            path=self._key_prefix + encode_path(key),
            host=self._host,
            access_key=creds.access_key,
            secret_key=creds.secret_key,
            session_token=creds.token,
            timestamp=amz_timestamp(signed_at),
            expires_in=expires_in,
            headers=signed,
        )
        return PresignedRequest(url=url, method="PUT", headers=headers)

    def presign_get(
        self,
        key: str,
        *,
        expires_in: int,
        signed_at: datetime,
        download_filename: str | None = None,
    ) -> str:
        if not key:
            raise ValueError("key must be non-empty")
        _check_expires(expires_in)
        query: list[tuple[str, str]] = []
        if download_filename is not None:
            disposition = content_disposition_attachment(download_filename)
            query.append(("response-content-disposition", disposition))
        creds = self._credentials.current()
        return self._signer.presign(
            method="GET",
            origin=self._origin,
            path=self._key_prefix + encode_path(key),
            host=self._host,
            access_key=creds.access_key,
            secret_key=creds.secret_key,
            session_token=creds.token,
            timestamp=amz_timestamp(signed_at),
            expires_in=expires_in,
            query=query,
        )

    def presign_post(
        self,
        key: str,
        *,
        content_type: str,
        content_length: int | None,
        expires_in: int,
        signed_at: datetime,
        max_content_length: int | None = None,
    ) -> PresignedRequest:
        """A browser-form POST policy pinned to this key, size and content type
        (``content_length=None``: any size up to ``max_content_length``).

        Field names, order and the policy document are those of botocore's
        ``generate_presigned_post(Bucket, Key, Fields={"Content-Type": …},
        Conditions=[{"Content-Type": …}, ["content-length-range", n, n]])``.
        """
        if not key:
            raise ValueError("key must be non-empty")
        if _FILENAME_PLACEHOLDER in key:
            # S3 would substitute the browser's file name into the stored key.
            raise ValueError("key must not contain '${filename}'")
        if content_length is not None and content_length < 0:
            raise ValueError("content_length must be >= 0")
        if content_length is None and max_content_length is None:
            raise ValueError("give content_length or max_content_length")
        low, high = (
            (content_length, content_length)
            if content_length is not None
            else (0, max_content_length)
        )
        _check_expires(expires_in)
        creds = self._credentials.current()
        timestamp = amz_timestamp(signed_at)
        credential = self._signer.credential(creds.access_key, timestamp)
        expiration = utc_timestamp(_to_utc(signed_at) + timedelta(seconds=expires_in))
        conditions: list[object] = [
            {"Content-Type": content_type},
            ["content-length-range", low, high],
            {"bucket": self._bucket},
            {"key": key},
            {"x-amz-algorithm": ALGORITHM},
            {"x-amz-credential": credential},
            {"x-amz-date": timestamp},
        ]
        fields = {
            "Content-Type": content_type,
            "key": key,
            "x-amz-algorithm": ALGORITHM,
            "x-amz-credential": credential,
            "x-amz-date": timestamp,
        }
        if creds.token is not None:
            conditions.append({"x-amz-security-token": creds.token})
            fields["x-amz-security-token"] = creds.token
        # json.dumps defaults (", " / ": " separators, ASCII escapes) as botocore uses.
        document = json.dumps({"expiration": expiration, "conditions": conditions})
        policy = base64.b64encode(document.encode()).decode()
        fields["policy"] = policy
        fields["x-amz-signature"] = self._signer.sign_string(creds.secret_key, timestamp, policy)
        return PresignedRequest(url=self._post_url, method="POST", headers={}, fields=fields)


def _check_expires(expires_in: int) -> None:
    if not 1 <= expires_in <= MAX_EXPIRES:
        raise ValueError(f"expires_in must be between 1 and {MAX_EXPIRES} seconds")
