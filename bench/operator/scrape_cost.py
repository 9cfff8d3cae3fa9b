"""Benchmark the experiments' collection: operator CPU per pod per look, 1,000 x 2 variants.

Starts the API emulator and a real `kubeserve operator`, creates `--count` InferenceServices
of two variants and a ready pod per variant whose IP is a loopback address of its own
(127.0.x.y); one stand-in server bound to every loopback address answers every pod's
/metrics with a kubeserve server's page. Then three windows of `--window` seconds each, the
operator's CPU time (user + system, from /proc) measured in each:

1. idle: the InferenceServices have no experiment (the baseline: resyncs, watches);
2. static: every one has an experiment collected every `--interval`, counters unchanged
   (every look reads and parses every pod, and writes nothing);
3. growing: the counters grow between looks (every look also writes a status).

CPU ms per pod per look = (window CPU - idle CPU) / pod reads the stand-in served in the
window. Writes the results as JSON.

    .venv/bin/python bench/operator/scrape_cost.py [--count 1000] [--interval 10s] \\
        [--window 60] [--json bench/operator/scrape-cost-1000.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kubeserve.builders import meta
from kubeserve.testing.emulator import EmulatorThread
from kubeserve.testing.kube_client import ISVC, PODS, Kube, wait_for
from kubeserve.testing.operator_process import OperatorProcess
from kubeserve.testing.pod_metrics import MetricsServer

NAMESPACE = "bench"


def isvc(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kubeserve.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": f"model-{i:04d}", "namespace": NAMESPACE},
        "spec": {
            "variants": [
                {
                    "name": f"v{v}",
                    "weight": 50,
                    "model": {"format": "onnx", "storageUri": f"s3://models/m{i}/v{v}"},
                }
                for v in (1, 2)
            ]
        },
    }


def pod_address(n: int) -> str:
    """Give the n-th pod its own loopback address (Linux routes all of 127/8 to lo)."""
    return f"127.0.{n // 250 + 1}.{n % 250 + 1}"


def create_pod(kube: Kube, isvc_name: str, variant: str, n: int, port: int) -> None:
    name = f"{isvc_name}-{variant}-0"
    labels = {
        "app.kubernetes.io/managed-by": meta.MANAGED_BY,
        meta.ISVC_LABEL: isvc_name,
        meta.VARIANT_LABEL: variant,
        meta.COMPONENT_LABEL: "predictor",
    }
    container = {
        "name": "server",
        "image": "kubeserve/server:bench",
        "ports": [{"name": "http", "containerPort": port}],
    }
    kube.create(
        PODS,
        NAMESPACE,
        {"metadata": {"name": name, "labels": labels}, "spec": {"containers": [container]}},
    )
    kube.patch(
        PODS,
        NAMESPACE,
        name,
        {
            "status": {
                "phase": "Running",
                "podIP": pod_address(n),
                "startTime": "2020-01-01T00:00:00Z",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [
                    {
                        "name": "server",
                        "ready": True,
                        "restartCount": 0,
                        "image": "kubeserve/server:bench",
                        "imageID": "",
                        "state": {"running": {}},
                    }
                ],
            }
        },
        sub="status",
    )


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_writes(em: EmulatorThread) -> int:
    return em.emulator.counts[("patch", "inferenceservices")]


def window(pid: int, seconds: float, server: MetricsServer, em: EmulatorThread) -> dict[str, float]:
    cpu0, reads0, writes0 = cpu_seconds(pid), server.scrapes, status_writes(em)
    time.sleep(seconds)
    cpu1, reads1, writes1 = cpu_seconds(pid), server.scrapes, status_writes(em)
    return {
        "cpu_seconds": round(cpu1 - cpu0, 3),
        "pod_reads": reads1 - reads0,
        "status_patches": writes1 - writes0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="InferenceServices (2 pods each)")
    parser.add_argument("--interval", default="10s", help="experiment.interval (at least 5s)")
    parser.add_argument("--window", type=float, default=60.0, help="seconds per measured window")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    if args.count * 2 > 250 * 250:
        print("at most 31,250 InferenceServices (one loopback address per pod)", file=sys.stderr)
        return 2

    server = MetricsServer("0.0.0.0").start()  # every 127.x.y.z address, one port
    server.pod.serve(1000)
    grow = threading.Event()

    def growing() -> None:
        while True:
            time.sleep(1.0)
            if grow.is_set():
                with server.lock:
                    server.pod.serve(50)
                    server.pod.outcome(50, 5)

    threading.Thread(target=growing, daemon=True).start()
    results: dict[str, Any] = {"count": args.count, "pods": 2 * args.count}
    results["interval"] = args.interval
    with EmulatorThread() as em:
        kube = Kube(em.url)
        kube.create_namespace(NAMESPACE)
        workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"scrape-cost-{os.getpid()}"
        workdir.mkdir(parents=True, exist_ok=True)
        operator = OperatorProcess(em, workdir, resync_seconds=300.0).start()
        try:
            assert operator.process is not None
            pid = operator.process.pid
            started = time.perf_counter()
            for i in range(args.count):
                kube.create(ISVC, NAMESPACE, isvc(i))
                for v in (1, 2):
                    create_pod(kube, f"model-{i:04d}", f"v{v}", 2 * i + v - 1, server.port)
            results["seconds_to_create"] = round(time.perf_counter() - started, 1)
            wait_for(
                lambda: all(
                    (o.get("status") or {}).get("observedGeneration")
                    for o in kube.list(ISVC, NAMESPACE)
                ),
                timeout=600,
                interval=2.0,
                what="every InferenceService to have a status",
            )
            time.sleep(5)
            results["idle"] = window(pid, args.window, server, em)
            experiment = {"control": "v1", "interval": args.interval}
            for i in range(args.count):
                kube.patch(ISVC, NAMESPACE, f"model-{i:04d}", {"spec": {"experiment": experiment}})
            wait_for(
                lambda: all(
                    len(((o.get("status") or {}).get("experiment") or {}).get("pods") or {}) == 2
                    for o in kube.list(ISVC, NAMESPACE)
                ),
                timeout=600,
                interval=2.0,
                what="every experiment to have read its pods",
            )
            results["static"] = window(pid, args.window, server, em)
            grow.set()
            time.sleep(5)
            results["growing"] = window(pid, args.window, server, em)
        finally:
            operator.stop()
            server.stop()
    idle_cpu = results["idle"]["cpu_seconds"]
    for name in ("static", "growing"):
        measured = results[name]
        reads = max(1, measured["pod_reads"])
        measured["cpu_ms_per_pod_look"] = round(
            1000 * (measured["cpu_seconds"] - idle_cpu) / reads, 3
        )
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
