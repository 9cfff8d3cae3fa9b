"""Bring an emulated cluster's InferenceServices to Ready, then wait for the operator to settle.

The emulator runs no controllers: `converge` plays the Deployment controller and a Gateway
implementation; `wait_quiet` waits for the operator to stop writing and, when it never does,
fails with what it kept writing (`describe`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import requests

from kubeserve.testing.emulator import EmulatorThread
from kubeserve.testing.emulator.server import Write
from kubeserve.testing.kube_client import DEPLOYMENTS, ISVC, Kube, wait_for

# How often the integration conftest's gateway_operator resyncs, seconds.
GATEWAY_RESYNC_SECONDS = 1.0
HTTPROUTES = ("gateway.networking.k8s.io/v1", "httproutes")
# The operator writes through the kubernetes client, whose User-Agent names its generator.
OPERATOR = "OpenAPI-Generator"
# The tests' own client (`Kube`, through requests): every other writer is the operator.
TEST_CLIENT = "python-requests"


def operator_writes(emulator: EmulatorThread, since: int) -> list[Write]:
    """Give the operator's writes after the first `since` writes the emulator served."""
    return [w for w in emulator.emulator.written() if w.seq >= since and w.manager == OPERATOR]


def inference_service_writes(emulator: EmulatorThread, namespace: str, since: int) -> list[Write]:
    """Give the writes to InferenceServices in `namespace` after the first `since`, but the tests'."""
    return [
        w
        for w in emulator.emulator.written()
        if w.seq >= since
        and w.plural == "inferenceservices"
        and w.namespace == namespace
        and w.manager != TEST_CLIENT
    ]


def describe(writes: list[Write]) -> str:
    """Write `writes` one a line, bodies cut at 2,000 characters, for a failure's message."""
    return "\n".join(
        f"{w.verb} {w.plural}/{w.name}{'/' + w.subresource if w.subresource else ''}: "
        f"{w.body.decode(errors='replace')[:2000]}"
        for w in writes
    )


def converge(kube: Kube, namespace: str, names: list[str]) -> None:
    """Play the controllers the emulator lacks until every InferenceService is Ready."""

    def ready() -> bool:
        play_controllers(kube, namespace)
        states = [kube.get(ISVC, namespace, name) or {} for name in names]
        return all(
            any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (isvc.get("status") or {}).get("conditions") or []
            )
            for isvc in states
        )

    wait_for(ready, timeout=60, interval=0.5, what="every InferenceService Ready")


def accepted(route: dict[str, Any]) -> dict[str, Any]:
    """Give the status a Gateway implementation writes on an HTTPRoute it accepts."""
    conditions = [
        {
            "type": kind,
            "status": "True",
            "reason": kind,
            "message": "",
            "lastTransitionTime": "2024-01-01T00:00:00Z",
            "observedGeneration": route["metadata"]["generation"],
        }
        for kind in ("Accepted", "ResolvedRefs")
    ]
    parents = [
        {"parentRef": ref, "controllerName": "example.com/gateway", "conditions": conditions}
        for ref in route["spec"].get("parentRefs") or []
    ]
    return {"status": {"parents": parents}}


def wait_quiet(emulator: EmulatorThread, seconds: float, timeout: float) -> None:
    """Wait until the operator has written nothing for `seconds`; fail showing what it wrote."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mark = emulator.emulator.writes
        time.sleep(seconds)
        if not operator_writes(emulator, mark):
            return
    recent = operator_writes(emulator, emulator.emulator.writes - 40)
    raise AssertionError(f"the operator never stopped writing; last writes:\n{describe(recent)}")


def play_controllers(kube: Kube, namespace: str) -> None:
    """Do what the Deployment controller and a Gateway would: report ready, accept routes."""
    for dep in kube.list(DEPLOYMENTS, namespace):
        if (dep.get("status") or {}).get("observedGeneration") != dep["metadata"]["generation"]:
            unless_gone(lambda d=dep: kube.mark_deployment_ready(namespace, d["metadata"]["name"]))
    for route in kube.list(HTTPROUTES, namespace):
        if not (route.get("status") or {}).get("parents"):
            name = route["metadata"]["name"]
            unless_gone(
                lambda n=name, r=route: kube.patch(
                    HTTPROUTES, namespace, n, accepted(r), sub="status"
                )
            )


def unless_gone(call: Callable[[], object]) -> None:
    """Call; an object the operator deleted since it was listed is no error."""
    try:
        call()
    except requests.HTTPError as exc:
        if exc.response is None or exc.response.status_code != 404:
            raise
    except AssertionError:  # mark_deployment_ready found it gone
        pass
