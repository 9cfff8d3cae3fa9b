"""The rollout's state machine: last status and this interval's evidence in, the next status out.

The spec's weights are the destination; the live split the router applies is
`status.rollout.liveWeights`. The operator never writes the spec (no fight with Argo CD or
Flux). Everything the next decision needs is in the status this one gives: the output depends
only on the inputs, so an operator killed anywhere continues from status, and a decision
taken twice from the same status is the same decision (no step skipped or repeated).

A new generation (the spec changed) whose destination raises the candidate's weight starts a
rollout from the split live before it (`startWeights`, rollback's target): step 0 → 1 at once
when the candidate's pods are ready (else Holding at step 0). A new generation mid-rollout
starts again from the current live split. A new generation that does not raise the
candidate's weight is applied at once (phase Succeeded, no steps); so is a brand-new resource
(no split before it: no rollout at all).

Then once per check interval (the caller calls `decide` once per `spec.rollout.interval`; a
failed check is counted per call):
- gates are judged on the counts since the rollout started (`gates`);
- a Harm gate rolls back at once (liveWeights = startWeights, phase RolledBack, the reason
  recorded; it stays there until a new generation), or pauses with onFailure Pause;
- an OverMax gate is a failed check and holds the step; at maxFailedChecks it rolls back
  (or pauses);
- candidate pods not ready: Holding, with the caller's reason (no advance, no failed check);
- otherwise the step advances by one once it has lasted minStepDuration, the candidate has
  served minRequestsPerStep since it began, and every gate passes; the last step applies the
  destination and the rollout has Succeeded. A step waiting for its time says until when,
  not for how long yet: an unchanged wait is an unchanged status (no write at every interval).

Manual commands: the annotation `serving.kubeserve.dev/rollout: <command>/<nonce>` (set by
`kubeserve rollout NAME promote|abort|pause|resume`; the nonce, a timestamp, makes a
repeated command a new value) is honoured once: `status.rollout.manual` records the last
value seen. promote applies the destination (Succeeded; also from RolledBack), abort rolls
back, pause holds the split (Paused), resume continues a Paused rollout with fresh evidence
(the counts, gates and failed checks start again: the evidence that paused it would pause it
again at once). A command given while no rollout runs is recorded and does nothing; the value
present when a rollout starts is taken as seen, so a stale command never acts on a later
rollout.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import pydantic

from kubeserve.api import spec, status
from kubeserve.rollout import gates, steps

MANUAL_ANNOTATION = "serving.kubeserve.dev/rollout"
CONDITION = "RolloutProgressing"
Command = Literal["promote", "abort", "pause", "resume"]
COMMANDS: tuple[Command, ...] = get_args(Command)
# Event reasons; the Warnings among them.
STARTED, ADVANCED, SUCCEEDED, APPLIED = (
    "RolloutStarted",
    "RolloutAdvanced",
    "RolloutSucceeded",
    "RolloutApplied",
)
ROLLED_BACK, PAUSED, RESUMED, HOLDING = (
    "RolloutRolledBack",
    "RolloutPaused",
    "RolloutResumed",
    "RolloutHolding",
)
CHECK_FAILED, PROMOTED, IGNORED = "RolloutCheckFailed", "RolloutPromoted", "RolloutCommandIgnored"
WARNING_REASONS = frozenset({ROLLED_BACK, PAUSED, CHECK_FAILED, IGNORED})
ACTIVE: frozenset[status.RolloutPhase] = frozenset({"Progressing", "Holding"})
MAX_REASON = 1024
MAX_PROBLEM = 512  # of the caller's reason the candidate is not ready


@dataclasses.dataclass(frozen=True)
class Decided:
    """One decision: the new status.rollout (wire form), the split to apply, Events, condition.

    `rollout` None: no rollout to show (no spec.rollout, or a brand-new resource). `fresh`:
    the evidence starts at this look (a rollout started or resumed): the counts since the
    rollout started are zero and every pod's counters are a baseline.
    """

    rollout: dict[str, Any] | None
    live_weights: dict[str, int]
    events: list[tuple[str, str]]  # (reason, message)
    condition: dict[str, str] | None  # type, status, reason, message
    fresh: bool = False


def stamp(now: datetime.datetime) -> str:
    """Write a time as status does: RFC 3339, UTC, whole seconds."""
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime.datetime:
    """Read a time `stamp` wrote (or any RFC 3339 time; UTC when it names no zone)."""
    moment = datetime.datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def parse_command(value: str | None) -> Command | None:
    """Give the command of an annotation value `<command>/<nonce>` (or bare), None if none."""
    if not value:
        return None
    head = value.split("/", 1)[0].strip().lower()
    for command in COMMANDS:
        if head == command:
            return command
    return None


def manual_value(isvc: spec.InferenceService) -> str | None:
    """Give the manual command annotation's value, if set."""
    return (isvc.metadata.annotations or {}).get(MANUAL_ANNOTATION) or None


