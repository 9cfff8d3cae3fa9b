"""The real operator waits as long as the API's Retry-After asks before it tries refused work again.

The operator runs with a short retry delay of its own, so only a Retry-After can make it
wait longer; the emulator refuses its reconciles' ConfigMap creates with a 429, and its write
journal says when each attempt came.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conftest import StartOperator
from kubeserve.testing.emulator import EmulatorThread
from kubeserve.testing.emulator.server import Fault
from kubeserve.testing.kube_client import CONFIGMAPS, ISVC, Kube, wait_for
from kubeserve.testing.operator_process import OperatorProcess
from support import specs

OWN_DELAY = 0.2
RETRY_AFTER = 2
# The reconciles' client (kopf's is left alone: it reads Retry-After its own way).
RECONCILES = frozenset({"OpenAPI-Generator"})


@pytest.fixture(scope="module")
def operator(start_operator: StartOperator) -> OperatorProcess:
    # No resync while a test waits: only the retry of the refused work tries again.
    return start_operator(
        "retry-after", "--testing-retry-delay", str(OWN_DELAY), resync_seconds=300
    )


@pytest.fixture()
def refuse_configmaps(emulator: EmulatorThread) -> Iterator[list[Fault]]:
    """The faults of the test (put in by it), taken out after it."""
    faults = emulator.emulator.faults
    yield faults
    faults.clear()


def configmap_creates(emulator: EmulatorThread, namespace: str) -> list[float]:
    """When the operator's creates of ConfigMaps in `namespace` came, in order."""
    journal = emulator.emulator.written()
    return [
        w.at
        for w in journal
        if w.verb == "create"
        and w.plural == "configmaps"
        and w.namespace == namespace
        and w.manager in RECONCILES
    ]


def refused_attempts(
    emulator: EmulatorThread, kube: Kube, namespace: str, retry_after: int | str
) -> list[float]:
    """Create an InferenceService whose ConfigMap creates get 429s; give two attempts' times."""
    emulator.emulator.faults.append(
        Fault(
            share=1.0,
            status=429,
            retry_after=retry_after,
            methods=frozenset({"POST"}),
            plurals=frozenset({"configmaps"}),
            clients=RECONCILES,
        )
    )
    kube.create(ISVC, namespace, specs.isvc(name="digits", namespace=namespace))
    wait_for(
        lambda: len(configmap_creates(emulator, namespace)) >= 2,
        timeout=20,
        what="the operator to try its ConfigMap twice",
    )
    return configmap_creates(emulator, namespace)[:2]


def test_a_429s_retry_after_holds_the_next_attempt_back_that_long(
    emulator: EmulatorThread,
    kube: Kube,
    namespace: str,
    operator: OperatorProcess,
    refuse_configmaps: list[Fault],
) -> None:
    first, second = refused_attempts(emulator, kube, namespace, RETRY_AFTER)
    assert second - first >= RETRY_AFTER, f"tried again after {second - first:.2f}s"
    refuse_configmaps.clear()
    wait_for(
        lambda: kube.list(CONFIGMAPS, namespace),
        timeout=20,
        what="the ConfigMap, once the API takes it",
    )
    assert operator.process is not None and operator.process.poll() is None


@pytest.mark.parametrize("retry_after", ["soon", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_a_retry_after_that_is_not_seconds_leaves_the_operators_own_delay(
    emulator: EmulatorThread,
    kube: Kube,
    namespace: str,
    operator: OperatorProcess,
    refuse_configmaps: list[Fault],
    retry_after: str,
) -> None:
    first, second = refused_attempts(emulator, kube, namespace, retry_after)
    assert OWN_DELAY <= second - first < 1.5, f"tried again after {second - first:.2f}s"
    refuse_configmaps.clear()
    wait_for(
        lambda: kube.list(CONFIGMAPS, namespace),
        timeout=20,
        what="the ConfigMap, once the API takes it",
    )
    assert operator.process is not None and operator.process.poll() is None
    assert "Traceback" not in operator.log()
