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
from kubeserve.testing.kube_client import ISVC, Kube
from kubeserve.testing.operator_process import OperatorProcess
from support.settling import GATEWAY_RESYNC_SECONDS, converge, describe, operator_writes, wait_quiet

ROOT = Path(__file__).resolve().parents[2]

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


def test_a_converged_operator_writes_nothing_on_resync(
    kube: Kube, emulator: EmulatorThread, operator: OperatorProcess, namespace: str
) -> None:
    objs = inference_services()
    for obj in objs:
        obj["metadata"]["namespace"] = namespace
        kube.create(ISVC, namespace, obj)
    converge(kube, namespace, [o["metadata"]["name"] for o in objs])
    wait_quiet(emulator, seconds=3 * GATEWAY_RESYNC_SECONDS, timeout=60)
    mark = emulator.emulator.writes
    time.sleep(5 * GATEWAY_RESYNC_SECONDS)
    writes = operator_writes(emulator, mark)
    assert not writes, f"writes on resync of a converged cluster:\n{describe(writes)}"
