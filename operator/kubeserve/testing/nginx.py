"""Run the rendered router for real: Debian's nginx on loopback ports in front of stand-ins.

The config under test is the one the operator renders for its ConfigMap, placed where a test
machine must differ from a pod (`local.router_config`): the variants on loopback ports, free
loopback ports to listen on, and the test's own directory instead of /tmp. Stand-in variants
answer HTTP (upstream.py) and, for the router's gRPC listener, gRPC (grpc_upstream.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc

from kubeserve.api import spec
from kubeserve.builders import nginx_config
from kubeserve.local import router_config
from kubeserve.testing import grpc_upstream

NGINX = shutil.which("nginx") or (
    "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None
)
UPSTREAM_SCRIPT = Path(__file__).with_name("upstream.py")
GRPC_UPSTREAM_SCRIPT = Path(__file__).with_name("grpc_upstream.py")
# grpcio honours http_proxy and friends: calls to loopback must never go through a proxy.
GRPC_CHANNEL_OPTIONS = (("grpc.enable_http_proxy", 0),)


# The local run's own placement: what `kubeserve up` runs is what these tests run.
free_port = router_config.free_port
loopback_config = router_config.loopback_config


class Upstreams:
    """Stand-in variants in one child process (see upstream.py)."""

    script = UPSTREAM_SCRIPT

    def __init__(self, specs: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(self.script), *specs],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.ports: dict[str, int] = json.loads(self.proc.stdout.readline())

    def counts(self) -> dict[str, int]:
        """Ask how many requests each variant has seen (`name/mirror` for mirror copies)."""
        port = next(iter(self.ports.values()))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/_counts")
        data: dict[str, int] = json.loads(conn.getresponse().read())
        conn.close()
        return data

    def settled_counts(self) -> dict[str, int]:
        """Give the counts once mirror copies (sent in the background) stop arriving."""
        last: dict[str, int] = {}
        for _ in range(50):
            now = self.counts()
            if now == last:
                return now
            last = now
            time.sleep(0.05)
        return last

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=5)


class GrpcUpstreams(Upstreams):
    """Stand-in gRPC variants in one child process (see grpc_upstream.py)."""

    script = GRPC_UPSTREAM_SCRIPT

    def counts(self) -> dict[str, int]:
        """Ask how many calls each variant has seen (`name/mirror` for mirror copies)."""
        port = next(iter(self.ports.values()))
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=GRPC_CHANNEL_OPTIONS) as channel:
            counts: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                grpc_upstream.COUNTS
            )
            answer = counts(b"", timeout=5)
        data: dict[str, int] = json.loads(answer)
        return data


class Nginx:
    """One nginx master running a config file in a private directory."""

    def __init__(self, workdir: Path, conf: str, *, health: int) -> None:
        assert NGINX is not None
        self.workdir = workdir
        self.health = health
        # The workers of a root master run as another user; they must reach the temp dirs.
        os.chmod(workdir, 0o755)
        self.conf_path = workdir / "nginx.conf"
        self.conf_path.write_text(conf)
        self.error_log = workdir / "error.log"
        test = subprocess.run(
            [
                NGINX,
                "-t",
                "-q",
                "-e",
                str(self.error_log),
                "-p",
                str(workdir),
                "-c",
                str(self.conf_path),
            ],
            capture_output=True,
            text=True,
        )
        assert test.returncode == 0, test.stderr + self.log()
        self.proc = subprocess.Popen(
            [NGINX, "-e", str(self.error_log), "-p", str(workdir), "-c", str(self.conf_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_healthy()

    def log(self) -> str:
        return self.error_log.read_text() if self.error_log.exists() else ""

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"nginx exited: {self.log()}"
            with contextlib.suppress(OSError):
                conn = http.client.HTTPConnection("127.0.0.1", self.health, timeout=1)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    conn.close()
                    return
            time.sleep(0.02)
        raise AssertionError(f"nginx did not become healthy: {self.log()}")

    def workers(self) -> set[int]:
        """Give the pids of the master's workers that take new connections (not shutting down)."""
        found = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                title = (entry / "cmdline").read_bytes()
                if ppid == self.proc.pid and b"shutting down" not in title:
                    found.add(int(entry.name))
        return found

    def reload(self, conf: str, *, wait: bool = False) -> None:
        """Swap the config and tell the master to reload it (SIGHUP), as `nginx -s reload` does.

        With `wait`, return only once new workers have replaced the old ones.
        """
        old = self.workers()
        self.conf_path.write_text(conf)
        os.kill(self.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while wait:
            now = self.workers()
            if now and not now & old:
                return
            assert time.monotonic() < deadline, f"nginx did not reload: {self.log()}"
            time.sleep(0.02)

    def stop(self) -> None:
        # SIGQUIT: graceful shutdown, as in the pod.
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclasses.dataclass(frozen=True)
class Answer:
    """What the router answered: status, served-by header, the target the variant got, body.

    `target` is the request target the stand-in variant received ("" when no variant did).
    """

    status: int
    served_by: str
    target: str
    body: str
    content_type: str


class Client:
    """A keep-alive HTTP client on one connection to the router."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def get(
        self, path: str = "/v2/models/m/infer", headers: dict[str, str] | None = None
    ) -> tuple[int, str, str]:
        """Send one request; give (status, served-by header, body)."""
        self.conn.request("POST", path, body=b"{}", headers=headers or {})
        resp = self.conn.getresponse()
        body = resp.read().decode()
        return resp.status, resp.getheader(nginx_config.SERVED_BY_HEADER, ""), body

    def request(self, method: str, path: str, headers: dict[str, str] | None = None) -> Answer:
        """Send one request (POSTs carry `{}`), the path exactly as given; give the answer."""
        body = b"{}" if method == "POST" else None
        self.conn.request(method, path, body=body, headers=headers or {})
        resp = self.conn.getresponse()
        return Answer(
            status=resp.status,
            served_by=resp.getheader(nginx_config.SERVED_BY_HEADER, ""),
            target=resp.getheader("x-stand-in-target", ""),
            body=resp.read().decode(),
            content_type=resp.getheader("content-type", ""),
        )

    def close(self) -> None:
        self.conn.close()


@dataclasses.dataclass(frozen=True)
class GrpcAnswer:
    """What the router answered a gRPC call: status, metadata both ways, who answered.

    `initial` and `trailing` are the response metadata; a trailers-only answer (an error before
    any message) has all of its metadata in `trailing`. `received` is the request metadata the
    stand-in variant got and `variant` its name ("" and {} when no variant answered).
    """

    code: grpc.StatusCode
    details: str
    initial: dict[str, str]
    trailing: dict[str, str]
    variant: str
    received: dict[str, str]

    @property
    def served_by(self) -> str:
        """Give the router's served-by metadata, wherever the answer carried it."""
        header = nginx_config.SERVED_BY_HEADER
        return self.initial.get(header) or self.trailing.get(header, "")


def _metadata(items: tuple[tuple[str, str | bytes], ...] | None) -> dict[str, str]:
    """Give metadata as a dict; a key sent more than once has its values joined by ", "."""
    found: dict[str, list[str]] = {}
    for key, value in items or ():
        found.setdefault(key, []).append(
            value if isinstance(value, str) else value.decode("latin-1")
        )
    return {key: ", ".join(values) for key, values in found.items()}


class GrpcClient:
    """A gRPC client on one HTTP/2 connection to the router's gRPC listener."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=GRPC_CHANNEL_OPTIONS)
        self._infer: grpc.UnaryUnaryMultiCallable[bytes, bytes] = self.channel.unary_unary(
            grpc_upstream.INFER
        )

    def infer(self, metadata: dict[str, str] | None = None, *, timeout: float = 10) -> GrpcAnswer:
        """Call ModelInfer (the body is opaque to the router) with `metadata`; give the answer."""
        sent = tuple((metadata or {}).items())
        try:
            body, call = self._infer.with_call(b"\x00", metadata=sent, timeout=timeout)
        except grpc.RpcError as exc:
            # grpcio's failed calls are Calls too: they carry the answer's metadata.
            assert isinstance(exc, grpc.Call)
            return GrpcAnswer(
                code=exc.code(),
                details=exc.details() or "",
                initial=_metadata(exc.initial_metadata()),
                trailing=_metadata(exc.trailing_metadata()),
                variant="",
                received={},
            )
        echoed = json.loads(body)
        return GrpcAnswer(
            code=call.code(),
            details=call.details() or "",
            initial=_metadata(call.initial_metadata()),
            trailing=_metadata(call.trailing_metadata()),
            variant=echoed["variant"],
            received=echoed["metadata"],
        )

    def close(self) -> None:
        self.channel.close()


@dataclasses.dataclass(frozen=True)
class RunningRouter:
    """A router on loopback with HTTP and gRPC stand-ins for its variants."""

    nginx: Nginx
    upstreams: Upstreams
    grpc_upstreams: GrpcUpstreams
    port: int
    grpc_port: int


@contextlib.contextmanager
def running_grpc_router(
    isvc: spec.InferenceService,
    workdir: Path,
    *,
    grpc_modes: dict[str, str] | None = None,
    dead: tuple[str, ...] = (),
) -> Iterator[RunningRouter]:
    """Start HTTP and gRPC stand-ins for every variant (`dead` ones get closed ports) and nginx
    with its gRPC listener in front."""
    grpc_modes = grpc_modes or {}
    workdir.mkdir(parents=True, exist_ok=True)
    live = [v.name for v in isvc.spec.variants if v.name not in dead]
    ups = Upstreams(live)
    grpc_ups = None
    nginx = None
    try:
        grpc_ups = GrpcUpstreams([f"{n}:{grpc_modes.get(n, 'echo')}" for n in live])
        ports = dict(ups.ports) | {n: free_port() for n in dead}
        grpc_ports = dict(grpc_ups.ports) | {n: free_port() for n in dead}
        listen, health, grpc_listen = free_port(), free_port(), free_port()
        conf = loopback_config(
            isvc,
            ports,
            listen=listen,
            health=health,
            workdir=workdir,
            grpc=router_config.GrpcPorts(listen=grpc_listen, variants=grpc_ports),
        )
        nginx = Nginx(workdir, conf, health=health)
        yield RunningRouter(
            nginx=nginx, upstreams=ups, grpc_upstreams=grpc_ups, port=listen, grpc_port=grpc_listen
        )
    finally:
        if nginx is not None:
            nginx.stop()
        if grpc_ups is not None:
            grpc_ups.stop()
        ups.stop()


@contextlib.contextmanager
def running_router(
    isvc: spec.InferenceService,
    workdir: Path,
    *,
    modes: dict[str, str] | None = None,
    dead: tuple[str, ...] = (),
) -> Iterator[tuple[Nginx, Upstreams, int]]:
    """Start stand-ins for every variant (`dead` ones get a closed port) and nginx in front."""
    modes = modes or {}
    workdir.mkdir(parents=True, exist_ok=True)
    live = [v.name for v in isvc.spec.variants if v.name not in dead]
    ups = Upstreams([f"{n}:{modes.get(n, 'echo')}" for n in live])
    ports = dict(ups.ports) | {n: free_port() for n in dead}
    listen, health = free_port(), free_port()
    nginx = None
    try:
        nginx = Nginx(
            workdir,
            loopback_config(isvc, ports, listen=listen, health=health, workdir=workdir),
            health=health,
        )
        yield nginx, ups, listen
    finally:
        if nginx is not None:
            nginx.stop()
        ups.stop()
