"""An InferenceService deleted while the real operator creates its children leaves none behind.

The emulator answers the operator's creates a second late (each is done when it is
answered), so the reconcile is still creating when the test deletes the InferenceService:
the children it creates after that name an owner that no longer exists, and the garbage
collector deletes them, as kube-controller-manager's does. The operator stays up.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from kubeserve.testing.emulator import EmulatorThread
from kubeserve.testing.emulator.server import Fault
from kubeserve.testing.kube_client import ISVC, Kube, wait_for
from kubeserve.testing.operator_process import OperatorProcess
from support import specs
from support.isvcs import CHILD_RESOURCES

SLOW = 1.0
# The reconciles' client: kopf's calls (and the test's) are answered at once.
RECONCILES = frozenset({"OpenAPI-Generator"})
# What the operator logs only for a bug (see test_operator_faults.BUG_LINES).
BUG_LINES = ("trying again in 30", "a delayed call of", "failed; listing again", "Traceback")
CHILD_KEYS = [
    (api_version.rpartition("/")[0], api_version.rpartition("/")[2], plural)
    for api_version, plural in CHILD_RESOURCES
]


@pytest.fixture()
def slow_creates(emulator: EmulatorThread) -> Iterator[None]:
    emulator.emulator.faults.append(
        Fault(
            share=1.0,
            delay=SLOW,
            methods=frozenset({"POST"}),
            plurals=frozenset(plural for _, plural in CHILD_RESOURCES),
            clients=RECONCILES,
        )
    )
    yield
    emulator.emulator.faults.clear()


def operator_creates(emulator: EmulatorThread, namespace: str) -> list[float]:
    """When the operator's creates in `namespace` came."""
    journal = emulator.emulator.written()
    return [
        w.at
        for w in journal
        if w.verb == "create" and w.namespace == namespace and w.manager in RECONCILES
    ]


def children_left(kube: Kube, namespace: str) -> list[str]:
    return [
        f"{child['kind']}/{child['metadata']['name']}"
        for resource in CHILD_RESOURCES
        for child in kube.list(resource, namespace)
    ]


def test_children_created_after_their_owner_was_deleted_are_collected(
    emulator: EmulatorThread,
    kube: Kube,
    namespace: str,
    operator: OperatorProcess,
    slow_creates: None,
) -> None:
    variants = [specs.variant(name, weight) for name, weight in [("a", 50), ("b", 30), ("c", 20)]]
    kube.create(ISVC, namespace, specs.isvc(*variants, name="racy", namespace=namespace))
    wait_for(
        lambda: operator_creates(emulator, namespace),
        timeout=20,
        what="the operator to start creating children",
    )
    kube.delete(ISVC, namespace, "racy")
    deleted_at = emulator.call(lambda store: store.revision)

    def quiet() -> bool:
        creates = operator_creates(emulator, namespace)
        # A reconcile's creates follow one another: none for this long, none is coming.
        return time.monotonic() - creates[-1] > SLOW + 1.5

    wait_for(quiet, timeout=30, interval=0.2, what="the operator to stop creating children")
    late = emulator.call(
        lambda store: [
            event["object"]["metadata"]["name"]
            for key in CHILD_KEYS
            for event in store.events_since(key, deleted_at) or []
            if event["type"] == "ADDED"
        ]
    )
    assert late, "no child was created after the deletion: the race was not played"
    wait_for(
        lambda: not children_left(kube, namespace),
        timeout=10,
        what=f"no child left (created late: {late})",
    )
    assert operator.process is not None and operator.process.poll() is None, "the operator exited"
    bugs = [line for line in operator.log().splitlines() if any(b in line for b in BUG_LINES)]
    assert not bugs, "\n".join(bugs[:20])
