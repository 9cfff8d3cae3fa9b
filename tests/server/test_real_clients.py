"""The clients users have, with their defaults, against real servers of the digits models.

tritonclient 2.x sends and asks for binary tensor data by default over HTTP, and raw
contents over gRPC; with ``binary_data=False`` it sends JSON. Whatever the form, the
predictions must be those of ONNX Runtime run here on the same inputs.

The KServe SDK (``kserve``) pins a dependency set of its own (kubernetes, fastapi, pandas)
that does not sit beside ours, so it runs from its own virtual environment as a subprocess,
``examples/clients/kserve_sdk_client.py``: ``KSERVE_PYTHON`` names that environment's
python (``python -m venv /tmp/kserve && /tmp/kserve/bin/pip install kserve``); without it
those tests are skipped.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as tritongrpc
import tritonclient.http as tritonhttp

from support.server import free_port, running

ROWS = 7
REPO = pathlib.Path(__file__).resolve().parents[2]
KSERVE_CLIENT = REPO / "examples" / "clients" / "kserve_sdk_client.py"


def _reference(example_models: pathlib.Path, version: str, x: np.ndarray) -> dict[str, Any]:
    """Run the digits ONNX model of ``version`` in this process."""
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(example_models / "digits-onnx" / version / "model.onnx"),
        providers=["CPUExecutionProvider"],
    )
    label, probabilities = session.run(["label", "probabilities"], {"input": x})
    return {"label": label, "probabilities": probabilities}


@pytest.fixture(scope="module")
def rows(digits_rows: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return digits_rows[0][10 : 10 + ROWS].astype(np.float32)


def _check(result: Any, expected: dict[str, Any], *, exact: bool) -> None:
    np.testing.assert_array_equal(result.as_numpy("label"), expected["label"])
    probabilities = result.as_numpy("probabilities")
    if exact:  # the same runtime on the same bytes
        np.testing.assert_array_equal(probabilities, expected["probabilities"])
    else:  # scikit-learn against its ONNX export
        np.testing.assert_allclose(probabilities, expected["probabilities"], atol=1e-5)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_http_on_the_onnx_server(
    onnx_port: int, example_models: pathlib.Path, rows: np.ndarray, binary: bool
) -> None:
    client = tritonhttp.InferenceServerClient(f"127.0.0.1:{onnx_port}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digits")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    assert client.get_model_metadata("digits")["inputs"][0]["datatype"] == "FP32"
    tensor = tritonhttp.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=binary)
    outputs = [
        tritonhttp.InferRequestedOutput(name, binary_data=binary)
        for name in ("label", "probabilities")
    ]
    # Without outputs the client asks for all of them as binary (binary_data_output).
    result = client.infer("digits", [tensor], outputs=outputs if not binary else None)
    _check(result, _reference(example_models, "v2", rows), exact=True)
    result = client.infer("digits", [tensor], model_version="v1", outputs=outputs)
    _check(result, _reference(example_models, "v1", rows), exact=True)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_http_on_the_sklearn_server(
    sklearn_port: int, example_models: pathlib.Path, rows: np.ndarray, binary: bool
) -> None:
    client = tritonhttp.InferenceServerClient(f"127.0.0.1:{sklearn_port}")
    x = rows.astype(np.float64)  # the scikit-learn model's own datatype
    tensor = tritonhttp.InferInput("input", list(x.shape), "FP64")
    tensor.set_data_from_numpy(x, binary_data=binary)
    outputs = [
        tritonhttp.InferRequestedOutput(name, binary_data=binary)
        for name in ("label", "probabilities")
    ]
    result = client.infer("digits", [tensor], outputs=outputs)
    _check(result, _reference(example_models, "v1", rows), exact=False)


@pytest.fixture(scope="module")
def grpc_ports(example_models: pathlib.Path) -> Iterator[dict[str, int]]:
    """The gRPC ports of a digits ONNX server and a digits scikit-learn server (v1)."""
    ports = {"onnx": free_port(), "sklearn": free_port()}
    onnx = ["--model-dir", str(example_models / "digits-onnx"), "--grpc-port", str(ports["onnx"])]
    sklearn = [
        "--model-dir",
        str(example_models / "digits-sklearn"),
        "--variant",
        "v1",
        "--grpc-port",
        str(ports["sklearn"]),
    ]
    with (
        running(["--model-name", "digits", *onnx]),
        running(["--model-name", "digits", *sklearn]),
    ):
        yield ports


def test_tritonclient_grpc_on_the_onnx_server(
    grpc_ports: dict[str, int], example_models: pathlib.Path, rows: np.ndarray
) -> None:
    client = tritongrpc.InferenceServerClient(f"127.0.0.1:{grpc_ports['onnx']}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digits") and client.is_model_ready("digits", "v1")
    assert "binary_tensor_data" in client.get_server_metadata().extensions
    metadata = client.get_model_metadata("digits")
    assert list(metadata.versions) == ["v1", "v2"] and metadata.inputs[0].datatype == "FP32"
    tensor = tritongrpc.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)  # raw_input_contents
    result = client.infer("digits", [tensor], request_id="r-1")
    assert result.get_response().id == "r-1" and result.get_response().model_version == "v2"
    _check(result, _reference(example_models, "v2", rows), exact=True)
    outputs = [tritongrpc.InferRequestedOutput("label")]
    result = client.infer("digits", [tensor], model_version="v1", outputs=outputs)
    np.testing.assert_array_equal(
        result.as_numpy("label"), _reference(example_models, "v1", rows)["label"]
    )
    assert result.as_numpy("probabilities") is None


def test_tritonclient_grpc_on_the_sklearn_server(
    grpc_ports: dict[str, int], example_models: pathlib.Path, rows: np.ndarray
) -> None:
    client = tritongrpc.InferenceServerClient(f"127.0.0.1:{grpc_ports['sklearn']}")
    x = rows.astype(np.float64)
    tensor = tritongrpc.InferInput("input", list(x.shape), "FP64")
    tensor.set_data_from_numpy(x)
    result = client.infer("digits", [tensor])
    _check(result, _reference(example_models, "v1", rows), exact=False)


def test_tritonclient_grpc_errors_carry_the_status(grpc_ports: dict[str, int]) -> None:
    client = tritongrpc.InferenceServerClient(f"127.0.0.1:{grpc_ports['onnx']}")
    tensor = tritongrpc.InferInput("input", [1, 3], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(tritongrpc.InferenceServerException) as excinfo:
        client.infer("digits", [tensor])
    assert excinfo.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "input 'input': shape [1, 3] does not match" in excinfo.value.message()
    with pytest.raises(tritongrpc.InferenceServerException) as excinfo:
        client.infer("other", [tensor])
    assert excinfo.value.status() == "StatusCode.NOT_FOUND"


def kserve_python() -> str:
    python = os.environ.get("KSERVE_PYTHON", "")
    if not python or not os.access(python, os.X_OK):
        pytest.skip("KSERVE_PYTHON names no python with the kserve SDK installed")
    return python


def kserve_sdk(rest: str, grpc: str | None, rows: np.ndarray) -> dict[str, Any]:
    """Run the KServe SDK's clients on ``rows``; return what each answered."""
    args = [kserve_python(), str(KSERVE_CLIENT), "--rest", rest]
    result = subprocess.run(
        [*args, *(["--grpc", grpc] if grpc else [])],
        input=json.dumps(rows.tolist()),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def test_the_kserve_sdk_clients_with_their_defaults_on_the_onnx_server(
    onnx_port: int, grpc_ports: dict[str, int], example_models: pathlib.Path, rows: np.ndarray
) -> None:
    found = kserve_sdk(f"http://127.0.0.1:{onnx_port}", f"127.0.0.1:{grpc_ports['onnx']}", rows)
    expected = _reference(example_models, "v2", rows)
    np.testing.assert_array_equal(found["v1"], expected["label"])  # a classifier's V1: labels
    for protocol in ("v2", "grpc"):
        np.testing.assert_array_equal(found[protocol]["label"], expected["label"])
        np.testing.assert_array_equal(
            np.asarray(found[protocol]["probabilities"], dtype=np.float32),
            expected["probabilities"],
        )
