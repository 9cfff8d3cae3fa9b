"""Stand-in variant pods for experiment and rollout tests: the server's metrics, served on HTTP.

`PodMetrics` keeps the counters a kubeserve server keeps for experiments and writes them as
the server's /metrics does (the same names and labels, probes and metadata calls beside the
inference requests); `MetricsServer` serves one on an address of its own (127.0.0.x, one per
stand-in pod) and can fail the ways a pod can: a 500, garbage, a hang, a redirect.
`StandInPods` makes the Pod objects of an InferenceService's variants in an API server, as
kubelets would report them, each answered by a `MetricsServer`.
"""

from __future__ import annotations

import dataclasses
import http.server
import itertools
import socketserver
import threading
import time
from typing import Any, Literal

from kubeserve.builders import meta
from kubeserve.server import metrics
from kubeserve.testing import kube_client

BOUNDS = metrics.LATENCY_BUCKETS
Mode = Literal["ok", "error", "garbage", "hang", "redirect"]


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


@dataclasses.dataclass
class PodMetrics:
    """One server's counters: inference requests by code and latency bucket, and feedback."""

    model: str = "digits"
    version: str = "v1"
    codes: dict[int, int] = dataclasses.field(default_factory=dict)
    buckets: list[int] = dataclasses.field(default_factory=lambda: [0] * (len(BOUNDS) + 1))
    seconds: float = 0.0
    outcomes: int = 0
    positives: int = 0
    values: int = 0
    value_sum: float = 0.0
    value_squares: float = 0.0
    probes: int = 0

    def serve(self, n: int, *, code: int = 200, seconds: float = 0.01) -> None:
        """Count `n` inference requests answered with `code`, each taking `seconds`."""
        self.codes[code] = self.codes.get(code, 0) + n
        index = next((i for i, b in enumerate(BOUNDS) if seconds <= b), len(BOUNDS))
        self.buckets[index] += n
        self.seconds += n * seconds
        self.probes += 1  # a readiness probe now and then: never counted by an experiment

    def outcome(self, n: int, positives: int) -> None:
        """Count `n` outcome feedbacks, `positives` of them equal to 1."""
        self.outcomes += n
        self.positives += positives

    def value(self, *values: float) -> None:
        """Count value feedbacks."""
        self.values += len(values)
        self.value_sum += sum(values)
        self.value_squares += sum(v * v for v in values)

    def restart(self) -> None:
        """Start again from zero, as a restarted server does."""
        fresh = PodMetrics(self.model, self.version)
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(fresh, field.name))

    @property
    def requests(self) -> int:
        return sum(self.codes.values())

    def render(self) -> str:
        """Write the counters as the server's /metrics page does."""
        mv = {"model": self.model, "version": self.version}
        out = [
            "# HELP kubeserve_requests_total Requests answered.",
            "# TYPE kubeserve_requests_total counter",
            f"kubeserve_requests_total{_labels(**mv, protocol='v2', operation='health', code='200')}"
            f" {self.probes}",
        ]
        for code, n in sorted(self.codes.items()):
            labels = _labels(**mv, protocol="v2", operation="infer", code=str(code))
            out.append(f"kubeserve_requests_total{labels} {n}")
        out += [
            "# HELP kubeserve_request_duration_seconds Time to the response.",
            "# TYPE kubeserve_request_duration_seconds histogram",
        ]
        if self.codes:
            series = {**mv, "protocol": "v2", "operation": "infer"}
            total = 0
            for bound, n in zip([*(f"{b:g}" for b in BOUNDS), "+Inf"], self.buckets, strict=True):
                total += n
                out.append(
                    f"kubeserve_request_duration_seconds_bucket{_labels(**series, le=bound)} {total}"
                )
            out.append(f"kubeserve_request_duration_seconds_sum{_labels(**series)} {self.seconds}")
            out.append(f"kubeserve_request_duration_seconds_count{_labels(**series)} {total}")
        out += [
            "# HELP kubeserve_batch_size Rows per model call.",
            "# TYPE kubeserve_batch_size histogram",
            "# HELP kubeserve_feedback_total Feedback received.",
            "# TYPE kubeserve_feedback_total counter",
            f"kubeserve_feedback_total{_labels(**mv, kind='outcome')} {self.outcomes}",
            f"kubeserve_feedback_total{_labels(**mv, kind='value')} {self.values}",
            "# TYPE kubeserve_feedback_positive_total counter",
            f"kubeserve_feedback_positive_total{_labels(**mv)} {self.positives}",
            "# TYPE kubeserve_feedback_value_sum gauge",
            f"kubeserve_feedback_value_sum{_labels(**mv)} {self.value_sum!r}",
            "# TYPE kubeserve_feedback_value_squares_sum gauge",
            f"kubeserve_feedback_value_squares_sum{_labels(**mv)} {self.value_squares!r}",
            "# TYPE kubeserve_inflight_requests gauge",
            "kubeserve_inflight_requests 0",
        ]
        return "\n".join(out) + "\n"


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    block_on_close = False  # a hanging answer must not hold up stop()
    allow_reuse_address = True


