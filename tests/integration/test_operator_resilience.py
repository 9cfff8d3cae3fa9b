"""Operators started by the test itself, on an emulator of their own: restarts, faults, scoping.

No module-wide operator runs here, so each test's operator is the only one in the cluster.
"""

from __future__ import annotations

import json
import time

import pytest
import requests

from kubeserve.local import router_config
from kubeserve.testing import operator_process
from kubeserve.testing.emulator import EmulatorThread
from kubeserve.testing.emulator.server import Fault
from kubeserve.testing.kube_client import Kube, wait_for
from kubeserve.testing.operator_process import OperatorProcess
from support import specs
from support.isvcs import (
    actual_children,
    condition,
    create,
    desired_children,
    mark_ready,
    wait_children,
)


def test_restart_mid_reconcile_leaves_exactly_the_desired_children(
    kube: Kube, emulator: EmulatorThread, namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    process = OperatorProcess(emulator, tmp_path_factory.mktemp("restart")).start()
    try:
        objs = [
            specs.isvc(specs.variant("v1", 70), specs.variant("v2", 30), name=f"svc{i}")
            for i in range(100)
        ]
        for obj in objs:
            create(kube, namespace, obj)
        wait_for(
            lambda: len(actual_children(kube, namespace)) >= 150,
            what="some children",
            interval=0.02,
        )
        process.stop(kill=True)
        process.start()
        want = set().union(*(desired_children(o, namespace) for o in objs))
        wait_for(
            lambda: set(actual_children(kube, namespace)) == want,
            timeout=60,
            what="exactly the desired children",
        )
        found = actual_children(kube, namespace)
        assert len(found) == len(want)
        assert all(len(c["metadata"]["ownerReferences"]) == 1 for c in found.values())
    finally:
        process.stop()


def test_converges_while_the_api_fails_and_is_slow(
    kube: Kube, emulator: EmulatorThread, namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    process = OperatorProcess(emulator, tmp_path_factory.mktemp("faults")).start()
    faults = [
        Fault(share=0.25, status=500, clients=operator_process.CLIENTS),
        Fault(share=0.15, status=409, clients=operator_process.CLIENTS),
        Fault(
            share=0.2,
            delay=0.2,
            methods=frozenset({"GET", "POST", "PATCH"}),
            clients=operator_process.CLIENTS,
        ),
    ]
    try:
        emulator.emulator.faults.extend(faults)
        objs = [
            specs.isvc(specs.variant("v1", 50), specs.variant("v2", 50), name=f"flaky{i}")
            for i in range(5)
        ]
        for obj in objs:
            create(kube, namespace, obj)
        for obj in objs:
            wait_children(kube, namespace, obj, timeout=90)
        emulator.emulator.faults.clear()
        mark_ready(kube, namespace)
        for obj in objs:
            wait_for(
                lambda n=obj["metadata"]["name"]: (
                    (condition(kube, namespace, n) or {}).get("status") == "True"
                ),
                timeout=60,
                what="Ready after faults",
            )
    finally:
        emulator.emulator.faults.clear()
        process.stop()


def test_namespace_scoping(
    kube: Kube, emulator: EmulatorThread, tmp_path_factory: pytest.TempPathFactory
) -> None:
    kube.create_namespace("scoped-in")
    kube.create_namespace("scoped-out")
    process = OperatorProcess(
        emulator, tmp_path_factory.mktemp("scoped"), "--namespace", "scoped-in"
    ).start()
    try:
        create(kube, "scoped-out", specs.isvc(name="outside"))
        inside = specs.isvc(name="inside")
        create(kube, "scoped-in", inside)
        wait_children(kube, "scoped-in", inside)
        time.sleep(1)
        assert actual_children(kube, "scoped-out") == {}
    finally:
        process.stop()


def test_liveness_metrics_and_json_logs(
    kube: Kube, emulator: EmulatorThread, tmp_path_factory: pytest.TempPathFactory
) -> None:
    health, metrics = router_config.free_port(), router_config.free_port()
    process = OperatorProcess(
        emulator, tmp_path_factory.mktemp("observability"), "--log-format", "json"
    )
    process.args[process.args.index("--metrics-port") + 1] = str(metrics)
    process.args[process.args.index("--health-port") + 1] = str(health)
    process.start()
    try:
        kube.create_namespace("observed")
        obj = specs.isvc(name="watched")
        create(kube, "observed", obj)
        wait_children(kube, "observed", obj)
        live = wait_for(
            lambda: requests.get(f"http://127.0.0.1:{health}/healthz", timeout=2), what="/healthz"
        )
        assert live.status_code == 200
        text = requests.get(f"http://127.0.0.1:{metrics}/metrics", timeout=2).text
        assert 'kubeserve_operator_reconciles_total{result="ok",trigger="create"}' in text
        assert 'kubeserve_operator_child_writes_total{kind="Deployment",verb="create"}' in text
        assert "kubeserve_operator_reconcile_duration_seconds_bucket" in text
        lines = [line for line in process.log().splitlines() if line.startswith("{")]
        assert lines and all(json.loads(line).get("message") is not None for line in lines[:20])
    finally:
        process.stop()