def previous_rollout(raw: Mapping[str, Any] | None) -> status.RolloutStatus | None:
    """Read status.rollout; None when absent or unreadable (an older shape: start afresh)."""
    if not raw:
        return None
    try:
        return status.RolloutStatus.model_validate(raw)
    except pydantic.ValidationError:
        return None


def live_split_before(previous_status: Mapping[str, Any] | None) -> dict[str, int] | None:
    """Give the live split in effect before this spec, from the previous status.

    status.rollout.liveWeights, else the variants' weights (what the router applied), else
    None: a brand-new resource.
    """
    previous_status = previous_status or {}
    rollout = previous_rollout(previous_status.get("rollout"))
    if rollout is not None and rollout.live_weights:
        return dict(rollout.live_weights)
    variants = previous_status.get("variants")
    if not isinstance(variants, Mapping) or not variants:
        return None
    split: dict[str, int] = {}
    for name, entry in variants.items():
        weight = entry.get("weight", 0) if isinstance(entry, Mapping) else None
        if not isinstance(weight, int) or isinstance(weight, bool):
            return None
        split[str(name)] = weight
    return split


def progress(phase: status.RolloutPhase, step: int, count: int) -> str:
    """Give the printer column's text, e.g. `Progressing 2/5` (the phase alone with no steps)."""
    return f"{phase} {step}/{count}" if count else phase


def default_baseline(start: Mapping[str, int], candidate: str) -> str | None:
    """Give the variant with the most live traffic before the rollout (the first of equals)."""
    return steps.heaviest(start, candidate)


def _gate_text(results: Sequence[status.GateResult]) -> str:
    return "; ".join(gates.describe(r) for r in results) or "no gate data"


def _condition(rollout: status.RolloutStatus) -> dict[str, str]:
    decision = rollout.last_decision
    message = rollout.progress or rollout.phase
    if decision is not None and decision.reason:
        message += f": {decision.reason}"
    return {
        "type": CONDITION,
        "status": "True" if rollout.phase in ACTIVE else "False",
        "reason": rollout.phase,
        "message": message[:4096],
    }


@dataclasses.dataclass(frozen=True)
class _Context:
    """What one decision reads besides the previous rollout."""

    isvc: spec.InferenceService
    rollout: spec.Rollout
    destination: dict[str, int]
    counts: Mapping[str, status.VariantCounts]
    candidate_problem: str | None  # None: the candidate's pods are ready
    interval_seconds: float
    manual: str | None
    now: str
    moment: datetime.datetime

    @property
    def generation(self) -> int | None:
        return self.isvc.metadata.generation

    def requests(self, variant: str | None) -> int:
        counts = self.counts.get(variant or "")
        return counts.requests if counts is not None else 0


def _finish(
    ctx: _Context,
    rollout: status.RolloutStatus,
    events: Sequence[tuple[str, str]] = (),
    *,
    fresh: bool = False,
) -> Decided:
    rollout = rollout.model_copy(
        update={"progress": progress(rollout.phase, rollout.step, rollout.steps)}
    )
    live = dict(rollout.live_weights or ctx.destination)
    return Decided(
        rollout=rollout.to_wire(),
        live_weights=live,
        events=list(events),
        condition=_condition(rollout),
        fresh=fresh,
    )


