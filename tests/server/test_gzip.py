"""Compressed request bodies (issue 12, item 4): gzip and deflate, bounded by the body limit.

The limit applies to the inflated size, counted while inflating: a gzip bomb costs no more
memory than a plain body at the limit. Corrupt or truncated data is a 400, another coding
a 415; the compressed size is bounded by the same limit.
"""

from __future__ import annotations

import gzip
import json
import pathlib
import socket
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from kubeserve.server import content_encoding, errors
from support.server import Server, request, running

LIMIT = 1 << 20
ROW = list(range(16)) * 4
V1 = {"instances": [ROW, ROW[::-1]]}
V2 = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 64], "data": [ROW, ROW]}]}


@pytest.fixture(scope="module")
def limited(example_models: pathlib.Path) -> Iterator[Server]:
    """A digits server with a 1 MiB body limit."""
    args = ["--model-name", "digits", "--model-dir", str(example_models / "digits-onnx")]
    with running([*args, "--max-body-bytes", str(LIMIT)]) as server:
        yield server


def _post(
    port: int, path: str, body: bytes, encoding: str | None = "gzip"
) -> tuple[int, dict[str, str], Any]:
    headers = {"content-type": "application/json"}
    if encoding is not None:
        headers["content-encoding"] = encoding
    return request(port, "POST", path, body, headers)


def _json(document: Any) -> bytes:
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("path", "document"),
    [("/v1/models/digits:predict", V1), ("/v2/models/digits/infer", V2)],
    ids=["v1", "v2"],
)
@pytest.mark.parametrize(
    "encoding",
    ["gzip", "x-gzip", "GZIP", "deflate", "identity, gzip"],
)
def test_a_compressed_body_gets_the_answer_of_the_plain_one(
    onnx_port: int, path: str, document: Any, encoding: str
) -> None:
    plain = _post(onnx_port, path, _json(document), encoding=None)
    assert plain[0] == 200
    packed = (zlib.compress if encoding == "deflate" else gzip.compress)(_json(document))
    status, _, reply = _post(onnx_port, path, packed, encoding)
    assert (status, reply) == (200, plain[2])


def test_identity_is_no_coding(onnx_port: int) -> None:
    status, _, _ = _post(onnx_port, "/v1/models/digits:predict", _json(V1), "identity")
    assert status == 200


def test_a_large_compressed_body_goes_to_the_worker_with_the_same_answer(
    limited: Server,
) -> None:
    document = {"instances": [ROW] * 3000}  # about 600 KB inflated, 4 KB sent
    body = _json(document)
    assert len(body) < LIMIT
    plain = _post(limited.port, "/v1/models/digits:predict", body, encoding=None)
    status, _, reply = _post(limited.port, "/v1/models/digits:predict", gzip.compress(body))
    assert status == 200 and reply == plain[2]


def test_the_limit_applies_to_the_inflated_size(limited: Server) -> None:
    # JSON padded with spaces to exactly the limit passes; one byte more is a 413.
    body = _json(V1)
    at_limit = body + b" " * (LIMIT - len(body))
    status, _, reply = _post(limited.port, "/v1/models/digits:predict", gzip.compress(at_limit))
    assert status == 200, reply
    status, headers, reply = _post(
        limited.port, "/v1/models/digits:predict", gzip.compress(at_limit + b" ")
    )
    assert status == 413
    assert f"inflates (gzip) past the limit of {LIMIT} bytes" in reply["error"]
    assert headers["connection"] == "close"


def _memory_kib(pid: int) -> dict[str, int]:
    lines = pathlib.Path(f"/proc/{pid}/status").read_text().splitlines()
    return {
        line.split(":")[0]: int(line.split()[1])
        for line in lines
        if line.startswith(("VmHWM", "VmRSS"))
    }


def test_a_gzip_bomb_is_refused_without_inflating_it(limited: Server) -> None:
    bomb = gzip.compress(b"\0" * 10_000_000, compresslevel=9)
    assert len(bomb) < 20_000
    # Warm up the path first, then start the high-water mark from here (clear_refs 5).
    assert _post(limited.port, "/v1/models/digits:predict", gzip.compress(_json(V1)))[0] == 200
    pid = limited.proc.pid
    pathlib.Path(f"/proc/{pid}/clear_refs").write_text("5")
    before = _memory_kib(pid)
    status, _, reply = _post(limited.port, "/v1/models/digits:predict", bomb)
    after = _memory_kib(pid)
    assert status == 413, reply
    growth = (after["VmHWM"] - before["VmRSS"]) * 1024
    # The limit's worth of zeros at most, and the allocator's slack: not 10 MB.
    assert growth < LIMIT + (4 << 20), f"a {len(bomb)} B bomb raised the peak by {growth} B"


def test_the_compressed_size_is_bounded_too(limited: Server) -> None:
    status, _, reply = _post(limited.port, "/v1/models/digits:predict", b"\x1f" * (LIMIT + 1))
    assert status == 413 and "exceeds the limit" in reply["error"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"not gzip at all", "request body is not valid gzip"),
        (gzip.compress(_json(V1))[:-12], "truncated: its gzip stream does not end"),
        (gzip.compress(_json(V1)) * 2, "continues after its gzip stream ends"),
        (gzip.compress(_json(V1))[:-4] + b"\0\0\0\0", "request body is not valid gzip"),
    ],
    ids=["not-gzip", "truncated", "two-members", "wrong-length"],
)
def test_corrupt_gzip_is_a_400(onnx_port: int, body: bytes, needle: str) -> None:
    status, _, reply = _post(onnx_port, "/v1/models/digits:predict", body)
    assert status == 400, reply
    assert needle in reply["error"]


@pytest.mark.parametrize(
    ("encoding", "needle"),
    [
        ("br", "content-encoding 'br' is not supported; send gzip, deflate"),
        ("compress", "content-encoding 'compress' is not supported"),
        ("gzip, gzip", "stacked codings are not supported"),
    ],
)
def test_other_codings_are_a_415(onnx_port: int, encoding: str, needle: str) -> None:
    status, _, reply = _post(onnx_port, "/v1/models/digits:predict", _json(V1), encoding)
    assert status == 415, reply
    assert needle in reply["error"]


def test_a_chunked_gzip_body_is_inflated_piece_by_piece(onnx_port: int) -> None:
    packed = gzip.compress(_json(V1))
    pieces = [packed[i : i + 7] for i in range(0, len(packed), 7)]
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    head = (
        b"POST /v1/models/digits:predict HTTP/1.1\r\nHost: t\r\nContent-Encoding: gzip\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", onnx_port), timeout=5) as s:
        s.sendall(head + chunked)
        reply = s.makefile("rb").read()
    assert reply.startswith(b"HTTP/1.1 200 ")
    plain = _post(onnx_port, "/v1/models/digits:predict", _json(V1), encoding=None)[2]
    assert json.loads(reply.partition(b"\r\n\r\n")[2]) == plain


def test_the_inflater_stops_one_byte_past_the_limit() -> None:
    inflater = content_encoding.inflater(b"gzip", 1000)
    assert inflater is not None
    packed = gzip.compress(b"x" * 5000)
    with pytest.raises(errors.PayloadTooLarge):
        inflater.feed(packed)
    assert inflater.size == 1001
