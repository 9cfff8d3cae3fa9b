"""tritonclient over HTTP (binary tensor data) and gRPC through the router of `kubeserve up`.

The A/B example routes on ``x-user-id`` (sticky) and ``x-kubeserve-variant`` (override);
the router must apply both to gRPC as it does to HTTP, and the predictions that come back
through it must be the models' own: ONNX Runtime run here on the same rows.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as tritongrpc
import tritonclient.http as tritonhttp

REPO = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (apt-get install nginx)"
)
MODEL = "digits-ab"  # the InferenceService's name is the model's


class Up:
    """A running `kubeserve up`: its HTTP URL (host:port) and gRPC address."""

    def __init__(self, http: str, grpc: str) -> None:
        self.http = http
        self.grpc = grpc


@pytest.fixture(scope="module")
def ab(example_models: Path) -> Iterator[Up]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kubeserve.cli",
            "up",
            "--port",
            "0",
            "-f",
            str(REPO / "examples" / "ab-sticky.yaml"),
            "--models-root",
            str(example_models),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    http = grpc = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and grpc is None:
        line = proc.stdout.readline()
        if not line:
            break
        if match := re.search(r"is up at http://(\S+)", line):
            http = match.group(1)
        if match := re.search(r"gRPC \(Open Inference Protocol\): (\S+)", line):
            grpc = match.group(1)
    if http is None or grpc is None:
        proc.kill()
        raise AssertionError(
            f"kubeserve up did not start: {proc.stderr.read() if proc.stderr else ''}"
        )
    try:
        yield Up(http, grpc)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    from sklearn.datasets import load_digits

    x, _ = load_digits(return_X_y=True)
    return x[20:25].astype(np.float32)


def onnx_runtime(example_models: Path, version: str, x: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(example_models / "digits-onnx" / version / "model.onnx"),
        providers=["CPUExecutionProvider"],
    )
    label, probabilities = session.run(["label", "probabilities"], {"input": x})
    return {"label": label, "probabilities": probabilities}


def over_http(up: Up, x: np.ndarray, headers: dict[str, str]) -> tuple[str, Any]:
    """Infer with tritonclient's HTTP defaults (binary tensor data); return the variant too."""
    client = tritonhttp.InferenceServerClient(up.http)
    tensor = tritonhttp.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    # A copy: tritonclient adds its own headers (binary data lengths, as ints) to the dict.
    result = client.infer(MODEL, [tensor], headers=dict(headers))
    return result.get_response()["model_version"], result


def over_grpc(up: Up, x: np.ndarray, headers: dict[str, str]) -> tuple[str, Any]:
    """Infer with tritonclient's gRPC defaults (raw contents); return the variant too."""
    client = tritongrpc.InferenceServerClient(up.grpc)
    tensor = tritongrpc.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer(MODEL, [tensor], headers=headers)
    return result.get_response().model_version, result


def check(variant: str, result: Any, example_models: Path, x: np.ndarray) -> None:
    """The ONNX variant (v1) answers ONNX Runtime's bytes; the scikit-learn one (v2) its export's."""
    expected = onnx_runtime(example_models, variant, x)
    np.testing.assert_array_equal(result.as_numpy("label"), expected["label"])
    if variant == "v1":
        np.testing.assert_array_equal(result.as_numpy("probabilities"), expected["probabilities"])
    else:
        np.testing.assert_allclose(
            result.as_numpy("probabilities"), expected["probabilities"], atol=1e-5
        )


@pytest.mark.parametrize("transport", [over_http, over_grpc], ids=["http", "grpc"])
def test_the_override_header_picks_the_variant_through_the_router(
    ab: Up, example_models: Path, rows: np.ndarray, transport: Any
) -> None:
    for want in ("v1", "v2", "v1"):
        variant, result = transport(ab, rows, {"x-kubeserve-variant": want})
        assert variant == want
        check(variant, result, example_models, rows)


def test_a_user_gets_the_same_variant_over_http_and_grpc(
    ab: Up, example_models: Path, rows: np.ndarray
) -> None:
    given: dict[str, str] = {}
    for user in (f"user-{i}" for i in range(16)):
        headers = {"x-user-id": user}
        seen = {over_http(ab, rows, headers)[0] for _ in range(3)}
        seen |= {over_grpc(ab, rows, headers)[0] for _ in range(3)}
        assert len(seen) == 1, f"{user} was served by {sorted(seen)}"
        given[user] = seen.pop()
    # Half the users each way: 16 users all on one side would be a 1 in 32768 chance.
    assert set(given.values()) == {"v1", "v2"}
    variant, result = over_grpc(ab, rows, {"x-user-id": "user-0"})
    check(variant, result, example_models, rows)