def _decision(ctx: _Context, action: str, reason: str) -> status.Decision:
    return status.Decision(action=action, reason=reason[:MAX_REASON], time=ctx.now)


def _start(
    ctx: _Context, previous: status.RolloutStatus | None, before: Mapping[str, int] | None
) -> Decided:
    """Begin a new generation: walk from `before`, or apply the destination at once."""
    candidate = ctx.rollout.candidate
    if before is None:
        # A brand-new resource: nothing was live, nothing to protect.
        return Decided(None, dict(ctx.destination), [], None)
    start = dict(before)
    baseline = ctx.rollout.baseline or default_baseline(start, candidate)
    walk = steps.plan(start, ctx.destination, candidate, ctx.rollout.steps, baseline=baseline)
    if not walk:
        if previous is None and start == ctx.destination:
            return Decided(None, dict(ctx.destination), [], None)
        was, to = start.get(candidate, 0), ctx.destination.get(candidate, 0)
        reason = (
            f"the candidate {candidate}'s weight does not grow ({was}→{to}): applied at once"
            if to <= was
            else "no split before it to walk from: applied at once"
        )
        applied = status.RolloutStatus(
            phase="Succeeded",
            generation=ctx.generation,
            candidate=candidate,
            baseline=baseline,
            live_weights=dict(ctx.destination),
            start_weights=start,
            start_time=ctx.now,
            last_decision=_decision(ctx, "Apply", reason),
            manual=ctx.manual,
        )
        events = (
            [(APPLIED, f"Apply {_split(ctx.destination)}: {reason}")]
            if start != ctx.destination
            else []
        )
        return _finish(ctx, applied, events)
    first = walk[0][candidate]
    plan_text = ", ".join(str(s[candidate]) for s in walk)
    restarted = previous is not None and previous.phase in ACTIVE | {"Paused"}
    head = (
        f"Start {candidate} {start[candidate]}→{ctx.destination[candidate]} in "
        f"{len(walk)} steps ({plan_text}), baseline {baseline}"
    )
    if restarted:
        head = f"the spec changed mid-rollout; {head[0].lower()}{head[1:]} from the live split"
    rollout = status.RolloutStatus(
        phase="Progressing",
        generation=ctx.generation,
        candidate=candidate,
        baseline=baseline,
        step=0,
        steps=len(walk),
        live_weights=start,
        start_weights=start,
        start_time=ctx.now,
        step_start_time=ctx.now,
        step_start_requests=0,
        failed_checks=0,
        interval_seconds=ctx.interval_seconds,
        manual=ctx.manual,  # a command given before the start is not for this rollout
    )
    if ctx.candidate_problem is not None:
        reason = f"{head}; held at {start[candidate]}: {_not_ready(ctx.candidate_problem)}"
        held = rollout.model_copy(
            update={"phase": "Holding", "last_decision": _decision(ctx, "Start", reason)}
        )
        return _finish(ctx, held, [(STARTED, reason)], fresh=True)
    reason = f"{head}; now at {first}"
    return _finish(
        ctx, _advance(ctx, rollout, walk, reason, "Start"), [(STARTED, reason)], fresh=True
    )


def _not_ready(problem: str) -> str:
    return f"the candidate's pods are not ready: {problem[:MAX_PROBLEM]}"


def _split(weights: Mapping[str, int]) -> str:
    return ",".join(f"{v}={w}" for v, w in weights.items())


