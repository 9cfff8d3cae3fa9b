"""Hostile and careless clients against the HTTP transport: the server stays bounded.

Regression suite for issue 11: clients that never read their replies, trickle headers or
bodies, open more connections than there are descriptors, pipeline into a batched reply,
send HEAD, Upgrade or CONNECT, speak HTTP/1.0, or send a request just as SIGTERM arrives.
Every server here is a real process on loopback; timeouts are cut to about a second so the
sweep (once a second) acts within two or three.
"""

from __future__ import annotations

import contextlib
import json
import logging
import pathlib
import re
import resource
import signal
import socket
import time
from collections.abc import Iterator
from typing import BinaryIO

import pytest

from support.server import Server, raw_exchange, request, running

ROW = [0] * 64
FAST = [
    "--header-timeout",
    "1",
    "--body-timeout",
    "1",
    "--body-min-rate",
    "1000",
    "--send-timeout",
    "1",
]


def _digits(models: pathlib.Path, *extra: str) -> list[str]:
    return ["--model-name", "digits", "--model-dir", str(models / "digits-onnx"), *extra]


@pytest.fixture(scope="module")
def guarded(example_models: pathlib.Path) -> Iterator[Server]:
    """A batching digits server with one-second header, body and send timeouts."""
    args = _digits(example_models, *FAST, "--batch-max-size", "8", "--batch-max-wait-ms", "5")
    with running(args) as server:
        yield server


def _post(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n%s\r\n%s" % (
        path.encode(),
        len(body),
        extra,
        body,
    )


PREDICT = _post("/v1/models/digits:predict", json.dumps({"instances": [ROW]}).encode())
INFER = _post(
    "/v2/models/digits/infer",
    json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": ROW}]}
    ).encode(),
)
LIVE = b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n"


def _read_response(f: BinaryIO, *, head: bool = False) -> tuple[int, dict[str, str], bytes]:
    """Read one response off a connection: status, lower-cased headers, body."""
    line = f.readline()
    if not line:
        raise EOFError("connection closed before a response")
    status = int(line.split()[1])
    headers = {}
    while (line := f.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = b"" if head else f.read(int(headers.get("content-length", "0")))
    return status, headers, body


def _closed(sock: socket.socket, timeout: float) -> bool:
    """Read and discard until the server closes (True) or ``timeout`` passes (False)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def _rss_mb(pid: int) -> float:
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert found
    return int(found.group(1)) / 1024


def _metric(port: int, name: str) -> float:
    text = request(port, "GET", "/metrics")[2]
    found = re.search("^" + re.escape(name) + r" (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def _trickle(sock: socket.socket, data: bytes, every: float, within: float) -> bytes:
    """Send ``data`` a byte at a time; return the server's answer, or b"" if none in time."""
    sock.settimeout(every)
    started = time.monotonic()
    for byte in data:
        if time.monotonic() - started > within:
            break
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(bytes([byte]))
        with contextlib.suppress(TimeoutError):
            answer = sock.recv(65536)
            return answer
    return b""


# -- 2. a client that never reads its replies -------------------------------------------


def test_a_client_that_never_reads_costs_bounded_memory_and_is_dropped(guarded: Server) -> None:
    before = _rss_mb(guarded.proc.pid)
    flood = b"GET /openapi.json HTTP/1.1\r\nHost: t\r\n\r\n" * 20_000
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", guarded.port))
        s.settimeout(2)
        # The server stops reading once its unsent replies pass the high-water mark, so
        # this send stalls part-way: that is the point.
        with contextlib.suppress(TimeoutError):
            s.sendall(flood)
        assert s.recv(1, socket.MSG_PEEK)  # accepted and answering, not merely buffered
        time.sleep(0.5)
        assert _rss_mb(guarded.proc.pid) - before < 50
        # Stalled past --send-timeout (1 s; the sweep runs each second): reset.
        deadline = time.monotonic() + 5
        name = 'kubeserve_connections_dropped_total{reason="send_timeout"}'
        while _metric(guarded.port, name) < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _metric(guarded.port, name) >= 1
        assert _closed(s, timeout=5)
    assert _rss_mb(guarded.proc.pid) - before < 50
    assert request(guarded.port, "GET", "/v2/health/live")[0] == 200


# -- 3. slow clients ----------------------------------------------------------------------


def test_headers_trickled_a_byte_at_a_time_get_408_after_the_header_timeout(
    guarded: Server,
) -> None:
    with socket.create_connection(("127.0.0.1", guarded.port)) as s:
        started = time.monotonic()
        answer = _trickle(s, b"GET /v2/health/live HTTP/1.1\r\nX-Slow: " + b"a" * 200, 0.2, 8)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b"connection: close" in answer
        assert time.monotonic() - started < 4
        assert _closed(s, timeout=4)


def test_a_body_slower_than_the_minimum_rate_gets_408(guarded: Server) -> None:
    with socket.create_connection(("127.0.0.1", guarded.port)) as s:
        s.sendall(
            b"POST /v1/models/digits:predict HTTP/1.1\r\nHost: t\r\nContent-Length: 500\r\n\r\n"
        )
        started = time.monotonic()
        answer = _trickle(s, b"{" + b" " * 499, 0.2, 8)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b"body too slow" in answer
        assert time.monotonic() - started < 5


def test_a_slow_but_steady_body_is_answered(guarded: Server) -> None:
    # 1 s allowance plus 1 s per 1000 bytes: 4 KiB at about 2.7 KiB/s takes longer than the
    # allowance alone, but keeps up with the rate.
    body = json.dumps({"instances": [[i % 17 for i in range(64)]] * 20}).encode()
    assert len(body) > 3000
    with socket.create_connection(("127.0.0.1", guarded.port)) as s:
        s.sendall(
            b"POST /v1/models/digits:predict HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
            % len(body)
        )
        started = time.monotonic()
        for i in range(0, len(body), 400):
            s.sendall(body[i : i + 400])
            time.sleep(0.15)
        assert time.monotonic() - started > 1.2
        status, _, payload = _read_response(s.makefile("rb"))
        assert status == 200 and len(json.loads(payload)["predictions"]) == 20


def test_an_idle_keep_alive_connection_is_not_held_to_the_header_timeout(
    guarded: Server,
) -> None:
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=5) as s:
        f = s.makefile("rb")
        s.sendall(LIVE)
        assert _read_response(f)[0] == 200
        time.sleep(2.2)  # silent between requests: the idle timeout's business (60 s)
        s.sendall(LIVE)
        assert _read_response(f)[0] == 200


