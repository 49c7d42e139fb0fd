"""k8s/: render every overlay with the real kustomize and validate it offline.

Each rendered manifest is checked against the Kubernetes JSON schemas shipped in the
`kubernetes-validate` package (strict: unknown fields fail), for the oldest and the newest
Kubernetes release we claim. Then the project's own rules: one producer pod per app key with
its shard index and spool volume, processors within the partition count, hardened pods,
probes on the real health endpoints, selectors that select something, and credentials only
from a Secret whose template holds placeholders.
"""

from __future__ import annotations

import functools
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.unit.deploy_helpers import ROOT, cli_problems, go_tool

K8S = ROOT / "k8s"
OVERLAYS = ["dev", "prod"]
KUBERNETES_VERSIONS = ["1.29.0", "1.33.0"]
SECRET_TEMPLATE = K8S / "overlays" / "prod" / "kis-credentials.secret.example.yaml"
OWN_IMAGES = ("kis-stream:", "registry.example.com/kis-stream:")


@functools.cache
def render(target: str) -> tuple[dict[str, Any], ...]:
    """`kustomize build` of k8s/<target>, parsed."""
    done = subprocess.run(
        [go_tool("kustomize"), "build", str(K8S / target)], capture_output=True, text=True
    )
    assert done.returncode == 0, f"kustomize build {target} failed:\n{done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def overlay(name: str) -> tuple[dict[str, Any], ...]:
    return render(f"overlays/{name}")


def find(docs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    for doc in docs:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind}/{name} in the rendered overlay")


