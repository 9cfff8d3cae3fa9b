"""The chart: helm lint --strict, helm template with default and non-default values, every
rendered object valid against the official Kubernetes schemas, and the settings that matter."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from support import k8s_schema
from support.chart import CHART, by_kind, one, render, require_tool, run, value_args

DIGEST = "sha256:" + "ab" * 32
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "namespace-scoped": {"operator": {"watchNamespaces": ["team-a", "team-b"]}},
    "rbac-off": {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "ops"}},
    "metrics-on": {
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
            "service": {"annotations": {"prometheus.io/scrape": "true"}},
        }
    },
    "metrics-off": {"metrics": {"enabled": False}},
    "custom-images": {
        "image": {"repository": "registry.example.com/ks/operator", "tag": "dev"},
        "serverImage": {"repository": "registry.example.com/ks/server", "digest": DIGEST},
        "routerImage": {"repository": "registry.example.com/nginx-unprivileged", "tag": "1.27"},
        "imagePullSecrets": [{"name": "regcred"}],
    },
    "experiments": {
        "experiments": {
            "scrape": False,
            "prometheusUrl": "http://prometheus-operated.monitoring.svc:9090",
            "prometheusNamespaceLabel": "kubernetes_namespace",
            "prometheusVariantLabel": "serving_kubeserve_dev_variant",
            "networkPolicy": {"namespaces": ["team-a", "team-b"]},
        }
    },
    "everything": {
        "fullnameOverride": "ks",
        "crds": {"install": False},
        "operator": {
            "watchNamespaces": ["ml"],
            "gatewayAPI": True,
            "logFormat": "plain",
            "verbose": True,
            "resyncSeconds": 60,
            "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
        },
        "podLabels": {"team": "ml"},
        "podAnnotations": {"example.com/note": "x"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "priorityClassName": "system-cluster-critical",
        "resources": {"requests": {"cpu": "200m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    },
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("values")
    return {name: render(values, tmp) for name, values in VALUE_SETS.items()}


def env_of(objects: list[dict[str, Any]]) -> dict[str, str]:
    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container["env"]}


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_lint_strict(name: str, tmp_path: Path) -> None:
    helm = require_tool("helm")
    run([helm, "lint", "--strict", str(CHART), *value_args(VALUE_SETS[name], tmp_path)])


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_rendered_object_is_valid(
    name: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    objects = rendered[name]
    assert objects
    for obj in objects:
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/managed-by") == "Helm", obj["metadata"]["name"]
        assert len(obj["metadata"]["name"]) <= 63 or obj["kind"] == "CustomResourceDefinition"
        if obj["kind"] == "ServiceMonitor":
            # A Prometheus Operator kind: not in the Kubernetes schemas; check what we rely on.
            assert obj["apiVersion"] == "monitoring.coreos.com/v1"
            assert obj["spec"]["endpoints"][0]["port"] == "metrics"
            continue
        k8s_schema.assert_valid(obj)


def test_default_install_is_cluster_wide_with_crd_metrics_and_restricted_pod(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["default"]
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "Deployment",
            "Service",
            "ServiceAccount",
        ]
    )
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == one(objects, "ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["command"] == ["kubeserve", "operator"]
    assert container["image"] == "ghcr.io/kubeserve/kubeserve-operator:0.1.0"
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 8081}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    env = env_of(objects)
    assert env["KUBESERVE_NAMESPACES"] == ""
    assert env["KUBESERVE_SERVER_IMAGE"] == "ghcr.io/kubeserve/kubeserve-server:0.1.0"
    assert env["KUBESERVE_ROUTER_IMAGE"] == "nginxinc/nginx-unprivileged:1.27-alpine"
    assert env["KUBESERVE_HEALTH_PORT"] == "8080" and env["KUBESERVE_METRICS_PORT"] == "8081"
    assert env["KUBESERVE_GATEWAY_API"] == "false"
    service = one(objects, "Service")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def test_the_defaults_match_the_operators_own(rendered: dict[str, list[dict[str, Any]]]) -> None:
    from kubeserve.builders import config as build_config
    from kubeserve.controller import config as operator_config

    env = env_of(rendered["default"])
    defaults = operator_config.OperatorConfig()
    assert env["KUBESERVE_SERVER_IMAGE"] == build_config.DEFAULT_SERVER_IMAGE
    assert env["KUBESERVE_ROUTER_IMAGE"] == build_config.DEFAULT_ROUTER_IMAGE
    assert float(env["KUBESERVE_RESYNC_SECONDS"]) == defaults.resync_seconds
    assert int(env["KUBESERVE_WORKERS"]) == defaults.workers
    assert env["KUBESERVE_CLUSTER_DOMAIN"] == defaults.cluster_domain
    assert int(env["KUBESERVE_HEALTH_PORT"]) == defaults.health_port
    assert int(env["KUBESERVE_METRICS_PORT"]) == defaults.metrics_port
    # Every variable the chart sets is one the operator reads.
    from_env = operator_config.OperatorConfig.from_env(env)
    assert from_env.server_image == env["KUBESERVE_SERVER_IMAGE"]
    assert from_env.namespaces == ()


def test_namespace_scoped_mode_grants_nothing_cluster_wide(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["namespace-scoped"]
    assert not by_kind(objects, "ClusterRole") and not by_kind(objects, "ClusterRoleBinding")
    roles = by_kind(objects, "Role")
    bindings = by_kind(objects, "RoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    sa = one(objects, "ServiceAccount")["metadata"]
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": sa["name"], "namespace": "kubeserve-system"}
        ]
    assert env_of(objects)["KUBESERVE_NAMESPACES"] == "team-a,team-b"


def test_rbac_off_creates_no_roles_and_uses_the_named_account(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["rbac-off"]
    for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ServiceAccount"):
        assert not by_kind(objects, kind), kind
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "ops"


def test_metrics_switches(rendered: dict[str, list[dict[str, Any]]]) -> None:
    on = rendered["metrics-on"]
    monitor = one(on, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["selector"]["matchLabels"] == one(on, "Service")["spec"]["selector"]
    assert one(on, "Service")["metadata"]["annotations"] == {"prometheus.io/scrape": "true"}
    off = rendered["metrics-off"]
    assert not by_kind(off, "Service") and not by_kind(off, "ServiceMonitor")
    assert env_of(off)["KUBESERVE_METRICS_PORT"] == "0"
    ports = one(off, "Deployment")["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert [p["name"] for p in ports] == ["health"]


def test_custom_images(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["custom-images"]
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.example.com/ks/operator:dev"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    env = env_of(objects)
    assert env["KUBESERVE_SERVER_IMAGE"] == f"registry.example.com/ks/server@{DIGEST}"
    assert env["KUBESERVE_ROUTER_IMAGE"] == "registry.example.com/nginx-unprivileged:1.27"


def test_everything_non_default(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["everything"]
    assert not by_kind(objects, "CustomResourceDefinition")
    deployment = one(objects, "Deployment")
    assert deployment["metadata"]["name"] == "ks"
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["labels"]["team"] == "ml"
    assert pod["metadata"]["annotations"] == {"example.com/note": "x"}
    spec = pod["spec"]
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["priorityClassName"] == "system-cluster-critical"
    assert spec["containers"][0]["args"] == ["--verbose"]
    env = env_of(objects)
    assert env["KUBESERVE_GATEWAY_API"] == "true"
    assert env["KUBESERVE_LOG_FORMAT"] == "plain"
    assert env["HTTPS_PROXY"] == "http://proxy:3128"
    assert [r["metadata"]["namespace"] for r in by_kind(objects, "Role")] == ["ml"]


def test_names_are_truncated_to_63(tmp_path: Path) -> None:
    release = "r" * 53  # helm's own limit on release names
    objects = render({}, tmp_path, release=release)
    for obj in objects:
        if obj["kind"] != "CustomResourceDefinition":
            assert len(obj["metadata"]["name"]) <= 63, obj["metadata"]["name"]
            assert not obj["metadata"]["name"].endswith("-")
        for value in obj["metadata"]["labels"].values():
            assert len(value) <= 63


@pytest.mark.parametrize(
    "values",
    [
        {"typo": 1},
        {"operator": {"logFormat": "xml"}},
        {"operator": {"watchNamespaces": ["Team_A"]}},
        {"image": {"pullPolicy": "Sometimes"}},
        {"serverImage": {"repository": "x", "digest": "latest"}},
        {"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}},
        {"serviceAccount": {"create": False, "name": ""}},
        {"experiments": {"prometheusUrl": "prometheus:9090"}},
        {"experiments": {"networkPolicy": {"namespaces": ["Team_A"]}}},
        {"experiments": {"scrape": "yes"}},
    ],
    ids=repr,
)
def test_bad_values_are_refused(values: dict[str, Any], tmp_path: Path) -> None:
    helm = require_tool("helm")
    proc = run(
        [helm, "template", "kubeserve", str(CHART), *value_args(values, tmp_path)], check=False
    )
    assert proc.returncode != 0, proc.stdout[:500]


def test_notes_tell_how_to_apply_an_example_and_call_it(tmp_path: Path) -> None:
    helm = require_tool("helm")
    proc = run(
        [helm, "install", "kubeserve", str(CHART), "--dry-run=client", "-n", "kubeserve-system"]
    )
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert "examples/canary.yaml" in notes
    assert "kubectl -n default wait --for=condition=Ready infsvc/digits-canary" in notes
    assert "port-forward service/digits-canary" in notes
    assert "/v1/models/digits-canary:predict" in notes
    assert "x-kubeserve-variant" in notes


def test_values_file_documents_every_value() -> None:
    """Every value (a key line that is not a section header) has an example in its comment."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    inside: int | None = None  # indent of a section documented as a whole (e.g. resources)
    for index, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z][\w.-]*):(.*)$", line)
        if not match:
            continue
        indent, key, rest = match.groups()
        if inside is not None and len(indent) > inside:
            continue
        inside = None
        above = []
        for prev in reversed(lines[:index]):
            if not prev.strip().startswith("#"):
                break
            above.append(prev)
        documented = any("Example:" in c for c in above)
        following = next((n for n in lines[index + 1 :] if n.strip()), "")
        is_section = not rest.strip() and len(following) - len(following.lstrip()) > len(indent)
        if is_section and documented:
            inside = len(indent)
        elif not documented and not (is_section and not following.lstrip().startswith("-")):
            undocumented.append(f"line {index + 1}: {key}")
    assert not undocumented, "values without a documented example: " + ", ".join(undocumented)


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_the_operator_accepts_the_rendered_command_and_environment(
    name: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    """What the container runs parses as the operator's own flags and KUBESERVE_* settings."""
    from kubeserve.controller import config as operator_config
    from kubeserve.controller import main as operator_main

    objects = rendered[name]
    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["kubeserve", "operator"]
    args = operator_main.build_parser().parse_args(container.get("args", []))
    env = {e["name"]: e["value"] for e in container["env"] if e["name"].startswith("KUBESERVE_")}
    config = operator_config.OperatorConfig.from_env(env)
    values = VALUE_SETS[name].get("operator", {})
    assert config.namespaces == tuple(values.get("watchNamespaces", ()))
    assert config.gateway_api is values.get("gatewayAPI", False)
    assert config.log_format == values.get("logFormat", "json")
    assert args.verbose is values.get("verbose", False)
    experiments = VALUE_SETS[name].get("experiments", {})
    assert config.scrape_pods is experiments.get("scrape", True)
    assert config.prometheus_url == (experiments.get("prometheusUrl") or None)
    assert config.prometheus_namespace_label == experiments.get(
        "prometheusNamespaceLabel", "namespace"
    )
    assert config.prometheus_variant_label == experiments.get("prometheusVariantLabel", "version")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert config.health_port == ports["health"]
    assert config.metrics_port == ports.get("metrics", 0)


def test_experiments_read_pods_by_default_with_no_network_policy(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    env = env_of(rendered["default"])
    assert env["KUBESERVE_EXPERIMENT_SCRAPE"] == "true"
    assert env["KUBESERVE_PROMETHEUS_URL"] == ""
    assert not by_kind(rendered["default"], "NetworkPolicy")


def test_a_network_policy_lets_only_the_operator_reach_the_variant_pods_port_http(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    from kubeserve.builders import meta

    objects = rendered["experiments"]
    policies = by_kind(objects, "NetworkPolicy")
    assert [p["metadata"]["namespace"] for p in policies] == ["team-a", "team-b"]
    operator_pod = one(objects, "Deployment")["spec"]["template"]
    for policy in policies:
        spec = policy["spec"]
        # The variant pods, by the labels the builders give them.
        assert spec["podSelector"]["matchLabels"] == {
            "app.kubernetes.io/managed-by": meta.MANAGED_BY,
            meta.COMPONENT_LABEL: "predictor",
        }
        assert spec["policyTypes"] == ["Ingress"]
        [rule] = spec["ingress"]
        [peer] = rule["from"]
        assert peer["namespaceSelector"]["matchLabels"] == {
            "kubernetes.io/metadata.name": "kubeserve-system"
        }
        selected = peer["podSelector"]["matchLabels"]
        assert selected.items() <= operator_pod["metadata"]["labels"].items()
        assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
