"""Hostile request payloads: what one request may cost, and what the client hears back.

The regression suite of issue 11's payload items, against real server processes:

1. memory: a request raises the server's peak memory by a small multiple of its size,
   whatever its values are (one long string among empty ones made a 955 MiB array);
4. batching: a request the model refuses fails alone, not with the batch it joined;
5. large bodies: decoded off the event loop, so liveness probes answer while clients send
   the largest requests allowed; small ones stay inline;
8. malformed fields: 400 naming the field, never 500, and the OpenAPI document says what
   the server requires (checked by generating requests from it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import json
import pathlib
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubeserve.server import (
    batching,
    chunked_json,
    dataplane,
    errors,
    model,
    repository,
    runtimes,
    tensors,
)
from support import json_edits
from support.server import Server, request, running

ROW = [0] * 64


def _v2(data: Any, *, name: str = "input", datatype: str = "FP32", shape: Any = None) -> dict:
    shape = [len(data), 64] if shape is None else shape
    return {"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}]}


def _post(port: int, path: str, body: Any) -> tuple[int, Any]:
    status, _, payload = request(port, "POST", path, body)
    return status, payload


# -- 1. memory ------------------------------------------------------------------------------

# Peak memory a request may add: this multiple of its body, plus a constant for the
# interpreter's and the allocator's own slack (arenas, a worker thread's first stack pages).
# The issue asked for 4x; every 16 MiB shape here measures 2.0-2.3x (the transport holds
# the body's chunks and their join at once), so 3x catches a copy that comes back.
MEMORY_FACTOR = 3
MEMORY_SLACK = 16 << 20
# FP64 from one-digit numbers, served: each 2-byte "7," becomes 8 bytes of array, so the
# input tensor the model must be given is 4x the body on its own; with the model's outputs
# (11 float64 per 64 inputs: 0.7x) and one row slice's work it measured 5.5x, down from
# 13.6x before the body was freed once parsed and the model ran in row slices.
FP64_FROM_DIGITS_FACTOR = 6

LONG_AND_EMPTY = ["A" * 250_000] + [""] * 1000  # the 254 KB request

BODY_LIMIT = 16 << 20  # the server's default --max-body-bytes


def _fill(head: str, unit: bytes, tail: bytes, *, per_count: int = 1) -> Callable[[], bytes]:
    """A body of ``unit`` repeated (comma-separated) to just under the body limit.

    ``{count}`` in ``head`` becomes how many values the units hold (``per_count`` each),
    ``{rows}`` how many units there are. Built when the test runs: a dozen 16 MiB documents at collection would be slow.
    """

    def build() -> bytes:
        units = (BODY_LIMIT - 4096 - len(head) - len(tail)) // (len(unit) + 1)
        return (
            head.replace("{count}", str(units * per_count)).replace("{rows}", str(units)).encode()
            + b",".join([unit] * units)
            + tail
        )

    return build


def _row(value: bytes, width: int = 64) -> bytes:
    return b"[" + b",".join([value] * width) + b"]"


def _v2_head(name: str, datatype: str, shape: str) -> str:
    return f'{{"inputs": [{{"name": "{name}", "datatype": "{datatype}", "shape": {shape}, "data": ['


MEMORY_CASES = [
    pytest.param(
        "onnx",
        "/v1/models/digits:predict",
        {"instances": LONG_AND_EMPTY},
        400,
        "instances: FP32 data must be numbers",
        id="v1-one-long-string-among-empty-ones",
    ),
    pytest.param(
        "onnx",
        "/v2/models/digits/infer",
        _v2(LONG_AND_EMPTY, shape=[1001]),
        400,
        "input 'input': FP32 data must be numbers",
        id="v2-strings-as-fp32",
    ),
    pytest.param(
        "echo",
        "/v2/models/echo/versions/bytes/infer",
        _v2(LONG_AND_EMPTY, name="x", datatype="BYTES", shape=[1, 1001]),
        200,
        "",
        id="v2-bytes-one-long-string-is-served",
    ),
    pytest.param(
        "onnx",
        "/v1/models/digits:predict",
        {"instances": [[None] * 64] * 6000},
        400,
        "FP32 data must be numbers",
        id="nulls",
    ),
    pytest.param(
        "onnx",
        "/v1/models/digits:predict",
        {"instances": [[True] * 64] * 6000},
        400,
        "not true/false",
        id="bools",
    ),
    pytest.param(
        "onnx",
        "/v2/models/digits/infer",
        _v2([ROW] * 10000 + [[ROW]], shape=[10001, 64]),
        400,
        "ragged",
        id="nested-lists-of-mixed-depth",
    ),
    pytest.param(
        "onnx",
        "/v1/models/digits:predict",
        {"instances": [[10**40] * 64] * 1500},
        400,
        "out of range for FP32",
        id="huge-ints-as-fp32",
    ),
    pytest.param(
        "echo",
        "/v2/models/echo/versions/int64/infer",
        _v2([2**64 + 1] * 50000, name="x", datatype="INT64", shape=[1, 50000]),  # parsed as floats
        400,
        "INT64 data must be integers",
        id="huge-ints-as-int64",
    ),
    # Large bodies: numbers are written straight into the array, with no Python object
    # per number (orjson's lists took 7x a body of one-digit ints, 24x one of []s). Rows of
    # 63 are refused after the whole array is built and checked: what the parse costs, not
    # the model (the digits MLP's intermediate arrays are twice its input). The served ones
    # carry values of a few characters, as real inputs do.
    pytest.param(
        "onnx",
        "/v2/models/digits/infer",
        _fill(_v2_head("input", "FP32", "[{rows}, 63]"), _row(b"7", 63), b"]}]}"),
        400,
        "shape [",
        id="v2-fp32-one-digit-ints-nested",
    ),
    pytest.param(
        "onnx",
        "/v2/models/digits/infer",
        _fill(_v2_head("input", "FP32", "[{rows}, 63]"), b",".join([b"7"] * 63), b"]}]}"),
        400,
        "shape [",
        id="v2-fp32-one-digit-ints-flat",
    ),
    pytest.param(
        "onnx",
        "/v2/models/digits/infer",
        _fill(_v2_head("input", "FP32", "[{rows}, 64]"), _row(b"0.25"), b"]}]}"),
        200,
        "",
        id="v2-fp32-served",
    ),
    pytest.param(
        "sklearn",
        "/v2/models/digits/infer",
        _fill(_v2_head("input", "FP64", "[{rows}, 64]"), _row(b"0.12345678901234567"), b"]}]}"),
        200,
        "",
        id="v2-fp64-floats-of-many-digits-served",
    ),
    pytest.param(
        "echo",
        "/v2/models/echo/versions/int64/infer",
        _fill(_v2_head("x", "INT64", "[1, {count}]"), b"-9223372036854775807", b"]}]}"),
        200,
        "",
        id="v2-int64-big-values-served",
    ),
    pytest.param(
        "echo",
        "/v2/models/echo/versions/bool/infer",
        _fill(_v2_head("x", "BOOL", "[1, {count}]"), b"true", b"]}]}"),
        200,
        "",
        id="v2-bool-served",
    ),
    pytest.param(
        "onnx",
        "/v1/models/digits:predict",
        _fill('{"instances": [', _row(b"7", 63), b"]}"),
        400,
        "shape [",
        id="v1-instances-of-one-digit-ints",
    ),
    pytest.param(
        "onnx",
        "/v1/models/digits:predict",
        _fill('{"instances": [', _row(b"12.5"), b"]}"),
        200,
        "",
        id="v1-instances-served",
    ),
    pytest.param(
        "onnx",
        "/v1/models/digits:predict",
        _fill('{"inputs": [', _row(b"7", 63), b"]}"),
        400,
        "shape [",
        id="v1-columnar-inputs-of-one-digit-ints",
    ),
    pytest.param(
        "onnx",
        "/v1/models/digits:predict",
        _fill('{"instances": [', b"[]", b"]}"),
        400,
        "does not match the model's",
        id="v1-instances-of-empty-lists",
    ),
    pytest.param(
        "onnx",
        "/v2/models/digits/infer",
        _fill(_v2_head("input", "FP32", "[{rows}, 0]"), b"[]", b"]}]}"),
        400,
        "does not match the model's",
        id="v2-data-of-empty-lists",
    ),
    pytest.param(
        "onnx",
        "/v1/models/digits:predict",
        lambda: (
            b'{"instances": ' + b"[" * (BODY_LIMIT // 2 - 64) + b"]" * (BODY_LIMIT // 2 - 64) + b"}"
        ),
        400,
        "nested deeper than",
        id="v1-deep-nesting",
    ),
    pytest.param(
        "onnx",
        "/v2/models/digits/infer",
        _fill(_v2_head("input", "FP32", "[{rows}, 64]"), _row(b"7"), b', [7, "x"]]}]}'),
        400,
        "ragged",
        id="v2-a-string-after-16-mib-of-numbers",
    ),
    pytest.param(
        "sklearn",
        "/v2/models/digits/infer",
        _fill(_v2_head("input", "FP64", "[{rows}, 63]"), _row(b"7", 63), b"]}]}"),
        400,
        "does not match the model's",
        id="v2-fp64-one-digit-ints",
    ),
    pytest.param(
        "sklearn",
        "/v2/models/digits/infer",
        _fill(_v2_head("input", "FP64", "[{rows}, 64]"), _row(b"7", 64), b"]}]}"),
        200,
        "",
        id="v2-fp64-one-digit-ints-served",
    ),
    pytest.param(
        "sklearn",
        "/v1/models/digits:predict",
        _fill('{"instances": [', _row(b"7", 63), b"]}"),
        400,
        "does not match the model's",
        id="v1-fp64-rows-of-the-wrong-width",
    ),
]

# Large values outside a tensor's values, and tensors too small to be deferred on their own.
SMALL_V2 = b'{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": ' + _row(b"0") + b"}"


def _many(head: bytes, unit: bytes, tail: bytes, count: int) -> Callable[[], bytes]:
    return lambda: head + b",".join([unit] * count) + tail


MEMORY_CASES += [
    pytest.param(
        "onnx",
        "/v2/models/digits/infer",
        _fill(
            '{"inputs": [{"name": "input", "datatype": "FP32", "data": [[0]], "shape": [',
            b"1",
            b"]}]}",
        ),
        400,
        "inputs[0].shape is",
        id="v2-shape-of-16-mib",
    ),
    pytest.param(
        "onnx",
        "/v2/models/digits/infer",
        _fill('{"inputs": [' + SMALL_V2.decode() + '], "parameters": {"x": [', b"1", b"]}}"),
        400,
        "parameters is",
        id="v2-parameters-of-16-mib",
    ),
    pytest.param(
        "onnx",
        "/v1/models/digits:predict",
        _fill('{"instances": [[' + ",".join(["0"] * 64) + ']], "junk": [', b"[]", b"]}"),
        400,
        "junk is",
        id="v1-unknown-field-of-empty-lists",
    ),
    pytest.param(
        "onnx",
        "/v2/models/digits/infer",
        _many(
            b'{"inputs": [',
            b'{"name": "input", "datatype": "FP32", "shape": [655, 63], "data": ['
            + b",".join([_row(b"7", 63)] * 655)
            + b"]}",
            b"]}",
            190,
        ),
        400,
        "shape [",
        id="v2-many-inputs-under-128-kib-each",
    ),
    pytest.param(
        "onnx",
        "/v2/models/digits/infer",
        _fill('{"inputs": [', SMALL_V2, b"]}"),
        400,
        "holds more than",
        id="v2-many-tiny-inputs",
    ),
    pytest.param(
        "onnx",
        "/v2/models/digits/infer",
        _fill('{"id": "', b"A" * 1023, b'", "inputs": [' + SMALL_V2 + b"]}"),
        400,
        "id is",
        id="v2-id-of-16-mib",
    ),
    pytest.param(
        "echo",
        "/v2/models/echo/versions/bytes/infer",
        _fill(_v2_head("x", "BYTES", "[1, 1]") + '"', b"A" * 1023, b'"]}]}'),
        200,
        "",
        id="v2-bytes-one-string-of-16-mib-served",
    ),
    pytest.param(
        "onnx",
        "/v1/models/digits:predict",
        _many(
            b'{"instances": [',
            b'{"input": ' + _row(b"0.25") + b"}",
            b"]}",
            chunked_json.MOST_OBJECTS,
        ),
        200,
        "",
        id="v1-named-rows-served",
    ),
    pytest.param(
        "onnx",
        "/v1/models/digits:predict",
        _fill('{"instances": [', b'{"input": ' + _row(b"0.25") + b"}", b"]}"),
        400,
        f"more than {chunked_json.MOST_OBJECTS} elements",
        id="v1-many-named-rows",
    ),
    pytest.param(
        "onnx",
        "/v1/models/digits:predict",
        _fill('{"instances": [', b'{"b64": ""}', b"]}"),
        400,
        "b64",
        id="v1-b64-values",
    ),
]
# Cases whose own tensors are larger than MEMORY_FACTOR bodies: the bound is what they need.
MEMORY_FACTORS = {"v2-fp64-one-digit-ints-served": FP64_FROM_DIGITS_FACTOR}
# One 16 MiB BYTES string echoed back by ONNX Runtime, measured 5.05x: the body is freed
# once parsed, but ONNX Runtime holds the input str, its own std::string copy, the Identity
# output's copy and the str it returns at once (4x), and the reply's JSON follows.
ECHOED_STRING_FACTOR = 6
MEMORY_FACTORS |= {"v2-bytes-one-string-of-16-mib-served": ECHOED_STRING_FACTOR}


def _digits(flavour: str) -> Callable[[pytest.FixtureRequest], list[str]]:
    def args(request: pytest.FixtureRequest) -> list[str]:
        models = request.getfixturevalue("example_models")
        return ["--model-name", "digits", "--model-dir", str(models / f"digits-{flavour}")]

    return args


SERVER_ARGS: dict[str, Callable[[pytest.FixtureRequest], list[str]]] = {
    "onnx": _digits("onnx"),
    "sklearn": _digits("sklearn"),
    "echo": lambda request: [
        "--model-name",
        "echo",
        "--model-dir",
        str(request.getfixturevalue("echo_models")),
    ],
}


@pytest.fixture(scope="module")
def fresh(request: pytest.FixtureRequest) -> Iterator[dict[str, Server]]:
    """Servers of this module's own: no other test's requests have shaped their heaps."""
    started = {name: Server(args(request)) for name, args in SERVER_ARGS.items()}
    try:
        for server in started.values():
            server.wait()
        yield started
    finally:
        for server in started.values():
            server.stop()


def _memory_kib(pid: int) -> dict[str, int]:
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    return {
        line.split(":")[0]: int(line.split()[1])
        for line in status.splitlines()
        if line.startswith(("VmHWM", "VmRSS"))
    }


def _peak_growth(server: Server, path: str, body: bytes) -> tuple[int, int, Any]:
    """Send ``body``; return how far it raised the peak RSS (bytes), the status and reply."""
    pid = server.proc.pid
    # Start the high-water mark from where the process is now (Linux: clear_refs 5).
    pathlib.Path(f"/proc/{pid}/clear_refs").write_text("5")
    before = _memory_kib(pid)
    assert before["VmHWM"] <= before["VmRSS"] + 1024, before  # the reset took
    status, payload = _post(server.port, path, body)
    after = _memory_kib(pid)
    return (after["VmHWM"] - before["VmRSS"]) * 1024, status, payload


WARM_UP = {
    "onnx": ("/v1/models/digits:predict", {"instances": [ROW]}),
    "echo": ("/v2/models/echo/versions/fp32/infer", _v2([[1.5]], name="x", shape=[1, 1])),
    "sklearn": ("/v2/models/digits/infer", _v2([ROW], datatype="FP64")),
}


@pytest.mark.parametrize(("server", "path", "document", "status", "needle"), MEMORY_CASES)
def test_a_request_raises_peak_memory_by_a_small_multiple_of_its_size(
    fresh: dict[str, Server],
    request: pytest.FixtureRequest,
    server: str,
    path: str,
    document: Any,
    status: int,
    needle: str,
) -> None:
    if callable(document):
        # A server of its own: memory freed by an earlier large case stays in the process
        # (the allocator keeps it), and this one's arrays would fit in it unseen.
        with running(SERVER_ARGS[server](request)) as own:
            _peak_growth_case(own, server, path, document(), status, needle, request)
        return
    # The stdlib writes integers beyond 64 bits.
    body = json.dumps(document).encode()
    _peak_growth_case(fresh[server], server, path, body, status, needle, request)


def _peak_growth_case(
    target: Server,
    server: str,
    path: str,
    body: bytes,
    status: int,
    needle: str,
    request: pytest.FixtureRequest,
) -> None:
    assert _post(target.port, *WARM_UP[server])[0] == 200
    assert len(body) <= BODY_LIMIT
    growth, got, payload = _peak_growth(target, path, body)
    assert got == status, str(payload)[:300]
    if needle:
        assert needle in payload["error"]
    factor = MEMORY_FACTORS.get(request.node.callspec.id, MEMORY_FACTOR)
    limit = factor * len(body) + MEMORY_SLACK
    shown = f"{len(body) >> 20} MiB of JSON raised the peak by {growth >> 20} MiB"
    print(f"{request.node.callspec.id}: {shown} ({growth / len(body):.2f}x)")
    assert growth <= limit, shown


def test_bytes_keep_each_string_its_own_length(echo_port: int) -> None:
    # Served as objects: the long string and the empty ones come back as they were sent.
    data = ["é" * 3000, "", "x"]
    status, body = _post(
        echo_port,
        "/v2/models/echo/versions/bytes/infer",
        _v2(data, name="x", datatype="BYTES", shape=[1, 3]),
    )
    assert status == 200, body
    assert body["outputs"][0]["data"] == data


# -- 4. one bad request in a batch ---------------------------------------------------------


def _sklearn_rows(rows: np.ndarray) -> dict:
    return _v2(rows.tolist(), datatype="FP64")


OVERFLOWING = [0.0] * 64
OVERFLOWING[8] = 1e308  # finite as FP64; the scaler's division makes it inf


def test_a_value_the_model_refuses_fails_only_its_own_request_in_a_batch(
    example_models: pathlib.Path, digits_rows: tuple[np.ndarray, np.ndarray], sklearn_port: int
) -> None:
    x, _ = digits_rows
    args = [
        "--model-name",
        "digits",
        "--model-dir",
        str(example_models / "digits-sklearn"),
        "--batch-max-size",
        "64",
        "--batch-max-wait-ms",
        "300",  # long enough for all eleven to join one batch
    ]
    innocents = [_sklearn_rows(x[i : i + 2].astype(float)) for i in range(0, 20, 2)]
    culprit = _v2([OVERFLOWING], datatype="FP64")
    with running(args) as server:
        start = threading.Barrier(11)

        def send(body: dict) -> tuple[int, Any]:
            start.wait()
            return _post(server.port, "/v2/models/digits/infer", body)

        with concurrent.futures.ThreadPoolExecutor(11) as pool:
            answers = list(pool.map(send, [*innocents, culprit]))
    *good, bad = answers
    assert bad[0] == 400, bad
    assert "input 'input': the model refused its values" in bad[1]["error"]
    assert "infinity" in bad[1]["error"]
    for (status, body), sent in zip(good, innocents, strict=True):
        assert status == 200, body
        # The same labels as an unbatched server gives.
        alone = _post(sklearn_port, "/v2/models/digits/infer", sent)[1]
        assert body["outputs"][0]["data"] == alone["outputs"][0]["data"]


def test_values_the_model_refuses_are_a_400_without_batching(sklearn_port: int) -> None:
    status, body = _post(
        sklearn_port, "/v2/models/digits/infer", _v2([OVERFLOWING], datatype="FP64")
    )
    assert status == 400, body
    assert "the model refused its values" in body["error"]
    status, body = _post(sklearn_port, "/v1/models/digits:predict", {"instances": [OVERFLOWING]})
    assert status == 400, body


def test_a_value_that_overflows_the_models_datatype_is_a_400(onnx_port: int) -> None:
    row = [0.0] * 63 + [1e308]  # inf as FP32, the ONNX model's datatype
    for path, body in (
        ("/v2/models/digits/infer", _v2([row], datatype="FP32")),
        ("/v1/models/digits:predict", {"instances": [row]}),
    ):
        status, reply = _post(onnx_port, path, body)
        assert status == 400 and "out of range for FP32" in reply["error"], reply


class _PickyModel(model.Model):
    """Doubles its input; refuses any batch that holds a negative value."""

    def _load(self) -> None:
        self.calls: list[int] = []  # rows per call
        self.inputs = [model.TensorSpec("x", "FP64", (-1,))]
        self.outputs = [model.TensorSpec("y", "FP64", (-1,))]

    def predict(
        self, inputs: dict[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        self.calls.append(len(inputs["x"]))
        if (inputs["x"] < 0).any():
            raise ValueError("negative")
        return {"y": inputs["x"] * 2}


def test_batcher_runs_a_failed_batch_again_one_request_at_a_time() -> None:
    picky = _PickyModel(name="p", version="1", path=pathlib.Path("."))
    picky.load()
    rows: list[int] = []
    batcher = batching.Batcher(picky, max_batch_size=100, max_wait=0.05, on_batch=rows.append)

    async def main() -> list[Any]:
        values = [np.array([1.0, 2.0]), np.array([-1.0]), np.array([3.0])]
        calls = [batcher.predict({"x": v}) for v in values]
        return await asyncio.gather(*calls, return_exceptions=True)

    try:
        first, second, third = asyncio.run(main())
    finally:
        batcher.close()
    assert first["y"].tolist() == [2.0, 4.0] and third["y"].tolist() == [6.0]
    assert isinstance(second, ValueError)
    assert picky.calls == [4, 2, 1, 1]
    assert rows == [2, 1]  # only the calls that succeeded are batches


# -- 5. large requests off the event loop --------------------------------------------------


def _largest_v2_body(rows: list[list[int]], limit: int) -> bytes:
    data: list[list[int]] = []
    while True:
        data.extend(rows)
        body = orjson.dumps(_v2(data))
        if len(body) > limit - 400_000:
            return body


def test_liveness_answers_while_two_clients_send_maximal_requests(
    example_models: pathlib.Path, digits_rows: tuple[np.ndarray, np.ndarray]
) -> None:
    x, _ = digits_rows
    body = _largest_v2_body(x.astype(int).tolist(), 16 << 20)  # the default --max-body-bytes
    args = ["--model-name", "digits", "--model-dir", str(example_models / "digits-onnx")]
    with running(args) as server:
        stop = threading.Event()
        answers: list[int] = []

        def client() -> None:
            # Only the status: decoding a 12 MB answer would hold this process's GIL, and
            # the probes measured here would wait for it, not for the server.
            while not stop.is_set():
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
                conn.request("POST", "/v2/models/digits/infer", body=body)
                response = conn.getresponse()
                response.read()
                answers.append(response.status)
                conn.close()

        clients = [threading.Thread(target=client) for _ in range(2)]
        for c in clients:
            c.start()
        time.sleep(0.5)  # both are sending
        latencies = []
        deadline = time.monotonic() + 3.0
        try:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                status = request(server.port, "GET", "/v2/health/live")[0]
                latencies.append(time.perf_counter() - started)
                assert status == 200
                time.sleep(0.05)
        finally:
            stop.set()
            for c in clients:
                c.join()
    assert answers and set(answers) == {200}
    # The loop waits only for short steps of the decoding: a 16 MiB request held it for
    # 1-2 s before. Allowance for a shared 2-core machine: most probes under 100 ms.
    shown = sorted(round(v * 1000) for v in latencies)
    assert statistics.quantiles(latencies, n=10)[-1] < 0.1, shown
    assert max(latencies) < 0.5, shown


@pytest.fixture(scope="module")
def plane(example_models: pathlib.Path) -> Iterator[dataplane.DataPlane]:
    """The digits ONNX data plane, in this process."""
    repo = repository.discover(
        name="digits",
        model_dir=example_models / "digits-onnx",
        fmt="onnx",
        variant=None,
        options=runtimes.RuntimeOptions(),
    )
    repo.load_all()
    answering = dataplane.DataPlane(repo)
    yield answering
    answering.close()


def test_small_requests_are_answered_inline_and_large_ones_in_the_pool(
    plane: dataplane.DataPlane, digits_rows: tuple[np.ndarray, np.ndarray]
) -> None:
    x, _ = digits_rows
    small = orjson.dumps(_v2(x[:32].astype(int).tolist()))
    large = orjson.dumps(_v2(np.tile(x, (2, 1)).astype(int).tolist()))
    assert len(small) <= plane.offload_bytes < len(large)
    inline = plane.v2_infer("digits", None, small)
    assert isinstance(inline, tuple)  # no coroutine, no thread: the fast path
    pending = plane.v2_infer("digits", None, large)
    assert not isinstance(pending, tuple)

    async def answer() -> dataplane.Reply:
        return await pending

    content, _ = asyncio.run(answer())
    labels = orjson.loads(content)["outputs"][0]["data"]
    assert labels[:32] == orjson.loads(inline[0])["outputs"][0]["data"]
    assert len(labels) == 2 * len(x)


@pytest.mark.parametrize("which", ["onnx", "batched"])
def test_large_requests_get_the_answers_small_ones_get(
    servers: dict[str, Server], digits_rows: tuple[np.ndarray, np.ndarray], which: str
) -> None:
    port = servers[which].port
    x, _ = digits_rows
    rows = (x / 16.0).tolist()  # all of them: over the pool's threshold
    small = [
        _post(port, "/v1/models/digits:predict", {"instances": rows[i : i + 200]})
        for i in range(0, len(rows), 200)
    ]
    status, large = _post(port, "/v1/models/digits:predict", {"instances": rows})
    assert status == 200, large
    assert large["predictions"] == [p for s in small for p in s[1]["predictions"]]
    status, v2 = _post(port, "/v2/models/digits/infer", {**_v2(rows), "id": "big"})
    assert status == 200 and v2["id"] == "big"
    assert v2["outputs"][0]["data"] == large["predictions"]


@pytest.mark.parametrize(
    ("tail", "needle"),
    [
        (b"1, 2,, 3]}]}", "malformed JSON"),
        (b"1, 2, 3]}", "malformed JSON"),
        (b'1, 2, "3"]}]}', "FP32 data must be numbers"),
        (b"1, 2, true]}]}", "not true/false"),
        (b"1, 2, 1e39]}]}", "out of range for FP32"),
    ],
)
def test_large_bodies_are_checked_as_strictly_as_small_ones(
    onnx_port: int, tail: bytes, needle: str
) -> None:
    # A shape the model takes: the values are the only thing wrong with these bodies.
    head = b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [938, 64], "data": ['
    body = head + b"0, " * (938 * 64 - 3) + tail
    assert len(body) > dataplane.OFFLOAD_BYTES
    status, reply = _post(onnx_port, "/v2/models/digits/infer", body)
    assert status == 400 and needle in reply["error"], reply


# The JSON values orjson parses and writes: chunked_json must give back the same.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5), inner, max_size=6)
    ),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(json_values, st.integers(min_value=1, max_value=40), st.booleans())
def test_chunked_parse_gives_what_orjson_gives(value: Any, chunk: int, indent: bool) -> None:
    text = orjson.dumps(value, option=orjson.OPT_INDENT_2 if indent else 0)
    assert chunked_json.loads(text, chunk=chunk) == orjson.loads(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values, st.integers(min_value=1, max_value=40), st.data())
def test_chunked_parse_refuses_what_orjson_refuses(
    value: Any, chunk: int, data: st.DataObject
) -> None:
    text = bytearray(orjson.dumps(value))
    at = data.draw(st.integers(min_value=0, max_value=len(text)))
    edit = data.draw(st.sampled_from(["insert", "delete", "replace"]))
    byte = data.draw(st.sampled_from(b'[]{},:"\\ 0a'))
    json_edits.edit(text, at, edit, byte)
    body = bytes(text)
    try:
        want = orjson.loads(body)
    except orjson.JSONDecodeError:
        with pytest.raises(chunked_json.Malformed):
            chunked_json.loads(body, chunk=chunk)
    else:
        assert chunked_json.loads(body, chunk=chunk) == want


def test_a_freed_document_is_emptied() -> None:
    document = {"a": [[1, 2]] * 10, "b": [{"c": list(range(100))}]}
    chunked_json.release(document, budget=7)
    assert document == {}


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1, max_value=6),
    st.integers(min_value=0, max_value=5),
    st.sampled_from(["FP32", "FP64", "INT32", "BYTES", "BOOL"]),
    st.integers(min_value=1, max_value=12),
    st.booleans(),
    st.booleans(),
)
def test_converting_in_slices_gives_what_converting_at_once_gives(
    rows: int, width: int, datatype: str, chunk: int, nested: bool, literals: bool
) -> None:
    values: dict[str, Any] = {"FP32": 0.5, "FP64": 1e300, "INT32": -7, "BYTES": "é", "BOOL": True}

    def data() -> list[Any]:  # rows of their own, as parsed JSON has them
        row = [values[datatype]] * width
        return [list(row) for _ in range(rows)] if nested else row * rows

    literals = literals or datatype == "BOOL"  # False promises there are no booleans
    whole = tensors.to_array("x", datatype, data(), literals=literals)
    sliced = tensors.to_array("x", datatype, data(), literals=literals, chunk=chunk)
    consumed = data()
    eaten = tensors.to_array("x", datatype, consumed, literals=literals, chunk=chunk, consume=True)
    for got in (sliced, eaten):
        assert got.dtype == whole.dtype and got.shape == whole.shape
        assert got.tolist() == whole.tolist()
    if rows * max(width, 1) > chunk and width:
        assert consumed == []  # converted rows were let go of as the array filled


@pytest.mark.parametrize(
    "data",
    [
        [[1, 2]] * 5 + [[1, 2, 3]],  # a longer row in a later slice
        [[1, 2]] * 5 + [1, 2],  # values among rows
        [[[1] * 20]] * 3 + [[1] * 20],  # rows larger than a slice, one of another depth
        [[1] * 20, [1] * 21],
    ],
)
def test_ragged_data_is_refused_however_it_is_sliced(data: list[Any]) -> None:
    for chunk in (0, 1, 4, 16):
        with pytest.raises(errors.BadRequest, match="ragged"):
            tensors.to_array("x", "FP32", data, literals=True, chunk=chunk)


# -- 8. malformed fields are 400s naming the field -----------------------------------------

FIELD_CASES = [
    pytest.param(_v2([ROW], name={}), "an input's 'name' must be a string", id="name-object"),
    pytest.param(_v2([ROW], name=["input"]), "an input's 'name' must be a string", id="name-list"),
    pytest.param(
        {"inputs": [{"name": "input", "datatype": ["FP32"], "shape": [1, 64], "data": [ROW]}]},
        "input 'input': 'datatype' must be a string",
        id="datatype-list",
    ),
    pytest.param(
        {"inputs": [{"name": "input", "datatype": {}, "shape": [1, 64], "data": [ROW]}]},
        "input 'input': 'datatype' must be a string",
        id="datatype-object",
    ),
    pytest.param(
        {**_v2([ROW]), "outputs": []}, "'outputs' must be a non-empty array", id="outputs-empty"
    ),
    pytest.param(
        {**_v2([ROW]), "outputs": [{"name": {}}]},
        "'outputs' must be a non-empty array of objects with a string 'name'",
        id="output-name-object",
    ),
    pytest.param(
        _v2([], shape=[0, 2**63 - 1, 2]),
        "shape [0, 9223372036854775807, 2] has no rows",
        id="huge-shape",
    ),
    pytest.param(
        _v2([], shape=[0, 64]), "input 'input': shape [0, 64] has no rows", id="zero-rows"
    ),
    pytest.param(
        _v2([], shape=[1, 0, 2**62, 2**62]),
        "is larger than any request can carry",
        id="overflowing-shape",
    ),
    pytest.param(
        {**_v2([ROW]), "parameters": []}, "'parameters' must be an object", id="parameters-list"
    ),
    pytest.param({**_v2([ROW]), "id": 7}, "'id' must be a string", id="id-number"),
]


@pytest.mark.parametrize("server", ["onnx", "sklearn"])
@pytest.mark.parametrize(("body", "needle"), FIELD_CASES)
def test_malformed_fields_are_400s_naming_the_field(
    servers: dict[str, Server], server: str, body: Any, needle: str
) -> None:
    status, reply = _post(servers[server].port, "/v2/models/digits/infer", body)
    assert status == 400, reply
    assert needle in reply["error"]


def test_a_huge_name_is_shown_cut_short(onnx_port: int) -> None:
    status, reply = _post(
        onnx_port, "/v2/models/digits/infer", _v2([ROW], name=["x" * 10_000] * 100)
    )
    assert status == 400 and len(reply["error"]) < 300, reply  # 1 MB sent


def test_generated_requests_get_no_5xx_and_answers_that_match_the_document(
    servers: dict[str, Server],
) -> None:
    import schemathesis
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi import checks

    port = servers["onnx"].port
    base = f"http://127.0.0.1:{port}"
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    conforming = [
        not_a_server_error,
        checks.status_code_conformance,
        checks.content_type_conformance,
        checks.response_schema_conformance,
        checks.response_headers_conformance,
    ]
    modes = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:
        has_body = operation.method.upper() == "POST"
        # The model's own name, so that bodies reach the checks behind the route.
        strategy = st.one_of(
            *(
                operation.as_strategy(
                    generation_mode=mode, path_parameters={"model_name": "digits"}
                )
                for mode in (modes if has_body else modes[:1])
            )
        )

        @settings(
            max_examples=40 if has_body else 5,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def call(case: Any) -> None:
            case.call_and_validate(base_url=base, checks=conforming)

        call()
