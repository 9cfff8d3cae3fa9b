"""KServe V1 protocol conformance against a real server process."""

from __future__ import annotations

import numpy as np

from support.server import request


def test_root_says_alive(onnx_port: int) -> None:
    status, headers, body = request(onnx_port, "GET", "/")
    assert (status, body) == (200, {"status": "alive"})
    assert headers["x-kubeserve-model-version"] == "v2"


def test_list_models(onnx_port: int) -> None:
    assert request(onnx_port, "GET", "/v1/models")[2] == {"models": ["digits"]}


def test_model_ready(onnx_port: int) -> None:
    status, _, body = request(onnx_port, "GET", "/v1/models/digits")
    assert (status, body) == (200, {"name": "digits", "ready": True})


def test_predict_matches_the_trained_model(onnx_port: int, digits_rows) -> None:
    x, y = digits_rows
    status, headers, body = request(
        onnx_port, "POST", "/v1/models/digits:predict", {"instances": x[:32].tolist()}
    )
    assert status == 200
    predictions = np.array(body["predictions"])
    assert predictions.shape == (32,)
    assert (predictions == y[:32]).mean() > 0.9  # the model is ~97% accurate
    # The response says which version served.
    assert headers["x-kubeserve-model-version"] == "v2"
    assert headers["x-kubeserve-variant"] == "v2"


def test_predict_a_named_version_in_the_columnar_form(onnx_port: int, digits_rows) -> None:
    # TF Serving's columnar form: "inputs" in, "outputs" out (test_v1_forms has the rest).
    x, _ = digits_rows
    status, headers, body = request(
        onnx_port, "POST", "/v1/models/digits/versions/v1:predict", {"inputs": x[:2].tolist()}
    )
    assert status == 200 and len(body["outputs"]) == 2
    assert headers["x-kubeserve-model-version"] == "v1"


def test_predict_answers_405_with_allow_to_other_methods(onnx_port: int) -> None:
    for method in ("GET", "PUT", "DELETE"):
        status, headers, body = request(onnx_port, method, "/v1/models/digits:predict")
        assert (status, headers["allow"]) == (405, "POST")
        assert f"{method} not allowed" in body["error"]


def test_sklearn_runtime_and_variant_header(sklearn_port: int, digits_rows) -> None:
    x, y = digits_rows
    status, headers, body = request(
        sklearn_port, "POST", "/v1/models/digits:predict", {"instances": x[:16].tolist()}
    )
    assert status == 200
    assert (np.array(body["predictions"]) == y[:16]).mean() > 0.9
    # --variant v1: the variant's directory is the default version and names the header.
    assert headers["x-kubeserve-variant"] == "v1"
    assert headers["x-kubeserve-model-version"] == "v1"
    status, headers, _ = request(
        sklearn_port, "POST", "/v1/models/digits/versions/v2:predict", {"instances": x[:1].tolist()}
    )
    assert status == 200
    assert headers["x-kubeserve-variant"] == "v1"
    assert headers["x-kubeserve-model-version"] == "v2"


def test_onnx_and_sklearn_agree(onnx_port: int, sklearn_port: int, digits_rows) -> None:
    x, _ = digits_rows
    rows = {"instances": x[:64].tolist()}
    a = request(onnx_port, "POST", "/v1/models/digits/versions/v1:predict", rows)[2]
    b = request(sklearn_port, "POST", "/v1/models/digits/versions/v1:predict", rows)[2]
    assert (np.array(a["predictions"]) == np.array(b["predictions"])).mean() > 0.95
