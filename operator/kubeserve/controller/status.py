"""Compute an InferenceService's status from what its children report. Pure: no API calls.

Conditions follow the Kubernetes convention: `VariantsReady` and `RoutingReady` say what is
wrong and why, `Ready` rolls them up. Reasons are CamelCase for machines; messages say what
a person can do about it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from kubeserve import redaction
from kubeserve.api import names, spec
from kubeserve.builders import endpoint, pod
from kubeserve.builders.config import BuildConfig

READY, VARIANTS_READY, ROUTING_READY = "Ready", "VariantsReady", "RoutingReady"
_OWN = frozenset({READY, VARIANTS_READY, ROUTING_READY})
# The kinds of children whose state the status is computed from.
STATUS_KINDS = frozenset({"Deployment", "HTTPRoute", "GRPCRoute"})
# Reasons that resolve with time alone; any other reason needs someone to act.
_WAITING = {"Progressing", "Unavailable", "DeploymentMissing"}
_IMAGE_PULL = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One condition's value, before timestamps."""

    status: str
    reason: str
    message: str


def _condition(deployment: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for cond in deployment.get("status", {}).get("conditions") or []:
        if cond.get("type") == type_:
            found: Mapping[str, Any] = cond
            return found
    return None


def _waiting(statuses: Sequence[Mapping[str, Any]] | None, name: str) -> tuple[str, str] | None:
    for cs in statuses or []:
        if cs.get("name") != name:
            continue
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting:
            last = (cs.get("lastState") or {}).get("terminated") or {}
            return waiting.get("reason", ""), (
                last.get("message") or waiting.get("message") or ""
            ).strip()
        terminated = (cs.get("state") or {}).get("terminated")
        if terminated and terminated.get("exitCode", 0) != 0:
            return "Error", (
                terminated.get("message") or f"exit code {terminated.get('exitCode')}"
            ).strip()
    return None


def pod_problem(variant: spec.Variant, pods: Sequence[Mapping[str, Any]]) -> Verdict | None:
    """Explain why a variant's pods are not ready, from the first pod that says why."""
    for p in pods:
        status = p.get("status") or {}
        for cond in status.get("conditions") or []:
            if (
                cond.get("type") == "PodScheduled"
                and cond.get("status") == "False"
                and cond.get("reason") == "Unschedulable"
            ):
                detail = cond.get("message", "")
                if variant.gpu:
                    resource = pod.gpu_resource_name(variant.gpu)
                    product = f" of product {variant.gpu.product}" if variant.gpu.product else ""
                    return Verdict(
                        "False",
                        "GPUUnavailable",
                        f"no node offers {variant.gpu.count} free {resource}{product}: {detail}",
                    )
                return Verdict(
                    "False",
                    "Unschedulable",
                    f"pods of variant {variant.name} cannot be scheduled: {detail}",
                )
        for container, statuses in (
            (pod.FETCH_CONTAINER, status.get("initContainerStatuses")),
            (pod.SERVER_CONTAINER, status.get("containerStatuses")),
        ):
            waiting = _waiting(statuses, container)
            if waiting is None:
                continue
            reason, detail = waiting
            if reason in _IMAGE_PULL:
                return Verdict(
                    "False",
                    "ImagePullFailed",
                    f"variant {variant.name} cannot pull its image ({reason}): {detail}",
                )
            if container == pod.FETCH_CONTAINER and reason in {"CrashLoopBackOff", "Error"}:
                return Verdict(
                    "False",
                    "ModelFetchFailed",
                    # Many more people read a status than the spec's Secret: no URI secrets in it.
                    redaction.redact(
                        f"variant {variant.name} cannot fetch {variant.model.storage_uri}: {detail}"
                    ),
                )
            if reason in {
                "CrashLoopBackOff",
                "Error",
                "CreateContainerConfigError",
                "RunContainerError",
            }:
                return Verdict(
                    "False",
                    "ServerFailing",
                    f"the model server of variant {variant.name} fails ({reason}): {detail}",
                )
    return None


def variant_verdict(
    isvc: spec.InferenceService,
    variant: spec.Variant,
    deployment: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
) -> Verdict:
    """Judge one variant from its Deployment and, when it is not ready, its pods."""
    name = names.variant_object_name(isvc.metadata.name, variant.name)
    if deployment is None:
        return Verdict("False", "DeploymentMissing", f"Deployment {name} is not created yet")
    st = deployment.get("status") or {}
    wanted = deployment.get("spec", {}).get("replicas", 1)
    ready = st.get("readyReplicas", 0) or 0
    failure = _condition(deployment, "ReplicaFailure")
    if failure and failure.get("status") == "True":
        return Verdict(
            "False", "ReplicaFailure", f"Deployment {name}: {failure.get('message', '')}"
        )
    problem = pod_problem(variant, pods) if ready < wanted else None
    if problem:
        return problem
    progressing = _condition(deployment, "Progressing")
    if progressing and progressing.get("status") == "False":
        return Verdict(
            "False",
            "ProgressDeadlineExceeded",
            f"Deployment {name}: {progressing.get('message', '')}",
        )
    if st.get("observedGeneration", 0) < deployment.get("metadata", {}).get("generation", 0):
        return Verdict(
            "False", "Progressing", f"Deployment {name} has not observed its latest spec yet"
        )
    if ready < wanted or (st.get("updatedReplicas", wanted) or 0) < wanted:
        return Verdict(
            "False", "Progressing", f"variant {variant.name}: {ready}/{wanted} replicas ready"
        )
    available = _condition(deployment, "Available")
    if wanted > 0 and (available is None or available.get("status") != "True"):
        return Verdict("False", "Unavailable", f"Deployment {name} is not available yet")
    return Verdict("True", "Ready", f"{ready}/{wanted} replicas ready")


def _route_verdict(kind: str, name: str, route: Mapping[str, Any] | None) -> Verdict | None:
    """Judge one Gateway API route by what its Gateways report; None when accepted."""
    if route is None:
        return Verdict("False", "RouteMissing", f"{kind} {name} is not created yet")
    parents = (route.get("status") or {}).get("parents") or []
    if not parents:
        return Verdict("Unknown", "RoutePending", f"no Gateway has reported on the {kind} yet")
    for parent in parents:
        for cond in parent.get("conditions") or []:
            if cond.get("type") in {"Accepted", "ResolvedRefs"} and cond.get("status") != "True":
                gateway = (parent.get("parentRef") or {}).get("name", "?")
                return Verdict(
                    "False",
                    f"Route{cond.get('reason', 'NotAccepted')}",
                    f"Gateway {gateway} on the {kind}: {cond.get('message', '')}",
                )
    return None


def routing_verdict(
    isvc: spec.InferenceService,
    children: Mapping[tuple[str, str], Mapping[str, Any]],
    unmanaged_kinds: frozenset[str] = frozenset(),
) -> Verdict:
    """Judge the endpoint: the router Deployment, or the HTTPRoute's acceptance by its Gateways."""
    if isvc.spec.routing.mode == "gateway-api" and "HTTPRoute" in unmanaged_kinds:
        return Verdict(
            "False",
            "GatewayAPIDisabled",
            "routing mode gateway-api needs the operator started with --gateway-api "
            "(Helm value operator.gatewayAPI=true) in a cluster with the Gateway API CRDs",
        )
    if isvc.spec.routing.mode == "gateway-api":
        http = _route_verdict(
            "HTTPRoute", isvc.metadata.name, children.get(("HTTPRoute", isvc.metadata.name))
        )
        if http is not None:
            return http
        # gRPC is the second way in: a Gateway with no gRPC listener refuses the GRPCRoute
        # while REST works, so that is said but does not make the endpoint unready.
        grpc = _route_verdict(
            "GRPCRoute", isvc.metadata.name, children.get(("GRPCRoute", isvc.metadata.name))
        )
        message = "the HTTPRoute is accepted by its Gateways"
        if grpc is not None and "GRPCRoute" not in unmanaged_kinds:
            message += f"; gRPC is not served yet: {grpc.message}"
        elif "GRPCRoute" not in unmanaged_kinds:
            message += ", and the GRPCRoute too"
        return Verdict("True", "RouteAccepted", message)
    name = names.router_object_name(isvc.metadata.name)
    deployment = children.get(("Deployment", name))
    if deployment is None:
        return Verdict("False", "RouterMissing", f"router Deployment {name} is not created yet")
    st = deployment.get("status") or {}
    wanted = deployment.get("spec", {}).get("replicas", 1)
    ready = st.get("readyReplicas", 0) or 0
    if ready < wanted:
        return Verdict("False", "RouterNotReady", f"router: {ready}/{wanted} replicas ready")
    return Verdict("True", "RouterReady", f"router: {ready}/{wanted} replicas ready")


def _stamp(
    verdict: Verdict, type_: str, previous: Mapping[str, Any], now: str, generation: int | None
) -> dict[str, Any]:
    old = next((c for c in previous.get("conditions") or [] if c.get("type") == type_), None)
    changed = old is None or old.get("status") != verdict.status
    cond = {
        "type": type_,
        "status": verdict.status,
        "reason": verdict.reason,
        "message": verdict.message,
        "lastTransitionTime": now if changed or old is None else old.get("lastTransitionTime", now),
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def _roll_up(verdicts: Sequence[tuple[str, Verdict]]) -> Verdict:
    for type_, v in verdicts:
        if v.status != "True":
            return Verdict(
                v.status if v.status == "Unknown" else "False", v.reason, f"{type_}: {v.message}"
            )
    return Verdict("True", "Ready", "all variants and the endpoint are ready")


def compute(
    isvc: spec.InferenceService,
    children: Mapping[tuple[str, str], Mapping[str, Any]],
    pods: Mapping[str, Sequence[Mapping[str, Any]]],
    previous: Mapping[str, Any],
    *,
    now: str,
    cluster_domain: str = "cluster.local",
    unmanaged_kinds: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Give the whole status for an InferenceService whose spec is valid."""
    weights = isvc.spec.live_weights()
    variants: dict[str, Any] = {}
    failing: list[Verdict] = []
    for v in isvc.spec.variants:
        dep = children.get(("Deployment", names.variant_object_name(isvc.metadata.name, v.name)))
        verdict = variant_verdict(isvc, v, dep, pods.get(v.name, ()))
        st = (dep or {}).get("status") or {}
        variants[v.name] = {
            "replicas": st.get("replicas", 0) or 0,
            "readyReplicas": st.get("readyReplicas", 0) or 0,
            "weight": weights[v.name],
            "storageUri": v.model.storage_uri,
            "ready": verdict.status == "True",
        }
        if verdict.status != "True":
            failing.append(verdict)
    if failing:
        # The reason names the problem a person must act on, not one that only needs time.
        worst = min(failing, key=lambda v: v.reason in _WAITING)
        detail = "; ".join(v.message for v in failing)
        variants_ok = Verdict("False", worst.reason, detail)
    else:
        variants_ok = Verdict(
            "True", "AllVariantsReady", f"{len(variants)} of {len(variants)} variants ready"
        )
    routing_ok = routing_verdict(isvc, children, unmanaged_kinds)
    generation = isvc.metadata.generation
    verdicts = [(VARIANTS_READY, variants_ok), (ROUTING_READY, routing_ok)]
    conditions = [_stamp(_roll_up(verdicts), READY, previous, now, generation)]
    conditions += [_stamp(v, t, previous, now, generation) for t, v in verdicts]
    # Other parts of the operator (the experiment) own their own conditions and keys.
    conditions += [c for c in previous.get("conditions") or [] if c.get("type") not in _OWN]
    out = {
        "observedGeneration": generation,
        "url": endpoint.endpoint_url(isvc, BuildConfig(cluster_domain=cluster_domain)),
        "traffic": endpoint.traffic_summary(isvc),
        "conditions": conditions,
        "variants": variants,
    }
    return out | {k: v for k, v in previous.items() if k not in out}


def invalid(
    errors: Sequence[str],
    previous: Mapping[str, Any],
    *,
    generation: int | None,
    now: str,
    reason: str,
) -> dict[str, Any]:
    """Give the status of an InferenceService the operator cannot act on, keeping the rest.

    `InvalidSpec`: the spec is refused. `NameConflict`: a child's name is taken by an object
    that is not ours, which the operator will not overwrite.
    """
    lead = "the spec is invalid: " if reason == "InvalidSpec" else ""
    verdict = Verdict("False", reason, lead + "; ".join(errors))
    out = dict(previous)
    out["observedGeneration"] = generation
    out["conditions"] = [_stamp(verdict, READY, previous, now, generation)] + [
        c for c in previous.get("conditions") or [] if c.get("type") != READY
    ]
    return out


def same_status(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Compare statuses ignoring timestamps, so an unchanged status is not written again."""

    def strip(s: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in s.items() if v is not None}
        out["conditions"] = [
            {k: v for k, v in c.items() if k != "lastTransitionTime"}
            for c in s.get("conditions") or []
        ]
        return out

    return strip(a) == strip(b)
