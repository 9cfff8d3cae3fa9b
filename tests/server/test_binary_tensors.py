"""The binary tensor data extension of the V2 REST protocol, against real server processes.

A body is a JSON header of ``Inference-Header-Content-Length`` bytes followed by the raw
bytes of the inputs whose ``parameters.binary_data_size`` says so; outputs come back the
same way when asked. Hostile bodies (sizes that lie, lengths past the end) get a 400 naming
the input, never a 500 or a wrong array.
"""

from __future__ import annotations

import http.client
import json
import pathlib
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from conftest import DATATYPES
from support.server import Server, request, running

DIGITS = "/v2/models/digits/infer"


def _post(
    port: int,
    path: str,
    header: dict[str, Any] | bytes,
    *tails: bytes,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """POST a JSON header and binary tails; return status, lower-cased headers and raw body."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    sent = {"Inference-Header-Content-Length": str(len(text)), **(headers or {})}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body=text + b"".join(tails), headers=sent)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _split(headers: dict[str, str], body: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Return a binary reply's JSON and each binary output's bytes by name."""
    length = int(headers["inference-header-content-length"])
    reply = json.loads(body[:length])
    tails, at = {}, length
    for out in reply["outputs"]:
        size = out.get("parameters", {}).get("binary_data_size")
        if size is not None:
            tails[out["name"]] = body[at : at + size]
            at += size
    assert at == len(body)
    return reply, tails


def _tensor(name: str, array: np.ndarray, datatype: str) -> tuple[dict[str, Any], bytes]:
    raw = _raw(array, datatype)
    spec = {
        "name": name,
        "datatype": datatype,
        "shape": list(array.shape),
        "parameters": {"binary_data_size": len(raw)},
    }
    return spec, raw


def _raw(array: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        items = [v.encode() if isinstance(v, str) else v for v in array.ravel().tolist()]
        return b"".join(struct.pack("<I", len(v)) + v for v in items)
    return np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()


def _json_infer(port: int, x: np.ndarray, datatype: str = "FP32") -> dict[str, Any]:
    body = {"inputs": [{"name": "input", "datatype": datatype, "shape": list(x.shape)}]}
    body["inputs"][0]["data"] = x.ravel().tolist()
    status, _, reply = request(port, "POST", DIGITS, body)
    assert status == 200, reply
    return {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in reply["outputs"]}


def test_server_metadata_lists_the_extension(onnx_port: int) -> None:
    assert "binary_tensor_data" in request(onnx_port, "GET", "/v2")[2]["extensions"]


def test_binary_input_gives_the_json_answer(onnx_port: int, digits_rows: Any) -> None:
    x = digits_rows[0][:5].astype(np.float32)
    spec, raw = _tensor("input", x, "FP32")
    status, headers, body = _post(onnx_port, DIGITS, {"id": "b1", "inputs": [spec]}, raw)
    assert status == 200, body
    # No output asked for as binary: the reply is plain JSON.
    assert headers["content-type"] == "application/json"
    assert "inference-header-content-length" not in headers
    reply = json.loads(body)
    assert reply["id"] == "b1"
    expected = _json_infer(onnx_port, x)
    for out in reply["outputs"]:
        got = np.array(out["data"]).reshape(out["shape"])
        np.testing.assert_array_equal(got, expected[out["name"]])


def test_binary_output_when_an_output_asks(onnx_port: int, digits_rows: Any) -> None:
    x = digits_rows[0][:4].astype(np.float32)
    spec, raw = _tensor("input", x, "FP32")
    header = {
        "inputs": [spec],
        "outputs": [
            {"name": "probabilities", "parameters": {"binary_data": True}},
            {"name": "label"},
        ],
    }
    status, headers, body = _post(onnx_port, DIGITS, header, raw)
    assert status == 200, body
    assert headers["content-type"] == "application/octet-stream"
    assert int(headers["content-length"]) == len(body)
    reply, tails = _split(headers, body)
    probabilities, label = reply["outputs"]
    assert probabilities["parameters"] == {"binary_data_size": 4 * 10 * 4}
    assert "data" not in probabilities and "parameters" not in label
    expected = _json_infer(onnx_port, x)
    got = np.frombuffer(tails["probabilities"], "<f4").reshape(4, 10)
    np.testing.assert_array_equal(got, expected["probabilities"].astype(np.float32))
    assert label["data"] == expected["label"].tolist()


def test_binary_data_output_is_the_default_an_output_can_override(
    sklearn_port: int, digits_rows: Any
) -> None:
    x = digits_rows[0][:3].astype(np.float64)
    spec, raw = _tensor("input", x, "FP64")
    header = {
        "inputs": [spec],
        "parameters": {"binary_data_output": True},
        "outputs": [
            {"name": "label"},
            {"name": "probabilities", "parameters": {"binary_data": False}},
        ],
    }
    status, headers, body = _post(sklearn_port, DIGITS, header, raw)
    assert status == 200, body
    reply, tails = _split(headers, body)
    assert set(tails) == {"label"}
    assert np.frombuffer(tails["label"], "<i8").tolist() == digits_rows[1][:3].tolist()
    assert len(reply["outputs"][1]["data"]) == 30
    # Without an outputs list, every output is binary.
    header = {"inputs": [spec], "parameters": {"binary_data_output": True}}
    reply, tails = _split(*_post(sklearn_port, DIGITS, header, raw)[1:])
    assert set(tails) == {"label", "probabilities"}


def test_bytes_at_any_offset_are_read_exactly(echo_port: int) -> None:
    # A JSON header of any length leaves the numbers unaligned; values must not change.
    x = np.array([[np.pi, -0.0, 1e-300, 2.0**60 + 1]], dtype=np.float64)
    for pad in range(8):
        spec, raw = _tensor("x", x, "FP64")
        header = json.dumps({"inputs": [spec]}).encode() + b" " * pad
        path = "/v2/models/echo/versions/fp64/infer"
        status, _, body = _post(echo_port, path, header, raw)
        assert status == 200, body
        out = json.loads(body)["outputs"][0]
        assert np.array(out["data"], dtype=np.float64).tobytes() == x.tobytes()


ECHO_VALUES: dict[str, list[Any]] = {
    "BOOL": [[True, False, True]],
    "UINT8": [[0, 255, 7]],
    "UINT16": [[0, 65535, 7]],
    "UINT32": [[0, 2**32 - 1, 7]],
    "UINT64": [[0, 2**64 - 1, 7]],
    "INT8": [[-128, 127, 0]],
    "INT16": [[-(2**15), 2**15 - 1, 0]],
    "INT32": [[-(2**31), 2**31 - 1, 0]],
    "INT64": [[-(2**63), 2**63 - 1, 0]],
    "FP16": [[0.5, -65504.0, 1.0]],
    "FP32": [[0.1, -3.4e38, 1.0]],
    "FP64": [[0.1, -1.7e308, 1.0]],
    "BYTES": [["héllo", "", "\x00x"]],
}


@pytest.mark.parametrize("datatype", list(ECHO_VALUES))
def test_every_datatype_round_trips_as_binary(echo_port: int, datatype: str) -> None:
    dtype = object if datatype == "BYTES" else DATATYPES[datatype]
    x = np.array(ECHO_VALUES[datatype], dtype=dtype)
    spec, raw = _tensor("x", x, datatype)
    header = {"inputs": [spec], "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}
    path = f"/v2/models/echo/versions/{datatype.lower()}/infer"
    status, headers, body = _post(echo_port, path, header, raw)
    assert status == 200, body
    reply, tails = _split(headers, body)
    out = reply["outputs"][0]
    assert (out["datatype"], out["shape"]) == (datatype, [1, 3])
    assert tails["y"] == raw


@pytest.fixture(scope="module")
def two_inputs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of a model with two inputs: ``sum = a + b`` over FP32 ``[N, 2]``."""
    import onnx
    from onnx import TensorProto, helper

    root: pathlib.Path = tmp_path_factory.mktemp("two-inputs")
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"])],
        "add",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 2]),
        ],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["N", 2])],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    (root / "1").mkdir()
    onnx.save(m, str(root / "1" / "model.onnx"))
    with running(["--model-name", "add", "--model-dir", str(root)]) as server:
        yield server


def test_json_and_binary_inputs_mix_in_one_request(two_inputs: Server) -> None:
    b = np.array([[10.0, 20.0], [30.0, 40.0]], dtype=np.float32)
    spec, raw = _tensor("b", b, "FP32")
    header = {
        "inputs": [{"name": "a", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4]}, spec]
    }
    status, _, body = _post(two_inputs.port, "/v2/models/add/infer", header, raw)
    assert status == 200, body
    assert json.loads(body)["outputs"][0]["data"] == [11.0, 22.0, 33.0, 44.0]


def test_binary_inputs_follow_in_the_order_of_the_inputs(two_inputs: Server) -> None:
    a = np.array([[1.0, 2.0]], dtype=np.float32)
    b = np.array([[100.0, 200.0]], dtype=np.float32)
    (spec_a, raw_a), (spec_b, raw_b) = _tensor("a", a, "FP32"), _tensor("b", b, "FP32")
    header = {
        "inputs": [spec_b, spec_a],
        "outputs": [{"name": "sum", "parameters": {"binary_data": True}}],
    }
    status, headers, body = _post(two_inputs.port, "/v2/models/add/infer", header, raw_b, raw_a)
    assert status == 200, body
    assert np.frombuffer(_split(headers, body)[1]["sum"], "<f4").tolist() == [101.0, 202.0]


def test_a_large_binary_request_is_answered_off_the_event_loop(
    onnx_port: int, digits_rows: Any
) -> None:
    # 2 MiB of FP32: over the 64 KiB that sends a body to the worker thread.
    x = np.tile(digits_rows[0][:8].astype(np.float32), (1024, 1))
    spec, raw = _tensor("input", x, "FP32")
    header = {"inputs": [spec], "parameters": {"binary_data_output": True}}
    status, headers, body = _post(onnx_port, DIGITS, header, raw)
    assert status == 200, body
    labels = np.frombuffer(_split(headers, body)[1]["label"], "<i8")
    expected = _json_infer(onnx_port, x[:8])["label"]
    assert labels.tolist() == expected.tolist() * 1024


@pytest.fixture(scope="module")
def fresh_digits(example_models: pathlib.Path) -> Iterator[Server]:
    """A digits server of this module's own: no other test's requests have shaped its heap."""
    model_dir = str(example_models / "digits-onnx")
    with running(["--model-name", "digits", "--model-dir", model_dir]) as server:
        yield server


def _peak_kib(pid: int) -> tuple[int, int]:
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines())
    return int(fields["VmHWM"].split()[0]), int(fields["VmRSS"].split()[0])


def test_a_binary_request_raises_peak_memory_by_a_small_multiple_of_its_size(
    fresh_digits: Server, digits_rows: Any
) -> None:
    # 8 MiB of FP32 rows behind a JSON header of odd length: the bytes are copied once to
    # align them; the JSON part is parsed alone. The same bound as JSON requests have
    # (tests/server/test_hostile_payloads.py): 4 x the body plus 16 MiB of slack.
    x = np.tile(digits_rows[0][:16].astype(np.float32), (2048, 1))
    spec, raw = _tensor("input", x, "FP32")
    header = json.dumps({"inputs": [spec], "outputs": [{"name": "label"}]}).encode() + b" "
    small, small_raw = _tensor("input", x[:1], "FP32")
    assert _post(fresh_digits.port, DIGITS, {"inputs": [small]}, small_raw)[0] == 200  # warm up
    pid = fresh_digits.proc.pid
    pathlib.Path(f"/proc/{pid}/clear_refs").write_text("5")  # restart the high-water mark
    _, before = _peak_kib(pid)
    status, _, body = _post(fresh_digits.port, DIGITS, header, raw)
    peak, _ = _peak_kib(pid)
    assert status == 200, body
    growth = (peak - before) * 1024
    size = len(header) + len(raw)
    assert growth <= 4 * size + (16 << 20), f"{size >> 20} MiB raised the peak {growth >> 20} MiB"


def test_a_binary_body_over_the_limit_is_refused_before_it_is_read(echo_port: int) -> None:
    # The echo server's limit is 64 KiB: refused from Content-Length, whatever follows.
    x = np.zeros((1, 20_000), dtype=np.float32)
    spec, raw = _tensor("x", x, "FP32")
    status, _, body = _post(
        echo_port, "/v2/models/echo/versions/fp32/infer", {"inputs": [spec]}, raw
    )
    assert status == 413 and b"65536" in body
    assert request(echo_port, "GET", "/v2/health/live")[0] == 200


# -- hostile bodies ------------------------------------------------------------------------

ROW = np.zeros((1, 64), dtype=np.float32).tobytes()  # 256 bytes


def _input(**parameters: Any) -> dict[str, Any]:
    return {"name": "input", "datatype": "FP32", "shape": [1, 64], "parameters": parameters}


HOSTILE_DIGITS = [
    pytest.param(
        {"inputs": [_input(binary_data_size=255)]},
        ROW[:255],
        {},
        "input 'input': shape [1, 64] of FP32 needs 256 bytes",
        id="size-not-shape-times-datatype",
    ),
    pytest.param(
        {"inputs": [_input(binary_data_size=512)]},
        ROW,
        {},
        "input 'input': binary_data_size 512 goes past the end of the body",
        id="size-past-the-end",
    ),
    pytest.param(
        {"inputs": [_input(binary_data_size=-256)]},
        ROW,
        {},
        "input 'input': binary_data_size must be a non-negative integer",
        id="negative-size",
    ),
    pytest.param(
        {"inputs": [_input(binary_data_size=256.0)]},
        ROW,
        {},
        "input 'input': binary_data_size must be a non-negative integer",
        id="float-size",
    ),
    pytest.param(
        {"inputs": [_input(binary_data_size="256")]},
        ROW,
        {},
        "input 'input': binary_data_size must be a non-negative integer",
        id="string-size",
    ),
    pytest.param(
        {"inputs": [_input(binary_data_size=True)]},
        ROW,
        {},
        "input 'input': binary_data_size must be a non-negative integer",
        id="boolean-size",
    ),
    pytest.param(
        {"inputs": [_input(binary_data_size=256)]},
        ROW + b"extra",
        {},
        "5 bytes of binary data follow the JSON that no input's binary_data_size claims",
        id="bytes-left-over",
    ),
    pytest.param(
        {"inputs": [{**_input(binary_data_size=256), "data": [0] * 64}]},
        ROW,
        {},
        "input 'input': has both 'data' and binary_data_size",
        id="data-and-binary",
    ),
    pytest.param(
        {"inputs": [{**_input(binary_data_size=256), "datatype": "FP64"}]},
        ROW,
        {},
        "datatype FP64 does not match the model's FP32",
        id="datatype-not-the-models",
    ),
    pytest.param(
        {"inputs": [{**_input(binary_data_size=256), "datatype": "FLOAT"}]},
        ROW,
        {},
        "input 'input': unknown datatype 'FLOAT'",
        id="unknown-datatype",
    ),
    pytest.param(
        {"inputs": [{**_input(binary_data_size=256), "shape": [1, -64]}]},
        ROW,
        {},
        "input 'input': 'shape' must be a list of non-negative integers",
        id="negative-shape",
    ),
    pytest.param(
        {"inputs": [{**_input(binary_data_size=0), "shape": [2**40, 2**40, 0]}]},
        b"",
        {},
        "input 'input': shape [1099511627776, 1099511627776, 0] is larger",
        id="shape-past-any-request",
    ),
    pytest.param(
        {
            "inputs": [_input(binary_data_size=256)],
            "outputs": [{"name": "label", "parameters": {"binary_data": 1}}],
        },
        ROW,
        {},
        "output 'label': 'binary_data' must be true or false",
        id="binary-data-not-a-boolean",
    ),
    pytest.param(
        {"inputs": [_input(binary_data_size=256)], "parameters": {"binary_data_output": "yes"}},
        ROW,
        {},
        "'binary_data_output' must be true or false",
        id="binary-data-output-not-a-boolean",
    ),
    pytest.param(
        {"inputs": [_input(binary_data_size=256)]},
        ROW,
        {"Inference-Header-Content-Length": "100000"},
        "Inference-Header-Content-Length '100000' is larger than the body",
        id="header-length-past-the-body",
    ),
    pytest.param(
        {"inputs": [_input(binary_data_size=256)]},
        ROW,
        {"Inference-Header-Content-Length": "9" * 5000},
        "is larger than the body",
        id="huge-header-length",
    ),
    pytest.param(
        {"inputs": [_input(binary_data_size=256)]},
        ROW,
        {"Inference-Header-Content-Length": "-5"},
        "Inference-Header-Content-Length must be a non-negative integer, got '-5'",
        id="negative-header-length",
    ),
    pytest.param(
        {"inputs": [_input(binary_data_size=256)]},
        ROW,
        {"Inference-Header-Content-Length": "0x10"},
        "Inference-Header-Content-Length must be a non-negative integer",
        id="hex-header-length",
    ),
    pytest.param(
        {"inputs": [_input(binary_data_size=256)]},
        ROW,
        {"Inference-Header-Content-Length": "10"},
        "malformed JSON",
        id="header-length-cuts-the-json",
    ),
]


@pytest.mark.parametrize(("header", "tail", "headers", "needle"), HOSTILE_DIGITS)
def test_hostile_binary_bodies_get_a_400_naming_the_problem(
    onnx_port: int, header: dict[str, Any], tail: bytes, headers: dict[str, str], needle: str
) -> None:
    status, got, body = _post(onnx_port, DIGITS, header, tail, headers=headers)
    assert status == 400, body
    assert got["content-type"] == "application/json"
    message = json.loads(body)["error"]
    assert needle in message
    assert len(message) < 400
    assert request(onnx_port, "GET", "/v2/health/live")[0] == 200


def test_binary_data_without_the_header_is_refused(onnx_port: int) -> None:
    body = json.dumps({"inputs": [_input(binary_data_size=256)]}).encode()
    status, _, reply = request(onnx_port, "POST", DIGITS, body + ROW)
    assert status == 400 and "malformed JSON" in reply["error"]
    status, _, reply = request(onnx_port, "POST", DIGITS, body)
    assert status == 400
    assert "binary_data_size 256 goes past the end of the body: 0 bytes" in reply["error"]
    assert "no Inference-Header-Content-Length header" in reply["error"]


def _strings(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in items)


HOSTILE_BYTES = [
    pytest.param(
        struct.pack("<I", 1000) + b"abc",
        "input 'x': BYTES element 0 claims 1000 bytes, only 3 are left",
        id="length-prefix-past-the-end",
    ),
    pytest.param(
        struct.pack("<I", 2**32 - 1) + b"abc",
        "BYTES element 0 claims 4294967295 bytes",
        id="huge-length-prefix",
    ),
    pytest.param(
        _strings(b"a") + b"\x01\x00", "BYTES data ends after 1 of 2 elements", id="cut-prefix"
    ),
    pytest.param(_strings(b"a"), "BYTES data ends after 1 of 2 elements", id="too-few-elements"),
    pytest.param(
        _strings(b"a", b"b", b"c"), "5 bytes left over after the 2 BYTES elements", id="too-many"
    ),
    pytest.param(_strings(b"\xff\xfe", b"b"), "BYTES element 0 is not valid UTF-8", id="not-utf8"),
]


@pytest.mark.parametrize(("raw", "needle"), HOSTILE_BYTES)
def test_hostile_bytes_elements_get_a_400_naming_the_input(
    echo_port: int, raw: bytes, needle: str
) -> None:
    spec = {
        "name": "x",
        "datatype": "BYTES",
        "shape": [1, 2],
        "parameters": {"binary_data_size": len(raw)},
    }
    status, _, body = _post(
        echo_port, "/v2/models/echo/versions/bytes/infer", {"inputs": [spec]}, raw
    )
    assert status == 400, body
    assert needle in json.loads(body)["error"]


def test_bool_bytes_other_than_0_and_1_are_refused(echo_port: int) -> None:
    spec = {"name": "x", "datatype": "BOOL", "shape": [1, 3], "parameters": {"binary_data_size": 3}}
    path = "/v2/models/echo/versions/bool/infer"
    status, _, body = _post(echo_port, path, {"inputs": [spec]}, b"\x00\x01\x02")
    assert status == 400 and "BOOL bytes must be 0 or 1" in json.loads(body)["error"]
