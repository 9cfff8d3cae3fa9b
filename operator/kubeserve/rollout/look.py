"""One look at a rollout: pod readings in, the next status.rollout and live split out. Pure.

The operator (and `kubeserve up`) call `look` once per `spec.rollout.interval` (a failed check
is counted per call) with the whole previous status and a reading of every pod of the
variants; it adds the readings to the counts since the rollout started (`experiment.accumulate`:
per pod uid, restarts and new pods handled; the interval's traffic is counted under the live
split that carried it), lets `decide` take the next step, and gives the new status.rollout,
the live split to apply, Events and the RolloutProgressing condition. When a rollout starts
(or resumes) the evidence starts again: the counts are zero and every pod's counters read now
are its baseline.

A look taken for another reason (a new generation, a manual command) may have read nothing:
`looked` None. The counts and every pod's last counters then stay as they were, and so does
lastCollected. When such a look starts (or resumes) a rollout, the counters of the last look
stay the baselines if that look is at most one interval old (`_baselines`): the evidence then
takes in what the pods served since that look, before the start, rather than lose what they
serve until the next reading.

A look that changed nothing but the time of collection gives the previous status.rollout
unchanged, to the byte: a rollout waiting on a quiet service costs no status writes.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from kubeserve.api import spec, status
from kubeserve.experiment import accumulate, readings
from kubeserve.experiment import look as experiment_look
from kubeserve.rollout import decide

# Phases in which the counts still grow; a finished rollout keeps the counts it ended with.
COUNTING: frozenset[status.RolloutPhase] = frozenset({"Progressing", "Holding", "Paused"})


@dataclasses.dataclass(frozen=True)
class RolloutLook:
    """The outcome of one look: status.rollout (wire form, None: none), the split, Events.

    `condition` is the RolloutProgressing condition with its lastTransitionTime (None when
    there is no rollout to show).
    """

    rollout: dict[str, Any] | None
    live_weights: dict[str, int]
    events: list[tuple[str, str]]  # (reason, message); decide.WARNING_REASONS are Warnings
    condition: dict[str, Any] | None

    def apply(self, status_: Mapping[str, Any]) -> dict[str, Any]:
        """Give `status_` with this look's rollout and condition in place of the old ones."""
        out = {k: v for k, v in status_.items() if k != "rollout"}
        if self.rollout is not None:
            out["rollout"] = self.rollout
        conditions = [
            c for c in status_.get("conditions") or [] if c.get("type") != decide.CONDITION
        ]
        if self.condition is not None:
            old = [c.get("type") for c in status_.get("conditions") or []]
            # In its old place when it had one, so the list does not reorder.
            at = old.index(decide.CONDITION) if decide.CONDITION in old else len(conditions)
            conditions.insert(at, self.condition)
        if conditions or "conditions" in status_:
            out["conditions"] = conditions
        return out


def _counted(
    previous: status.RolloutStatus | None,
    isvc: spec.InferenceService,
    looked: Sequence[readings.PodReading] | None,
    slow_after: int,
) -> accumulate.Accumulated | None:
    """Add the readings to a running rollout's counts; None when none runs for this spec."""
    if (
        previous is None
        or previous.generation != isvc.metadata.generation
        or previous.phase not in COUNTING
        or previous.start_time is None
        or not previous.live_weights
    ):
        return None
    return accumulate.accumulate(
        previous.variants or {},
        previous.pods or {},
        looked,
        previous.live_weights,
        start_time=decide.parse_time(previous.start_time),
        slow_after=slow_after,
    )


def _baselines(
    previous: status.RolloutStatus | None, now: datetime.datetime
) -> dict[str, status.PodCounters]:
    """Give the last counters read, when recent enough for a start with no reading to count from.

    Kept only from a rollout that was being counted, read at most one of its intervals ago:
    older counters (an operator that was down, a rollout long finished) would take in what
    the pods served long before the start.
    """
    if (
        previous is None
        or previous.phase not in COUNTING
        or not previous.pods
        or previous.last_collected is None
        or previous.interval_seconds is None
    ):
        return {}
    age = (now - decide.parse_time(previous.last_collected)).total_seconds()
    return dict(previous.pods) if 0.0 <= age <= previous.interval_seconds else {}


def _condition(
    condition: Mapping[str, str], previous_status: Mapping[str, Any], now: str
) -> dict[str, Any]:
    old = next(
        (c for c in previous_status.get("conditions") or [] if c.get("type") == decide.CONDITION),
        None,
    )
    kept = old is not None and old.get("status") == condition["status"]
    since = old.get("lastTransitionTime") if kept and old is not None else None
    return {**condition, "lastTransitionTime": since or now}


def _same(new: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
    """Tell whether a look changed nothing but the time of collection."""
    return {k: v for k, v in new.items() if k != "lastCollected"} == {
        k: v for k, v in old.items() if k != "lastCollected"
    }


def look(
    isvc: spec.InferenceService,
    previous_status: Mapping[str, Any] | None,
    looked: Sequence[readings.PodReading] | None,
    *,
    candidate_problem: str | None,
    now: datetime.datetime,
    interval_seconds: float | None = None,
) -> RolloutLook:
    """Take one look at the rollout of `isvc`.

    `previous_status`: the whole status last written (None or {} at first). `looked`: a
    reading per pod of the variants (unreadable ones with their problem); None when this look
    read nothing (an empty list says the pods were listed and there were none).
    `candidate_problem`: why the candidate's pods of this generation are not ready, None when
    they are. `interval_seconds`: the interval the caller looks at, when not the spec's.
    """
    previous_status = previous_status or {}
    stamp = decide.stamp(now)
    old_wire = previous_status.get("rollout")
    previous = decide.previous_rollout(old_wire)
    config = isvc.spec.rollout
    slow_after = experiment_look.slow_bucket(config.slow_threshold_seconds()) if config else 0
    counted = _counted(previous, isvc, looked, slow_after) if config else None
    decided = decide.decide(
        isvc,
        old_wire,
        decide.live_split_before(previous_status),
        counted.variants if counted else {},
        candidate_problem=candidate_problem,
        now=now,
        interval_seconds=interval_seconds,
    )
    rollout = decided.rollout
    if rollout is not None:
        rollout = dict(rollout)
        if decided.fresh:
            # Every pod's counters now (or the last look's) are the baseline to count from.
            kept = _baselines(previous, now) if looked is None else {}
            counted = accumulate.accumulate(
                {}, kept, looked, decided.live_weights, start_time=now, slow_after=slow_after
            )
        if counted is not None:
            rollout["variants"] = {
                k: experiment_look.with_rates(v).to_wire() for k, v in counted.variants.items()
            } or None
            rollout["pods"] = {k: v.to_wire() for k, v in counted.pods.items()} or None
            if looked is not None:
                rollout["lastCollected"] = stamp
            elif decided.fresh:
                # When the counters kept as baselines were read (none kept: none read).
                kept_at = previous.last_collected if previous and counted.pods else None
                rollout["lastCollected"] = kept_at
            rollout = {k: v for k, v in rollout.items() if v is not None}
        if not decided.fresh and isinstance(old_wire, Mapping) and _same(rollout, old_wire):
            rollout = dict(old_wire)
    condition = _condition(decided.condition, previous_status, stamp) if decided.condition else None
    return RolloutLook(
        rollout=rollout,
        live_weights=decided.live_weights,
        events=decided.events,
        condition=condition,
    )