def _advance(
    ctx: _Context,
    rollout: status.RolloutStatus,
    walk: Sequence[Mapping[str, int]],
    reason: str,
    action: str,
) -> status.RolloutStatus:
    """Take one step: the next split of the walk, the destination (Succeeded) at the last."""
    step = rollout.step + 1
    done = step >= len(walk)
    return rollout.model_copy(
        update={
            "phase": "Succeeded" if done else "Progressing",
            "step": step,
            "live_weights": dict(ctx.destination if done else walk[step - 1]),
            "step_start_time": ctx.now,
            "step_start_requests": ctx.requests(rollout.candidate),
            "last_decision": _decision(ctx, action, reason),
        }
    )


def _walk(ctx: _Context, rollout: status.RolloutStatus) -> list[dict[str, int]]:
    """Give the walk of a running rollout again, from its status and the (same) spec."""
    return steps.plan(
        rollout.start_weights or {},
        ctx.destination,
        rollout.candidate or ctx.rollout.candidate,
        ctx.rollout.steps,
        baseline=rollout.baseline,
    )


def _weight(weights: Mapping[str, int] | None, variant: str | None) -> int:
    return (weights or {}).get(variant or "", 0)


def _fail(ctx: _Context, rollout: status.RolloutStatus, why: str) -> Decided:
    """Roll back to the split before the rollout, or pause there with onFailure Pause."""
    if ctx.rollout.on_failure == "Pause":
        return _pause(ctx, rollout, why)
    return _roll_back(ctx, rollout, why)


def _pause(ctx: _Context, rollout: status.RolloutStatus, why: str) -> Decided:
    """Pause where the split is now."""
    reason = f"Pause at {_weight(rollout.live_weights, rollout.candidate)}: {why}"
    paused = rollout.model_copy(
        update={"phase": "Paused", "last_decision": _decision(ctx, "Pause", reason)}
    )
    return _finish(ctx, paused, [(PAUSED, reason)])


def _roll_back(ctx: _Context, rollout: status.RolloutStatus, why: str) -> Decided:
    """Go back to the split before the rollout."""
    back = _weight(rollout.start_weights, rollout.candidate)
    reason = f"Roll back {_weight(rollout.live_weights, rollout.candidate)}→{back}: {why}"
    rolled = rollout.model_copy(
        update={
            "phase": "RolledBack",
            "live_weights": dict(rollout.start_weights or {}),
            "last_decision": _decision(ctx, "RollBack", reason),
        }
    )
    return _finish(ctx, rolled, [(ROLLED_BACK, reason)])


def _command(ctx: _Context, rollout: status.RolloutStatus, command: Command | None) -> Decided:
    """Honour a new manual command (recorded as seen whether it acts or not)."""
    rollout = rollout.model_copy(update={"manual": ctx.manual})
    phase = rollout.phase
    by = f"kubeserve rollout {command}" if command else f"annotation {ctx.manual!r}"
    if command == "promote" and phase != "Succeeded":
        reason = (
            f"Promote {_weight(rollout.live_weights, rollout.candidate)}→"
            f"{_weight(ctx.destination, rollout.candidate)}: {by}"
        )
        promoted = rollout.model_copy(
            update={
                "phase": "Succeeded",
                "step": rollout.steps,
                "live_weights": dict(ctx.destination),
                "last_decision": _decision(ctx, "Promote", reason),
            }
        )
        return _finish(ctx, promoted, [(PROMOTED, reason)])
    if command == "abort" and (phase in ACTIVE or phase == "Paused"):
        return _roll_back(ctx, rollout, by)
    if command == "pause" and phase in ACTIVE:
        return _pause(ctx, rollout, by)
    if command == "resume" and phase == "Paused":
        reason = (
            f"Resume at {_weight(rollout.live_weights, rollout.candidate)}: {by}; "
            "the evidence starts again"
        )
        resumed = rollout.model_copy(
            update={
                "phase": "Progressing",
                "step_start_time": ctx.now,
                "step_start_requests": 0,
                "failed_checks": 0,
                "gates": None,
                "last_decision": _decision(ctx, "Resume", reason),
            }
        )
        return _finish(ctx, resumed, [(RESUMED, reason)], fresh=True)
    what = (
        f"{command} does nothing while the rollout is {phase}"
        if command
        else (f"{ctx.manual!r} is not <command>/<nonce> with command one of {', '.join(COMMANDS)}")
    )
    return _finish(ctx, rollout, [(IGNORED, f"Ignored {by}: {what}")])


