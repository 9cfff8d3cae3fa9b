"""The rollout's part of a reconcile: when to look, the candidate's readiness, the live split.

The spec's weights are the destination; the router carries the live split,
status.rollout.liveWeights (`live_split`). Whenever spec.rollout is set, the reconcile builds
the children and the status from `steps.live_spec` of it, in the sticky-safe split order, and
never writes the spec (no fight with Argo CD or Flux).

`rollout.decide` counts a failed check per look, so a look is taken only (`due`):
- at each `spec.rollout.interval`: a `work.Collect` with the rollout's readings, from the
  collector's schedule, looked at once per collection;
- at once when a new generation starts a rollout (status.rollout is of another generation,
  or there is none): it starts from the split that was live, in the same reconcile, so the
  router never carries the destination in between;
- at once when the manual annotation has a value status.rollout.manual has not seen.
Resyncs, child and pod events and status refreshes read the live split from status and look
at nothing. The two looks outside the schedule never reach decide's per-interval judgement:
a new generation is a start, a new annotation value a command (neither counts a check nor
takes a step on evidence), and they read nothing: `look` is given None and keeps every pod's
counters as they were, so the next interval counts what was served in between.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from kubeserve.api import names, spec, status
from kubeserve.controller import diff
from kubeserve.rollout import decide
from kubeserve.rollout import look as rollout_look

# Why a look is taken now: the interval's collection, a new generation, a manual command.
Due = Literal["interval", "start", "command"]


def _this_generation(
    isvc: spec.InferenceService, previous: Mapping[str, Any]
) -> status.RolloutStatus | None:
    rollout = decide.previous_rollout(previous.get("rollout"))
    if rollout is None or rollout.generation != isvc.metadata.generation:
        return None
    return rollout


def live_split(isvc: spec.InferenceService, previous: Mapping[str, Any]) -> dict[str, int] | None:
    """Give the split the router carries; None when it is the spec's (no spec.rollout).

    With spec.rollout, status.rollout.liveWeights of this generation, else the spec's weights
    (a rollout about to start: the look that starts it says where from).
    """
    if isvc.spec.rollout is None:
        return None
    rollout = _this_generation(isvc, previous)
    if rollout is not None and rollout.live_weights:
        return dict(rollout.live_weights)
    return isvc.spec.live_weights()


def due(isvc: spec.InferenceService, previous: Mapping[str, Any], *, collected: bool) -> Due | None:
    """Say why the rollout is looked at in this reconcile, or None: not at all.

    `collected`: the rollout's interval came with this work (its readings not looked at yet).
    """
    if isvc.spec.rollout is None:
        return None
    if collected:
        return "interval"
    return decide.unscheduled(isvc, previous)


def candidate_key(isvc: spec.InferenceService) -> tuple[str, str]:
    """Give the (kind, name) of the candidate's Deployment."""
    assert isvc.spec.rollout is not None
    return "Deployment", names.variant_object_name(isvc.metadata.name, isvc.spec.rollout.candidate)


def candidate_problem(
    desired: Mapping[str, Any] | None, actual: Mapping[str, Any] | None
) -> str | None:
    """Say why the candidate's Deployment is not serving its current template; None: it is.

    The rollout's Hold says it (status.rollout.lastDecision, the RolloutHolding Event).

    Ready means: it has this generation's template (nothing of its spec left to patch), its
    controller has seen that (observedGeneration), and every replica is updated and ready,
    with no old one left: only then is what the candidate serves the version being judged.
    """
    name = ((desired or actual or {}).get("metadata") or {}).get("name", "the candidate's")
    if actual is None:
        return f"Deployment {name} is not created yet"
    if desired is not None and "spec" in (diff.patch_for(dict(desired), actual) or {}):
        return f"Deployment {name} does not have this generation's template yet"
    metadata, st = actual.get("metadata") or {}, actual.get("status") or {}
    if (st.get("observedGeneration") or 0) < (metadata.get("generation") or 0):
        return f"Deployment {name} has not observed its latest template yet"
    wanted = (actual.get("spec") or {}).get("replicas", 1)
    if not wanted:
        return f"Deployment {name} is scaled to 0"
    updated = st.get("updatedReplicas") or 0
    ready = st.get("readyReplicas") or 0
    running = st.get("replicas") or 0
    if updated < wanted or ready < wanted or running > wanted:
        return f"Deployment {name}: {updated}/{wanted} replicas updated, {ready}/{wanted} ready" + (
            f", {running - wanted} old still running" if running > wanted else ""
        )
    return None


def finish(
    isvc: spec.InferenceService,
    looked: rollout_look.RolloutLook | None,
    status_: dict[str, Any],
) -> dict[str, Any]:
    """Give the status with this reconcile's rollout: the look's, or none without spec.rollout."""
    if isvc.spec.rollout is None:
        if "rollout" not in status_ and not any(
            c.get("type") == decide.CONDITION for c in status_.get("conditions") or []
        ):
            return status_
        return rollout_look.RolloutLook(None, {}, [], None).apply(status_)
    return looked.apply(status_) if looked is not None else status_


def interval(isvc: spec.InferenceService, status_: Mapping[str, Any]) -> float | None:
    """Give how often to read the rollout's pods; None while it counts nothing (or has none)."""
    rollout = _this_generation(isvc, status_) if isvc.spec.rollout else None
    if isvc.spec.rollout is None or rollout is None or rollout.phase not in rollout_look.COUNTING:
        return None
    return isvc.spec.rollout.interval_seconds()
