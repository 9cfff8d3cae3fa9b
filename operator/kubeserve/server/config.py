"""The server's configuration: one frozen dataclass, filled from flags and environment.

The operator configures the container through ``KUBESERVE_*`` environment variables; a
person at a shell uses flags. Flags win over the environment, which wins over defaults.
"""

from __future__ import annotations

import dataclasses
import pathlib


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """Everything ``kubeserve serve`` can be told."""

    model_name: str
    model_dir: pathlib.Path
    model_format: str | None = None
    host: str = "0.0.0.0"
    port: int = 8080
    variant: str | None = None
    max_body_bytes: int = 16 * 1024 * 1024
    batch_max_size: int = 0  # 0 turns dynamic batching off
    batch_max_wait_ms: float = 2.0
    allow_pickle: bool = False
    skops_trusted: tuple[str, ...] = ()
    device: str = "auto"
    intra_op_threads: int = 1
    workers: int = 1
    idle_timeout: float = 60.0  # seconds a connection may stay silent (0: forever)
    drain_delay: float = 0.0
    drain_timeout: float = 30.0
    log_level: str = "INFO"
