"""The clients users have, with their defaults, against real servers of the digits models.

tritonclient 2.x sends and asks for binary tensor data by default over HTTP, and raw
contents over gRPC; with ``binary_data=False`` it sends JSON. Whatever the form, the
predictions must be those of ONNX Runtime run here on the same inputs.
"""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np
import pytest
import tritonclient.http as tritonhttp

ROWS = 7


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
