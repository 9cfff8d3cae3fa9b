"""The real operator against an emulator that defaults and normalises as kube-apiserver does.

What the operator reads back is not what it sent: defaults filled in, quantities in canonical
form, empty fields dropped, managedFields added. Once every InferenceService has converged,
a resync must find nothing to change: any write then means the operator's comparison does
not tolerate something a real API server does, and it would write forever.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeserve.testing.emulator import EmulatorThread
from kubeserve.testing.emulator.server import Write
from kubeserve.testing.kube_client import DEPLOYMENTS, ISVC, Kube, wait_for
from kubeserve.testing.operator_process import OperatorProcess

ROOT = Path(__file__).resolve().parents[2]
RESYNC_SECONDS = 1.0  # the gateway_operator fixture's (conftest)
HTTPROUTES = ("gateway.networking.k8s.io/v1", "httproutes")
# The operator writes through the kubernetes client, whose User-Agent names its generator.
OPERATOR = "OpenAPI-Generator"

# Values a real API server rewrites: non-canonical quantities, fields it defaults anyway.
QUIRKY = {
    "apiVersion": "serving.kubeserve.dev/v1alpha1",
    "kind": "InferenceService",
    "metadata": {"name": "quirky"},
    "spec": {
        "variants": [
            {
                "name": "a",
                "weight": 100,
                "model": {"format": "onnx", "storageUri": "file:///models/digits/a"},
                "autoscaling": {"maxReplicas": 4},
                "disruptionBudget": {"maxUnavailable": "50%"},
                "resources": {
                    "requests": {"cpu": "0.5", "memory": "1024Mi"},
                    "limits": {"cpu": "1000m", "memory": "1.5Gi"},
                },
                "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "nodeSelector": {"pool": "inference"},
            },
            {
                "name": "b",
                "weight": 0,
                "model": {"format": "onnx", "storageUri": "file:///models/digits/b"},
                "replicas": 2,
                "disruptionBudget": {"minAvailable": 1},
            },
        ],
        "routing": {
            "router": {"replicas": 3, "workers": 1, "resources": {"requests": {"cpu": "0.1"}}}
        },
    },
}


def inference_services() -> list[dict[str, Any]]:
    """Every example of the repository, and one written the way no API server writes it back."""
    found = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "examples").glob("*.yaml"))]
    return [*found, copy.deepcopy(QUIRKY)]


@pytest.fixture(scope="module")
def operator(gateway_operator: OperatorProcess) -> OperatorProcess:
    return gateway_operator


def operator_writes(emulator: EmulatorThread, since: int) -> list[Write]:
    """Give the operator's writes after the first `since` writes the emulator served."""
    return [w for w in list(emulator.emulator.journal) if w.seq >= since and w.manager == OPERATOR]


def describe(writes: list[Write]) -> str:
    return "\n".join(
        f"{w.verb} {w.plural}/{w.name}{'/' + w.subresource if w.subresource else ''}: "
        f"{w.body.decode(errors='replace')[:2000]}"
        for w in writes
    )


def converge(kube: Kube, namespace: str, names: list[str]) -> None:
    """Play the controllers the emulator lacks until every InferenceService is Ready."""

    def ready() -> bool:
        for dep in kube.list(DEPLOYMENTS, namespace):
            if (dep.get("status") or {}).get("observedGeneration") != dep["metadata"]["generation"]:
                kube.mark_deployment_ready(namespace, dep["metadata"]["name"])
        for route in kube.list(HTTPROUTES, namespace):
            if not (route.get("status") or {}).get("parents"):
                kube.patch(
                    HTTPROUTES, namespace, route["metadata"]["name"], accepted(route), sub="status"
                )
        states = [kube.get(ISVC, namespace, name) or {} for name in names]
        return all(
            any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (isvc.get("status") or {}).get("conditions") or []
            )
            for isvc in states
        )

    wait_for(ready, timeout=60, interval=0.5, what="every InferenceService Ready")


def accepted(route: dict[str, Any]) -> dict[str, Any]:
    """Give the status a Gateway implementation writes on an HTTPRoute it accepts."""
    conditions = [
        {
            "type": kind,
            "status": "True",
            "reason": kind,
            "message": "",
            "lastTransitionTime": "2024-01-01T00:00:00Z",
            "observedGeneration": route["metadata"]["generation"],
        }
        for kind in ("Accepted", "ResolvedRefs")
    ]
    parents = [
        {"parentRef": ref, "controllerName": "example.com/gateway", "conditions": conditions}
        for ref in route["spec"].get("parentRefs") or []
    ]
    return {"status": {"parents": parents}}


def wait_quiet(emulator: EmulatorThread, seconds: float, timeout: float) -> None:
    """Wait until the operator has written nothing for `seconds`; fail showing what it wrote."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mark = emulator.emulator.writes
        time.sleep(seconds)
        if not operator_writes(emulator, mark):
            return
    recent = operator_writes(emulator, emulator.emulator.writes - 40)
    raise AssertionError(f"the operator never stopped writing; last writes:\n{describe(recent)}")


def test_a_converged_operator_writes_nothing_on_resync(
    kube: Kube, emulator: EmulatorThread, operator: OperatorProcess, namespace: str
) -> None:
    objs = inference_services()
    for obj in objs:
        obj["metadata"]["namespace"] = namespace
        kube.create(ISVC, namespace, obj)
    converge(kube, namespace, [o["metadata"]["name"] for o in objs])
    wait_quiet(emulator, seconds=3 * RESYNC_SECONDS, timeout=60)
    mark = emulator.emulator.writes
    time.sleep(5 * RESYNC_SECONDS)
    writes = operator_writes(emulator, mark)
    assert not writes, f"writes on resync of a converged cluster:\n{describe(writes)}"
