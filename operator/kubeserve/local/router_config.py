"""The router config the operator renders, placed on loopback ports and in a private directory.

In a pod the router listens on fixed ports, proxies to the variants' Services by cluster DNS
name and writes under the /tmp emptyDir; on a developer machine each of those must differ.
`kubeserve up`, the data-plane tests and the router benchmark render the config for such a
`nginx_config.Placement`; everything else in it is the cluster's config.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Mapping
from pathlib import Path

from kubeserve.api import spec
from kubeserve.builders import nginx_config
from kubeserve.builders.config import BuildConfig

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """Give a loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass(frozen=True)
class GrpcPorts:
    """The gRPC side of a loopback router: the port it listens on, each variant's gRPC port."""

    listen: int
    variants: Mapping[str, int]


def _addresses(ports: Mapping[str, int]) -> dict[str, str]:
    return {name: f"{LOOPBACK}:{port}" for name, port in ports.items()}


def loopback_placement(
    ports: Mapping[str, int],
    *,
    listen: int,
    health: int,
    workdir: Path,
    grpc: GrpcPorts | None = None,
) -> nginx_config.Placement:
    """Place a router on loopback: variants on `ports` (by name), its files under `workdir`.

    Without `grpc` (servers started with no gRPC port) the router has no gRPC listener.
    """
    return nginx_config.Placement(
        host=LOOPBACK,
        port=listen,
        health_port=health,
        upstreams=_addresses(ports),
        grpc_port=None if grpc is None else grpc.listen,
        grpc_upstreams=None if grpc is None else _addresses(grpc.variants),
        temp_dir=workdir,
    )


def loopback_config(
    isvc: spec.InferenceService,
    ports: Mapping[str, int],
    *,
    listen: int,
    health: int,
    workdir: Path,
    config: BuildConfig | None = None,
    grpc: GrpcPorts | None = None,
) -> str:
    """Render the router config for upstreams on 127.0.0.1 `ports` (by variant)."""
    placement = loopback_placement(ports, listen=listen, health=health, workdir=workdir, grpc=grpc)
    return nginx_config.render_config(isvc, config, placement=placement)
