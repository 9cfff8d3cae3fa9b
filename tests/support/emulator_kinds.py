"""The emulator's resources as its store names them (group, version, plural), for tests."""

from __future__ import annotations

from kubeserve.testing.emulator.server import RESOURCE_TYPES
from kubeserve.testing.emulator.store import Store

NS = ("", "v1", "namespaces")
DEP = ("apps", "v1", "deployments")
POD = ("", "v1", "pods")
SVC = ("", "v1", "services")
CM = ("", "v1", "configmaps")
HPA = ("autoscaling", "v2", "horizontalpodautoscalers")
PDB = ("policy", "v1", "poddisruptionbudgets")
ROUTE = ("gateway.networking.k8s.io", "v1", "httproutes")
ISVC = ("serving.kubeserve.dev", "v1alpha1", "inferenceservices")
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


def store_with_namespace(name: str = "ns") -> Store:
    """A store of the emulator's resources holding one namespace."""
    store = Store(RESOURCE_TYPES)
    store.create(NS, None, {"metadata": {"name": name}})
    return store
