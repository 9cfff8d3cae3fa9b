"""Outcomes reach the variant that served the request, and every answer names the request.

The way clients report outcomes: read `x-kubeserve-variant` (who served) and `x-request-id`
from the answer, then POST the feedback through the same router with the override header
naming that variant. These tests run the rendered router on Debian's nginx: in front of two
real `kubeserve serve` processes (the variants' own metrics must show each feedback where
its request was served), and in front of small recording variants, written here, that
answer with the request id they received (the id the client gets back must be that one).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest

from kubeserve.api import spec, validation
from kubeserve.builders import nginx_config
from kubeserve.testing import nginx as dataplane
from support import specs
from support.nginx import requires_nginx
from support.server import Server

pytestmark = requires_nginx
OVERRIDE = "x-kubeserve-variant"
REQUEST_ID = nginx_config.REQUEST_ID_HEADER
NGINX_ID = re.compile(r"^[0-9a-f]{32}$")  # nginx's $request_id: 16 random bytes in hex
ROW = [0, 0, 5, 13, 9, 1, 0, 0] * 8


def two_variants(**routing: Any) -> spec.InferenceService:
    return validation.parse(
        specs.isvc(specs.variant("v1", 50), specs.variant("v2", 50), routing=routing)
    )


@contextlib.contextmanager
def router(
    isvc: spec.InferenceService, ports: dict[str, int], workdir: Path
) -> Iterator[tuple[int, Path]]:
    """Run the rendered router in front of `ports`; yield its port and its access log's path.

    The config is the one the operator renders, with the access log in a file instead of the
    pod's stdout, so that the test can read it.
    """
    listen, health = dataplane.free_port(), dataplane.free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    access_log = workdir / "access.log"
    conf = dataplane.loopback_config(isvc, ports, listen=listen, health=health, workdir=workdir)
    assert "access_log /dev/stdout kubeserve" in conf
    conf = conf.replace("access_log /dev/stdout kubeserve", f"access_log {access_log} kubeserve")
    nginx = dataplane.Nginx(workdir, conf, health=health)
    try:
        yield listen, access_log
    finally:
        nginx.stop()  # a graceful stop writes out the buffered access log


def call(
    port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        data = None if body is None else json.dumps(body)
        conn.request(method, path, body=data, headers=headers or {})
        response = conn.getresponse()
        text = response.read().decode()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, text
    finally:
        conn.close()


# -- in front of real model servers ----------------------------------------------------------


@pytest.fixture(scope="module")
def servers(example_models: Path) -> Iterator[dict[str, Server]]:
    """A real server per variant, each with its own version's model, as in a variant's pod."""
    pytest.importorskip("onnxruntime", reason="the model server's runtime is not installed")
    started = {
        v: Server(
            [
                "--model-name",
                "digits",
                "--model-dir",
                str(example_models / "digits-onnx" / v),
                "--variant",
                v,
            ]
        )
        for v in ("v1", "v2")
    }
    try:
        for s in started.values():
            s.wait()
        yield started
    finally:
        for s in started.values():
            s.stop()


def feedback_counts(server: Server, version: str) -> dict[str, float]:
    """Give a variant's own feedback counts, read from its /metrics."""
    text = call(server.port, "GET", "/metrics")[2]
    labels = f'model="digits",version="{version}"'
    found = {}
    for short, name in {
        "outcomes": f'kubeserve_feedback_total{{{labels},kind="outcome"}}',
        "values": f'kubeserve_feedback_total{{{labels},kind="value"}}',
        "positive": f"kubeserve_feedback_positive_total{{{labels}}}",
        "sum": f"kubeserve_feedback_value_sum{{{labels}}}",
    }.items():
        line = re.search("^" + re.escape(name) + r" (\S+)$", text, re.M)
        found[short] = float(line.group(1)) if line else 0.0
    return found


