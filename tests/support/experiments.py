"""An experiment's InferenceService, and its status.experiment read back from an API server."""

from __future__ import annotations

from typing import Any

from kubeserve.testing.kube_client import ISVC, Kube, wait_for
from support import specs

# How often the operator tests' operators collect (--testing-experiment-interval, seconds);
# the API's least interval is 5 s.
INTERVAL = 0.5


def experiment_isvc(**experiment: Any) -> dict[str, Any]:
    """Give "digits" at v1 50 / v2 50, an experiment with v1 as control and `experiment`."""
    obj = specs.isvc(specs.variant("v1", 50), specs.variant("v2", 50))
    obj["spec"]["experiment"] = {"control": "v1", "minSamples": 100} | experiment
    return obj


def experiment(kube: Kube, namespace: str, name: str = "digits") -> dict[str, Any]:
    """Give the InferenceService's status.experiment, empty where it has none (yet)."""
    return dict(
        ((kube.get(ISVC, namespace, name) or {}).get("status") or {}).get("experiment") or {}
    )


def requests(kube: Kube, namespace: str) -> dict[str, int]:
    """Give the requests counted so far, by variant."""
    variants = experiment(kube, namespace).get("variants") or {}
    return {name: counts.get("requests", 0) for name, counts in variants.items()}


def wait_requests(kube: Kube, namespace: str, want: dict[str, int]) -> dict[str, Any]:
    """Wait until the requests counted are `want`; give status.experiment then."""
    wait_for(lambda: requests(kube, namespace) == want, timeout=20, what=f"requests {want}")
    return experiment(kube, namespace)
