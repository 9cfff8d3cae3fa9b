"""The local run's status: the InferenceService as the operator would write it, experiment and rollout included.

`kubeserve up` has no operator and no pods; each variant is one local server process. At
every interval `LocalStatus.collect` reads each server's /metrics, makes of it the reading the
operator makes of a pod (uid `local-<variant>-<pid>`, no restarts, started when the process
started), and hands the readings to `experiment.look` and `rollout.look`, the operator's own
pure steps, so the local verdict and the local rollout are the operator's. The live split
(`LocalStatus.live`) is the rollout's; the run re-renders its router from `live_isvc` when it
moves. A new generation of the file (`change`) is checked at once. The status lives in memory
and, with `--status-file`, in a YAML file rewritten at every collection (through a rename, so
a reader never sees half of one).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from kubeserve.api import spec
from kubeserve.builders import endpoint
from kubeserve.experiment import look, readings
from kubeserve.local import rollout as local_rollout
from kubeserve.rollout import decide as rollout_decide
from kubeserve.rollout import look as rollout_look
from kubeserve.rollout import steps

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


def serving_status(
    isvc: spec.InferenceService, url: str, now: str, live: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """Give the status of a local run whose servers and router are up (no experiment yet).

    `live`: the split the router carries, when it is not the spec's (a rollout's).
    """
    weights = dict(live) if live is not None else isvc.spec.live_weights()
    n = len(isvc.spec.variants)
    generation = (
        {"observedGeneration": isvc.metadata.generation} if isvc.metadata.generation else {}
    )
    return {
        **generation,
        "url": url,
        "traffic": endpoint.traffic_summary(steps.live_spec(isvc, weights)),
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
        live: Mapping[str, int] | None = None,
        not_ready: Callable[[Server], str | None] | None = None,
    ) -> None:
        """Keep `isvc` served by `servers`, its router carrying `live` (default the spec's split).

        `interval` overrides spec.experiment.interval and spec.rollout.interval (the API's
        minimum, 5s, is slow for a demo or a test). `not_ready` says why a server is not
        ready, None when it is (default: what its /v2/health/ready answers).
        """
        self.isvc = isvc
        self.servers = list(servers)
        self.interval = interval
        self.status_file = status_file
        self._say = say or _print
        self._not_ready = not_ready or (lambda server: local_rollout.not_ready(server.port))
        self.live: dict[str, int] = dict(live) if live is not None else isvc.spec.live_weights()
        self.status = serving_status(isvc, url, rfc3339(now or _utcnow()), self.live)
        self._next_experiment: datetime.datetime | None = None
        self._next_rollout: datetime.datetime | None = None
        # The operator posts Events; here they are the run's output, said once the status
        # file shows what they say (a reader who sees the line finds it there).
        self._unsaid: list[str] = []

    @property
    def object(self) -> dict[str, Any]:
        """Give the whole InferenceService, as `kubectl get -o yaml` would show it."""
        return self.isvc.to_wire() | {"status": self.status}

    @property
    def live_isvc(self) -> spec.InferenceService:
        """Give the InferenceService as the router must carry it: the live split, in split order."""
        return steps.live_spec(self.isvc, self.live)

    def experiment_interval(self) -> float | None:
        """Give the experiment's collection interval; None without spec.experiment."""
        experiment = self.isvc.spec.experiment
        return None if experiment is None else self.interval or experiment.interval_seconds()

    def rollout_interval(self) -> float | None:
        """Give the rollout's check interval; None without spec.rollout."""
        rollout = self.isvc.spec.rollout
        return None if rollout is None else self.interval or rollout.interval_seconds()

    def _experiment_due(self, now: datetime.datetime) -> bool:
        return self.isvc.spec.experiment is not None and (
            self._next_experiment is None or now >= self._next_experiment
        )

    def _rollout_due(self, now: datetime.datetime) -> bool:
        return self.isvc.spec.rollout is not None and (
            self._next_rollout is None or now >= self._next_rollout
        )

    def due(self, now: datetime.datetime) -> bool:
        """Tell whether a collection is due: the experiment's or the rollout's (never without)."""
        return self._experiment_due(now) or self._rollout_due(now)

    def collect(self, now: datetime.datetime) -> bool:
        """Read every server once, take the looks due, keep the new status and write the file.

        Gives whether the live split moved (the router must carry the new one).
        """
        experiment_due, rollout_due = self._experiment_due(now), self._rollout_due(now)
        if not (experiment_due or rollout_due):
            return False
        found = [read_server(s) for s in self.servers]
        if experiment_due:
            self._look_experiment(found, now)
        moved = self._look_rollout(found, now) if rollout_due else False
        self._save_and_say()
        return moved

    def change(self, isvc: spec.InferenceService, now: datetime.datetime) -> bool:
        """Serve a new generation (or new metadata) of the InferenceService from now on.

        The rollout is looked at at once, as the operator does on a spec change: a new
        destination that raises the candidate's weight starts a walk from the live split,
        any other is applied at once; a new manual command is honoured. Gives whether the
        live split moved.
        """
        self.isvc = isvc
        if isvc.metadata.generation:
            self.status = {**self.status, "observedGeneration": isvc.metadata.generation}
        moved = False
        if isvc.spec.rollout is None or rollout_decide.unscheduled(isvc, self.status):
            # Only a start or a new command is looked at out of schedule: any other look may
            # count a failed check or take a step, which is the interval's to do.
            moved = self._look_rollout([read_server(s) for s in self.servers], now)
        self._save_and_say()
        return moved

    def _look_experiment(
        self, found: Sequence[readings.PodReading], now: datetime.datetime
    ) -> None:
        interval = self.experiment_interval()
        assert interval is not None, "the experiment's look needs spec.experiment"
        self._next_experiment = now + datetime.timedelta(seconds=interval)
        # The live split: the sample ratio follows the weights that carried the requests.
        result = look.look(self.live_isvc, self.status, found, now)
        self._unsaid += [f"experiment: {reason}: {message}" for reason, message in result.events]
        self.status = result.apply(self.status)

    def _candidate_problem(self) -> str | None:
        """Say why the candidate's server is not ready, as the operator says of its pods."""
        config = self.isvc.spec.rollout
        if config is None:
            return None  # no rollout: nothing asks
        server = next((s for s in self.servers if s.variant == config.candidate), None)
        if server is None:
            return f"variant {config.candidate} has no server (restart kubeserve up)"
        why = self._not_ready(server)
        return None if why is None else f"the server on port {server.port}: {why}"

    def _look_rollout(self, found: Sequence[readings.PodReading], now: datetime.datetime) -> bool:
        interval = self.rollout_interval()
        if interval is not None:
            self._next_rollout = now + datetime.timedelta(seconds=interval)
        result = rollout_look.look(
            self.isvc,
            self.status,
            found,
            candidate_problem=self._candidate_problem(),
            now=now,
            interval_seconds=interval,
        )
        self._unsaid += [local_rollout.event_line(r, m) for r, m in result.events]
        moved = result.live_weights != self.live
        self.live = dict(result.live_weights)
        self.status = local_rollout.with_live_split(result.apply(self.status), self.isvc, self.live)
        return moved

    def _save_and_say(self) -> None:
        self.save()
        for line in self._unsaid:
            self._say(line)
        self._unsaid.clear()

    def save(self) -> None:
        """Write the object to the status file, when there is one."""
        if self.status_file is not None:
            write_atomically(self.status_file, yaml.safe_dump(self.object, sort_keys=False))


def _print(line: str) -> None:
    # Flushed: a demo or a test reading the run's output through a pipe sees it at once.
    print(line, flush=True)


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
