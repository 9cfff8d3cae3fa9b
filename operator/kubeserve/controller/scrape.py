"""Read the experiment counters of variant pods: which pods, and one HTTP GET of /metrics each.

The pods come from the operator's pod cache (`informer.pod_summary` keeps each pod's uid,
IP, `http` port, readiness, restarts and start time). A read is bounded every way a pod
could hold the operator up: a short timeout, a 1 MiB body cap, and no redirect followed
(http.client follows none): a pod's answer is only ever about that pod. A pod that cannot be
read gives a reading with the reason, never an exception.
"""

from __future__ import annotations

import dataclasses
import http.client
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from kubeserve.api import status as api_status
from kubeserve.builders import pod
from kubeserve.experiment import readings

TIMEOUT = 2.0
NOT_READY = "not ready"


@dataclasses.dataclass(frozen=True)
class Target:
    """One pod to read: where its server listens, and what a reading of it must say."""

    uid: str
    name: str
    variant: str
    ip: str | None
    port: int
    ready: bool
    restarts: int
    started: str | None

    def url(self) -> str:
        host = f"[{self.ip}]" if self.ip and ":" in self.ip else self.ip
        return f"http://{host}:{self.port}/metrics"

    def reading(
        self, counters: api_status.PodCounters | None, problem: str | None = None
    ) -> readings.PodReading:
        return readings.PodReading(
            uid=self.uid,
            name=self.name,
            variant=self.variant,
            restarts=self.restarts,
            started=self.started,
            counters=counters,
            problem=problem,
        )


def _ready(status: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def _restarts(status: Mapping[str, Any]) -> int:
    statuses = status.get("containerStatuses") or []
    server = [s for s in statuses if s.get("name") == pod.SERVER_CONTAINER] or statuses
    return sum(int(s.get("restartCount") or 0) for s in server)


def targets(
    pods_by_variant: Mapping[str, Sequence[Mapping[str, Any]]], variants: Collection[str]
) -> list[Target]:
    """Give the pods of `variants` that have run (an IP), from the pod cache's summaries."""
    found = []
    for variant in sorted(variants):
        for summary in pods_by_variant.get(variant, ()):
            metadata = summary.get("metadata") or {}
            status = summary.get("status") or {}
            if not status.get("podIP") or not metadata.get("uid"):
                continue  # never ran: it has served nothing
            found.append(
                Target(
                    uid=metadata["uid"],
                    name=metadata.get("name", ""),
                    variant=variant,
                    ip=status["podIP"],
                    port=int(summary.get("port") or pod.SERVER_PORT),
                    ready=_ready(status),
                    restarts=_restarts(status),
                    started=status.get("startTime"),
                )
            )
    return found


def read_pod(target: Target, *, timeout: float = TIMEOUT) -> readings.PodReading:
    """GET the pod's /metrics and parse it; a pod not ready, or failing, gives the reason."""
    if not target.ready or target.ip is None:
        return target.reading(None, NOT_READY)
    connection = http.client.HTTPConnection(target.ip, target.port, timeout=timeout)
    try:
        connection.request("GET", "/metrics", headers={"Accept": "text/plain"})
        response = connection.getresponse()
        if response.status != 200:
            return target.reading(None, f"{target.url()} answered HTTP {response.status}")
        body = response.read(readings.MAX_BODY + 1)
        if len(body) > readings.MAX_BODY:
            return target.reading(None, f"{target.url()} is over {readings.MAX_BODY} bytes")
        text = body.decode("utf-8")
        return target.reading(readings.parse_metrics(text, target.variant, target.restarts))
    except TimeoutError:
        return target.reading(None, f"{target.url()}: no answer within {timeout:g}s")
    except (OSError, http.client.HTTPException) as exc:
        return target.reading(None, f"{target.url()}: {exc or type(exc).__name__}")
    except ValueError as exc:  # not UTF-8, or not a kubeserve server's metrics
        return target.reading(None, f"{target.url()}: {exc}")
    finally:
        connection.close()
