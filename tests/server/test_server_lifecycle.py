"""Process lifecycle: SIGTERM drains, several workers share a port, CLI and OpenAPI."""

from __future__ import annotations

import concurrent.futures
import pathlib
import re
import signal
import subprocess
import sys
import time

from support.server import REPO, request, running


def test_sigterm_drains_in_flight_requests(example_models: pathlib.Path, digits_rows) -> None:
    x, _ = digits_rows
    # A long batching wait keeps a request in flight while SIGTERM arrives.
    args = [
        "--model-name",
        "digits",
        "--model-dir",
        str(example_models / "digits-onnx"),
        "--batch-max-size",
        "1000",
        "--batch-max-wait-ms",
        "1500",
        "--drain-delay",
        "0.6",
    ]
    with running(args) as server, concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(
            request, server.port, "POST", "/v1/models/digits:predict", {"instances": x[:3].tolist()}
        )
        time.sleep(0.3)
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        # Readiness fails first, while the process still answers.
        status, _, body = request(server.port, "GET", "/v2/health/ready")
        assert status == 503 and "shutting down" in body["error"]
        status, headers, body = pending.result(timeout=10)
        assert status == 200 and len(body["predictions"]) == 3
        assert headers.get("connection") == "close"
        assert server.proc.wait(10) == 0


def test_two_workers_share_the_port_and_the_metrics(example_models: pathlib.Path) -> None:
    args = [
        "--model-name",
        "digits",
        "--model-dir",
        str(example_models / "digits-onnx"),
        "--workers",
        "2",
    ]
    with running(args) as server:
        # One ready worker is enough for `running`; the kernel spreads new connections over
        # both, so wait until ready answers come from every connection for a while.
        deadline, streak = time.monotonic() + 30, 0
        while streak < 30 and time.monotonic() < deadline:
            ok = request(server.port, "GET", "/v2/health/ready")[0] == 200
            streak = streak + 1 if ok else 0
            if not ok:
                time.sleep(0.1)
        for _ in range(40):
            assert (
                request(
                    server.port, "POST", "/v1/models/digits:predict", {"instances": [[0] * 64]}
                )[0]
                == 200
            )
        # Workers publish their numbers once a second; a busy machine may take longer.
        deadline = time.monotonic() + 20
        while True:
            text = request(server.port, "GET", "/metrics")[2]
            found = re.search(
                r'kubeserve_requests_total\{model="digits",version="v2",'
                r'protocol="v1",operation="infer",code="200"\} (\S+)',
                text,
            )
            total = float(found.group(1)) if found else 0.0
            if total >= 40 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert total == 40
        assert server.stop() == 0


def test_python_dash_m_help_and_usage_errors() -> None:
    run = [sys.executable, "-m", "kubeserve.server"]
    done = subprocess.run([*run, "serve", "--help"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0
    for var in (
        "KUBESERVE_MODEL_NAME",
        "KUBESERVE_MODEL_DIR",
        "KUBESERVE_MODEL_FORMAT",
        "KUBESERVE_PORT",
        "KUBESERVE_VARIANT",
        "KUBESERVE_ALLOW_PICKLE",
    ):
        assert var in done.stdout
    bad = subprocess.run([*run, "serve", "--workers", "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--workers" in bad.stderr
    env_bad = subprocess.run(
        [*run, "serve"],
        capture_output=True,
        text=True,
        env={"KUBESERVE_PORT": "eighty", "PATH": ""},
    )
    assert env_bad.returncode == 2 and "KUBESERVE_PORT" in env_bad.stderr
    assert "Traceback" not in bad.stderr + env_bad.stderr


def test_openapi_document_lists_every_route(onnx_port: int) -> None:
    status, _, doc = request(onnx_port, "GET", "/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    for path in (
        "/",
        "/v1/models",
        "/v1/models/{model_name}",
        "/v1/models/{model_name}:predict",
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{model_name}",
        "/v2/models/{model_name}/ready",
        "/v2/models/{model_name}/infer",
        "/v2/models/{model_name}/versions/{model_version}/infer",
        "/metrics",
    ):
        assert path in doc["paths"], path
    infer = doc["paths"]["/v2/models/{model_name}/infer"]["post"]
    assert {"200", "400", "404", "413", "503"} <= set(infer["responses"])


def test_silent_connections_are_closed(example_models: pathlib.Path) -> None:
    import socket

    args = [
        "--model-name",
        "digits",
        "--model-dir",
        str(example_models / "digits-onnx"),
        "--idle-timeout",
        "1",
    ]
    with running(args) as server, socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"POST /v1/models/digits:predict HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
        s.settimeout(5)
        started = time.monotonic()
        assert s.recv(100) == b""  # closed by the server, half a request notwithstanding
        assert time.monotonic() - started < 4
        assert request(server.port, "GET", "/v2/health/live")[0] == 200
