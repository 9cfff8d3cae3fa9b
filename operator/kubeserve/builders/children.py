"""All the children of an InferenceService: what the operator applies and `render` prints.

Variants come first, then the endpoint: in nginx mode the router's ConfigMap, Deployment,
the Service named after the InferenceService and, with more than one router replica, its
PodDisruptionBudget; in gateway-api mode an HTTPRoute and a GRPCRoute of that name.
"""

from __future__ import annotations

from typing import Any

from kubeserve.api import spec
from kubeserve.builders import grpcroute, httproute, router
from kubeserve.builders import variant as variant_builder
from kubeserve.builders.config import BuildConfig


def build_children(
    isvc: spec.InferenceService, config: BuildConfig | None = None
) -> list[dict[str, Any]]:
    """Build every child object, variants in spec order; same input, same output."""
    config = config or BuildConfig()
    objects: list[dict[str, Any]] = []
    for v in isvc.spec.variants:
        objects += variant_builder.variant_objects(isvc, v, config)
    if isvc.spec.routing.mode == "gateway-api":
        objects += [httproute.http_route(isvc), grpcroute.grpc_route(isvc)]
    else:
        objects += router.router_objects(isvc, config)
    return objects
