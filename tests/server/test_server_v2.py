"""Open Inference Protocol V2 conformance: health, metadata, readiness, infer, datatypes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from conftest import DATATYPES
from support.server import request


def test_health(onnx_port: int) -> None:
    assert request(onnx_port, "GET", "/v2/health/live")[:3:2] == (200, {"live": True})
    assert request(onnx_port, "GET", "/v2/health/ready")[:3:2] == (200, {"ready": True})


def test_server_metadata(onnx_port: int) -> None:
    status, _, body = request(onnx_port, "GET", "/v2")
    assert status == 200
    assert (
        body["name"] == "kubeserve"
        and body["version"]
        and body["extensions"] == ["binary_tensor_data"]
    )


def test_model_metadata(onnx_port: int) -> None:
    status, headers, body = request(onnx_port, "GET", "/v2/models/digits")
    assert status == 200
    assert body == {
        "name": "digits",
        "versions": ["v1", "v2"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
        ],
    }
    assert headers["x-kubeserve-model-version"] == "v2"
    status, headers, body = request(onnx_port, "GET", "/v2/models/digits/versions/v1")
    assert status == 200 and body["versions"] == ["v1"]
    assert headers["x-kubeserve-model-version"] == "v1"


def test_sklearn_metadata(sklearn_port: int) -> None:
    body = request(sklearn_port, "GET", "/v2/models/digits")[2]
    assert body["platform"] == "sklearn"
    assert body["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 64]}]
    assert [o["name"] for o in body["outputs"]] == ["label", "probabilities"]


def test_model_ready(onnx_port: int) -> None:
    assert request(onnx_port, "GET", "/v2/models/digits/ready")[:3:2] == (
        200,
        {"name": "digits", "ready": True},
    )
    assert request(onnx_port, "GET", "/v2/models/digits/versions/v1/ready")[0] == 200


def _infer(
    port: int, body: object, path: str = "/v2/models/digits/infer"
) -> tuple[int, dict[str, str], Any]:
    return request(port, "POST", path, body)


def test_infer_flat_data_and_id_echo(onnx_port: int, digits_rows) -> None:
    x, y = digits_rows
    status, headers, body = _infer(
        onnx_port,
        {
            "id": "req-42",
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": [3, 64],
                    "data": x[:3].ravel().tolist(),
                }
            ],
        },
    )
    assert status == 200
    assert body["id"] == "req-42"
    assert body["model_name"] == "digits" and body["model_version"] == "v2"
    label, proba = body["outputs"]
    assert label["name"] == "label" and label["datatype"] == "INT64" and label["shape"] == [3]
    assert label["data"] == y[:3].tolist()
    assert proba["datatype"] == "FP32" and proba["shape"] == [3, 10]
    assert np.allclose(np.array(proba["data"]).reshape(3, 10).sum(axis=1), 1.0, atol=1e-4)
    assert headers["x-kubeserve-model-version"] == "v2"


def test_infer_nested_data_and_output_selection(onnx_port: int, digits_rows) -> None:
    x, y = digits_rows
    status, _, body = _infer(
        onnx_port,
        {
            "inputs": [
                {"name": "input", "datatype": "FP32", "shape": [2, 64], "data": x[:2].tolist()}
            ],
            "outputs": [{"name": "probabilities"}],
        },
        "/v2/models/digits/versions/v1/infer",
    )
    assert status == 200
    assert "id" not in body
    assert [o["name"] for o in body["outputs"]] == ["probabilities"]
    assert body["model_version"] == "v1"
    proba = np.array(body["outputs"][0]["data"]).reshape(2, 10)
    assert (proba.argmax(axis=1) == y[:2]).all()


def test_kserve_docs_style_request_with_input_0(onnx_port: int, digits_rows) -> None:
    # KServe's examples name the lone input "input-0"; a one-input model accepts any name.
    x, y = digits_rows
    status, _, body = _infer(
        onnx_port,
        {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [2, 64],
                    "datatype": "FP32",
                    "data": x[:2].tolist(),
                    "parameters": {"content_type": "np"},
                }
            ]
        },
    )
    assert status == 200, body
    assert body["outputs"][0]["data"] == y[:2].tolist()


def test_sklearn_accepts_any_numeric_datatype(sklearn_port: int, digits_rows) -> None:
    x, y = digits_rows
    for datatype in ("INT64", "FP32", "FP64", "UINT8"):
        status, _, body = _infer(
            sklearn_port,
            {
                "inputs": [
                    {
                        "name": "input",
                        "datatype": datatype,
                        "shape": [4, 64],
                        "data": x[:4].tolist(),
                    }
                ]
            },
        )
        assert status == 200, body
        assert body["outputs"][0]["data"] == y[:4].tolist()


SAMPLES = {
    "BOOL": [[True, False], [False, True]],
    "UINT8": [[0, 255], [1, 2]],
    "UINT16": [[0, 65535], [1, 2]],
    "UINT32": [[0, 4294967295], [1, 2]],
    "UINT64": [[0, 18446744073709551615], [1, 2]],
    "INT8": [[-128, 127], [0, 1]],
    "INT16": [[-32768, 32767], [0, 1]],
    "INT32": [[-2147483648, 2147483647], [0, 1]],
    "INT64": [[-9223372036854775808, 9223372036854775807], [0, 1]],
    "FP16": [[0.5, -2.0], [1024.0, 0.25]],
    "FP32": [[0.5, -2.5], [3.25, 1e30]],
    "FP64": [[0.1, -2.5], [3.25, 1e300]],
    "BYTES": [["hello", "wörld"], ["", "{json}"]],
}


@pytest.mark.parametrize("datatype", sorted(DATATYPES))
def test_every_datatype_round_trips(echo_port: int, datatype: str) -> None:
    sample = SAMPLES[datatype]
    flat = [v for row in sample for v in row]
    status, headers, body = _infer(
        echo_port,
        {"inputs": [{"name": "x", "datatype": datatype, "shape": [2, 2], "data": flat}]},
        f"/v2/models/echo/versions/{datatype.lower()}/infer",
    )
    assert status == 200, body
    out = body["outputs"][0]
    assert out["name"] == "y" and out["datatype"] == datatype and out["shape"] == [2, 2]
    if datatype == "FP32":
        assert np.allclose(out["data"], np.array(flat, dtype=np.float32))
    else:
        assert out["data"] == flat
    assert headers["x-kubeserve-model-version"] == datatype.lower()


@pytest.mark.parametrize("datatype", ["INT8", "UINT8", "UINT16"])
def test_out_of_range_integers_are_refused(echo_port: int, datatype: str) -> None:
    status, _, body = _infer(
        echo_port,
        {"inputs": [{"name": "x", "datatype": datatype, "shape": [1, 1], "data": [70000]}]},
        f"/v2/models/echo/versions/{datatype.lower()}/infer",
    )
    assert status == 400 and "out of range" in body["error"]


@pytest.mark.parametrize(
    ("datatype", "data", "needle"),
    [
        ("INT32", [1.5], "integers"),
        ("BOOL", [1], "true/false"),
        ("FP32", ["a"], "numbers"),
        ("BYTES", [1], "strings"),
        ("FP16", [1e6], "out of range"),
    ],
)
def test_values_that_do_not_fit_the_datatype(
    echo_port: int, datatype: str, data: list[object], needle: str
) -> None:
    status, _, body = _infer(
        echo_port,
        {"inputs": [{"name": "x", "datatype": datatype, "shape": [1, 1], "data": data}]},
        f"/v2/models/echo/versions/{datatype.lower()}/infer",
    )
    assert status == 400 and needle in body["error"], body
