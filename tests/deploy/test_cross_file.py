"""Checks across deploy/: every YAML file parses, every GATEWAY_* variable the files set is
documented and read by the gateway, every command they run is one the CLI accepts, and
deploy/README.md names only files that exist."""

from __future__ import annotations

import json
import re
import shlex

import pytest
import yaml

from gateway.cli import build_parser
from tests.deploy.files import (
    COMPOSE_FILE,
    CONFIG_BEARING_FILES,
    DEPLOY,
    DOCUMENTED_GATEWAY_VARS,
    K8S,
    ROOT,
    all_containers,
    compose,
    dockerfile_instructions,
    pod_spec,
    workloads,
)


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
