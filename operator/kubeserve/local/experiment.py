"""The local run's status: the InferenceService as the operator would write it, experiment included.

`kubeserve up` has no operator and no pods; each variant is one local server process. At
every interval `LocalStatus.collect` reads each server's /metrics, makes of it the reading the
operator makes of a pod (uid `local-<variant>-<pid>`, no restarts, started when the process
started), and hands the readings to `experiment.look`, the operator's own pure step, so the
local verdict is the operator's verdict. The status lives in memory and, with
`--status-file`, in a YAML file rewritten at every collection (through a rename, so a reader
never sees half of one).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from kubeserve.api import spec
from kubeserve.builders import endpoint
from kubeserve.experiment import look, readings

# A local server answers at once; one that does not is counted as unreadable this time.
READ_TIMEOUT = 2.0


@dataclasses.dataclass(frozen=True)
class Server:
    """One variant's local server process: where its metrics are, and when it started."""

    variant: str
    port: int
    pid: int
    started: datetime.datetime

    @property
    def uid(self) -> str:
        """Stand in for the pod's uid: a new process is a new pod."""
        return f"local-{self.variant}-{self.pid}"


def rfc3339(when: datetime.datetime) -> str:
    """Write a time as the API server does: UTC, whole seconds, a Z."""
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_server(server: Server) -> readings.PodReading:
    """Read one server's counters; a server that cannot be read gives the reason instead."""
    counters, problem = None, None
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=READ_TIMEOUT) as response:
            body = response.read(readings.MAX_BODY + 1)
        counters = readings.parse_metrics(
            body.decode("utf-8", "replace"), server.variant, restarts=0
        )
    except (urllib.error.URLError, OSError) as exc:
        problem = f"GET /metrics failed: {getattr(exc, 'reason', exc)}"
    except ValueError as exc:
        problem = str(exc)
    return readings.PodReading(
        uid=server.uid,
        name=f"{server.variant} (pid {server.pid})",
        variant=server.variant,
        restarts=0,
        started=rfc3339(server.started),
        counters=counters,
        problem=problem,
    )


def _condition(type_: str, reason: str, message: str, now: str) -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": now,
    }


def serving_status(isvc: spec.InferenceService, url: str, now: str) -> dict[str, Any]:
    """Give the status of a local run whose servers and router are up (no experiment yet)."""
    weights = isvc.spec.live_weights()
    n = len(isvc.spec.variants)
    return {
        "url": url,
        "traffic": endpoint.traffic_summary(isvc),
        "conditions": [
            _condition("Ready", "Ready", "all variants and the endpoint are ready", now),
            _condition(
                "VariantsReady", "AllVariantsReady", f"{n} of {n} variants ready (local)", now
            ),
            _condition("RoutingReady", "RouterReady", "router: the local nginx is up", now),
        ],
        "variants": {
            v.name: {
                "replicas": 1,
                "readyReplicas": 1,
                "weight": weights[v.name],
                "storageUri": v.model.storage_uri,
                "ready": True,
            }
            for v in isvc.spec.variants
        },
    }


def write_atomically(path: Path, text: str) -> None:
    """Replace a file's content at once: write a temporary file beside it, then rename it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class LocalStatus:
    """The local run's InferenceService with its status, collected at every interval."""

    def __init__(
        self,
        isvc: spec.InferenceService,
        servers: Sequence[Server],
        *,
        url: str,
        interval: float | None = None,
        status_file: Path | None = None,
        say: Callable[[str], None] | None = None,
        now: datetime.datetime | None = None,
    ) -> None:
        self.isvc = isvc
        self.servers = list(servers)
        experiment = isvc.spec.experiment
        self.interval = interval or (experiment.interval_seconds() if experiment else None)
        self.status_file = status_file
        self._say = say or _print
        self.status = serving_status(isvc, url, rfc3339(now or _utcnow()))
        self._next: datetime.datetime | None = None

    @property
    def object(self) -> dict[str, Any]:
        """Give the whole InferenceService, as `kubectl get -o yaml` would show it."""
        return self.isvc.to_wire() | {"status": self.status}

    def due(self, now: datetime.datetime) -> bool:
        """Tell whether the experiment's next collection is due (never without an experiment)."""
        return self.isvc.spec.experiment is not None and (self._next is None or now >= self._next)

    def collect(self, now: datetime.datetime) -> None:
        """Read every server, take one look, keep the new status and write the file."""
        assert self.interval is not None, "collect() needs an experiment"
        self._next = now + datetime.timedelta(seconds=self.interval)
        found = [read_server(s) for s in self.servers]
        result = look.look(self.isvc, self.status, found, now)
        # The operator posts these as Events; here they are the run's output.
        for reason, message in result.events:
            self._say(f"experiment: {reason}: {message}")
        self.status = result.apply(self.status)
        self.save()

    def save(self) -> None:
        """Write the object to the status file, when there is one."""
        if self.status_file is not None:
            write_atomically(self.status_file, yaml.safe_dump(self.object, sort_keys=False))


def _print(line: str) -> None:
    # Flushed: a demo or a test reading the run's output through a pipe sees it at once.
    print(line, flush=True)


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
