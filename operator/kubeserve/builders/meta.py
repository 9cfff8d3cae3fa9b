"""Labels and object metadata shared by every child of an InferenceService."""

from __future__ import annotations

from typing import Any

import kubeserve
from kubeserve.api import spec

LABEL_PREFIX = kubeserve.API_GROUP
ISVC_LABEL = f"{LABEL_PREFIX}/inferenceservice"
VARIANT_LABEL = f"{LABEL_PREFIX}/variant"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY = "kubeserve-operator"


def selector_labels(
    isvc: spec.InferenceService, *, component: str, variant: str | None = None
) -> dict[str, str]:
    """Give the labels that select a component's pods; they never change for an object."""
    labels = {ISVC_LABEL: isvc.metadata.name, COMPONENT_LABEL: component}
    if variant is not None:
        labels[VARIANT_LABEL] = variant
    return labels


def labels(
    isvc: spec.InferenceService, *, component: str, variant: str | None = None
) -> dict[str, str]:
    """Give the full recommended label set of a child object and its pods."""
    return {
        "app.kubernetes.io/name": "kubeserve",
        "app.kubernetes.io/instance": isvc.metadata.name,
        "app.kubernetes.io/part-of": "kubeserve",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        **selector_labels(isvc, component=component, variant=variant),
    }


def object_meta(
    isvc: spec.InferenceService, name: str, *, component: str, variant: str | None = None
) -> dict[str, Any]:
    """Give a child's metadata; the reconciler adds the owner reference when it applies it
    (it needs the uid, which only an object read from the API has)."""
    meta: dict[str, Any] = {"name": name}
    if isvc.metadata.namespace:
        meta["namespace"] = isvc.metadata.namespace
    meta["labels"] = labels(isvc, component=component, variant=variant)
    return meta


def http_service(
    isvc: spec.InferenceService,
    name: str,
    *,
    port: int,
    component: str,
    variant: str | None = None,
) -> dict[str, Any]:
    """Build a ClusterIP Service that sends `port` to the selected pods' `http` port."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(isvc, name, component=component, variant=variant),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(isvc, component=component, variant=variant),
            "ports": [
                {
                    "name": "http",
                    "port": port,
                    "targetPort": "http",
                    "protocol": "TCP",
                    "appProtocol": "http",
                }
            ],
        },
    }
