"""The deploy options on top of the base files: PgBouncer (compose override, image, k8s
component) and Redis Cluster (compose override and its create-cluster script, run
against a fake ``redis-cli``)."""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from gateway.config import Settings
from tests.deploy.files import (
    COMPOSE_FILE,
    COMPOSE_PGBOUNCER,
    COMPOSE_REDIS_CLUSTER,
    DEPLOY,
    ENV_EXAMPLE,
    K8S,
    compose_command,
    env_example,
    k8s_object,
    load_yaml,
    pod_spec,
)

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
