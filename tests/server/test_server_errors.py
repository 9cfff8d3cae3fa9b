"""Bad and hostile input: each gets a 4xx/5xx naming the problem; the server stays up."""

from __future__ import annotations

import pathlib
import time

import pytest

from support.server import raw_exchange, request, running

ROW = [0] * 64


def _v2(data: object, **tensor: object) -> dict[str, object]:
    spec = {"name": "input", "datatype": "FP32", "shape": [1, 64], "data": data, **tensor}
    return {"inputs": [spec]}


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        ("/v1/models/digits:predict", b"{not json", 400, "malformed JSON"),
        ("/v1/models/digits:predict", b"", 400, "empty"),
        ("/v1/models/digits:predict", b"[1, 2]", 400, "JSON object"),
        ("/v1/models/digits:predict", {"rows": [ROW]}, 400, "'instances'"),
        ("/v1/models/digits:predict", {"instances": []}, 400, "non-empty"),
        ("/v1/models/digits:predict", {"instances": [ROW, [1, 2]]}, 400, "ragged"),
        ("/v1/models/digits:predict", {"instances": [[1, 2, 3]]}, 400, "shape [1, 3]"),
        ("/v1/models/digits:predict", {"instances": [["a"] * 64]}, 400, "numbers"),
        ("/v1/models/digits:predict", {"instances": [[None] * 64]}, 400, "numbers"),
        ("/v1/models/nope:predict", {"instances": [ROW]}, 404, "model 'nope' not found"),
        ("/v1/models/digits/versions/v9:predict", {"instances": [ROW]}, 404, "no version 'v9'"),
        ("/v2/models/digits/infer", {"inputs": "x"}, 400, "'inputs'"),
        ("/v2/models/digits/infer", {}, 400, "'inputs'"),
        ("/v2/models/digits/infer", {"inputs": [{"name": "input"}]}, 400, "lacks 'shape'"),
        (
            "/v2/models/digits/infer",
            {"inputs": [*_v2(ROW)["inputs"], *_v2(ROW, name="pixels")["inputs"]]},
            400,
            "unknown input 'pixels'",
        ),
        (
            "/v2/models/digits/infer",
            _v2(ROW, datatype="FP64"),
            400,
            "does not match the model's FP32",
        ),
        ("/v2/models/digits/infer", _v2(ROW, datatype="FLOAT"), 400, "unknown datatype"),
        ("/v2/models/digits/infer", _v2(ROW, shape=[2, 64]), 400, "needs 128 elements"),
        ("/v2/models/digits/infer", _v2(ROW[:32], shape=[1, 32]), 400, "does not match"),
        ("/v2/models/digits/infer", _v2(ROW, shape=[1, -64]), 400, "non-negative"),
        ("/v2/models/digits/infer", _v2(ROW, shape="1x64"), 400, "'shape'"),
        ("/v2/models/digits/infer", _v2([ROW[:10], ROW]), 400, "ragged"),
        ("/v2/models/digits/infer", {**_v2(ROW), "id": 7}, 400, "'id'"),
        (
            "/v2/models/digits/infer",
            {**_v2(ROW), "outputs": [{"name": "logits"}]},
            400,
            "unknown output 'logits'",
        ),
        (
            "/v2/models/digits/infer",
            {**_v2(ROW), "outputs": [{"name": "label", "parameters": {"binary_data": "yes"}}]},
            400,
            "'binary_data' must be true or false",
        ),
        ("/v2/models/digits/infer", {"inputs": [_v2(ROW)["inputs"][0]] * 2}, 400, "twice"),
        ("/v2/models/other/infer", _v2(ROW), 404, "model 'other' not found"),
        ("/v2/models/digits/versions/v3/infer", _v2(ROW), 404, "versions: v1, v2"),
    ],
)
def test_bad_requests_name_the_problem(
    onnx_port: int, path: str, body: object, status: int, needle: str
) -> None:
    got, headers, payload = request(onnx_port, "POST", path, body)
    assert got == status, payload
    assert set(payload) == {"error"}
    assert needle in payload["error"]
    assert headers["content-type"] == "application/json"


def test_unknown_routes_and_methods(onnx_port: int) -> None:
    assert request(onnx_port, "GET", "/v3/whatever")[0] == 404
    assert request(onnx_port, "GET", "/v2/models/digits/explain")[0] == 404
    assert request(onnx_port, "POST", "/v1/models/digits:explain", {})[0] == 404
    status, _, body = request(onnx_port, "GET", "/v1/models/digits:predict")
    assert status == 405 and "use POST" in body["error"]
    assert request(onnx_port, "POST", "/v2/health/ready", {})[0] == 405
    assert request(onnx_port, "DELETE", "/v2/models/digits")[0] == 405
    assert request(onnx_port, "GET", "/v2/models/digits/versions/zz")[0] == 404


