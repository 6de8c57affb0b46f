from __future__ import annotations

import pytest

from gateway.config import ConfigError, Settings


def test_defaults_match_the_documented_table() -> None:
    s = Settings.from_env({})
    assert s.database_url == "postgresql://postgres@127.0.0.1:5432/gateway"
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.s3_endpoint_url is None and s.s3_addressing == "virtual"
    assert (s.s3_bucket, s.s3_region) == ("uploads", "us-east-1")
    assert s.webhook_secret is None
    assert (s.upload_url_ttl, s.reservation_grace, s.max_file_size) == (3600, 300, 5368709120)


def test_custom_endpoint_defaults_to_path_style() -> None:
    s = Settings.from_env({"GATEWAY_S3_ENDPOINT_URL": "http://minio:9000/"})
    assert s.s3_endpoint_url == "http://minio:9000" and s.s3_addressing == "path"
    s = Settings.from_env(
        {"GATEWAY_S3_ENDPOINT_URL": "http://minio:9000", "GATEWAY_S3_ADDRESSING": "virtual"}
    )
    assert s.s3_addressing == "virtual"
    assert s.presign_endpoint_url == "http://minio:9000"
    s = Settings.from_env(
        {
            "GATEWAY_S3_ENDPOINT_URL": "http://minio:9000",
            "GATEWAY_S3_PUBLIC_ENDPOINT_URL": "http://localhost:9000",
        }
    )
    assert s.presign_endpoint_url == "http://localhost:9000"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEWAY_UPLOAD_URL_TTL", "soon"),
        ("GATEWAY_UPLOAD_URL_TTL", "0"),
        ("GATEWAY_UPLOAD_URL_TTL", "604801"),
        ("GATEWAY_MAX_FILE_SIZE", "-1"),
        ("GATEWAY_DATABASE_URL", "mysql://x"),
        ("GATEWAY_REDIS_URL", "http://x"),
        ("GATEWAY_S3_ENDPOINT_URL", "minio:9000"),
        ("GATEWAY_S3_ADDRESSING", "both"),
        ("GATEWAY_S3_BUCKET", "Bad_Bucket"),
        ("GATEWAY_LOG_FORMAT", "xml"),
        ("GATEWAY_DB_TIMEOUT", "0"),
        ("GATEWAY_SNS_AUTO_CONFIRM", "maybe"),
        ("GATEWAY_OVERSIZE_POLICY", "ignore"),
        ("GATEWAY_LOG_LEVEL", "loud"),
        ("GATEWAY_SQS_RECEIVERS", "0"),
        ("GATEWAY_SQS_RECEIVERS", "many"),
        ("GATEWAY_DB_STATEMENT_CACHE_SIZE", "-1"),
        ("GATEWAY_DB_STATEMENT_CACHE_SIZE", "off"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({name: value})
    assert str(err.value).startswith(name)
    assert "\n" not in str(err.value)


def test_sqs_receivers_are_read() -> None:
    assert Settings.from_env({}).sqs_receivers == 8
    assert Settings.from_env({"GATEWAY_SQS_RECEIVERS": "3"}).sqs_receivers == 3


def test_statement_cache_size_is_read() -> None:
    assert Settings.from_env({}).db_statement_cache_size == 100  # asyncpg's default
    s = Settings.from_env({"GATEWAY_DB_STATEMENT_CACHE_SIZE": "0"})  # behind PgBouncer
    assert s.db_statement_cache_size == 0


def test_settings_are_frozen() -> None:
    s = Settings.from_env({})
    with pytest.raises(AttributeError):
        s.s3_bucket = "other"  # type: ignore[misc]


def test_urls_in_messages_hide_their_password() -> None:
    from gateway.config import redact_url

    assert redact_url("postgresql://app:s3cr%40t@db:5432/gw") == "postgresql://app:***@db:5432/gw"
    assert redact_url("rediss://:tok3n@cache:6380/0") == "rediss://:***@cache:6380/0"
    assert redact_url("postgresql://app@db/gw") == "postgresql://app@db/gw"
    assert redact_url("http://[::1") == "<unparsable URL>"
    for name, value in [
        ("GATEWAY_DATABASE_URL", "mysql://app:hunter22@db/gw"),
        ("GATEWAY_REDIS_URL", "memcache://:hunter22@cache"),
        ("GATEWAY_S3_ENDPOINT_URL", "ftp://key:hunter22@s3"),
    ]:
        with pytest.raises(ConfigError) as err:
            Settings.from_env({name: value})
        assert name in str(err.value) and "hunter22" not in str(err.value)
