"""The router config the operator renders, placed on loopback ports and in a private directory.

In a pod the router listens on fixed ports, proxies to the variants' Services by cluster DNS
name and writes under the /tmp emptyDir; on a developer machine each of those must differ.
`kubeserve up`, the data-plane tests and the router benchmark render the config for such a
`nginx_config.Placement`; everything else in it is the cluster's config.
"""

from __future__ import annotations

import dataclasses
import random
import socket
from collections.abc import Mapping
from pathlib import Path

from kubeserve.api import spec
from kubeserve.builders import nginx_config
from kubeserve.builders.config import BuildConfig

LOOPBACK = "127.0.0.1"


# Where the kernel takes the local ports of outgoing connections (Linux's default range, or
# what /proc says). A listener's port picked in it can be taken by any connection made before
# the listener binds it (a CI run lost four tests so: "Address already in use").
EPHEMERAL = (32768, 60999)
LOWEST = 10000  # below: ports that well-known and registered services are likelier to use
_pick = random.Random()


def ephemeral_range() -> tuple[int, int]:
    """Give the kernel's range for outgoing connections' local ports (Linux; else a guess)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return EPHEMERAL


def free_port() -> int:
    """Give a loopback port that was free a moment ago, below the ephemeral range when it can."""
    low, _ = ephemeral_range()
    for _ in range(64 if low - LOWEST > 1000 else 0):
        with socket.socket() as s:
            try:
                s.bind((LOOPBACK, _pick.randrange(LOWEST, low)))
            except OSError:
                continue  # taken: another
            return int(s.getsockname()[1])
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