def test_oversized_body_by_content_length(echo_port: int) -> None:
    # The echo server's limit is 64 KiB.
    big = b'{"inputs": [' + b" " * 70_000 + b"]}"
    status, _, body = request(echo_port, "POST", "/v2/models/echo/infer", big)
    assert status == 413 and "65536" in body["error"]
    assert request(echo_port, "GET", "/v2/health/live")[0] == 200


def test_oversized_chunked_body(echo_port: int) -> None:
    chunk = b"x" * 40_000
    req = (
        b"POST /v2/models/echo/infer HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        + (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 2
        + b"0\r\n\r\n"
    )
    reply = raw_exchange(echo_port, req)
    assert reply.startswith(b"HTTP/1.1 413 ")


def test_expect_100_continue_is_answered(onnx_port: int) -> None:
    body = b'{"instances": [' + b",".join([b"[" + b",".join([b"0"] * 64) + b"]"]) + b"]}"
    req = (
        b"POST /v1/models/digits:predict HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
    ) + body
    reply = raw_exchange(onnx_port, req)
    assert reply.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK")


def test_malformed_http_gets_400(onnx_port: int) -> None:
    assert raw_exchange(onnx_port, b"NOT HTTP AT ALL\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    garbage = b"POST /v2/models/digits/infer HTTP/1.1\r\nContent-Length: abc\r\n\r\n"
    assert raw_exchange(onnx_port, garbage).startswith(b"HTTP/1.1 4")
    assert request(onnx_port, "GET", "/v2/health/live")[0] == 200


def test_endless_headers_are_cut_off(onnx_port: int) -> None:
    head = b"GET /v2/health/live HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 100 + b"\r\n"
    reply = raw_exchange(onnx_port, head + b"X-More: " + b"b" * 70_000 + b"\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 431 ")
    reply = raw_exchange(onnx_port, b"GET /" + b"x" * 70_000 + b" HTTP/1.1\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 414 ")


def test_pipelined_requests_are_answered_in_order(onnx_port: int) -> None:
    one = b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n"
    last = b"GET /v1/models HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    reply = raw_exchange(onnx_port, one * 3 + last)
    assert reply.count(b"HTTP/1.1 200 OK") == 4
    assert reply.rstrip().endswith(b'{"models":["digits"]}')


def test_header_injection_through_the_path_is_harmless(onnx_port: int) -> None:
    status, headers, _ = request(onnx_port, "GET", "/v2/models/digits/versions/v1%0d%0aX-Evil:1")
    assert status == 404
    assert "x-evil" not in headers


def _settled_readiness(port: int) -> dict[str, str]:
    """Return the 503 body once loading has finished (it starts as 'model is loading')."""
    deadline = time.monotonic() + 20
    while True:
        status, _, body = request(port, "GET", "/v2/health/ready")
        assert status == 503
        if body["error"] != "model is loading" or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def test_not_ready_model_answers_503_with_the_reason(tmp_path: pathlib.Path) -> None:
    broken = tmp_path / "m" / "1"
    broken.mkdir(parents=True)
    (broken / "model.onnx").write_bytes(b"this is not an onnx file")
    args = ["--model-name", "m", "--model-dir", str(tmp_path / "m")]
    with running(args, wait_for="/v2/health/live") as server:
        body = _settled_readiness(server.port)
        assert "failed to load" in body["error"]
        status, _, body = request(server.port, "POST", "/v1/models/m:predict", {"instances": [[1]]})
        assert status == 503 and "not a loadable ONNX model" in body["error"]
        assert request(server.port, "GET", "/v2/models/m/ready")[0] == 503
        assert request(server.port, "GET", "/v2/health/live")[0] == 200


def test_pickle_needs_the_explicit_flag(example_models: pathlib.Path, digits_rows) -> None:
    args = ["--model-name", "digits", "--model-dir", str(example_models / "digits-joblib")]
    with running(args, wait_for="/v2/health/live") as server:
        assert "refusing to unpickle" in _settled_readiness(server.port)["error"]
    x, _ = digits_rows
    with running([*args, "--allow-pickle"]) as server:
        status, _, body = request(
            server.port, "POST", "/v1/models/digits:predict", {"instances": x[:2].tolist()}
        )
        assert status == 200 and len(body["predictions"]) == 2


def test_missing_model_directory_exits_with_a_message(tmp_path: pathlib.Path) -> None:
    from support.server import Server

    server = Server(["--model-name", "m", "--model-dir", str(tmp_path / "absent")])
    assert server.proc.wait(30) == 1
    assert "does not exist" in server.output()
    assert "Traceback" not in server.output()
