"""Fixtures for the server tests: real servers started once, on models made once.

The digits models are the session's `example_models` (tests/conftest.py: the project's own
script, trained once for every suite); the echo models are written here. Servers are real
``python -m kubeserve.server`` processes.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import numpy as np
import pytest

from support.server import Server

DATATYPES = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": "str",
}


@pytest.fixture(scope="session")
def echo_models(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Write the echo models: one ONNX Identity version per V2 datatype."""
    out = tmp_path_factory.mktemp("echo-models")
    _write_echo_models(out)
    return out


def _write_echo_models(root: pathlib.Path) -> None:
    """One ONNX Identity model per V2 datatype, each a version: echo/<datatype>/model.onnx."""
    import onnx
    from onnx import TensorProto, helper

    types = {
        "BOOL": TensorProto.BOOL,
        "UINT8": TensorProto.UINT8,
        "UINT16": TensorProto.UINT16,
        "UINT32": TensorProto.UINT32,
        "UINT64": TensorProto.UINT64,
        "INT8": TensorProto.INT8,
        "INT16": TensorProto.INT16,
        "INT32": TensorProto.INT32,
        "INT64": TensorProto.INT64,
        "FP16": TensorProto.FLOAT16,
        "FP32": TensorProto.FLOAT,
        "FP64": TensorProto.DOUBLE,
        "BYTES": TensorProto.STRING,
    }
    for name, elem in types.items():
        graph = helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])],
            f"echo_{name}",
            [helper.make_tensor_value_info("x", elem, ["N", "M"])],
            [helper.make_tensor_value_info("y", elem, ["N", "M"])],
        )
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        path = root / name.lower() / "model.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(m, str(path))


@pytest.fixture(scope="session")
def digits_rows() -> tuple[np.ndarray, np.ndarray]:
    """The digits images (as integers 0..16) and labels."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return x.astype(int), y


def _start(args: list[str], env: dict[str, str] | None = None) -> Server:
    return Server(args, env)


@pytest.fixture(scope="session")
def servers(example_models: pathlib.Path, echo_models: pathlib.Path) -> Iterator[dict[str, Server]]:
    """Start every shared server at once (their start-up overlaps), stop them at the end."""
    started = {
        # Configured through the environment, as the operator does it.
        "onnx": _start(
            [],
            env={
                "KUBESERVE_MODEL_NAME": "digits",
                "KUBESERVE_MODEL_DIR": str(example_models / "digits-onnx"),
                "KUBESERVE_MODEL_FORMAT": "onnx",
            },
        ),
        "sklearn": _start(
            [
                "--model-name",
                "digits",
                "--model-dir",
                str(example_models / "digits-sklearn"),
                "--variant",
                "v1",
            ]
        ),
        "echo": _start(
            [
                "--model-name",
                "echo",
                "--model-dir",
                str(echo_models),
                "--max-body-bytes",
                "65536",
            ]
        ),
        "batched": _start(
            [
                "--model-name",
                "digits",
                "--model-dir",
                str(example_models / "digits-onnx"),
                "--batch-max-size",
                "64",
                "--batch-max-wait-ms",
                "20",
            ]
        ),
    }
    try:
        for s in started.values():
            s.wait()
        yield started
    finally:
        for s in started.values():
            s.stop()


@pytest.fixture(scope="session")
def onnx_port(servers: dict[str, Server]) -> int:
    """Port of the digits ONNX server (versions v1 and v2, default v2)."""
    return servers["onnx"].port


@pytest.fixture(scope="session")
def sklearn_port(servers: dict[str, Server]) -> int:
    """Port of the digits skops server (variant v1)."""
    return servers["sklearn"].port


@pytest.fixture(scope="session")
def echo_port(servers: dict[str, Server]) -> int:
    """Port of the echo server: one Identity model version per V2 datatype."""
    return servers["echo"].port
