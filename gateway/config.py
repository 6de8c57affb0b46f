"""Settings, parsed once from the environment into a frozen object.

Nothing is read at import time: ``Settings.from_env()`` is called by the CLI (or a
test) and the result is handed to ``create_app``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from typing import Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import msgspec

T = TypeVar("T")

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/gateway"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class ConfigError(ValueError):
    """A setting has a bad value; the message names the variable."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    s3_endpoint_url: str | None = None
    # Endpoint written into presigned URLs when browsers reach S3 by another name
    # than the gateway does (e.g. http://localhost:9000 vs http://minio:9000).
    s3_public_endpoint_url: str | None = None
    s3_bucket: str = "uploads"
    s3_region: str = "us-east-1"
    s3_addressing: Literal["path", "virtual"] = "virtual"
    webhook_secret: str | None = None
    upload_url_ttl: int = 3600
    reservation_grace: int = 300
    max_file_size: int = 5_368_709_120
    log_format: Literal["json", "console"] = "json"
    log_level: str = "info"
    # Bounded waits on every dependency: an outage answers 503, never hangs.
    db_pool_min: int = 2
    db_pool_max: int = 10
    db_timeout: float = 5.0
    # asyncpg's cache of named prepared statements, per connection. 0 = none: each
    # query is parsed afresh in one unnamed statement, what PgBouncer before 1.21 in
    # transaction (or statement) pooling mode needs (deploy/README.md, "PgBouncer").
    db_statement_cache_size: int = 100
    redis_timeout: float = 2.0
    s3_timeout: float = 5.0
    # Seconds between in-server sweeps of expired reservations (0 = off); also the
    # interval of `gateway events poll-sqs --sweep`.
    sweep_interval: float = 30.0
    # What to do with an object larger than its reservation: delete it and mark the
    # upload rejected, or keep it (charging its real size) and flag the upload.
    oversize_policy: Literal["reject", "keep"] = "reject"
    # Confirm SNS SubscriptionConfirmation messages by visiting their SubscribeURL.
    sns_auto_confirm: bool = False
    # When set, `gateway serve` also consumes S3 events from this SQS queue
    # (`gateway events poll-sqs` consumes its --queue-url, whatever this says).
    sqs_queue_url: str | None = None
    # SQS endpoint (unset = AWS, or the S3 endpoint when that is custom, e.g. moto)
    sqs_endpoint_url: str | None = None
    # Concurrent SQS receive loops; their messages share ledger transactions.
    sqs_receivers: int = 8
    retry_after: int = 2
    max_body_bytes: int = 1_048_576
    # prometheus_client's multiprocess directory (PROMETHEUS_MULTIPROC_DIR, its own
    # name): /metrics then sums the files of every process there. `gateway serve
    # --workers N` sets it for its workers (a fresh directory unless given).
    prometheus_multiproc_dir: str | None = None
    # Outbound webhooks (gateway/webhooks/, docs/webhooks.md).
    webhook_allow_private: bool = False  # let webhooks reach loopback/private addresses
    webhook_encryption_keys: tuple[str, ...] = ()  # Fernet keys sealing secrets at rest
    webhook_delivery: bool = True  # servers deliver in the background
    webhook_timeout: float = 10.0
    webhook_max_in_flight: int = 64  # per process
    webhook_endpoint_in_flight: int = 8  # per endpoint, all processes together
    webhook_poll_interval: float = 1.0
    webhook_retry_for: float = 86_400.0
    webhook_first_retry: float = 5.0  # the back-off's first step (doubling to an hour)
    webhook_disable_after: float = 5 * 86_400.0
    webhook_retention: float = 30 * 86_400.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = e.get(name)
            return value if value not in (None, "") else None

        def parse(name: str, conv: Callable[[str], T], default: T) -> T:
            raw = get(name)
            if raw is None:
                return default
            try:
                return conv(raw)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{name}: {exc}") from None

        endpoint = parse("GATEWAY_S3_ENDPOINT_URL", _url, None)
        addressing_default = "path" if endpoint else "virtual"
        addressing = get("GATEWAY_S3_ADDRESSING") or addressing_default
        if addressing not in ("path", "virtual"):
            raise ConfigError(
                f"GATEWAY_S3_ADDRESSING: must be 'path' or 'virtual', got {addressing!r}"
            )
        log_format = get("GATEWAY_LOG_FORMAT") or ("console" if sys.stderr.isatty() else "json")
        if log_format not in ("json", "console"):
            raise ConfigError(
                f"GATEWAY_LOG_FORMAT: must be 'json' or 'console', got {log_format!r}"
            )
        policy = get("GATEWAY_OVERSIZE_POLICY") or "reject"
        if policy not in ("reject", "keep"):
            raise ConfigError(
                f"GATEWAY_OVERSIZE_POLICY: must be 'reject' or 'keep', got {policy!r}"
            )
        return cls(
            database_url=parse("GATEWAY_DATABASE_URL", _db_url, DEFAULT_DATABASE_URL),
            redis_url=parse("GATEWAY_REDIS_URL", _redis_url, DEFAULT_REDIS_URL),
            s3_endpoint_url=endpoint,
            s3_public_endpoint_url=parse("GATEWAY_S3_PUBLIC_ENDPOINT_URL", _url, None),
            s3_bucket=parse("GATEWAY_S3_BUCKET", _bucket, "uploads"),
            s3_region=parse("GATEWAY_S3_REGION", _nonempty, "us-east-1"),
            s3_addressing=addressing,  # type: ignore[arg-type]
            webhook_secret=get("GATEWAY_WEBHOOK_SECRET"),
            upload_url_ttl=parse("GATEWAY_UPLOAD_URL_TTL", _int_range(1, 604_800), 3600),
            reservation_grace=parse("GATEWAY_RESERVATION_GRACE", _int_range(0, 86_400 * 7), 300),
            max_file_size=parse("GATEWAY_MAX_FILE_SIZE", _int_range(1, 5 * 1024**4), 5_368_709_120),
            log_format=log_format,  # type: ignore[arg-type]
            log_level=parse("GATEWAY_LOG_LEVEL", _log_level, "info"),
            db_pool_min=parse("GATEWAY_DB_POOL_MIN", _int_range(0, 1000), 2),
            db_pool_max=parse("GATEWAY_DB_POOL_MAX", _int_range(1, 1000), 10),
            db_timeout=parse("GATEWAY_DB_TIMEOUT", _positive_float, 5.0),
            db_statement_cache_size=parse(
                "GATEWAY_DB_STATEMENT_CACHE_SIZE", _int_range(0, 100_000), 100
            ),
            redis_timeout=parse("GATEWAY_REDIS_TIMEOUT", _positive_float, 2.0),
            s3_timeout=parse("GATEWAY_S3_TIMEOUT", _positive_float, 5.0),
            sweep_interval=parse("GATEWAY_SWEEP_INTERVAL", _nonneg_float, 30.0),
            oversize_policy=policy,  # type: ignore[arg-type]
            sns_auto_confirm=parse("GATEWAY_SNS_AUTO_CONFIRM", _bool, False),
            sqs_queue_url=parse("GATEWAY_SQS_QUEUE_URL", _url, None),
            sqs_endpoint_url=parse("GATEWAY_SQS_ENDPOINT_URL", _url, None),
            sqs_receivers=parse("GATEWAY_SQS_RECEIVERS", _int_range(1, 100), 8),
            prometheus_multiproc_dir=get("PROMETHEUS_MULTIPROC_DIR"),
            webhook_allow_private=parse("GATEWAY_WEBHOOK_ALLOW_PRIVATE", _bool, False),
            webhook_encryption_keys=parse("GATEWAY_WEBHOOK_ENCRYPTION_KEYS", _fernet_keys, ()),
            webhook_delivery=parse("GATEWAY_WEBHOOK_DELIVERY", _bool, True),
            webhook_timeout=parse("GATEWAY_WEBHOOK_TIMEOUT", _float_range(0.1, 60), 10.0),
            webhook_max_in_flight=parse("GATEWAY_WEBHOOK_MAX_IN_FLIGHT", _int_range(1, 1000), 64),
            webhook_endpoint_in_flight=parse(
                "GATEWAY_WEBHOOK_ENDPOINT_IN_FLIGHT", _int_range(1, 1000), 8
            ),
            webhook_poll_interval=parse(
                "GATEWAY_WEBHOOK_POLL_INTERVAL", _float_range(0.05, 60), 1.0
            ),
            webhook_retry_for=parse(
                "GATEWAY_WEBHOOK_RETRY_FOR", _float_range(1, 30 * 86_400), 86_400.0
            ),
            webhook_first_retry=parse(
                "GATEWAY_WEBHOOK_FIRST_RETRY", _float_range(0.01, 3_600), 5.0
            ),
            webhook_disable_after=parse(
                "GATEWAY_WEBHOOK_DISABLE_AFTER", _float_range(1, 365 * 86_400), 5 * 86_400.0
            ),
            webhook_retention=parse(
                "GATEWAY_WEBHOOK_RETENTION", _float_range(3_600, 3_650 * 86_400), 30 * 86_400.0
            ),
        )

    @property
    def presign_endpoint_url(self) -> str | None:
        return self.s3_public_endpoint_url or self.s3_endpoint_url

    @property
    def database_name(self) -> str:
        return urlsplit(self.database_url).path.lstrip("/") or "postgres"