def test_connections_over_the_limit_get_503_and_a_warning(example_models: pathlib.Path) -> None:
    with running(_digits(example_models, "--max-connections", "5")) as server:
        hogs = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(5)]
        try:
            for hog in hogs:  # answered: each is surely counted by now
                hog.sendall(LIVE)
                assert _read_response(hog.makefile("rb"))[0] == 200
            status, headers, body = request(server.port, "GET", "/v2/health/live")
            assert status == 503 and "5 connections open" in body["error"]
            assert headers["connection"] == "close"
            assert "refusing connections with 503" in server.output()
            assert "--max-connections" in server.output()
            hogs.pop().close()
            time.sleep(0.2)
            assert request(server.port, "GET", "/v2/health/live")[0] == 200
        finally:
            for hog in hogs:
                hog.close()


@contextlib.contextmanager
def _open_file_limit(soft: int) -> Iterator[None]:
    """Lower this process's soft open-file limit, so that children start with it."""
    old, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (old, hard))


def test_more_connections_than_the_inherited_file_limit_still_get_answers(
    example_models: pathlib.Path,
) -> None:
    # Started with 256 open files allowed, the server raises its own soft limit to fit
    # --max-connections (900) rather than stalling in accept() at the 256th connection.
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 1000 + 400:
        pytest.skip("the hard open-file limit is too low to open 300 connections here")
    with _open_file_limit(256):
        server = Server(_digits(example_models))
    try:
        server.wait()
        hogs = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(300)]
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=3) as s:
                s.sendall(LIVE)
                assert _read_response(s.makefile("rb"))[0] == 200
        finally:
            for hog in hogs:
                hog.close()
    finally:
        server.stop()


def test_the_connection_limit_is_lowered_to_fit_a_file_limit_that_cannot_be_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from kubeserve.server import serve

    def refuse(kind: int, limits: tuple[int, int]) -> None:
        raise ValueError("not allowed")

    monkeypatch.setattr(resource, "getrlimit", lambda kind: (1024, 1024))
    monkeypatch.setattr(resource, "setrlimit", refuse)
    with caplog.at_level(logging.WARNING, logger="kubeserve.server"):
        assert serve.fit_connections(900) == 900
        assert serve.fit_connections(2000) == 1024 - serve.FD_RESERVE
    assert "--max-connections 2000 lowered to 924" in caplog.text


def test_drain_is_bounded_whatever_clients_do(example_models: pathlib.Path) -> None:
    # Every per-connection clock off: only --drain-timeout ends these clients.
    off = ["--idle-timeout", "0", "--header-timeout", "0", "--body-timeout", "0"]
    args = _digits(example_models, *off, "--send-timeout", "0", "--drain-timeout", "1")
    with running(args) as server:
        half_head = socket.create_connection(("127.0.0.1", server.port))
        half_head.sendall(b"GET /v2/health/live HTTP/1.1\r\nX-Slow: a")
        half_body = socket.create_connection(("127.0.0.1", server.port))
        half_body.sendall(PREDICT[:-10])
        never_reads = socket.socket()
        never_reads.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        never_reads.connect(("127.0.0.1", server.port))
        never_reads.settimeout(2)
        with contextlib.suppress(TimeoutError):
            never_reads.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: t\r\n\r\n" * 5000)
        # The kernel may take all of that before the server even accepts: wait for a reply.
        assert never_reads.recv(1, socket.MSG_PEEK)
        try:
            started = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            assert server.proc.wait(10) == 0
            assert time.monotonic() - started < 4
            assert _closed(half_head, timeout=2) and _closed(half_body, timeout=2)
            assert "drain timeout: resetting 3 connections" in server.output()
        finally:
            for s in (half_head, half_body, never_reads):
                s.close()


