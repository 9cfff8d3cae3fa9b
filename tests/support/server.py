"""Helpers for the server tests: start real server processes and talk HTTP to them."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from kubeserve.local import router_config

REPO = pathlib.Path(__file__).resolve().parents[2]


# A port nothing listens on right now, outside the range outgoing connections take theirs from.
free_port = router_config.free_port


class Server:
    """A ``kubeserve serve`` child process on 127.0.0.1."""

    def __init__(
        self, args: list[str], env: dict[str, str] | None = None, *, default_grpc: bool = False
    ) -> None:
        self.port = free_port()
        # Each test server its own gRPC port, unless the test sets one or wants the server's
        # default: the default (8081) would be taken by the first server, refused the others.
        asked = any(a.startswith("--grpc-port") for a in args) or "KUBESERVE_GRPC_PORT" in (
            env or {}
        )
        self.grpc_port = 0 if asked or default_grpc else free_port()
        self.log = REPO / ".pytest_cache" / f"server-{self.port}.log"
        self.log.parent.mkdir(exist_ok=True)
        full_env = {**os.environ, **(env or {})}
        full_env.setdefault("KUBESERVE_LOG_LEVEL", "WARNING")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kubeserve.server",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *([] if self.grpc_port == 0 else ["--grpc-port", str(self.grpc_port)]),
                *args,
            ],
            env=full_env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def wait(self, path: str = "/v2/health/ready", timeout: float = 30.0) -> Server:
        """Block until ``path`` answers 200 (or fail with the server's log)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {self.output()}")
            with contextlib.suppress(OSError):
                if request(self.port, "GET", path)[0] == 200:
                    return self
            time.sleep(0.05)
        raise AssertionError(f"server not ready after {timeout}s: {self.output()}")

    def output(self) -> str:
        """Return what the server logged so far."""
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM the server and return its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def request(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    """Send one request; return status, lower-cased headers and the JSON (or text) body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        if body is not None and not isinstance(body, bytes | str):
            body = json.dumps(body)
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        raw = resp.read()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        if hdrs.get("content-type", "").startswith("application/json"):
            return resp.status, hdrs, json.loads(raw)
        return resp.status, hdrs, raw.decode()
    finally:
        conn.close()


def raw_exchange(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Write raw bytes on a fresh connection and return everything read until close."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


@contextlib.contextmanager
def running(
    args: list[str],
    env: dict[str, str] | None = None,
    *,
    wait_for: str = "/v2/health/ready",
    default_grpc: bool = False,
) -> Iterator[Server]:
    """Start a server, wait until ``wait_for`` answers 200, stop it afterwards."""
    server = Server(args, env, default_grpc=default_grpc)
    try:
        yield server.wait(wait_for)
    finally:
        server.stop()
