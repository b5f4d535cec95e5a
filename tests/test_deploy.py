"""The deployment files validate without a cluster or a Docker engine, and agree with the gateway.

Kubernetes manifests are checked strictly (unknown fields refused) against the
Kubernetes API's JSON schemas shipped by `kubernetes-validate`; the compose
file against the Compose Specification's schema (shipped by
`check-jsonschema`), and with `docker compose config` where that command
exists. Beyond the schemas: selectors match, probes hit the gateway's own
health routes, the grace period covers the drain, and the configuration in
the ConfigMap is one the gateway accepts.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from gateway.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes the manifests target (the preStop sleep action is on by default from 1.30).
KUBERNETES_VERSION = "1.30.0"


def manifests() -> dict[str, dict[str, Any]]:
    """Every Kubernetes object in deploy/kubernetes, by kind."""
    objects: dict[str, dict[str, Any]] = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            objects[document["kind"]] = document
    return objects


def test_every_kubernetes_manifest_validates_strictly() -> None:
    objects = manifests()
    assert {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "Job", "Kustomization"} <= set(objects)
    for kind, document in objects.items():
        if kind == "Kustomization":
            continue
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_a_broken_manifest_is_refused() -> None:
    deployment = manifests()["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProb"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_the_kustomization_lists_every_manifest() -> None:
    listed = set(manifests()["Kustomization"]["resources"])
    assert listed == {path.name for path in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}


def test_the_service_and_the_budget_select_the_gateway_pods() -> None:
    objects = manifests()
    deployment = objects["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert objects["Service"]["spec"]["selector"].items() <= labels.items()
    assert objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployment["spec"]["replicas"] >= 2 and objects["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert objects["Service"]["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]


def test_probes_scrape_and_grace_period_match_the_gateway(tmp_path: Path) -> None:
    objects = manifests()
    pod = objects["Deployment"]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    config = tmp_path / "config.yaml"
    config.write_text(objects["ConfigMap"]["data"]["config.yaml"])
    settings = load_settings(config, environ={"GATEWAY_ADMIN_TOKEN": "t", "OPENAI_API_KEY": "k"})
    port = container["ports"][0]["containerPort"]
    assert port == settings.server.port and settings.server.host == "0.0.0.0"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port and annotations["prometheus.io/path"] == "/metrics"
    # Kubernetes kills the pod after the grace period: it must cover the preStop wait and the gateway's
    # own shutdown grace, or in-flight calls and held records are cut off.
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["spec"]["terminationGracePeriodSeconds"] >= pre_stop + settings.server.shutdown_grace + 5
    assert "--no-migrate" in container["args"]
    job = objects["Job"]["spec"]["template"]["spec"]["containers"][0]
    assert job["args"][0] == "migrate" and job["image"] == container["image"]
    assert settings.recorder.spool_dir in {mount["mountPath"] for mount in container["volumeMounts"]}


def test_the_pods_run_unprivileged() -> None:
    for kind in ("Deployment", "Job"):
        spec = manifests()[kind]["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True
            assert context["capabilities"]["drop"] == ["ALL"]
            assert "memory" in container["resources"]["limits"]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_the_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads(resources.files("check_jsonschema.builtin_schemas.vendor")
                        .joinpath("compose-spec.json").read_text())
    jsonschema.validate(compose(), schema)
    broken = compose()
    broken["services"]["gateway"]["restart_policy"] = "always"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


@pytest.mark.skipif(not shutil.which("docker"), reason="no docker command here")
def test_docker_compose_config_accepts_every_profile() -> None:
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip("the docker command has no compose plugin here")
    result = subprocess.run(["docker", "compose", "--profile", "replicas", "--profile", "observability", "config",
                             "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_replicas_profile_puts_two_gateways_behind_the_load_balancer() -> None:
    services = compose()["services"]
    replicas = [name for name, service in services.items() if "replicas" in service.get("profiles", [])]
    assert set(replicas) == {"gateway-2", "lb"}
    for name in ("gateway", "gateway-2"):
        environment = services[name]["environment"]
        assert environment["GATEWAY_DATABASE_URL"].startswith("postgresql+asyncpg://")
        # One salt for every replica, or the same user hashes differently on each.
        assert environment["GATEWAY_USER_ID_SALT"] == services["gateway"]["environment"]["GATEWAY_USER_ID_SALT"]
    nginx = (ROOT / services["lb"]["volumes"][0].split(":")[0]).read_text()
    assert re.findall(r"server (\S+):8080", nginx) == ["gateway", "gateway-2"]
    assert "proxy_buffering off;" in nginx
    published = services["lb"]["ports"][0].split(":")
    assert re.search(rf"listen {published[-1]};", nginx)