def _waiting(
    ctx: _Context, rollout: status.RolloutStatus, results: Sequence[status.GateResult]
) -> list[str]:
    """Say what the step still waits for; empty when it may advance."""
    waits: list[str] = []
    served = ctx.requests(rollout.candidate) - rollout.step_start_requests
    if served < ctx.rollout.min_requests_per_step:
        waits.append(f"{served} of {ctx.rollout.min_requests_per_step} requests")
    began = parse_time(rollout.step_start_time) if rollout.step_start_time else ctx.moment
    until = began + datetime.timedelta(seconds=ctx.rollout.min_step_seconds())
    if ctx.moment < until:
        waits.append(f"the step's {ctx.rollout.min_step_seconds():.0f}s (until {stamp(until)})")
    collecting = [r.metric for r in results if r.result == "Collecting"]
    if collecting:
        waits.append(f"no data yet on {', '.join(collecting)}")
    return waits


def _hold(ctx: _Context, rollout: status.RolloutStatus, reason: str) -> status.RolloutStatus:
    """Record a Hold; an unchanged reason keeps its time, so an idle rollout writes nothing new."""
    old = rollout.last_decision
    if old is not None and old.action == "Hold" and old.reason == reason[:MAX_REASON]:
        return rollout
    return rollout.model_copy(update={"last_decision": _decision(ctx, "Hold", reason)})


def _progress(ctx: _Context, rollout: status.RolloutStatus) -> Decided:
    """One interval of a running (Progressing or Holding) rollout."""
    walk = _walk(ctx, rollout)
    if len(walk) != rollout.steps:
        # The status does not fit the spec it claims (edited by hand?): start again from it.
        return _start(ctx, None, rollout.live_weights)
    candidate, baseline = rollout.candidate or ctx.rollout.candidate, rollout.baseline or ""
    empty = status.VariantCounts()
    results = gates.evaluate(
        ctx.rollout,
        ctx.counts.get(baseline, empty),
        ctx.counts.get(candidate, empty),
        rollout.gates,
    )
    rollout = rollout.model_copy(update={"gates": results or None})
    harmed = [r for r in results if r.result == "Harm"]
    if harmed:
        return _fail(ctx, rollout, f"harm on {_gate_text(harmed)}")
    events: list[tuple[str, str]] = []
    now_at = _weight(rollout.live_weights, candidate)
    # Not ready: nothing to judge the candidate's limits on; no failed check, no step.
    if ctx.candidate_problem is not None:
        reason = f"Hold at {now_at}: {_not_ready(ctx.candidate_problem)}"
        if rollout.phase != "Holding":
            events.append((HOLDING, reason))
        return _finish(
            ctx, _hold(ctx, rollout.model_copy(update={"phase": "Holding"}), reason), events
        )
    over = [r for r in results if r.result == "OverMax"]
    if over:
        failed = rollout.failed_checks + 1
        text = "; ".join(
            f"{r.metric} {r.candidate:.4g} over max {g.max:.4g}"
            for g, r in zip(ctx.rollout.effective_gates(), results, strict=True)
            if r.result == "OverMax" and r.candidate is not None and g.max is not None
        )
        rollout = rollout.model_copy(update={"failed_checks": failed})
        if failed >= ctx.rollout.max_failed_checks:
            return _fail(ctx, rollout, f"{failed} failed checks: {text}")
        events.append(
            (CHECK_FAILED, f"Failed check {failed} of {ctx.rollout.max_failed_checks}: {text}")
        )
    rollout = rollout.model_copy(update={"phase": "Progressing"})
    if rollout.step == 0:
        # Started while the candidate was not ready: the first step needs nothing else.
        reason = f"Advance {now_at}→{walk[0][candidate]}: the candidate's pods are ready"
        events.append((ADVANCED, reason))
        return _finish(ctx, _advance(ctx, rollout, walk, reason, "Advance"), events)
    waits = _waiting(ctx, rollout, results)
    if over:
        waits.insert(0, "a failed check")
    if waits:
        reason = f"Hold at {now_at}: waiting for {', '.join(waits)}; {_gate_text(results)}"
        return _finish(ctx, _hold(ctx, rollout, reason), events)
    to = walk[rollout.step][candidate]
    reason = f"Advance {now_at}→{to}: {_gate_text(results)}"
    advanced = _advance(ctx, rollout, walk, reason, "Advance")
    if advanced.phase == "Succeeded":
        events.append((SUCCEEDED, f"{reason}; the destination {_split(ctx.destination)} is live"))
    else:
        events.append((ADVANCED, reason))
    return _finish(ctx, advanced, events)