def test_feedback_with_the_override_header_reaches_the_variant_that_served(
    servers: dict[str, Server], tmp_path: Path
) -> None:
    isvc = two_variants(overrideHeader=OVERRIDE)
    ports = {v: s.port for v, s in servers.items()}
    before = {v: feedback_counts(s, v) for v, s in servers.items()}
    served: Counter[str] = Counter()
    converted: Counter[str] = Counter()
    with router(isvc, ports, tmp_path / "nginx") as (port, _):
        for i in range(40):
            status, headers, text = call(
                port, "POST", "/v1/models/digits:predict", {"instances": [ROW]}
            )
            assert status == 200, text
            variant, request_id = headers[OVERRIDE], headers[REQUEST_ID]
            served[variant] += 1
            outcome = i % 3 == 0
            converted[variant] += outcome
            # What the README tells clients to do with the two headers.
            status, headers, text = call(
                port,
                "POST",
                "/v2/models/digits/feedback",
                {"outcome": int(outcome), "requestId": request_id},
                {OVERRIDE: variant},
            )
            assert status == 200, text
            assert headers[OVERRIDE] == variant
            assert json.loads(text) == {
                "model": "digits",
                "version": variant,
                "recorded": "outcome",
            }
    assert set(served) == {"v1", "v2"}, served
    for v, s in servers.items():
        after = feedback_counts(s, v)
        assert after["outcomes"] - before[v]["outcomes"] == served[v], v
        assert after["positive"] - before[v]["positive"] == converted[v], v


def test_feedback_on_a_versions_path_reaches_that_version_without_the_header(
    servers: dict[str, Server], tmp_path: Path
) -> None:
    isvc = two_variants()
    before = {v: feedback_counts(s, v) for v, s in servers.items()}
    with router(isvc, {v: s.port for v, s in servers.items()}, tmp_path / "nginx") as (port, _):
        for _ in range(10):
            status, headers, text = call(
                port, "POST", "/v2/models/digits/versions/v2/feedback", {"value": 2.5}
            )
            assert status == 200, text
            assert headers[OVERRIDE] == "v2"
    after = {v: feedback_counts(s, v) for v, s in servers.items()}
    assert after["v2"]["values"] - before["v2"]["values"] == 10
    assert after["v2"]["sum"] - before["v2"]["sum"] == 25.0
    assert after["v1"] == before["v1"]


def test_a_refused_feedback_still_says_who_refused_it_and_which_request_it_was(
    servers: dict[str, Server], tmp_path: Path
) -> None:
    isvc = two_variants(overrideHeader=OVERRIDE)
    with router(isvc, {v: s.port for v, s in servers.items()}, tmp_path / "nginx") as (port, _):
        status, headers, text = call(
            port, "POST", "/v2/models/digits/feedback", {"outcome": 3}, {OVERRIDE: "v1"}
        )
        assert status == 400 and "'outcome'" in json.loads(text)["error"]
        assert headers[OVERRIDE] == "v1"
        assert NGINX_ID.match(headers[REQUEST_ID])
        status, headers, _ = call(port, "GET", "/v2/models/digits/feedback", None, {OVERRIDE: "v2"})
        assert (status, headers["allow"], headers[OVERRIDE]) == (405, "POST", "v2")
        assert NGINX_ID.match(headers[REQUEST_ID])


