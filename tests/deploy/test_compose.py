"""deploy/docker-compose.yml and deploy/.env.example: services, images, start order,
healthchecks, shared settings; ``docker compose config`` where Compose v2 is installed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from gateway.config import Settings
from tests.deploy.files import (
    COMPOSE_FILE,
    DEPLOY,
    ENV_EXAMPLE,
    SETUP_SH,
    WEBHOOK_PATH,
    compose,
    env_example,
    run_compose,
    service,
)


def test_compose_has_every_service() -> None:
    assert set(compose()["services"]) >= {
        "postgres",
        "redis",
        "minio",
        "minio-setup",
        "migrate",
        "gateway",
    }


@pytest.mark.parametrize(
    ("name", "image_prefix"),
    [
        ("postgres", "postgres:16"),
        ("redis", "redis:7"),
        ("minio", "minio/minio:RELEASE."),
        ("minio-setup", "minio/mc:RELEASE."),
    ],
)
def test_compose_images_are_pinned(name: str, image_prefix: str) -> None:
    image = service(name)["image"]
    assert image.startswith(image_prefix), image
    assert not image.endswith(":latest")


@pytest.mark.parametrize(
    ("name", "dependency", "condition"),
    [
        ("migrate", "postgres", "service_healthy"),
        ("minio-setup", "minio", "service_healthy"),
        ("gateway", "migrate", "service_completed_successfully"),
        ("gateway", "redis", "service_healthy"),
        ("gateway", "minio-setup", "service_completed_successfully"),
    ],
)
def test_compose_start_order(name: str, dependency: str, condition: str) -> None:
    depends_on = service(name)["depends_on"]
    assert isinstance(depends_on, dict), f"{name}: depends_on needs the long form"
    assert depends_on[dependency]["condition"] == condition


@pytest.mark.parametrize(
    ("name", "probe"),
    [
        ("postgres", "pg_isready"),
        ("redis", "redis-cli"),
        ("minio", "ready"),
        ("gateway", "/healthz"),
    ],
)
def test_compose_long_running_services_have_healthchecks(name: str, probe: str) -> None:
    check = service(name)["healthcheck"]
    assert not check.get("disable", False)
    test = check["test"]
    assert isinstance(test, list) and test[0] in {"CMD", "CMD-SHELL"}, test
    assert any(probe in part for part in test[1:]), test
    assert check["retries"] >= 1


def test_compose_one_shots_run_once() -> None:
    assert service("migrate")["command"] == ["migrate"]
    assert service("migrate")["restart"] == "no"
    assert service("minio-setup")["restart"] == "no"
    assert service("minio-setup")["image"].startswith("minio/mc:")


def test_compose_gateway_and_migrate_share_settings() -> None:
    gateway_env = service("gateway")["environment"]
    assert service("migrate")["environment"] == gateway_env
    assert service("migrate")["image"] == service("gateway")["image"]
    assert gateway_env["GATEWAY_S3_ENDPOINT_URL"] == "http://minio:9000"
    public = gateway_env["GATEWAY_S3_PUBLIC_ENDPOINT_URL"]
    assert "GATEWAY_S3_PUBLIC_ENDPOINT_URL" in public and "localhost:9000" in public
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "GATEWAY_WEBHOOK_SECRET"):
        # Secrets come from deploy/.env and are required (`:?`), never a default.
        assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]*\}", gateway_env[name]), gateway_env[name]
    assert service("gateway")["command"] == ["serve", "--host", "0.0.0.0", "--port", "8080"]
    assert "8080:8080" in service("gateway")["ports"]


def test_minio_webhook_target_points_at_the_gateway() -> None:
    env = service("minio")["environment"]
    targets = {
        k.removeprefix("MINIO_NOTIFY_WEBHOOK_ENABLE_")
        for k in env
        if k.startswith("MINIO_NOTIFY_WEBHOOK_ENABLE_")
    }
    assert targets == {"GATEWAY"}
    assert env["MINIO_NOTIFY_WEBHOOK_ENABLE_GATEWAY"] == "on"
    url = urlsplit(env["MINIO_NOTIFY_WEBHOOK_ENDPOINT_GATEWAY"])
    assert (url.scheme, url.hostname, url.port) == ("http", "gateway", 8080)
    assert url.path == WEBHOOK_PATH
    assert "GATEWAY_WEBHOOK_SECRET" in env["MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_GATEWAY"]
    queue_dir = env["MINIO_NOTIFY_WEBHOOK_QUEUE_DIR_GATEWAY"]
    assert queue_dir.startswith("/")
    # The queue survives a restart: it is a mounted volume.
    mounts = {v.split(":")[1] for v in service("minio")["volumes"]}
    assert queue_dir in mounts


def test_minio_setup_subscribes_the_configured_target() -> None:
    target_id = "GATEWAY"  # the suffix of MINIO_NOTIFY_WEBHOOK_*_GATEWAY above
    arn = f"arn:minio:sqs::{target_id}:webhook"
    assert service("minio-setup")["environment"]["MINIO_WEBHOOK_ARN"] == arn
    assert f"MINIO_WEBHOOK_ARN:={arn}" in SETUP_SH.read_text()
    mounted = [v for v in service("minio-setup")["volumes"] if v.startswith("./minio/setup.sh:")]
    assert mounted and mounted[0].split(":")[1] == service("minio-setup")["entrypoint"][-1]


def test_one_origin_list_feeds_both_cors_mechanisms() -> None:
    server_wide = service("minio")["environment"]["MINIO_API_CORS_ALLOW_ORIGIN"]
    per_bucket = service("minio-setup")["environment"]["S3_CORS_ALLOWED_ORIGINS"]
    assert "S3_CORS_ALLOWED_ORIGINS" in server_wide
    assert server_wide == per_bucket


def test_env_example_covers_every_required_variable() -> None:
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", COMPOSE_FILE.read_text()))
    assert required, "compose should require its secrets"
    values = env_example()
    assert required <= values.keys(), required - values.keys()
    # Placeholders only: every secret is visibly one to change.
    for name in (
        "POSTGRES_PASSWORD",
        "MINIO_ROOT_PASSWORD",
        "S3_GATEWAY_SECRET_KEY",
        "GATEWAY_WEBHOOK_SECRET",
    ):
        assert "change-me" in values[name]
    # MinIO refuses shorter secrets; MinIO sends a token with a space verbatim.
    assert len(values["MINIO_ROOT_PASSWORD"]) >= 8 and len(values["S3_GATEWAY_SECRET_KEY"]) >= 8
    assert " " not in values["GATEWAY_WEBHOOK_SECRET"]
    ignored = (DEPLOY / ".gitignore").read_text().split()
    assert ".env" in ignored


def test_compose_config_is_valid(tmp_path: Path) -> None:
    result = run_compose("config", "-q", env_file=ENV_EXAMPLE, home=tmp_path)
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_run_without_secrets(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = run_compose("config", "-q", env_file=empty, home=tmp_path)
    assert result.returncode != 0
    assert "required variable" in result.stderr


def test_compose_environment_is_accepted_by_the_gateway(tmp_path: Path) -> None:
    result = run_compose("config", "--format", "json", env_file=ENV_EXAMPLE, home=tmp_path)
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)["services"]
    env = resolved["gateway"]["environment"]
    settings = Settings.from_env(env)
    values = env_example()
    assert settings.s3_endpoint_url == "http://minio:9000"
    assert settings.presign_endpoint_url == values["GATEWAY_S3_PUBLIC_ENDPOINT_URL"]
    assert settings.webhook_secret == values["GATEWAY_WEBHOOK_SECRET"]
    assert settings.s3_bucket == values["GATEWAY_S3_BUCKET"]
    assert settings.database_name == "gateway"
    assert urlsplit(settings.database_url).password == values["POSTGRES_PASSWORD"]
    assert env["AWS_ACCESS_KEY_ID"] == values["S3_GATEWAY_ACCESS_KEY"]
    minio_env = resolved["minio"]["environment"]
    assert minio_env["MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_GATEWAY"] == settings.webhook_secret
    setup_env = resolved["minio-setup"]["environment"]
    assert setup_env["GATEWAY_S3_BUCKET"] == settings.s3_bucket
