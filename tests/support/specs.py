"""Small builders of InferenceService dicts for tests: a valid base, changed per test."""

from __future__ import annotations

import copy
from typing import Any


def variant(name: str = "v1", weight: int | None = None, **extra: Any) -> dict[str, Any]:
    """Give a valid variant dict."""
    v: dict[str, Any] = {
        "name": name,
        "model": {"format": "onnx", "storageUri": f"file:///models/digits/{name}"},
    }
    if weight is not None:
        v["weight"] = weight
    v.update(extra)
    return v


def isvc(
    *variants: dict[str, Any],
    name: str = "digits",
    routing: dict[str, Any] | None = None,
    namespace: str | None = "default",
) -> dict[str, Any]:
    """Give a valid InferenceService dict (one variant unless given)."""
    obj: dict[str, Any] = {
        "apiVersion": "serving.kubeserve.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {"variants": list(variants) or [variant()]},
    }
    if namespace:
        obj["metadata"]["namespace"] = namespace
    if routing is not None:
        obj["spec"]["routing"] = routing
    return copy.deepcopy(obj)


def canary() -> dict[str, Any]:
    """Give a valid 90/10 canary."""
    return isvc(variant("v1", 90), variant("v2", 10))


def sticky_ab() -> dict[str, Any]:
    """Give a three-way sticky A/B test with an override header and a 20% shadow."""
    return isvc(
        variant("v1", 50),
        variant("v2", 30),
        variant("v3", 20),
        variant("shadow", 0),
        routing={
            "sticky": {"header": "x-user-id"},
            "overrideHeader": "x-kubeserve-variant",
            "mirror": {"variant": "shadow", "percent": 20},
        },
    )


def shrinks() -> dict[str, list[dict[str, Any]]]:
    """Give every way a spec can shrink, by a name that is also a valid InferenceService name.

    Each is the specs an InferenceService goes through, the first one converged and ready.
    """
    gateway = {"mode": "gateway-api", "parentRefs": [{"name": "gateway"}]}
    return {
        "variant-removed": [canary(), isvc(variant("v1", 100))],
        "mirror-removed": [
            isvc(
                variant("v1", 100),
                variant("shadow", 0),
                routing={"mirror": {"variant": "shadow", "percent": 20}},
            ),
            isvc(variant("v1", 100), variant("shadow", 0)),
            isvc(variant("v1", 100)),
        ],
        "router-removed": [
            isvc(
                routing={
                    "router": {
                        "replicas": 3,
                        "workers": 2,
                        "resources": {"requests": {"cpu": "0.1"}},
                    }
                }
            ),
            isvc(),
        ],
        "autoscaling-to-replicas": [
            isvc(variant("v1", autoscaling={"minReplicas": 1, "maxReplicas": 4})),
            isvc(variant("v1", replicas=2)),
        ],
        "budget-removed": [
            isvc(variant("v1", disruptionBudget={"maxUnavailable": "50%"})),
            isvc(),
        ],
        "sticky-removed": [
            isvc(
                variant("v1", 50),
                variant("v2", 50),
                routing={"sticky": {"cookie": "user"}, "overrideHeader": "x-variant"},
            ),
            isvc(variant("v1", 50), variant("v2", 50)),
        ],
        "gateway-and-back": [isvc(routing=gateway), isvc(), isvc(routing=gateway)],
    }
