"""The router config the operator renders, pointed at loopback ports and a private directory.

The config in a pod listens on fixed ports, proxies to cluster DNS names and writes under
the /tmp emptyDir; on a developer machine each of those must differ. Every edit expects the
exact number of matches, so a template change that would make the local run differ from the
cluster's router fails loudly instead of silently.
"""

from __future__ import annotations

import socket
from pathlib import Path

from kubeserve.api import spec
from kubeserve.builders import router
from kubeserve.builders.config import BuildConfig

# client_body, proxy, fastcgi, uwsgi, scgi temp paths and the pid file.
TMP_PATHS = 6


def free_port() -> int:
    """Give a loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _replace(text: str, old: str, new: str, count: int) -> str:
    found = text.count(old)
    if found != count:
        raise ValueError(f"expected {count} x {old!r} in the rendered router config, found {found}")
    return text.replace(old, new)


def loopback_config(
    isvc: spec.InferenceService,
    ports: dict[str, int],
    *,
    listen: int,
    health: int,
    workdir: Path,
    config: BuildConfig | None = None,
) -> str:
    """Render the router config for upstreams on 127.0.0.1 `ports` (by variant)."""
    config = config or BuildConfig()
    text = router.render_config(isvc, config)
    for v in isvc.spec.variants:
        address = router.upstream_address(isvc, v.name, config)
        text = _replace(text, f"server {address};", f"server 127.0.0.1:{ports[v.name]};", 1)
    text = _replace(text, f"listen {router.ROUTER_PORT};", f"listen 127.0.0.1:{listen};", 1)
    text = _replace(text, f"listen {router.HEALTH_PORT};", f"listen 127.0.0.1:{health};", 1)
    return _replace(text, " /tmp/", f" {workdir}/", TMP_PATHS)
