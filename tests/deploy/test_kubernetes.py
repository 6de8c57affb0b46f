"""deploy/k8s: the manifests, their optional components, and ``kubectl kustomize`` where
it is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from dotenv import dotenv_values

from gateway.config import Settings
from tests.deploy.files import (
    K8S,
    all_containers,
    k8s_docs,
    k8s_object,
    load_yaml,
    pod_spec,
    workloads,
)


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
