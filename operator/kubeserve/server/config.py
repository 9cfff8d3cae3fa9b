"""The server's configuration: one frozen dataclass, filled from flags and environment.

The operator configures the container through ``KUBESERVE_*`` environment variables; a
person at a shell uses flags. Flags win over the environment, which wins over defaults.
"""

from __future__ import annotations

import dataclasses
import pathlib

# The Open Inference Protocol's usual gRPC port (KServe's and Triton's servers use 8081 and
# 8001); the operator's pods declare it as their grpc port.
DEFAULT_GRPC_PORT = 8081


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """Everything ``kubeserve serve`` can be told."""

    model_name: str
    model_dir: pathlib.Path
    model_format: str | None = None
    host: str = "0.0.0.0"
    port: int = 8080
    # gRPC (inference.GRPCInferenceService) on its own port; 0 turns it off. Unless the port
    # was asked for (``grpc_port_required``), a default port that another process holds
    # only costs a warning: HTTP is still served.
    grpc_port: int = DEFAULT_GRPC_PORT
    grpc_port_required: bool = False
    variant: str | None = None
    max_body_bytes: int = 16 * 1024 * 1024
    batch_max_size: int = 0  # 0 turns dynamic batching off
    batch_max_wait_ms: float = 2.0
    allow_pickle: bool = False
    skops_trusted: tuple[str, ...] = ()
    device: str = "auto"
    intra_op_threads: int = 1
    workers: int = 1
    # What one client may hold; http.Limits says what each means (0 turns a timeout off).
    max_connections: int = 900  # per worker
    idle_timeout: float = 60.0
    header_timeout: float = 10.0
    body_timeout: float = 10.0
    body_min_rate: float = 16384.0
    send_timeout: float = 30.0
    drain_delay: float = 0.0
    # The pod's 30 s terminationGracePeriodSeconds minus its 5 s preStop sleep leaves 25 s.
    drain_timeout: float = 20.0
    log_level: str = "INFO"