def _stay(ctx: _Context, rollout: status.RolloutStatus) -> Decided:
    """Keep a finished rollout (or a paused one) as it is, gates shown but not acted on."""
    if rollout.phase == "Paused":
        empty = status.VariantCounts()
        results = gates.evaluate(
            ctx.rollout,
            ctx.counts.get(rollout.baseline or "", empty),
            ctx.counts.get(rollout.candidate or "", empty),
            rollout.gates,
        )
        rollout = rollout.model_copy(update={"gates": results or None})
    return _finish(ctx, rollout)


def decide(
    isvc: spec.InferenceService,
    previous: Mapping[str, Any] | None,
    live_before: Mapping[str, int] | None,
    counts: Mapping[str, status.VariantCounts],
    *,
    candidate_problem: str | None,
    now: datetime.datetime,
    interval_seconds: float | None = None,
) -> Decided:
    """Give the next rollout state from the last one and this interval's evidence.

    `previous`: the last status.rollout (wire form) or None. `live_before`: the live split in
    effect before this spec (`live_split_before`), None for a brand-new resource. `counts`:
    each variant's counts since the rollout started (zeros at its start).
    `candidate_problem`: why the candidate's pods (of this generation) are not ready, None
    when they are; the Hold says it. `interval_seconds`: the interval the caller decides at,
    when not spec.rollout.interval (the local run's --interval), shown in status. The manual
    command is read from the annotation `MANUAL_ANNOTATION`.
    """
    now = now.astimezone(datetime.UTC).replace(microsecond=0)
    destination = isvc.spec.live_weights()
    config = isvc.spec.rollout
    if config is None:
        return Decided(None, destination, [], None)
    ctx = _Context(
        isvc=isvc,
        rollout=config,
        destination=destination,
        counts=counts,
        candidate_problem=candidate_problem,
        interval_seconds=interval_seconds or config.interval_seconds(),
        manual=manual_value(isvc),
        now=stamp(now),
        moment=now,
    )
    before = previous_rollout(previous)
    if before is None or before.generation != ctx.generation:
        live = dict(before.live_weights) if before and before.live_weights else live_before
        return _start(ctx, before, live)
    if ctx.manual is not None and ctx.manual != before.manual:
        return _command(ctx, before, parse_command(ctx.manual))
    if before.phase in ACTIVE:
        return _progress(ctx, before)
    return _stay(ctx, before)


def unscheduled(
    isvc: spec.InferenceService, previous_status: Mapping[str, Any]
) -> Literal["start", "command"] | None:
    """Say why the rollout must be looked at now, outside its interval, or None: it need not.

    "start": no status.rollout of this generation yet (a new spec: the split must not jump to
    the destination); "command": a manual command not honoured yet. Any other look waits for
    the interval, since each interval's look may count a failed check or take a step.
    """
    if isvc.spec.rollout is None:
        return None
    rollout = previous_rollout(previous_status.get("rollout"))
    if rollout is None or rollout.generation != isvc.metadata.generation:
        return "start"
    manual = manual_value(isvc)
    if manual is not None and manual != rollout.manual:
        return "command"
    return None