def workloads(docs: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")]


def config(docs: tuple[dict[str, Any], ...]) -> dict[str, str]:
    maps = [
        d for d in docs if d["kind"] == "ConfigMap" and "kis-stream-config" in d["metadata"]["name"]
    ]
    assert len(maps) == 1
    data: dict[str, str] = maps[0]["data"]
    return data


def own_containers(
    docs: tuple[dict[str, Any], ...],
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(workload name, pod spec, container) for every container running the kis-stream image."""
    found = []
    for workload in workloads(docs):
        pod = workload["spec"]["template"]["spec"]
        for container in pod["containers"]:
            if container["image"].startswith(OWN_IMAGES):
                found.append((workload["metadata"]["name"], pod, container))
    return found


# --- rendering and schemas -----------------------------------------------------------------


@pytest.mark.parametrize("target", ["base", "overlays/dev", "overlays/prod"])
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_validate_against_kubernetes_schemas(target: str, version: str) -> None:
    docs = render(target)
    assert docs
    errors = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_secret_template_validates() -> None:
    secret = yaml.safe_load(SECRET_TEMPLATE.read_text(encoding="utf-8"))
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(secret, version, strict=True)


def test_schema_validation_catches_a_misspelt_field() -> None:
    producer = find(overlay("dev"), "StatefulSet", "kis-producer")
    broken = yaml.safe_load(yaml.safe_dump(producer))
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    kubernetes_validate.validate(producer, KUBERNETES_VERSIONS[-1], strict=True)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


# --- the producer: one pod per app key ----------------------------------------------------


@pytest.mark.parametrize("name", OVERLAYS)
def test_producer_is_a_statefulset_with_one_shard_per_pod(name: str) -> None:
    docs = overlay(name)
    producer = find(docs, "StatefulSet", "kis-producer")
    container = producer["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "produce"
    env = {e["name"]: e for e in container.get("env", [])}
    index = env["KIS_SHARD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert index == "metadata.labels['apps.kubernetes.io/pod-index']"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert int(config(docs)["KIS_SHARD_COUNT"]) == producer["spec"]["replicas"]
    assert producer["spec"]["podManagementPolicy"] == "Parallel"
    assert find(docs, "Service", producer["spec"]["serviceName"])["spec"]["clusterIP"] == "None"


@pytest.mark.parametrize("name", OVERLAYS)
def test_producer_spool_is_on_a_persistent_volume(name: str) -> None:
    docs = overlay(name)
    producer = find(docs, "StatefulSet", "kis-producer")
    claims = {c["metadata"]["name"] for c in producer["spec"]["volumeClaimTemplates"]}
    container = producer["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts[config(docs)["PRODUCER_SPOOL_DIR"]] in claims


def test_prod_credentials_come_from_the_secret_only() -> None:
    docs = overlay("prod")
    assert not [d for d in docs if d["kind"] == "Secret"], "never render credentials"
    producer = find(docs, "StatefulSet", "kis-producer")
    container = producer["spec"]["template"]["spec"]["containers"][0]
    secrets = [s["secretRef"]["name"] for s in container["envFrom"] if "secretRef" in s]
    assert secrets == ["kis-credentials"]
    assert any("configMapRef" in s for s in container["envFrom"])
    assert "KIS_URL" not in config(docs), "prod talks to real KIS"
    assert not [d for d in docs if d["metadata"]["name"] == "kis-simulator"]
    template = yaml.safe_load(SECRET_TEMPLATE.read_text(encoding="utf-8"))
    assert template["metadata"]["name"] == "kis-credentials"
    assert (
        template["metadata"]["namespace"]
        == find(docs, "Namespace", "kis-stream")["metadata"]["name"]
    )
    for key, value in template["stringData"].items():
        parts = [p for chunk in value.split(",") for p in chunk.split(":")]
        assert all(p.startswith("REPLACE_ME") for p in parts), f"{key} must hold placeholders"
    pairs = template["stringData"]["KIS_APP_KEYS"].split(",")
    assert len(pairs) == producer["spec"]["replicas"], "one KEY:SECRET pair per producer pod"


def test_dev_runs_against_the_simulator() -> None:
    docs = overlay("dev")
    simulator = find(docs, "Deployment", "kis-simulator")
    container = simulator["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[0] == "sim" and args[args.index("--host") + 1] == "0.0.0.0"
    port = int(args[args.index("--port") + 1])
    service = find(docs, "Service", "kis-simulator")
    assert service["spec"]["ports"][0]["port"] == port
    assert config(docs)["KIS_URL"] == f"http://kis-simulator:{port}"
    assert args[args.index("--symbols") + 1] == config(docs)["KIS_SYMBOLS"]
    egress_ports = {
        p["port"]
        for rule in find(docs, "NetworkPolicy", "kis-producer")["spec"]["egress"]
        for p in rule["ports"]
    }
    assert port in egress_ports
    kafka = find(docs, "Service", "kafka")
    registry = find(docs, "Service", "registry")
    assert config(docs)["KAFKA_BOOTSTRAP"] == f"kafka:{kafka['spec']['ports'][0]['port']}"
    assert config(docs)["SCHEMA_REGISTRY_URL"] == (
        f"http://registry:{registry['spec']['ports'][0]['port']}/apis/ccompat/v7"
    )


# --- processors ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", OVERLAYS)
def test_processor_replicas_do_not_exceed_partitions(name: str) -> None:
    docs = overlay(name)
    processors = find(docs, "Deployment", "kis-processors")
    assert 1 <= processors["spec"]["replicas"] <= int(config(docs)["TOPIC_PARTITIONS"])
    assert processors["spec"]["template"]["spec"]["containers"][0]["args"][0] == "process"


# --- every pod -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", OVERLAYS)
def test_own_containers_are_hardened_and_bounded(name: str) -> None:
    containers = own_containers(overlay(name))
    assert containers
    for workload, pod, container in containers:
        pod_sc, sc = pod["securityContext"], container["securityContext"]
        assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] != 0, workload
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", workload
        assert sc["readOnlyRootFilesystem"] is True, workload
        assert sc["allowPrivilegeEscalation"] is False, workload
        assert sc["capabilities"]["drop"] == ["ALL"], workload
        assert pod["automountServiceAccountToken"] is False, workload
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), workload
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp" in mounts, f"{workload}: read-only root needs a writable /tmp"


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_pod_runs_non_root_without_escalation(name: str) -> None:
    for workload in workloads(overlay(name)):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, workload["metadata"]["name"]
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
            assert container.get("resources", {}).get("limits"), workload["metadata"]["name"]


@pytest.mark.parametrize("name", OVERLAYS)
def test_own_containers_run_real_subcommands(name: str) -> None:
    problems = []
    for workload, _pod, container in own_containers(overlay(name)):
        assert "command" not in container, f"{workload}: keep the image's kis-stream entrypoint"
        problems += cli_problems(f"{name}/{workload}", container["args"])
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", OVERLAYS)
def test_probes_hit_the_health_endpoints_on_declared_ports(name: str) -> None:
    docs = overlay(name)
    settings = config(docs)
    expected = {
        "kis-producer": (int(settings["METRICS_PORT"]), "/healthz", "/readyz"),
        "kis-processors": (int(settings["PROCESSORS_WEB_PORT"]), "/kis/", "/kis/"),
    }
    assert settings["METRICS_HOST"] == "0.0.0.0" and settings["PROCESSORS_WEB_HOST"] == "0.0.0.0"
    for workload, (port, live, ready) in expected.items():
        kind = "StatefulSet" if workload == "kis-producer" else "Deployment"
        container = find(docs, kind, workload)["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe, path in (("livenessProbe", live), ("readinessProbe", ready)):
            http = container[probe]["httpGet"]
            assert http["path"] == path, f"{workload} {probe}"
            assert ports[http["port"]] == port, f"{workload} {probe} on the wrong port"
        assert container["startupProbe"]["httpGet"]["port"] in ports


@pytest.mark.parametrize("name", OVERLAYS)
def test_selectors_select_something(name: str) -> None:
    docs = overlay(name)
    pod_labels = [w["spec"]["template"]["metadata"]["labels"] for w in workloads(docs)]

    def selects(selector: dict[str, str]) -> bool:
        return any(selector.items() <= labels.items() for labels in pod_labels)

    for doc in docs:
        kind, doc_name = doc["kind"], doc["metadata"]["name"]
        if kind == "Service":
            assert selects(doc["spec"]["selector"]), f"Service/{doc_name} selects no pod"
            workload = next(
                w
                for w in workloads(docs)
                if doc["spec"]["selector"].items()
                <= w["spec"]["template"]["metadata"]["labels"].items()
            )
            names = {
                p["name"]
                for c in workload["spec"]["template"]["spec"]["containers"]
                for p in c["ports"]
            }
            for port in doc["spec"]["ports"]:
                assert port["targetPort"] in names, f"Service/{doc_name}: {port['targetPort']}"
        elif kind in ("PodDisruptionBudget", "NetworkPolicy"):
            field = "selector" if kind == "PodDisruptionBudget" else "podSelector"
            assert selects(doc["spec"][field]["matchLabels"]), f"{kind}/{doc_name} selects no pod"
        elif kind in ("Deployment", "StatefulSet"):
            match = doc["spec"]["selector"]["matchLabels"]
            assert match.items() <= doc["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_workload_has_a_network_policy_and_pdb(name: str) -> None:
    docs = overlay(name)
    policies = [
        d["spec"]["podSelector"]["matchLabels"] for d in docs if d["kind"] == "NetworkPolicy"
    ]
    budgets = [
        d["spec"]["selector"]["matchLabels"] for d in docs if d["kind"] == "PodDisruptionBudget"
    ]
    for workload in workloads(docs):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        if workload["kind"] == "Job":
            continue
        if labels["app.kubernetes.io/name"] in ("kis-producer", "kis-processors"):
            assert any(b.items() <= labels.items() for b in budgets), workload["metadata"]["name"]
        if workload["metadata"]["name"] != "registry-compatibility":
            assert any(p.items() <= labels.items() for p in policies), workload["metadata"]["name"]


def test_prod_egress_reaches_kis() -> None:
    policy = find(overlay("prod"), "NetworkPolicy", "kis-producer")
    ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert {21000, 9443, 53, 9092, 8080} <= ports
    assert "Egress" in policy["spec"]["policyTypes"]


def test_dev_infrastructure_uses_the_compose_images() -> None:
    """One Kafka and one registry version across compose and the dev overlay."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    docs = overlay("dev")
    for service, (kind, name) in {
        "kafka": ("StatefulSet", "kafka"),
        "registry": ("Deployment", "registry"),
    }.items():
        container = find(docs, kind, name)["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == compose["services"][service]["image"]
