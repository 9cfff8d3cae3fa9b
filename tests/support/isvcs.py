"""InferenceServices in an emulated cluster: create one, read its children and conditions.

The operator integration tests share these: what the operator should have made of an
InferenceService (`desired_children`, from the builders), what it did make
(`actual_children`, by its labels), and waits on both and on the status's conditions.
"""

from __future__ import annotations

import copy
from typing import Any

from kubeserve.api import validation
from kubeserve.builders import children
from kubeserve.testing.kube_client import (
    CONFIGMAPS,
    DEPLOYMENTS,
    ISVC,
    SERVICES,
    Kube,
    wait_for,
)

# Every kind the operator makes for an InferenceService, as (apiVersion, plural).
CHILD_RESOURCES = [
    DEPLOYMENTS,
    SERVICES,
    CONFIGMAPS,
    ("autoscaling/v2", "horizontalpodautoscalers"),
    ("policy/v1", "poddisruptionbudgets"),
]


def create(kube: Kube, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
    """Create a copy of the InferenceService `obj` in `namespace`; give what was stored."""
    obj = copy.deepcopy(obj)
    obj["metadata"]["namespace"] = namespace
    return kube.create(ISVC, namespace, obj)


def actual_children(
    kube: Kube, namespace: str, name: str | None = None
) -> dict[tuple[str, str], dict[str, Any]]:
    """Give the operator's children in `namespace` (of InferenceService `name` alone if named)."""
    selector = "app.kubernetes.io/managed-by=kubeserve-operator"
    if name:
        selector += f",serving.kubeserve.dev/inferenceservice={name}"
    found = {}
    for resource in CHILD_RESOURCES:
        for obj in kube.list(resource, namespace, selector):
            found[(obj["kind"], obj["metadata"]["name"])] = obj
    return found


def desired_children(obj: dict[str, Any], namespace: str) -> set[tuple[str, str]]:
    """Give the (kind, name) of each child the builders make of `obj` in `namespace`."""
    obj = copy.deepcopy(obj)
    obj["metadata"]["namespace"] = namespace
    return {
        (o["kind"], o["metadata"]["name"]) for o in children.build_children(validation.parse(obj))
    }


def condition(kube: Kube, namespace: str, name: str, type_: str = "Ready") -> dict[str, Any] | None:
    """Give an InferenceService's condition of this type, or None while it has none."""
    isvc = kube.get(ISVC, namespace, name) or {}
    for cond in (isvc.get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return None


def wait_reason(kube: Kube, namespace: str, name: str, type_: str, reason: str) -> dict[str, Any]:
    """Wait until a condition of an InferenceService has this reason; give the condition."""
    found: dict[str, Any] = wait_for(
        lambda: (c := condition(kube, namespace, name, type_)) and c["reason"] == reason and c,
        what=f"{type_} reason {reason}",
    )
    return found


def mark_ready(kube: Kube, namespace: str, name: str | None = None) -> None:
    """Report the operator's Deployments ready, as the Deployment controller would."""
    for (kind, child), _ in actual_children(kube, namespace, name).items():
        if kind == "Deployment":
            kube.mark_deployment_ready(namespace, child)


def wait_children(
    kube: Kube, namespace: str, obj: dict[str, Any], timeout: float = 20
) -> dict[tuple[str, str], dict[str, Any]]:
    """Wait until the InferenceService `obj` has exactly its desired children; give them."""
    want = desired_children(obj, namespace)
    return wait_for(
        lambda: (
            (found := actual_children(kube, namespace, obj["metadata"]["name"])).keys() == want
            and found
        ),
        timeout=timeout,
        what=f"children {sorted(want)}",
    )
