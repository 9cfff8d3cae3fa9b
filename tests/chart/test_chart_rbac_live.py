"""RBAC cross-check, measured: run the real operator against the API emulator through a
scenario that exercises every kind of call it makes, and check that each (verb, resource) the
API server saw from it is granted by the chart's rendered ClusterRole.

The static test (test_chart_rbac.py) proves that the grants equal the calls derived from the
code; this one proves that the derivation misses nothing the running operator actually does.
"""

from __future__ import annotations

import collections
import copy
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from kubeserve.testing.emulator import EmulatorThread
from kubeserve.testing.kube_client import DEPLOYMENTS, EVENTS, ISVC, SERVICES, Kube, wait_for
from kubeserve.testing.operator_process import OperatorProcess
from support import specs
from support.chart import grants, one, render

HPA = ("autoscaling/v2", "horizontalpodautoscalers")
PDB = ("policy/v1", "poddisruptionbudgets")
# The emulator counts requests as (RBAC verb, plural); the group is implied by the plural here.
GROUP_OF_PLURAL = {
    "inferenceservices": "serving.kubeserve.dev",
    "deployments": "apps",
    "horizontalpodautoscalers": "autoscaling",
    "poddisruptionbudgets": "policy",
    "httproutes": "gateway.networking.k8s.io",
    "services": "",
    "configmaps": "",
    "pods": "",
    "events": "",
    "namespaces": "",
}


def client_call(method: str, url: str) -> tuple[str, str] | None:
    """Name a test-client request as the emulator counts it: (verb, plural)."""
    parts = urllib.parse.urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    if not segments or segments[0] not in ("api", "apis"):
        return None
    rest = segments[2:] if segments[0] == "api" else segments[3:]
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]
    plural, named = rest[0], len(rest) > 1
    if method == "GET":
        verb = "watch" if "watch=" in parts.query else ("get" if named else "list")
    else:
        verb = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}[method]
    return verb, plural


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorThread]:
    with EmulatorThread() as em:
        yield em


@pytest.fixture(scope="module")
def client_calls() -> collections.Counter[tuple[str, str]]:
    return collections.Counter()


@pytest.fixture(scope="module")
def kube(emulator: EmulatorThread, client_calls: collections.Counter[tuple[str, str]]) -> Kube:
    """A test client whose own requests are counted, to tell them from the operator's."""
    client = Kube(emulator.url)

    def count(response: requests.Response, *_: Any, **__: Any) -> None:
        call = client_call(response.request.method or "GET", response.request.url or "")
        if call:
            client_calls[call] += 1

    client.session.hooks["response"].append(count)
    return client