def _nonempty(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


def _int_range(lo: int, hi: int) -> Callable[[str], int]:
    def conv(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"must be an integer, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}, got {value}")
        return value

    return conv


def _positive_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"must be a number, got {raw!r}") from None
    if not value > 0:
        raise ValueError(f"must be > 0, got {raw}")
    return value


def _float_range(lo: float, hi: float) -> Callable[[str], float]:
    def conv(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"must be a number, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo:g} and {hi:g}, got {raw}")
        return value

    return conv


def _fernet_keys(raw: str) -> tuple[str, ...]:
    """Comma-separated Fernet keys (``Fernet.generate_key()``): the first seals."""
    from cryptography.fernet import Fernet

    keys = tuple(k.strip() for k in raw.split(",") if k.strip())
    try:
        for k in keys:
            Fernet(k)
    except (ValueError, TypeError):
        raise ValueError(
            "must be comma-separated Fernet keys (32 url-safe base64-encoded bytes each)"
        ) from None
    return keys


def _nonneg_float(raw: str) -> float:
    value = _positive_float(raw) if raw.strip() not in ("0", "0.0") else 0.0
    return value


def _bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"must be true or false, got {raw!r}")


def redact_url(url: str) -> str:
    """The URL with its password (if any) replaced by ``***``, for messages and logs."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not even a URL: say nothing of what it holds
        return "<unparsable URL>"
    if not password:
        return url
    user, _, host = parts.netloc.rpartition("@")
    name = user.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{name}:***@{host}"))


def _url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"must be an http(s) URL, got {redact_url(raw)!r}")
    return raw.rstrip("/")


def _db_url(raw: str) -> str:
    if urlsplit(raw).scheme not in ("postgres", "postgresql"):
        raise ValueError(f"must be a postgresql:// URL, got {redact_url(raw)!r}")
    return raw


def _redis_url(raw: str) -> str:
    scheme = urlsplit(raw).scheme
    if scheme not in ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster"):
        raise ValueError(
            f"must be a redis://, rediss:// or redis+cluster:// URL, got {redact_url(raw)!r}"
        )
    return raw


def _bucket(raw: str) -> str:
    name = raw.strip()
    if not 3 <= len(name) <= 63 or not all(c.islower() or c.isdigit() or c in ".-" for c in name):
        raise ValueError(f"must be a valid S3 bucket name, got {raw!r}")
    return name


def _log_level(raw: str) -> str:
    level = raw.strip().lower()
    if level not in ("debug", "info", "warning", "error"):
        raise ValueError(f"must be debug, info, warning or error, got {raw!r}")
    return level