# -- 6. pipelining into a batched reply -------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "status"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (b"POST /v2/models/digits/infer HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n", 413),
    ],
)
def test_pipelined_batched_requests_and_a_bad_one_are_answered_in_order(
    guarded: Server, bad: bytes, status: int
) -> None:
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=5) as s:
        s.sendall(PREDICT + INFER + bad)
        f = s.makefile("rb")
        first, second, third = (_read_response(f) for _ in range(3))
        assert first[0] == 200 and json.loads(first[2])["predictions"]
        assert second[0] == 200 and json.loads(second[2])["outputs"]
        assert third[0] == status and third[1]["connection"] == "close"
        assert f.read() == b""
    # At rest only the scrape itself is in flight.
    time.sleep(0.1)
    assert _metric(guarded.port, "kubeserve_inflight_requests") == 1


def test_pipelined_requests_behind_a_batched_one_keep_their_order(guarded: Server) -> None:
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=5) as s:
        s.sendall(PREDICT + LIVE + INFER + LIVE + PREDICT)
        f = s.makefile("rb")
        bodies = [json.loads(_read_response(f)[2]) for _ in range(5)]
    assert [sorted(b) for b in bodies] == [
        ["predictions"],
        ["live"],
        ["model_name", "model_version", "outputs"],
        ["live"],
        ["predictions"],
    ]


# -- 7. HTTP details ---------------------------------------------------------------------


def test_head_is_answered_without_a_body(guarded: Server) -> None:
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=5) as s:
        s.sendall(
            b"HEAD /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n"
            b"HEAD /v1/models/digits:predict HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        f = s.makefile("rb")
        live = _read_response(f, head=True)
        refused = _read_response(f, head=True)
        after = _read_response(f)
    assert live[0] == 200 and live[1]["content-length"] == str(len(b'{"live":true}'))
    assert refused[0] == 405 and refused[1]["allow"] == "POST"
    # Had either HEAD reply carried a body, this would read it instead.
    assert after[0] == 200 and after[2] == b'{"live":true}'


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/v1/models/digits:predict", "POST"),
        ("PUT", "/v2/models/digits/infer", "POST"),
        ("POST", "/v2/health/ready", "GET, HEAD"),
        ("DELETE", "/v2/models/digits", "GET, HEAD"),
    ],
)
def test_405_names_the_allowed_methods(guarded: Server, method: str, path: str, allow: str) -> None:
    status, headers, body = request(guarded.port, method, path, b"{}")
    assert status == 405 and headers["allow"] == allow
    assert f"use {allow.split(',')[0]}" in body["error"]


@pytest.mark.parametrize(
    "head",
    [
        b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n",
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n",
    ],
)
def test_upgrade_and_connect_get_one_answer_then_close(guarded: Server, head: bytes) -> None:
    started = time.monotonic()
    reply = raw_exchange(guarded.port, head + b"\r\n\x16\x03\x01 not http any more")
    assert len(re.findall(rb"HTTP/1\.1 \d{3} ", reply)) == 1, reply
    assert b"connection: close" in reply
    assert time.monotonic() - started < 3  # closed by the server, not by our timeout


def test_http10_keep_alive_is_confirmed_in_the_reply(guarded: Server) -> None:
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=5) as s:
        f = s.makefile("rb")
        for _ in range(2):
            s.sendall(b"GET /v2/health/live HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            status, headers, _ = _read_response(f)
            assert status == 200 and headers["connection"] == "keep-alive"
    reply = raw_exchange(guarded.port, b"GET /v2/health/live HTTP/1.0\r\n\r\n")
    assert b"connection: close" in reply and reply.endswith(b'{"live":true}')


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/models/digits/versions/:predict"),
        ("GET", "/v1/models/digits/versions/"),
        ("POST", "/v2/models/digits/versions//infer"),
    ],
)
def test_an_empty_version_is_not_the_default_version(
    guarded: Server, method: str, path: str
) -> None:
    status, _, body = request(guarded.port, method, path, {"instances": [ROW]})
    assert status == 404 and "no version ''" in body["error"]


def test_sigterm_answers_requests_sent_on_idle_keep_alive_connections(
    example_models: pathlib.Path,
) -> None:
    with running(_digits(example_models)) as server:
        clients = [
            socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(16)
        ]
        files = [c.makefile("rb") for c in clients]
        try:
            for c, f in zip(clients, files, strict=True):
                c.sendall(LIVE)
                assert _read_response(f)[0] == 200
            server.proc.send_signal(signal.SIGTERM)
            time.sleep(0.1)  # the drain has begun: the requests below meet it
            for c in clients:
                c.sendall(PREDICT)
            for f in files:
                assert _read_response(f)[0] == 200
                assert f.read() == b""  # then closed: by its reply, or once idle
            assert server.proc.wait(10) == 0
        finally:
            for c in clients:
                c.close()
