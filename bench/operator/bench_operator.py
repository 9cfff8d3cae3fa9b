"""Benchmark the operator against the API emulator: 1,000 InferenceServices of 2 variants.

Reports the time until all are Ready, the operator's peak RSS and CPU seconds, the API
requests per InferenceService by verb for the first reconcile and for a no-op resync and a
restart (counted at the emulator), and the emulator's own per-call cost at the start and the
end, to show it stays flat and is not what is measured.

    .venv/bin/python bench/operator/bench_operator.py [--count 1000] [--json out.json]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

from kubeserve.testing.emulator import EmulatorThread  # noqa: E402
from kubeserve.testing.emulator.store import ApiError, Store  # noqa: E402
from kubeserve.testing.kube_client import ISVC, Kube, wait_for  # noqa: E402
from kubeserve.testing.operator_process import OperatorProcess  # noqa: E402

DEPLOYMENTS = ("apps", "v1", "deployments")


def isvc(i: int, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kubeserve.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": f"model-{i:04d}", "namespace": namespace},
        "spec": {
            "variants": [
                {
                    "name": "v1",
                    "weight": 90,
                    "model": {"format": "onnx", "storageUri": f"s3://models/m{i}/v1"},
                },
                {
                    "name": "v2",
                    "weight": 10,
                    "model": {"format": "onnx", "storageUri": f"s3://models/m{i}/v2"},
                },
            ]
        },
    }


def install_fake_controller(em: EmulatorThread) -> None:
    """Mark every Deployment available once it is created or its spec changes, like kubelets would."""
    loop = em._loop

    def on_event(key: Any, event: dict[str, Any]) -> None:
        obj = event["object"]
        if key != DEPLOYMENTS or event["type"] == "DELETED":
            return
        generation = obj["metadata"].get("generation", 1)
        if (obj.get("status") or {}).get("observedGeneration") == generation:
            return
        ns, name, replicas = (
            obj["metadata"]["namespace"],
            obj["metadata"]["name"],
            obj["spec"].get("replicas", 1),
        )
        status = {
            "observedGeneration": generation,
            "replicas": replicas,
            "readyReplicas": replicas,
            "updatedReplicas": replicas,
            "availableReplicas": replicas,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
            ],
        }

        def mark(store: Store = em.emulator.store) -> None:
            # The Deployment may be gone by now; then there is nothing to mark.
            with contextlib.suppress(ApiError):
                store.patch(
                    DEPLOYMENTS,
                    ns,
                    name,
                    {"status": status},
                    content_type="application/merge-patch+json",
                    subresource="status",
                )

        loop.call_soon(mark)

    em.call(lambda store: store.listeners.append(on_event))


def proc_stats(pid: int) -> tuple[float, float]:
    """Give (peak RSS in MB, CPU seconds) of a process, from /proc."""
    peak = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return peak, (int(fields[11]) + int(fields[12])) / ticks


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class RssSampler(threading.Thread):
    """Sample the operator's resident size, to show when in the burst the peak comes."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, float]] = []
        self.done = threading.Event()
        self.started_at = time.perf_counter()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            with contextlib.suppress(OSError):
                self.samples.append(
                    (round(time.perf_counter() - self.started_at, 1), round(rss_mb(self.pid), 1))
                )


def writes(counts: collections.Counter[tuple[str, str]]) -> int:
    return sum(
        n for (verb, _), n in counts.items() if verb in {"create", "patch", "update", "delete"}
    )


def ready_count(em: EmulatorThread, namespace: str) -> int:
    def count(store: Store) -> int:
        n = 0
        for obj in store.list(
            ("serving.kubeserve.dev", "v1alpha1", "inferenceservices"), namespace
        ):
            for cond in (obj.get("status") or {}).get("conditions") or []:
                if cond["type"] == "Ready" and cond["status"] == "True":
                    n += 1
        return n

    return em.call(count)


def probe_latency(kube: Kube, namespace: str, name: str, n: int = 200) -> float:
    started = time.perf_counter()
    for _ in range(n):
        kube.get(ISVC, namespace, name)
    return (time.perf_counter() - started) / n * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--resync-seconds", type=float, default=30.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    ns = "bench"
    results: dict[str, Any] = {"count": args.count}
    with EmulatorThread() as em, tempfile.TemporaryDirectory() as tmp:
        kube = Kube(em.url)
        kube.create_namespace(ns)
        kube.create(ISVC, ns, isvc(9999, ns))  # a probe object for the emulator's latency
        install_fake_controller(em)
        results["emulator_get_ms_empty"] = probe_latency(kube, ns, "model-9999")
        op = OperatorProcess(em, Path(tmp), resync_seconds=args.resync_seconds).start()
        wait_for(lambda: ready_count(em, ns) == 1, timeout=60, what="the probe to be Ready")
        pid = op.process.pid if op.process else 0
        em.emulator.counts.clear()
        _, cpu0 = proc_stats(pid)
        results["operator_rss_idle_mb"] = round(rss_mb(pid), 1)
        sampler = RssSampler(pid)
        sampler.start()
        started = time.perf_counter()
        for i in range(args.count):
            kube.create(ISVC, ns, isvc(i, ns))
        created = time.perf_counter() - started
        wait_for(
            lambda: ready_count(em, ns) == args.count + 1,
            timeout=600,
            interval=0.5,
            what="all Ready",
        )
        results["seconds_to_all_ready"] = time.perf_counter() - started
        results["seconds_to_create_all"] = created
        peak, cpu1 = proc_stats(pid)
        sampler.done.set()
        # Every 5th sample keeps the timeline readable (seconds since the first create, MB).
        results["operator_rss_timeline"] = sampler.samples[::5]
        results["operator_rss_at_all_ready_mb"] = round(rss_mb(pid), 1)
        time.sleep(2)  # let trailing events settle before the quiet window
        first = collections.Counter(em.emulator.counts)
        first[("create", "inferenceservices")] -= args.count  # the benchmark's own creates
        results["first_reconcile_requests_per_isvc"] = {
            f"{v} {p}": round(n / args.count, 2) for (v, p), n in sorted(first.items()) if n
        }
        results["first_reconcile_writes_per_isvc"] = round(writes(first) / args.count, 2)
        results["operator_peak_rss_mb"] = round(peak, 1)
        results["operator_cpu_seconds_per_isvc"] = round((cpu1 - cpu0) / args.count, 4)
        results["emulator_get_ms_full"] = probe_latency(kube, ns, "model-9999")
        # A no-op resync: one full resync interval with nothing changed.
        em.emulator.counts.clear()
        time.sleep(args.resync_seconds * 1.5)
        results["noop_resync_requests"] = {
            f"{v} {p}": n for (v, p), n in sorted(em.emulator.counts.items()) if n
        }
        results["noop_resync_writes"] = writes(em.emulator.counts)
        # A restart: kopf resumes every InferenceService.
        op.stop()
        em.emulator.counts.clear()
        op.start()
        restart_sampler = RssSampler(op.process.pid if op.process else 0, interval=0.25)
        restart_sampler.start()
        time.sleep(15)
        restart_sampler.done.set()
        results["operator_rss_restart_timeline"] = restart_sampler.samples[::4]
        results["restart_requests"] = {
            f"{v} {p}": n for (v, p), n in sorted(em.emulator.counts.items()) if n
        }
        results["restart_writes"] = writes(em.emulator.counts)
        if op.process is not None:
            # What watching the 1,000 and their 7,000 children costs once settled.
            results["operator_rss_after_restart_mb"] = round(proc_stats(op.process.pid)[0], 1)
        op.stop()
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
