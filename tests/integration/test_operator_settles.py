"""The real operator settles after every way an InferenceService's spec can shrink.

A spec that loses a variant, a mirror, router settings, autoscaling, a disruption budget,
stickiness, or its Gateway API routing must leave a status and children that a resync finds
right: one write too many here is a write at every resync and every event, forever.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from kubeserve.builders import meta
from kubeserve.controller import merge_patch
from kubeserve.testing.emulator import EmulatorThread
from kubeserve.testing.emulator.server import Write
from kubeserve.testing.kube_client import ISVC, Kube
from kubeserve.testing.operator_process import OperatorProcess
from support import specs
from support.isvcs import actual_children, desired_children
from support.settling import (
    GATEWAY_RESYNC_SECONDS,
    HTTPROUTES,
    TEST_CLIENT,
    converge,
    describe,
    wait_quiet,
)

GRPCROUTES = ("gateway.networking.k8s.io/v1", "grpcroutes")
SHRINKS = specs.shrinks()


@pytest.fixture(scope="module")
def operator(gateway_operator: OperatorProcess) -> OperatorProcess:
    return gateway_operator


def writes_since(emulator: EmulatorThread, mark: int) -> list[Write]:
    """Every write after the first `mark` the emulator served, but the test's own."""
    return [w for w in emulator.emulator.written() if w.seq >= mark and w.manager != TEST_CLIENT]


def children_of(kube: Kube, namespace: str, name: str) -> set[tuple[str, str]]:
    """The children an InferenceService has, Gateway API routes included."""
    routes = [
        route
        for resource in (HTTPROUTES, GRPCROUTES)
        for route in kube.list(resource, namespace, f"{meta.ISVC_LABEL}={name}")
    ]
    return set(actual_children(kube, namespace, name)) | {
        (r["kind"], r["metadata"]["name"]) for r in routes
    }


def named(name: str, obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    obj["metadata"] |= {"name": name, "namespace": namespace}
    return obj


@pytest.mark.slow
def test_after_each_shrink_the_operator_settles_with_zero_writes(
    kube: Kube, emulator: EmulatorThread, operator: OperatorProcess, namespace: str
) -> None:
    scenarios = SHRINKS
    for name, steps in scenarios.items():
        kube.create(ISVC, namespace, named(name, steps[0], namespace))
    converge(kube, namespace, list(scenarios))
    for step in range(1, max(len(steps) for steps in scenarios.values())):
        for name, steps in scenarios.items():
            if step < len(steps):
                before, after = steps[step - 1]["spec"], steps[step]["spec"]
                kube.patch(
                    ISVC, namespace, name, merge_patch.diff({"spec": before}, {"spec": after})
                )
        converge(kube, namespace, list(scenarios))
        wait_quiet(emulator, seconds=2 * GATEWAY_RESYNC_SECONDS, timeout=30)
        mark = emulator.emulator.writes
        time.sleep(3 * GATEWAY_RESYNC_SECONDS)
        writes = writes_since(emulator, mark)
        assert not writes, f"step {step}: writes after the operator settled:\n{describe(writes)}"
        for name, steps in scenarios.items():
            spec = steps[min(step, len(steps) - 1)]
            status = kube.get(ISVC, namespace, name)["status"]
            assert set(status["variants"]) == {v["name"] for v in spec["spec"]["variants"]}, name
            want = desired_children(named(name, spec, namespace), namespace)
            assert children_of(kube, namespace, name) == want, name
