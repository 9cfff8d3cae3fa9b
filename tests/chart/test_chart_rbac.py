"""RBAC cross-check: every API call the operator makes is granted, and nothing more.

The calls are derived from the operator's code, not restated by hand:
- kubeserve/cluster.py's KINDS and the verbs reconcile.py sends through `Cluster`
  (get/create/patch/delete of children, a merge patch of the InferenceService's status);
- the resources the operator lists and watches: every `kopf.index`/`kopf.on.*` in
  handlers.py, and the children and pods its informers watch (runtime.py's lists);
- kopf's own calls: merge patches of its annotations on the InferenceService (the progress
  and diff-base storages handlers.py configures), Warning Events (`kopf.warn` in runtime.py),
  and in cluster-wide mode the CRD watch of its resource observer.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from kubeserve import API_GROUP, cluster
from kubeserve.controller import handlers, reconcile, runtime
from support.chart import Grant, by_kind, grants, one, render

# Python method of `Cluster` -> the RBAC verb it needs.
CLUSTER_VERBS = {
    "get": "get",
    "list": "list",
    "create": "create",
    "patch": "patch",
    "delete": "delete",
}
# Kinds the operator owns as children (created, patched, pruned); the rest are only read or posted.
NOT_CHILDREN = {"InferenceService", "Pod", "Event"}
CRDS = ("apiextensions.k8s.io", "customresourcedefinitions")


def group_of(api_version: str) -> str:
    return api_version.split("/")[0] if "/" in api_version else ""


def verbs_reconcile_sends() -> set[str]:
    """The `Cluster` methods reconcile.py calls, as RBAC verbs."""
    source = inspect.getsource(reconcile)
    methods = set(re.findall(r"self\._api\.(\w+)\(", source))
    assert methods <= set(CLUSTER_VERBS), f"unknown Cluster methods: {methods - set(CLUSTER_VERBS)}"
    return {CLUSTER_VERBS[m] for m in methods}


def watched_by_kopf(gateway_api: bool) -> set[tuple[str, str]]:
    """(group, plural) of every resource the operator lists and watches (kopf and informers)."""
    source = inspect.getsource(handlers)
    literal = set(
        re.findall(r'kopf\.(?:index|on\.\w+)\(\s*"([^"]*)",\s*"[^"]+",\s*"([^"]+)"', source)
    )
    watched = [*runtime.CHILD_KINDS, runtime.POD_KIND]
    resources = literal | {(group_of(k.api_version), k.plural) for k in watched}
    resources.add((API_GROUP, handlers.PLURAL))
    if gateway_api:
        resources |= {(group_of(k.api_version), k.plural) for k in runtime.GATEWAY_KINDS}
    return resources


def expected_calls(*, gateway_api: bool, clusterwide: bool) -> set[Grant]:
    """Every (group, resource, verb) the operator sends in that configuration."""
    calls: set[Grant] = set()
    for group, plural in watched_by_kopf(gateway_api):
        calls |= {(group, plural, "list"), (group, plural, "watch")}
    child_verbs = verbs_reconcile_sends()
    assert child_verbs == {"get", "create", "patch", "delete"}, (
        f"reconcile.py now sends {sorted(child_verbs)}: update charts/kubeserve/templates/rbac.yaml"
    )
    gateway_kinds = {k.plural for k in runtime.GATEWAY_KINDS}
    for kind in cluster.KINDS.values():
        if kind.kind in NOT_CHILDREN:
            continue
        if kind.plural in gateway_kinds and not gateway_api:
            continue
        calls |= {(group_of(kind.api_version), kind.plural, verb) for verb in child_verbs}
    isvc = cluster.KINDS[(f"{API_GROUP}/v1alpha1", "InferenceService")]
    # reconcile writes the status through the /status subresource ...
    assert 'subresource="status"' in inspect.getsource(reconcile.Reconciler._write_status)
    calls.add((API_GROUP, f"{isvc.plural}/status", "patch"))
    # ... and kopf merge-patches its bookkeeping annotations on the object itself.
    assert "AnnotationsProgressStorage" in inspect.getsource(handlers)
    calls.add((API_GROUP, isvc.plural, "patch"))
    # reconcile reads an InferenceService by name before it repairs a deleted child.
    if "self._api.get(ISVC_KIND" in inspect.getsource(reconcile):
        calls.add((API_GROUP, isvc.plural, "get"))
    # kopf posts the operator's Events (kopf.event: Warning and Normal) as core v1 Events.
    assert "kopf.event," in inspect.getsource(runtime)
    event = cluster.KINDS[("v1", "Event")]
    calls.add((group_of(event.api_version), event.plural, "create"))
    if clusterwide:
        calls |= {(*CRDS, "list"), (*CRDS, "watch")}
    return calls


def show(calls: set[Grant]) -> str:
    return "\n".join(f"  {g or 'core'} {r} {v}" for g, r, v in sorted(calls))


MODES = {
    "cluster-wide": ({}, True, False),
    "cluster-wide+gateway": ({"operator": {"gatewayAPI": True}}, True, True),
    "namespaced": ({"operator": {"watchNamespaces": ["team-a", "team-b"]}}, False, False),
    "namespaced+gateway": (
        {"operator": {"watchNamespaces": ["team-a"], "gatewayAPI": True}},
        False,
        True,
    ),
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_rbac_grants_exactly_the_calls_the_operator_makes(mode: str, tmp_path: Path) -> None:
    values, clusterwide, gateway = MODES[mode]
    objects = render(values, tmp_path)
    needed = expected_calls(gateway_api=gateway, clusterwide=clusterwide)
    sa = one(objects, "ServiceAccount")["metadata"]
    subject = {"kind": "ServiceAccount", "name": sa["name"], "namespace": "kubeserve-system"}
    assert (
        one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == sa["name"]
    )
    if clusterwide:
        assert not by_kind(objects, "Role") and not by_kind(objects, "RoleBinding")
        roles = {"": one(objects, "ClusterRole")}
        bindings = {"": one(objects, "ClusterRoleBinding")}
    else:
        assert not by_kind(objects, "ClusterRole") and not by_kind(objects, "ClusterRoleBinding")
        roles = {r["metadata"]["namespace"]: r for r in by_kind(objects, "Role")}
        bindings = {b["metadata"]["namespace"]: b for b in by_kind(objects, "RoleBinding")}
        assert sorted(roles) == sorted(values["operator"]["watchNamespaces"])
    assert roles.keys() == bindings.keys()
    for where, role in roles.items():
        binding = bindings[where]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": role["kind"],
            "name": role["metadata"]["name"],
        }
        assert binding["subjects"] == [subject]
        granted = grants(role)
        missing, extra = needed - granted, granted - needed
        assert not missing, (
            f"{mode} {where}: the operator makes calls not granted:\n{show(missing)}"
        )
        assert not extra, f"{mode} {where}: granted but never used:\n{show(extra)}"


def test_every_kind_the_operator_touches_is_granted(tmp_path: Path) -> None:
    objects = render({"operator": {"gatewayAPI": True}}, tmp_path)
    resources = {(g, r) for g, r, _ in grants(one(objects, "ClusterRole"))}
    for kind in cluster.KINDS.values():
        assert (group_of(kind.api_version), kind.plural) in resources, kind


def test_the_derivation_sees_what_handlers_watch() -> None:
    """Guard the regexes: they must find the literal pods watch and the InferenceServices."""
    watched = watched_by_kopf(False)
    assert ("", "pods") in watched
    assert (API_GROUP, "inferenceservices") in watched
    assert ("apps", "deployments") in watched
    assert ("gateway.networking.k8s.io", "httproutes") not in watched
    assert ("gateway.networking.k8s.io", "grpcroutes") not in watched
    # With the Gateway API, both routes an InferenceService has in gateway-api mode.
    assert {
        ("gateway.networking.k8s.io", "httproutes"),
        ("gateway.networking.k8s.io", "grpcroutes"),
    } <= watched_by_kopf(True)