# -- the request id, against recording variants ----------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    """Answer any request with the variant's name and the X-Request-Id it received."""

    protocol_version = "HTTP/1.1"
    variant = ""

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        body = json.dumps(
            {"variant": self.variant, "request_id": self.headers.get("x-request-id")}
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        # A variant's own id must not reach the client beside the router's.
        self.send_header("x-request-id", "from-the-variant")
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def recording_variants(*names: str) -> Iterator[dict[str, int]]:
    """Start one recording HTTP server per variant on loopback; give their ports."""
    servers = []
    for name in names:
        handler = type(f"Recorder_{name}", (_Recorder,), {"variant": name})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
    try:
        yield {name: s.server_address[1] for name, s in zip(names, servers, strict=True)}
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()


def test_every_answer_carries_the_request_id_the_variant_received(tmp_path: Path) -> None:
    isvc = two_variants(overrideHeader=OVERRIDE)
    with recording_variants("v1", "v2") as ports, router(isvc, ports, tmp_path) as (port, log):
        ids = []
        for _ in range(30):
            status, headers, text = call(port, "POST", "/v2/models/digits/infer", {})
            received = json.loads(text)
            assert status == 200
            assert headers[REQUEST_ID] == received["request_id"]
            assert NGINX_ID.match(headers[REQUEST_ID])
            assert headers[OVERRIDE] == received["variant"]
            ids.append(headers[REQUEST_ID])
        assert len(set(ids)) == 30
    # The access log names each request by the same id (each nginx worker writes its own
    # buffer: lines are not in the order of the requests).
    logged = re.findall(r"request_id=(\S+)", log.read_text())
    assert sorted(logged) == sorted(ids)


@pytest.mark.parametrize(
    "sent",
    ["client-id-1", "8f1c0a2e-4b1d-4c3a-9e55-1f2a3b4c5d6e", "x" * 256, "a/b:c=d+e~f!$&'()*"],
)
def test_a_plain_client_request_id_is_kept_end_to_end(tmp_path: Path, sent: str) -> None:
    isvc = two_variants(overrideHeader=OVERRIDE)
    with recording_variants("v1", "v2") as ports, router(isvc, ports, tmp_path) as (port, log):
        for forced in ("v1", "v2"):
            status, headers, text = call(
                port, "POST", "/v2/models/digits/feedback", {}, {REQUEST_ID: sent, OVERRIDE: forced}
            )
            assert status == 200
            assert json.loads(text) == {"variant": forced, "request_id": sent}
            assert headers[REQUEST_ID] == sent
    assert re.findall(r"request_id=(\S+)", log.read_text()) == [sent, sent]


@pytest.mark.parametrize(
    "sent",
    ["x" * 257, "has space", "tab\there", "", "ü-non-ascii"],
    ids=["257-characters", "space", "tab", "empty", "non-ascii"],
)
def test_a_client_request_id_that_is_not_plain_is_replaced_by_the_routers(
    tmp_path: Path, sent: str
) -> None:
    isvc = two_variants()
    with recording_variants("v1", "v2") as ports, router(isvc, ports, tmp_path) as (port, _):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        # putheader takes the bytes as given: a client may send any of these.
        conn.putrequest("POST", "/v2/models/digits/infer")
        conn.putheader(REQUEST_ID, sent.encode())
        conn.putheader("content-length", "0")
        conn.endheaders()
        response = conn.getresponse()
        received = json.loads(response.read())
        conn.close()
    returned = response.getheader(REQUEST_ID, "")
    assert NGINX_ID.match(returned), returned
    assert received["request_id"] == returned


def test_the_routers_own_answers_carry_a_request_id_too(tmp_path: Path) -> None:
    isvc = two_variants(overrideHeader=OVERRIDE)
    with recording_variants("v1") as ports:
        ports["v2"] = dataplane.free_port()  # v2 is down: nothing listens there
        with router(isvc, ports, tmp_path) as (port, _):
            # A version no variant has: the router's own 404.
            status, headers, _ = call(port, "POST", "/v2/models/digits/versions/v9/feedback", {})
            assert status == 404 and NGINX_ID.match(headers[REQUEST_ID])
            # A variant that cannot be reached: 502, with who it was and the id.
            status, headers, _ = call(
                port, "POST", "/v2/models/digits/feedback", {}, {OVERRIDE: "v2", REQUEST_ID: "r1"}
            )
            assert (status, headers[OVERRIDE], headers[REQUEST_ID]) == (502, "v2", "r1")


# -- gRPC ------------------------------------------------------------------------------------


def test_grpc_answers_carry_the_request_id_the_variant_received(tmp_path: Path) -> None:
    isvc = two_variants(overrideHeader=OVERRIDE)
    with dataplane.running_grpc_router(isvc, tmp_path / "ok") as running:
        client = dataplane.GrpcClient(running.grpc_port)
        try:
            answer = client.infer()
            assert answer.code == grpc.StatusCode.OK
            assert NGINX_ID.match(answer.initial[REQUEST_ID])
            assert answer.received["x-request-id"] == answer.initial[REQUEST_ID]
            answer = client.infer({REQUEST_ID: "grpc-client-7", OVERRIDE: "v2"})
            assert answer.initial[REQUEST_ID] == "grpc-client-7"
            assert answer.received["x-request-id"] == "grpc-client-7"
            assert answer.variant == "v2"
        finally:
            client.close()
    with dataplane.running_grpc_router(isvc, tmp_path / "down", dead=("v2",)) as running:
        client = dataplane.GrpcClient(running.grpc_port)
        try:
            # The router's own trailers-only UNAVAILABLE carries it with the status.
            answer = client.infer({REQUEST_ID: "grpc-client-8", OVERRIDE: "v2"})
        finally:
            client.close()
    assert answer.code == grpc.StatusCode.UNAVAILABLE
    assert answer.trailing[REQUEST_ID] == "grpc-client-8"
