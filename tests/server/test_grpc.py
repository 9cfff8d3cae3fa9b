"""gRPC: the Open Inference Protocol's GRPCInferenceService, against real server processes.

The same models, checks, metrics and drain as REST, errors as gRPC status codes. Requests
are built from the server's own generated messages (``grpc_v2``), sent over a plain grpcio
channel; tests/server/test_real_clients.py covers tritonclient.
"""

from __future__ import annotations

import contextlib
import pathlib
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest

from conftest import DATATYPES
from kubeserve.server.grpc_v2 import generate
from kubeserve.server.grpc_v2 import open_inference_grpc_pb2 as pb
from support.server import Server, free_port, request, running

SERVICE = "/inference.GRPCInferenceService/"


class Client:
    """Calls one server's gRPC port with the server's own generated messages."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")

    def call(self, method: str, message: Any, answer: Any, *, timeout: float = 10) -> Any:
        """Return the answer message, raising grpc.RpcError on a status other than OK."""
        return self.call_with_metadata(method, message, answer, timeout=timeout)[0]

    def call_with_metadata(
        self, method: str, message: Any, answer: Any, *, timeout: float = 10
    ) -> tuple[Any, dict[str, str]]:
        stub = self.channel.unary_unary(
            SERVICE + method,
            request_serializer=type(message).SerializeToString,
            response_deserializer=answer.FromString,
        )
        reply, call = stub.with_call(message, timeout=timeout)
        return reply, dict(call.initial_metadata())

    def infer(self, message: Any, *, timeout: float = 10) -> Any:
        return self.call("ModelInfer", message, pb.ModelInferResponse, timeout=timeout)

    def close(self) -> None:
        self.channel.close()


@contextlib.contextmanager
def _serve(args: list[str]) -> Iterator[tuple[Server, Client]]:
    """Run a server with a gRPC port; yield it and a client of that port."""
    port = free_port()
    with running([*args, "--grpc-port", str(port)]) as server:
        client = Client(port)
        try:
            yield server, client
        finally:
            client.close()


@pytest.fixture(scope="module")
def digits(example_models: pathlib.Path) -> Iterator[tuple[Server, Client]]:
    """A digits ONNX server (versions v1, v2) whose message limit is 64 KiB."""
    model_dir = str(example_models / "digits-onnx")
    with _serve(
        ["--model-name", "digits", "--model-dir", model_dir, "--max-body-bytes", "65536"]
    ) as served:
        yield served


@pytest.fixture(scope="module")
def echo(echo_models: pathlib.Path) -> Iterator[tuple[Server, Client]]:
    """An echo server: one Identity model version per datatype."""
    with _serve(["--model-name", "echo", "--model-dir", str(echo_models)]) as served:
        yield served


def _raw_request(x: np.ndarray, **fields: Any) -> Any:
    message = pb.ModelInferRequest(model_name="digits", **fields)
    message.inputs.add(name="input", datatype="FP32", shape=x.shape)
    message.raw_input_contents.append(x.astype("<f4").tobytes())
    return message


def _status(excinfo: pytest.ExceptionInfo[grpc.RpcError]) -> tuple[grpc.StatusCode, str]:
    error: Any = excinfo.value
    return error.code(), error.details()


ROWS = np.arange(3 * 64, dtype=np.float32).reshape(3, 64) % 17


# -- the generated code ------------------------------------------------------------------


def test_regenerating_the_protobuf_code_gives_the_committed_files(tmp_path: pathlib.Path) -> None:
    written = generate.generate(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in written] == list(generate.OUTPUTS)
    for relative in generate.OUTPUTS:
        committed = generate.SOURCE_ROOT / relative
        assert (tmp_path / relative).read_bytes() == committed.read_bytes(), relative


def test_the_messages_load_beside_tritonclients_copy_of_the_package() -> None:
    # tritonclient registers package "inference" in protobuf's default pool; ours has its own
    # pool, so both load in one process and speak the same wire format.
    from tritonclient.grpc import service_pb2

    ours = _raw_request(ROWS[:1], id="x")
    theirs = service_pb2.ModelInferRequest.FromString(ours.SerializeToString())
    assert (theirs.model_name, theirs.id, list(theirs.inputs[0].shape)) == ("digits", "x", [1, 64])
    assert theirs.raw_input_contents == ours.raw_input_contents


# -- health and metadata -----------------------------------------------------------------


def test_health_and_metadata(digits: tuple[Server, Client]) -> None:
    _, client = digits
    assert client.call("ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse).live
    assert client.call("ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse).ready
    ready = client.call(
        "ModelReady", pb.ModelReadyRequest(name="digits", version="v1"), pb.ModelReadyResponse
    )
    assert ready.ready
    server = client.call("ServerMetadata", pb.ServerMetadataRequest(), pb.ServerMetadataResponse)
    assert server.name == "kubeserve" and "binary_tensor_data" in server.extensions
    meta, served_by = client.call_with_metadata(
        "ModelMetadata", pb.ModelMetadataRequest(name="digits"), pb.ModelMetadataResponse
    )
    assert (meta.name, list(meta.versions), meta.platform) == (
        "digits",
        ["v1", "v2"],
        "onnxruntime_onnx",
    )
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("input", "FP32", [-1, 64])
    ]
    assert [t.name for t in meta.outputs] == ["label", "probabilities"]
    assert served_by["x-kubeserve-model-version"] == "v2"
    assert served_by["x-kubeserve-variant"] == "v2"


def test_an_unknown_model_or_version_is_not_found(digits: tuple[Server, Client]) -> None:
    _, client = digits
    with pytest.raises(grpc.RpcError) as excinfo:
        client.infer(pb.ModelInferRequest(model_name="nope"))
    assert _status(excinfo) == (
        grpc.StatusCode.NOT_FOUND,
        "model 'nope' not found; this server serves 'digits'",
    )
    with pytest.raises(grpc.RpcError) as excinfo:
        client.call(
            "ModelReady", pb.ModelReadyRequest(name="digits", version="v9"), pb.ModelReadyResponse
        )
    code, details = _status(excinfo)
    assert code == grpc.StatusCode.NOT_FOUND and "v9" in details
    with pytest.raises(grpc.RpcError) as excinfo:
        client.call("ModelMetadata", pb.ModelMetadataRequest(name="x"), pb.ModelMetadataResponse)
    assert _status(excinfo)[0] == grpc.StatusCode.NOT_FOUND


# -- inference ---------------------------------------------------------------------------


def _rest_outputs(port: int, x: np.ndarray, version: str = "v2") -> dict[str, np.ndarray]:
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape)}]}
    body["inputs"][0]["data"] = x.ravel().tolist()
    status, _, reply = request(port, "POST", f"/v2/models/digits/versions/{version}/infer", body)
    assert status == 200, reply
    return {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in reply["outputs"]}


def _outputs(reply: Any) -> dict[str, np.ndarray]:
    dtypes = {"INT64": "<i8", "FP32": "<f4"}
    return {
        o.name: np.frombuffer(raw, dtypes[o.datatype]).reshape(list(o.shape))
        for o, raw in zip(reply.outputs, reply.raw_output_contents, strict=True)
    }


def test_raw_inputs_give_the_rest_answer_as_raw_outputs(digits: tuple[Server, Client]) -> None:
    server, client = digits
    reply, served_by = client.call_with_metadata(
        "ModelInfer",
        _raw_request(ROWS, id="g1", model_version="v1"),
        pb.ModelInferResponse,
    )
    assert (reply.model_name, reply.model_version, reply.id) == ("digits", "v1", "g1")
    assert served_by["x-kubeserve-model-version"] == "v1"
    expected = _rest_outputs(server.port, ROWS, "v1")
    got = _outputs(reply)
    np.testing.assert_array_equal(got["label"], expected["label"])
    np.testing.assert_array_equal(got["probabilities"], expected["probabilities"].astype("f4"))


def test_typed_contents_give_the_same_answer(digits: tuple[Server, Client]) -> None:
    server, client = digits
    message = pb.ModelInferRequest(model_name="digits")
    message.inputs.add(name="input", datatype="FP32", shape=[3, 64])
    message.inputs[0].contents.fp32_contents.extend(ROWS.ravel().tolist())
    message.outputs.add(name="label")
    reply = client.infer(message)
    assert [o.name for o in reply.outputs] == ["label"]
    np.testing.assert_array_equal(
        _outputs(reply)["label"], _rest_outputs(server.port, ROWS)["label"]
    )


def _bad(x: np.ndarray, **change: Any) -> Any:
    message = _raw_request(x)
    for name, value in change.items():
        if name == "raw":
            del message.raw_input_contents[:]
            message.raw_input_contents.extend(value)
        elif name == "shape":
            del message.inputs[0].shape[:]
            message.inputs[0].shape.extend(value)
        else:
            setattr(message.inputs[0], name, value)
    return message


def _contents_request(datatype: str, field: str, values: list[Any], shape: list[int]) -> Any:
    message = pb.ModelInferRequest(model_name="digits")
    message.inputs.add(name="input", datatype=datatype, shape=shape)
    getattr(message.inputs[0].contents, field).extend(values)
    return message


def _both() -> Any:
    message = _raw_request(ROWS[:1])
    message.inputs[0].contents.fp32_contents.extend([0.0] * 64)
    return message


BAD_REQUESTS = [
    pytest.param(
        _bad(ROWS[:1], shape=[1, 32]),
        "input 'input': shape [1, 32] of FP32 needs 128 bytes (32 x 4), got 256",
        id="raw-size-not-the-shapes",
    ),
    pytest.param(
        _bad(ROWS[:1, :32].copy(), shape=[1, 32]),
        "input 'input': shape [1, 32] does not match the model's [-1, 64]",
        id="shape-not-the-models",
    ),
    pytest.param(
        _bad(ROWS[:1], shape=[1, -64]),
        "input 'input': 'shape' must be a list of non-negative integers",
        id="negative-shape",
    ),
    pytest.param(
        _bad(ROWS[:1], shape=[0, 64]),
        "input 'input': shape [0, 64] has no rows",
        id="no-rows",
    ),
    pytest.param(
        _bad(ROWS[:1], raw=[b"\0" * 256, b"\0" * 4]),
        "raw_input_contents has 2 entries for 1 inputs",
        id="raw-contents-count-mismatch",
    ),
    pytest.param(
        _bad(ROWS[:1], datatype="FP64"),
        "input 'input': datatype FP64 does not match the model's FP32",
        id="datatype-not-the-models",
    ),
    pytest.param(
        _bad(ROWS[:1], datatype="FLOAT"),
        "input 'input': unknown datatype 'FLOAT'",
        id="unknown-datatype",
    ),
    pytest.param(
        _bad(ROWS[:1], name="pixels", datatype="FP32"),
        None,
        id="lone-input-of-another-name-is-accepted",
    ),
    pytest.param(
        _contents_request("FP32", "int_contents", [0] * 64, [1, 64]),
        "input 'input': datatype FP32 takes its values in contents.fp32_contents, not int_contents",
        id="contents-field-not-the-datatypes",
    ),
    pytest.param(
        _contents_request("FP32", "fp32_contents", [0.0] * 63, [1, 64]),
        "input 'input': shape [1, 64] needs 64 elements",
        id="contents-count-not-the-shapes",
    ),
    pytest.param(
        _contents_request("FP16", "fp32_contents", [0.0] * 64, [1, 64]),
        "input 'input': FP16 values have no contents field; send them raw",
        id="fp16-contents",
    ),
    pytest.param(
        _both(),
        "input 'input': both contents and raw_input_contents",
        id="contents-and-raw",
    ),
    pytest.param(
        pb.ModelInferRequest(model_name="digits"),
        "'inputs' must hold at least one tensor",
        id="no-inputs",
    ),
]


@pytest.mark.parametrize(("message", "needle"), BAD_REQUESTS)
def test_bad_requests_are_invalid_argument_naming_the_problem(
    digits: tuple[Server, Client], message: Any, needle: str | None
) -> None:
    _, client = digits
    if needle is None:
        assert client.infer(message).outputs
        return
    with pytest.raises(grpc.RpcError) as excinfo:
        client.infer(message)
    code, details = _status(excinfo)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert needle in details


def test_a_message_over_the_limit_is_resource_exhausted(digits: tuple[Server, Client]) -> None:
    server, client = digits
    big = np.zeros((100, 64), dtype=np.float32)  # 25.6 KB per 100 rows: 400 rows > 64 KiB
    with pytest.raises(grpc.RpcError) as excinfo:
        client.infer(_raw_request(np.tile(big, (4, 1))))
    assert _status(excinfo)[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(client.infer(_raw_request(big)).outputs) == 2  # the server is fine
    assert request(server.port, "GET", "/v2/health/live")[0] == 200


ECHO: dict[str, list[Any]] = {
    "BOOL": [[True, False]],
    "UINT8": [[0, 255]],
    "UINT16": [[0, 65535]],
    "UINT32": [[0, 2**32 - 1]],
    "UINT64": [[0, 2**64 - 1]],
    "INT8": [[-128, 127]],
    "INT16": [[-(2**15), 2**15 - 1]],
    "INT32": [[-(2**31), 2**31 - 1]],
    "INT64": [[-(2**63), 2**63 - 1]],
    "FP16": [[0.5, -65504.0]],
    "FP32": [[0.1, -3.4e38]],
    "FP64": [[0.1, -1.7e308]],
    "BYTES": [["héllo", ""]],
}


@pytest.mark.parametrize("datatype", list(ECHO))
def test_every_datatype_round_trips_raw(echo: tuple[Server, Client], datatype: str) -> None:
    _, client = echo
    if datatype == "BYTES":
        items = [s.encode() for s in ECHO[datatype][0]]
        raw = b"".join(len(v).to_bytes(4, "little") + v for v in items)
    else:
        raw = np.array(ECHO[datatype], dtype=DATATYPES[datatype]).tobytes()
    message = pb.ModelInferRequest(model_name="echo", model_version=datatype.lower())
    message.inputs.add(name="x", datatype=datatype, shape=[1, 2])
    message.raw_input_contents.append(raw)
    reply = client.infer(message)
    assert [(o.name, o.datatype, list(o.shape)) for o in reply.outputs] == [("y", datatype, [1, 2])]
    assert reply.raw_output_contents == [raw]


def test_grpc_calls_are_counted_with_protocol_grpc_and_the_operation_of_the_method(
    digits: tuple[Server, Client],
) -> None:
    server, client = digits
    client.infer(_raw_request(ROWS[:1]))
    with pytest.raises(grpc.RpcError):
        client.infer(_bad(ROWS[:1], shape=[1, 32]))
    client.call("ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse)
    client.call("ModelMetadata", pb.ModelMetadataRequest(name="digits"), pb.ModelMetadataResponse)
    request(server.port, "POST", "/v2/models/digits/infer", {"inputs": []})
    text = request(server.port, "GET", "/metrics")[2]
    for series in (
        'kubeserve_requests_total{model="digits",version="v2",protocol="grpc",operation="infer",'
        'code="200"}',
        'kubeserve_requests_total{model="digits",version="v2",protocol="grpc",operation="infer",'
        'code="400"}',
        'kubeserve_requests_total{model="digits",version="v2",protocol="v2",operation="infer",'
        'code="400"}',
        'kubeserve_requests_total{model="",version="",protocol="grpc",operation="health",'
        'code="200"}',
        'kubeserve_requests_total{model="digits",version="v2",protocol="grpc",'
        'operation="metadata",code="200"}',
        'kubeserve_request_duration_seconds_count{model="digits",version="v2",protocol="grpc",'
        'operation="infer"}',
    ):
        assert re.search(re.escape(series) + r" [1-9]", text), series


# -- the process -------------------------------------------------------------------------


def test_sigterm_lets_an_in_flight_call_finish(example_models: pathlib.Path) -> None:
    # The batcher holds the call for 1.5 s: SIGTERM arrives while it is in flight.
    args = [
        "--model-name",
        "digits",
        "--model-dir",
        str(example_models / "digits-onnx"),
        "--batch-max-size",
        "64",
        "--batch-max-wait-ms",
        "1500",
        "--drain-delay",
        "0.5",
    ]
    with _serve(args) as (server, client):
        results: list[Any] = []
        caller = threading.Thread(
            target=lambda: results.append(client.infer(_raw_request(ROWS[:2]), timeout=20))
        )
        caller.start()
        time.sleep(0.5)
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)  # within --drain-delay: calls are answered, readiness is false
        ready = client.call("ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse)
        assert not ready.ready
        caller.join(20)
        assert len(results) == 1 and len(results[0].outputs) == 2
        assert server.proc.wait(20) == 0
        with pytest.raises(grpc.RpcError) as excinfo:
            client.infer(_raw_request(ROWS[:1]), timeout=2)
        assert _status(excinfo)[0] == grpc.StatusCode.UNAVAILABLE


def test_workers_share_the_grpc_port(example_models: pathlib.Path) -> None:
    args = ["--model-name", "digits", "--model-dir", str(example_models / "digits-onnx")]
    with _serve([*args, "--workers", "2"]) as (server, client):
        for _ in range(8):
            assert len(client.infer(_raw_request(ROWS[:1])).outputs) == 2
        time.sleep(1.5)  # a worker that could not bind would have exited and been replaced
        assert "cannot listen" not in server.output() and "exited" not in server.output()


def test_a_grpc_port_asked_for_must_be_free(example_models: pathlib.Path) -> None:
    model_dir = str(example_models / "digits-onnx")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = Server(
            ["--model-name", "digits", "--model-dir", model_dir],
            env={"KUBESERVE_GRPC_PORT": str(port)},
        )
        assert server.proc.wait(30) == 1
    assert f"cannot listen for gRPC on 127.0.0.1:{port}" in server.output()


def test_the_default_grpc_port_when_taken_costs_a_warning_not_the_server(
    example_models: pathlib.Path,
) -> None:
    model_dir = str(example_models / "digits-onnx")
    with socket.socket() as taken:
        try:
            taken.bind(("127.0.0.1", 8081))
            taken.listen()
        except OSError:
            pass  # another process holds it already: the same situation
        with running(
            ["--model-name", "digits", "--model-dir", model_dir],
            {"KUBESERVE_LOG_LEVEL": "INFO"},
            default_grpc=True,
        ) as server:
            assert request(server.port, "GET", "/v2/health/ready")[0] == 200
            assert "8081" in server.output() and "serving HTTP only" in server.output()


def test_cli_refuses_a_grpc_port_that_is_the_http_port() -> None:
    from kubeserve.server import cli

    assert (
        cli.main(["serve", "--model-dir", "/nonexistent", "--port", "9000", "--grpc-port", "9000"])
        == 2
    )
    assert cli.main(["serve", "--model-dir", "/nonexistent", "--grpc-port", "70000"]) == 2
