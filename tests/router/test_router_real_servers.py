"""The router in front of real kubeserve model servers: split, override and served-by agree
with what the servers themselves say they ran.

Two `kubeserve serve` processes serve the digits model's versions v1 and v2 (trained by
scripts/train_example_models.py, a few seconds, no download); the rendered router splits
between them. Each answer's `model_version` comes from the server that ran the model, so it
must equal the router's served-by header.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scipy import stats

from kubeserve.api import validation
from kubeserve.testing import nginx as dataplane
from support import specs
from support.nginx import requires_nginx

pytestmark = [requires_nginx, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
PATH = "/v2/models/digits/infer"


@pytest.fixture(scope="module")
def onnx_models(example_models: Path) -> Path:
    pytest.importorskip("onnxruntime", reason="the model server's runtime is not installed")
    return example_models / "digits-onnx"


@contextlib.contextmanager
def kubeserve_server(models: Path, variant: str) -> Iterator[int]:
    port = dataplane.free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "kubeserve.server", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--model-name", "digits", "--model-dir", str(models), "--variant", variant, "--log-level", "WARNING",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "kubeserve serve exited"
            with contextlib.suppress(OSError):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                conn.request("GET", "/v2/health/ready")
                if conn.getresponse().status == 200:
                    break
            assert time.monotonic() < deadline, "kubeserve serve did not get ready"
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_split_and_override_in_front_of_real_model_servers(
    onnx_models: Path, tmp_path: Path
) -> None:
    isvc = validation.parse(
        specs.isvc(
            specs.variant("v1", 70),
            specs.variant("v2", 30),
            routing={"overrideHeader": "x-kubeserve-variant"},
        )
    )
    from sklearn.datasets import load_digits

    x, _ = load_digits(return_X_y=True)
    body = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": [1, 64],
                    "data": x[:1].astype(int).tolist(),
                }
            ]
        }
    )
    with (
        kubeserve_server(onnx_models, "v1") as p1,
        kubeserve_server(onnx_models, "v2") as p2,
    ):
        ports = {"v1": p1, "v2": p2}
        listen, health = dataplane.free_port(), dataplane.free_port()
        work = tmp_path / "nginx"
        work.mkdir()
        nginx = dataplane.Nginx(
            work,
            dataplane.loopback_config(isvc, ports, listen=listen, health=health, workdir=work),
            health=health,
        )
        try:
            conn = http.client.HTTPConnection("127.0.0.1", listen, timeout=10)

            def infer(headers: dict[str, str]) -> tuple[str, str]:
                conn.request(
                    "POST", PATH, body=body, headers={"Content-Type": "application/json", **headers}
                )
                resp = conn.getresponse()
                data = json.loads(resp.read())
                assert resp.status == 200, data
                return resp.getheader("x-kubeserve-variant", ""), data["model_version"]

            n = 2000
            seen: Counter[str] = Counter()
            for _ in range(n):
                served_by, version = infer({})
                assert served_by == version
                seen[served_by] += 1
            low, high = stats.binom.interval(0.999, n, 0.3)
            assert low <= seen["v2"] <= high, seen
            for _ in range(100):
                assert infer({"x-kubeserve-variant": "v2"}) == ("v2", "v2")
            conn.close()
        finally:
            nginx.stop()


def test_versions_and_sticky_metadata_in_front_of_real_model_servers(
    onnx_models: Path, tmp_path: Path
) -> None:
    # As in a pod: each variant's server holds only its own model, a version named after it.
    isvc = validation.parse(
        specs.isvc(
            specs.variant("v1", 50),
            specs.variant("v2", 50),
            routing={"sticky": {"header": "x-user-id"}},
        )
    )
    body = json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0] * 64}]}
    )
    with (
        kubeserve_server(onnx_models / "v1", "v1") as p1,
        kubeserve_server(onnx_models / "v2", "v2") as p2,
    ):
        listen, health = dataplane.free_port(), dataplane.free_port()
        work = tmp_path / "nginx"
        work.mkdir()
        nginx = dataplane.Nginx(
            work,
            dataplane.loopback_config(
                isvc, {"v1": p1, "v2": p2}, listen=listen, health=health, workdir=work
            ),
            health=health,
        )
        try:
            conn = http.client.HTTPConnection("127.0.0.1", listen, timeout=10)

            def call(method: str, path: str, headers: dict[str, str]) -> tuple[int, str, Any]:
                conn.request(method, path, body=body if method == "POST" else None, headers=headers)
                resp = conn.getresponse()
                return (
                    resp.status,
                    resp.getheader("x-kubeserve-variant", ""),
                    json.loads(resp.read()),
                )

            # Read the metadata, then infer: the same variant for every user with a key.
            for i in range(40):
                key = {"x-user-id": f"user-{i}"}
                status, meta_by, meta = call("GET", "/v2/models/digits", key)
                assert status == 200
                status, infer_by, answer = call("POST", "/v2/models/digits/infer", key)
                assert status == 200
                assert meta["versions"] == [meta_by] == [infer_by] == [answer["model_version"]]
            # A named version reaches the server that has it, whatever the key's variant.
            for version in ("v1", "v2"):
                for i in range(20):
                    key = {"x-user-id": f"user-{i}"}
                    status, served_by, answer = call(
                        "POST", f"/v2/models/digits/versions/{version}/infer", key
                    )
                    assert (status, served_by, answer["model_version"]) == (200, version, version)
                    status, served_by, answer = call(
                        "GET", f"/v2/models/digits/versions/{version}", key
                    )
                    assert (status, served_by, answer["versions"]) == (200, version, [version])
            status, served_by, answer = call("POST", "/v2/models/digits/versions/v3/infer", {})
            assert (status, served_by) == (404, "")
            assert answer == {"error": "unknown model version 'v3': versions are v1, v2"}
            conn.close()
        finally:
            nginx.stop()
