"""Properties of the state machine over random sequences of looks.

Each sequence mixes time passing, traffic (healthy or harmful, with errors over an absolute
limit or not), candidate readiness, manual commands and spec changes (a new generation with a
new destination). After every look: the split is whole and never beyond the destination; a
step is never skipped; a rollback lands exactly on the split before the rollout; the same
status read back from JSON gives the same next decision; the candidate's share only shrinks
by a rollback, an abort or a new generation.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kubeserve.api import status
from kubeserve.rollout import decide, steps
from support.rollouts import at, service

GATES = [{"metric": "errorRate", "maxIncrease": 0.01, "max": 0.2}]


@dataclasses.dataclass(frozen=True)
class Action:
    seconds: int
    baseline_requests: int
    candidate_requests: int
    candidate_error_rate: float
    ready: bool
    command: str | None
    new_destination: int | None  # the candidate's weight in a new generation


actions = st.builds(
    Action,
    seconds=st.integers(0, 120),
    baseline_requests=st.integers(0, 3000),
    candidate_requests=st.integers(0, 600),
    candidate_error_rate=st.sampled_from([0.0, 0.01, 0.3]),
    ready=st.sampled_from([True, True, True, False]),
    command=st.none() | st.sampled_from(decide.COMMANDS),
    new_destination=st.none() | st.none() | st.none() | st.integers(0, 100),
)


def isvc_for(generation: int, destination: int, manual: str | None, on_failure: str) -> Any:
    return service(
        100 - destination,
        destination,
        generation=generation,
        manual=manual,
        rollout={"gates": GATES, "onFailure": on_failure, "steps": [1, 5, 25, 50, 100]},
    )


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 99),
    st.integers(1, 100),
    st.sampled_from(["Rollback", "Pause"]),
    st.lists(actions, min_size=1, max_size=25),
)
def test_any_sequence_of_looks_keeps_the_rollout_s_promises(
    start_weight: int, destination: int, on_failure: str, plan: list[Action]
) -> None:
    live = {"v1": 100 - start_weight, "v2": start_weight}
    generation, manual, nonce, now = 2, None, 0, 0
    rollout: dict[str, Any] | None = None
    counted = {"v1": [0, 0], "v2": [0, 0]}
    before_rollout: dict[str, int] | None = None
    for action in plan:
        now += action.seconds
        if action.new_destination is not None:
            generation += 1
            destination = action.new_destination
        if action.command is not None:
            nonce += 1
            manual = f"{action.command}/{nonce}"
        isvc = isvc_for(generation, destination, manual, on_failure)
        counts = {
            name: status.VariantCounts(requests=n, errors=e) for name, (n, e) in counted.items()
        }
        old = status.RolloutStatus.model_validate(rollout) if rollout else None
        decided = decide.decide(
            isvc,
            rollout,
            live,
            counts,
            candidate_problem=None if action.ready else "not ready",
            now=at(now),
        )
        # Status is the only state: the same status read back from JSON, the same decision.
        again = decide.decide(
            isvc,
            json.loads(json.dumps(rollout)) if rollout else None,
            json.loads(json.dumps(live)),
            counts,
            candidate_problem=None if action.ready else "not ready",
            now=at(now),
        )
        assert again == decided
        new_live = decided.live_weights
        assert sum(new_live.values()) == 100 and min(new_live.values()) >= 0
        assert new_live["v2"] <= destination, "never beyond the destination"
        new = status.RolloutStatus.model_validate(decided.rollout) if decided.rollout else None
        same_rollout = old is not None and new is not None and old.generation == new.generation
        if new is not None and not same_rollout and new.steps:
            before_rollout = dict(live)  # a rollout started from the split live now
            assert new.start_weights == live
        if new is not None and same_rollout:
            assert old is not None
            honoured = new.manual != old.manual
            if new.phase == "RolledBack" and old.phase != "RolledBack":
                assert new_live == new.start_weights == before_rollout
            elif not (honoured and new.phase == "Succeeded"):
                # Never a skipped step: at most one, to the walk's next split.
                assert new.step in (old.step, old.step + 1)
                walk = steps.plan(
                    new.start_weights or {},
                    isvc.spec.live_weights(),
                    "v2",
                    [1, 5, 25, 50, 100],
                    baseline=new.baseline,
                )
                if new.phase == "Succeeded":
                    assert new_live == isvc.spec.live_weights()
                elif new.phase != "RolledBack":
                    expected = walk[new.step - 1] if new.step else new.start_weights
                    assert new_live == expected
                    # The candidate's share only grows within a rollout.
                    assert new_live["v2"] >= live["v2"]
        if new is not None and new.phase == "RolledBack":
            assert new_live == new.start_weights
        live, rollout = dict(new_live), decided.rollout
        if decided.fresh:
            counted = {"v1": [0, 0], "v2": [0, 0]}
        share = live["v2"] / 100
        served = round(action.candidate_requests * share * 10)
        counted["v2"][0] += served
        counted["v2"][1] += round(served * action.candidate_error_rate)
        counted["v1"][0] += round(action.baseline_requests * (1 - share))
        counted["v1"][1] += round(action.baseline_requests * (1 - share) * 0.01)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 99), st.integers(1, 100))
def test_a_healthy_candidate_walks_every_step_in_order_and_succeeds(
    start_weight: int, destination: int
) -> None:
    if destination <= start_weight:
        destination = start_weight + 1
    isvc = isvc_for(2, destination, None, "Rollback")
    live = {"v1": 100 - start_weight, "v2": start_weight}
    walk = steps.plan(live, isvc.spec.live_weights(), "v2", [1, 5, 25, 50, 100], baseline="v1")
    seen = [live["v2"]]
    rollout: dict[str, Any] | None = None
    now, served = 0, 0
    for _ in range(len(walk) + 1):
        now += 60
        served += 100
        counts = {
            "v1": status.VariantCounts(requests=served * 10),
            "v2": status.VariantCounts(requests=served),
        }
        decided = decide.decide(isvc, rollout, live, counts, candidate_problem=None, now=at(now))
        rollout, live = decided.rollout, decided.live_weights
        if live["v2"] != seen[-1]:
            seen.append(live["v2"])
    assert seen == [start_weight, *(s["v2"] for s in walk)]
    assert rollout is not None and rollout["phase"] == "Succeeded"
    assert live == isvc.spec.live_weights()
