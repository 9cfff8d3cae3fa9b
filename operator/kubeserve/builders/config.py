"""What the builders need beyond the spec: images and defaults the operator is configured with."""

from __future__ import annotations

import dataclasses
from typing import Any

import kubeserve

DEFAULT_SERVER_IMAGE = f"ghcr.io/kubeserve/kubeserve-server:{kubeserve.__version__}"
DEFAULT_ROUTER_IMAGE = "nginxinc/nginx-unprivileged:1.27-alpine"


@dataclasses.dataclass(frozen=True, kw_only=True)
class BuildConfig:
    """Operator-wide settings; the same config and spec always give the same manifests."""

    server_image: str = DEFAULT_SERVER_IMAGE
    router_image: str = DEFAULT_ROUTER_IMAGE
    image_pull_policy: str = "IfNotPresent"
    cluster_domain: str = "cluster.local"
    # The uid/gid of the server image's non-root user (distroless' `nonroot`).
    run_as_user: int = 65532
    # Used when a variant gives no resources: enough for the example models, and a cpu
    # request so that an HPA has something to measure utilization against.
    default_resources: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"memory": "1Gi"},
        }
    )
    fetch_resources: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"memory": "512Mi"},
        }
    )