class MetricsServer:
    """Serve one `PodMetrics` at http://HOST:PORT/metrics, in a mode that may fail."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.pod = PodMetrics()
        self.mode: Mode = "ok"
        self.lock = threading.Lock()
        self.scrapes = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with owner.lock:
                    owner.scrapes += 1
                    mode = owner.mode
                    text = owner.pod.render()
                if mode == "hang":
                    time.sleep(10)
                    return
                if mode == "redirect":
                    self.send_response(302)
                    self.send_header("Location", "http://127.0.0.1:1/metrics")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                code, body = {
                    "ok": (200, text.encode()),
                    "error": (500, b"internal error"),
                    "garbage": (200, b"<html><body>not metrics</body></html>\n"),
                }[mode]
                self.send_response(code)
                self.send_header("Content-Type", metrics.CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = _Server((host, port), Handler)
        self.host, self.port = host, self._server.server_address[1]

    def start(self) -> MetricsServer:
        threading.Thread(
            target=self._server.serve_forever, name=f"metrics-{self.host}", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# Loopback addresses of stand-in pods, one each (127.0.0.1 is left to everything else).
_addresses = itertools.count(100)
LONG_AGO = "2020-01-01T00:00:00Z"


class StandInPods:
    """Ready pods of one InferenceService's variants, each a real HTTP server on its own address."""

    def __init__(self, kube: kube_client.Kube, namespace: str, name: str = "digits") -> None:
        self.kube, self.namespace, self.name = kube, namespace, name
        self.servers: dict[str, MetricsServer] = {}
        self.restarts: dict[str, int] = {}

    def add(
        self, pod: str, variant: str, *, started: str = LONG_AGO, port: int | None = None
    ) -> MetricsServer:
        """Create a ready pod of `variant` whose /metrics a fresh stand-in server answers.

        `started`: its status.startTime; long ago by default, so that a collection takes its
        first counters as a baseline. `port`: the container port the pod names, the server's
        own by default (another is one where nothing answers).
        """
        server = MetricsServer(f"127.0.0.{next(_addresses) % 250 + 2}").start()
        server.pod.version = variant
        self.servers[pod] = server
        self.restarts[pod] = 0
        labels = {
            "app.kubernetes.io/managed-by": meta.MANAGED_BY,
            meta.ISVC_LABEL: self.name,
            meta.VARIANT_LABEL: variant,
        }
        container = {
            "name": "server",
            "image": "kubeserve/server:test",
            "ports": [{"name": "http", "containerPort": port or server.port}],
        }
        self.kube.create(
            kube_client.PODS,
            self.namespace,
            {"metadata": {"name": pod, "labels": labels}, "spec": {"containers": [container]}},
        )
        self._report(pod, {"startTime": started, "podIP": server.host})
        return server

    def _report(self, pod: str, status: dict[str, Any]) -> None:
        """Write the pod's status as its kubelet would: running, ready, `status` besides."""
        status = {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [
                {
                    "name": "server",
                    "ready": True,
                    "restartCount": self.restarts[pod],
                    "image": "kubeserve/server:test",
                    "imageID": "",
                    "state": {"running": {}},
                }
            ],
            **status,
        }
        self.kube.patch(kube_client.PODS, self.namespace, pod, {"status": status}, sub="status")

    def restart(self, pod: str) -> None:
        """Restart the pod's server: its counters begin again, its restart count grows."""
        with self.servers[pod].lock:
            self.servers[pod].pod.restart()
        self.restarts[pod] += 1
        self._report(pod, {})

    def serve(self, pod: str, n: int, **kwargs: Any) -> None:
        """Count `n` inference requests at the pod (see `PodMetrics.serve`)."""
        with self.servers[pod].lock:
            self.servers[pod].pod.serve(n, **kwargs)

    def outcome(self, pod: str, n: int, positives: int) -> None:
        """Count `n` outcome feedbacks at the pod, `positives` of them equal to 1."""
        with self.servers[pod].lock:
            self.servers[pod].pod.outcome(n, positives)

    def stop(self) -> None:
        """Stop every stand-in server."""
        for server in self.servers.values():
            server.stop()