def with_namespace(obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    obj["metadata"]["namespace"] = namespace
    return obj


# kopf lists and watches namespaces when it serves a list of namespaces, to follow namespace
# patterns. Namespace-scoped mode grants nothing cluster-wide, so these calls are refused there,
# and kopf falls back to the names as given (kopf/_core/reactor/observation.py): allowed to fail.
REFUSED_AND_TOLERATED = {
    "namespace-scoped": {("list", "namespaces"), ("watch", "namespaces")},
    "cluster-wide": set(),
}


@pytest.mark.parametrize("mode", ["cluster-wide", "namespace-scoped"])
def test_every_call_the_running_operator_makes_is_granted(
    mode: str,
    emulator: EmulatorThread,
    kube: Kube,
    client_calls: collections.Counter[tuple[str, str]],
    tmp_path: Path,
) -> None:
    ns = f"rbac-{mode}"
    kube.create_namespace(ns)
    before = collections.Counter(emulator.emulator.counts)
    client_before = collections.Counter(client_calls)
    args = ["-n", ns] if mode == "namespace-scoped" else []
    operator = OperatorProcess(emulator, tmp_path, *args).start()
    try:
        # Create: a canary with an HPA and a PDB (every child kind), and its Deployments ready.
        canary = specs.canary()
        canary["spec"]["variants"][0].update(
            autoscaling={"minReplicas": 2, "maxReplicas": 4, "targetCPUUtilizationPercentage": 70},
            disruptionBudget={"minAvailable": 1},
        )
        kube.create(ISVC, ns, with_namespace(canary, ns))
        for name in ("digits-v1", "digits-v2", "digits-router"):
            wait_for(
                lambda n=name: kube.get(DEPLOYMENTS, ns, n), what=f"Deployment {name}", timeout=30
            )
            kube.mark_deployment_ready(ns, name)
        wait_for(lambda: kube.get(HPA, ns, "digits-v1"), what="the HPA", timeout=30)
        wait_for(lambda: kube.get(PDB, ns, "digits-v1"), what="the PDB", timeout=30)
        # Update: drop v2 (prune: deletes) and drop the PDB.
        kube.patch(
            ISVC, ns, "digits", {"spec": {"variants": [specs.variant("v1", 100, replicas=1)]}}
        )
        wait_for(
            lambda: kube.get(DEPLOYMENTS, ns, "digits-v2") is None, what="v2 pruned", timeout=30
        )
        # Drift: a field kubeserve owns, edited by hand, is patched back.
        selector = (kube.get(SERVICES, ns, "digits-v1") or {})["spec"]["selector"]
        key = sorted(selector)[0]
        kube.patch(SERVICES, ns, "digits-v1", {"spec": {"selector": {key: "tampered"}}})
        wait_for(
            lambda: (
                (kube.get(SERVICES, ns, "digits-v1") or {})["spec"]["selector"][key]
                == selector[key]
            ),
            what="the Service repaired",
            timeout=30,
        )
        # Invalid spec and a name conflict: status conditions and Warning Events.
        bad = specs.isvc(specs.variant("v1", 80), specs.variant("v2", 10), name="broken")
        kube.create(ISVC, ns, with_namespace(bad, ns))
        kube.create(
            SERVICES,
            ns,
            {"metadata": {"name": "taken-v1", "namespace": ns}, "spec": {"ports": [{"port": 80}]}},
        )
        kube.create(ISVC, ns, with_namespace(specs.isvc(name="taken"), ns))
        wait_for(
            lambda: (
                {e.get("reason") for e in kube.list(EVENTS, ns)} >= {"InvalidSpec", "NameConflict"}
            ),
            what="InvalidSpec and NameConflict events",
            timeout=30,
        )
    finally:
        operator.stop()

    seen = emulator.emulator.counts - before
    mine = client_calls - client_before
    operator_calls = {
        call: n - mine.get(call, 0)
        for call, n in seen.items()
        if n - mine.get(call, 0) > 0 and call[1] != "-"
    }
    if mode == "cluster-wide":
        granted = grants(one(render({}, tmp_path), "ClusterRole"))
    else:
        granted = grants(one(render({"operator": {"watchNamespaces": [ns]}}, tmp_path), "Role"))
    denied = []
    for verb, plural in sorted(set(operator_calls) - REFUSED_AND_TOLERATED[mode]):
        group = GROUP_OF_PLURAL[plural]
        # The emulator counts /status requests under the plural: either grant covers them.
        if (group, plural, verb) not in granted and (
            group,
            f"{plural}/status",
            verb,
        ) not in granted:
            denied.append(f"{verb} {group or 'core'}/{plural} (x{operator_calls[(verb, plural)]})")
    assert not denied, "the operator made calls the chart does not grant:\n  " + "\n  ".join(denied)
    # The scenario reached every kind of call, or it proves less than it says.
    exercised = set(operator_calls)
    for call in [
        ("watch", "inferenceservices"),
        ("patch", "inferenceservices"),
        ("create", "deployments"),
        ("patch", "services"),
        ("delete", "deployments"),
        ("create", "horizontalpodautoscalers"),
        ("create", "poddisruptionbudgets"),
        ("delete", "poddisruptionbudgets"),
        ("watch", "pods"),
        ("create", "events"),
    ]:
        assert call in exercised, f"the scenario never made {call}: {sorted(exercised)}"
    # Namespaces: only kopf's observer, and only in namespace-scoped mode.
    assert {c for c in exercised if c[1] == "namespaces"} <= REFUSED_AND_TOLERATED[mode]
    assert not re.search(r"Traceback", operator.log()), operator.log()[-3000:]
