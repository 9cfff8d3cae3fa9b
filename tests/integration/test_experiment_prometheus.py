"""With --prometheus-url the operator asks Prometheus for an experiment's counts, not the pods.

In a module of its own: no other operator may run meanwhile (two would write one status).
The stand-in Prometheus (kubeserve.testing.fake_prometheus) keeps what the test scrapes into
it; a real Prometheus was not available here.
"""

from __future__ import annotations

import time

import pytest

from kubeserve.testing.emulator import EmulatorThread
from kubeserve.testing.fake_prometheus import FakePrometheus
from kubeserve.testing.kube_client import ISVC, Kube, wait_for
from kubeserve.testing.operator_process import OperatorProcess
from kubeserve.testing.pod_metrics import StandInPods
from support.experiments import INTERVAL, experiment, experiment_isvc, wait_requests


def test_with_prometheus_the_operator_asks_it_instead_of_the_pods(
    kube: Kube,
    emulator: EmulatorThread,
    namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    prometheus = FakePrometheus().start()
    process = OperatorProcess(
        emulator,
        tmp_path_factory.mktemp("prometheus-operator"),
        "--testing-experiment-interval",
        str(INTERVAL),
        "--prometheus-url",
        prometheus.url,
    ).start()
    pods = StandInPods(kube, namespace)
    try:
        obj = experiment_isvc()
        obj["metadata"]["namespace"] = namespace
        kube.create(ISVC, namespace, obj)
        pods.add("digits-v1-a", "v1").pod.serve(0, code=200)
        pods.add("digits-v2-a", "v2").pod.serve(0, code=200)
        wait_for(lambda: experiment(kube, namespace).get("startTime"), what="a startTime")
        time.sleep(1.1)  # samples after the start, inside the window the operator asks for

        def scrape() -> None:
            for name, server in pods.servers.items():
                with server.lock:
                    text = server.pod.render()
                prometheus.scrape(text, {"namespace": namespace, "pod": name}, time.time())

        scrape()
        pods.serve("digits-v1-a", 40)
        pods.serve("digits-v2-a", 25)
        scrape()
        wait_requests(kube, namespace, {"v1": 40, "v2": 25})
        assert all(server.scrapes == 0 for server in pods.servers.values())  # pods not read
        assert any(f'namespace="{namespace}",model="digits"' in q for q in prometheus.queries)
    finally:
        process.stop()
        pods.stop()
        prometheus.stop()
