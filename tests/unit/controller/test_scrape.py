"""Reading variant pods' /metrics: which pods, and every way a read can fail without a crash."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from kubeserve.controller import informer, scrape
from kubeserve.testing.pod_metrics import MetricsServer, Mode


@pytest.fixture()
def server() -> Iterator[MetricsServer]:
    running = MetricsServer("127.0.0.1").start()
    yield running
    running.stop()


def summary(
    name: str, *, ip: str | None = "127.0.0.1", port: int | None = 8080, ready: bool = True
) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "labels": {}},
        "spec": {"containers": [{"name": "server", "ports": []}]},
        "status": {
            "startTime": "2025-01-01T00:00:00Z",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [{"name": "server", "restartCount": 2}],
            "hostIP": "10.0.0.1",
            "qosClass": "Burstable",
        },
    }
    if ip:
        pod["status"]["podIP"] = ip
    if port:
        pod["spec"]["containers"][0]["ports"].append({"name": "http", "containerPort": port})
    return informer.pod_summary(pod)


def test_the_pod_summary_keeps_what_a_read_needs_and_little_else() -> None:
    kept = summary("p", port=9000)
    assert kept["port"] == 9000 and kept["metadata"]["uid"] == "uid-p"
    assert "hostIP" not in kept["status"] and "spec" not in kept


def test_targets_are_the_pods_that_ran_with_their_port_restarts_and_readiness() -> None:
    pods = {
        "v1": [summary("a", port=9000), summary("never-ran", ip=None)],
        "v2": [summary("b", port=None, ready=False)],
        "shadow": [summary("c")],
    }
    found = scrape.targets(pods, ["v1", "v2"])
    assert [(t.name, t.variant, t.port, t.ready, t.restarts) for t in found] == [
        ("a", "v1", 9000, True, 2),
        ("b", "v2", 8080, False, 2),  # no port named http: the server's default
    ]


def target(server: MetricsServer, **changes: Any) -> scrape.Target:
    values: dict[str, Any] = {
        "uid": "u",
        "name": "digits-v1-0",
        "variant": "v1",
        "ip": server.host,
        "port": server.port,
        "ready": True,
        "restarts": 1,
        "started": None,
    }
    return scrape.Target(**(values | changes))


def test_a_ready_pod_is_read(server: MetricsServer) -> None:
    server.pod.serve(12, code=503)
    got = scrape.read_pod(target(server))
    assert got.problem is None and got.counters is not None
    assert (got.counters.requests, got.counters.errors, got.counters.restarts) == (12, 12, 1)


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("error", "answered HTTP 500"),
        ("garbage", "not Prometheus text"),
        ("hang", "no answer within 0.3s"),
        ("redirect", "answered HTTP 302"),  # never followed
    ],
)
def test_a_failing_pod_gives_the_reason(server: MetricsServer, mode: Mode, reason: str) -> None:
    server.mode = mode
    got = scrape.read_pod(target(server), timeout=0.3)
    assert got.counters is None and got.problem is not None and reason in got.problem


def test_a_refused_connection_gives_the_reason() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    got = scrape.read_pod(
        scrape.Target("u", "p", "v1", "127.0.0.1", port, True, 0, None), timeout=0.5
    )
    assert got.counters is None and "refused" in (got.problem or "").lower()


def test_a_pod_not_ready_is_not_read() -> None:
    got = scrape.read_pod(scrape.Target("u", "p", "v1", "127.0.0.1", 1, False, 0, None))
    assert (got.counters, got.problem) == (None, scrape.NOT_READY)


def test_a_body_over_the_cap_is_refused_unread() -> None:
    class Huge(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            chunk = b"# " + b"x" * 65534 + b"\n"
            for _ in range(40):  # 2.5 MiB
                self.wfile.write(chunk)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Huge)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        got = scrape.read_pod(
            scrape.Target("u", "p", "v1", "127.0.0.1", httpd.server_address[1], True, 0, None)
        )
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert got.counters is None and "over 1048576 bytes" in (got.problem or "")
