"""Run the rendered router for real: Debian's nginx on loopback ports in front of stand-ins.

The config under test is the one the operator renders for its ConfigMap, placed where a test
machine must differ from a pod (`local.router_config`): the variants on loopback ports, free
loopback ports to listen on, and the test's own directory instead of /tmp.
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

from kubeserve.api import spec
from kubeserve.builders import nginx_config
from kubeserve.local import router_config

NGINX = shutil.which("nginx") or (
    "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None
)
UPSTREAM_SCRIPT = Path(__file__).with_name("upstream.py")


# The local run's own placement: what `kubeserve up` runs is what these tests run.
free_port = router_config.free_port
loopback_config = router_config.loopback_config


class Upstreams:
    """Stand-in variants in one child process (see upstream.py)."""

    def __init__(self, specs: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(UPSTREAM_SCRIPT), *specs],
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

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=5)


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
