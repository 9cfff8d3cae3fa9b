"""nginx itself accepts the router config: of every example, and of any valid spec.

`nginx -t` on the config the operator renders, placed on loopback ports in a test directory
as `kubeserve up` places it, with its gRPC listener.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from kubeserve import manifests
from kubeserve.api import spec, validation
from kubeserve.local import router_config
from kubeserve.testing import nginx as dataplane
from support import specs, strategies
from support.nginx import requires_nginx

PROFILE = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def parse(obj: dict[str, Any]) -> spec.InferenceService:
    return validation.parse(obj)


@requires_nginx
@PROFILE
@given(strategies.inference_services())
def test_nginx_accepts_the_config_of_any_valid_spec(obj: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as d:
        assert_nginx_accepts(parse(obj), Path(d))


def assert_nginx_accepts(isvc: spec.InferenceService, work: Path) -> None:
    """Run `nginx -t` on the router config of `isvc`, pointed at loopback ports in `work`."""
    ports = {v.name: 9 for v in isvc.spec.variants}
    os.chmod(work, 0o755)
    grpc = router_config.GrpcPorts(listen=3, variants={v.name: 10 for v in isvc.spec.variants})
    text = dataplane.loopback_config(isvc, ports, listen=1, health=2, workdir=work, grpc=grpc)
    assert "grpc_pass" in text
    (work / "nginx.conf").write_text(text)
    assert dataplane.NGINX is not None
    command = [
        dataplane.NGINX,
        "-t",
        "-q",
        "-e",
        str(work / "e.log"),
        "-p",
        str(work),
        "-c",
        str(work / "nginx.conf"),
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + (work / "e.log").read_text()


@requires_nginx
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_nginx_accepts_every_example(path: Path, tmp_path: Path) -> None:
    for doc in manifests.load_documents(str(path)):
        assert_nginx_accepts(parse(doc), tmp_path)


@requires_nginx
def test_nginx_accepts_a_config_placed_in_a_directory_with_spaces(tmp_path: Path) -> None:
    work = tmp_path / "a work dir"
    work.mkdir()
    assert_nginx_accepts(parse(specs.canary()), work)
