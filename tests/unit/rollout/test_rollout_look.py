"""One look: pod readings accumulated into status.rollout, then the decision."""

from __future__ import annotations

import json
from typing import Any

from kubeserve.api import status
from kubeserve.experiment import readings
from kubeserve.rollout import decide, look
from support.rollouts import BEFORE, T0, at, service

EARLY = "2024-05-01T11:00:00Z"  # the pods started before the rollout


def reading(uid: str, variant: str, requests: int, errors: int = 0) -> readings.PodReading:
    return readings.PodReading(
        uid=uid,
        name=f"pod-{uid}",
        variant=variant,
        restarts=0,
        started=EARLY,
        counters=status.PodCounters(variant=variant, requests=requests, errors=errors),
    )


def pods(v1: tuple[int, int], v2: tuple[int, int]) -> list[readings.PodReading]:
    """One pod per variant, with its counters since it started (requests, errors)."""
    return [reading("a", "v1", *v1), reading("b", "v2", *v2)]


def first() -> tuple[look.RolloutLook, dict[str, Any]]:
    previous = {"variants": {v: {"weight": w} for v, w in BEFORE.items()}}
    result = look.look(
        service(), previous, pods((5000, 10), (0, 0)), candidate_problem=None, now=T0
    )
    return result, result.apply(previous)


def test_a_start_takes_every_pod_s_counters_as_the_baseline() -> None:
    result, new_status = first()
    assert result.live_weights == {"v1": 99, "v2": 1}
    rollout = status.RolloutStatus.model_validate(new_status["rollout"])
    assert rollout.pods is not None and rollout.pods["a"].requests == 5000
    assert rollout.variants is not None and rollout.variants["v1"].requests == 0
    assert result.condition is not None
    assert result.condition["lastTransitionTime"] == "2024-05-01T12:00:00Z"
    assert new_status["conditions"] == [result.condition]


def test_the_counts_since_the_start_drive_the_steps() -> None:
    _, state = first()
    result = look.look(
        service(), state, pods((6000, 12), (100, 0)), candidate_problem=None, now=at(60)
    )
    state = result.apply(state)
    rollout = status.RolloutStatus.model_validate(state["rollout"])
    assert rollout.variants is not None
    assert (rollout.variants["v1"].requests, rollout.variants["v1"].errors) == (1000, 2)
    assert rollout.variants["v2"].requests == 100
    assert rollout.step == 2 and result.live_weights == {"v1": 95, "v2": 5}
    assert rollout.last_collected == "2024-05-01T12:01:00Z"
    assert result.events[0][0] == decide.ADVANCED


def test_a_candidate_with_more_errors_is_rolled_back_through_the_readings() -> None:
    _, state = first()
    result = look.look(
        service(), state, pods((25000, 410), (2000, 140)), candidate_problem=None, now=at(60)
    )
    assert result.live_weights == BEFORE
    rollout = status.RolloutStatus.model_validate(result.rollout)
    assert rollout.phase == "RolledBack"
    assert rollout.variants is not None and rollout.variants["v2"].errors == 140
    assert result.condition is not None and result.condition["status"] == "False"
    # The condition changed status: a new transition time.
    assert result.condition["lastTransitionTime"] == "2024-05-01T12:01:00Z"


def test_a_quiet_look_writes_nothing_new() -> None:
    _, state = first()
    state = look.look(
        service(), state, pods((5050, 10), (10, 0)), candidate_problem=None, now=at(90)
    ).apply(state)
    quiet = look.look(
        service(), state, pods((5050, 10), (10, 0)), candidate_problem=None, now=at(120)
    )
    assert quiet.rollout == state["rollout"]
    assert quiet.condition is not None
    assert quiet.apply(state) == state
    assert not quiet.events


def test_the_next_look_is_the_same_from_the_status_read_back() -> None:
    _, state = first()
    state = look.look(
        service(), state, pods((5050, 10), (10, 0)), candidate_problem=None, now=at(30)
    ).apply(state)
    again = json.loads(json.dumps(state))
    one = look.look(
        service(), state, pods((6000, 10), (200, 1)), candidate_problem=None, now=at(61)
    )
    two = look.look(
        service(), again, pods((6000, 10), (200, 1)), candidate_problem=None, now=at(61)
    )
    assert one == two


def test_without_spec_rollout_the_rollout_and_its_condition_go() -> None:
    _, state = first()
    result = look.look(
        service(with_rollout=False, generation=3), state, [], candidate_problem=None, now=at(60)
    )
    assert result.rollout is None and result.condition is None
    assert result.live_weights == {"v1": 0, "v2": 100}
    cleared = result.apply(state)
    assert "rollout" not in cleared and cleared["conditions"] == []


def test_apply_keeps_other_writers_conditions_in_place() -> None:
    result, _ = first()
    old = {
        "conditions": [
            {"type": "Ready", "status": "True"},
            {"type": decide.CONDITION, "status": "False"},
            {"type": "ExperimentConclusive", "status": "False"},
        ]
    }
    types = [c["type"] for c in result.apply(old)["conditions"]]
    assert types == ["Ready", decide.CONDITION, "ExperimentConclusive"]


def test_a_resume_counts_again_from_the_pods_counters_now() -> None:
    isvc = service(rollout={"onFailure": "Pause"})
    previous = {"variants": {v: {"weight": w} for v, w in BEFORE.items()}}
    state = look.look(
        isvc, previous, pods((5000, 10), (0, 0)), candidate_problem=None, now=T0
    ).apply(previous)
    paused = look.look(
        isvc, state, pods((30000, 410), (2000, 140)), candidate_problem=None, now=at(60)
    )
    state = paused.apply(state)
    assert state["rollout"]["phase"] == "Paused"
    resume = service(rollout={"onFailure": "Pause"}, manual="resume/1")
    resumed = look.look(
        resume, state, pods((31000, 420), (2100, 150)), candidate_problem=None, now=at(120)
    )
    rollout = status.RolloutStatus.model_validate(resumed.rollout)
    assert rollout.phase == "Progressing" and rollout.failed_checks == 0
    assert rollout.variants is not None and rollout.variants["v2"].requests == 0
    assert rollout.pods is not None and rollout.pods["b"].requests == 2100


def test_a_command_look_that_read_nothing_keeps_every_pod_s_counters() -> None:
    _, state = first()
    state = look.look(
        service(), state, pods((5100, 10), (5, 0)), candidate_problem=None, now=at(30)
    ).apply(state)
    before = status.RolloutStatus.model_validate(state["rollout"])
    paused = look.look(service(manual="pause/1"), state, None, candidate_problem=None, now=at(40))
    state = paused.apply(state)
    rollout = status.RolloutStatus.model_validate(state["rollout"])
    assert rollout.phase == "Paused"
    assert rollout.pods == before.pods and rollout.variants == before.variants
    assert rollout.last_collected == "2024-05-01T12:00:30Z", "nothing was collected at 40s"
    later = look.look(
        service(manual="pause/1"),
        state,
        pods((5200, 10), (9, 0)),
        candidate_problem=None,
        now=at(60),
    )
    counted = status.RolloutStatus.model_validate(later.rollout)
    assert counted.variants is not None and counted.variants["v2"].requests == 9


def test_an_empty_reading_is_a_reading_of_no_pods() -> None:
    _, state = first()
    result = look.look(service(), state, [], candidate_problem=None, now=at(30))
    assert "pods" not in (result.rollout or {})


def test_a_start_that_read_nothing_counts_from_the_last_look_s_counters() -> None:
    _, state = first()
    state = look.look(
        service(), state, pods((5100, 10), (5, 0)), candidate_problem=None, now=at(30)
    ).apply(state)
    # The spec changes mid-rollout (generation 3): the look that starts again reads nothing.
    again = look.look(service(generation=3), state, None, candidate_problem=None, now=at(40))
    state = again.apply(state)
    rollout = status.RolloutStatus.model_validate(state["rollout"])
    assert rollout.generation == 3 and rollout.start_time == "2024-05-01T12:00:40Z"
    assert rollout.variants is not None and rollout.variants["v2"].requests == 0
    assert rollout.pods is not None and rollout.pods["b"].requests == 5
    assert rollout.last_collected == "2024-05-01T12:00:30Z"
    later = look.look(
        service(generation=3), state, pods((5300, 10), (12, 0)), candidate_problem=None, now=at(70)
    )
    counted = status.RolloutStatus.model_validate(later.rollout)
    assert counted.variants is not None and counted.variants["v2"].requests == 7


def test_a_start_that_read_nothing_takes_no_baseline_older_than_an_interval() -> None:
    _, state = first()
    state = look.look(
        service(), state, pods((5100, 10), (5, 0)), candidate_problem=None, now=at(30)
    ).apply(state)
    again = look.look(service(generation=3), state, None, candidate_problem=None, now=at(61))
    rollout = status.RolloutStatus.model_validate(again.rollout)
    assert rollout.pods is None and rollout.last_collected is None


def test_two_looks_in_the_same_wait_with_nothing_new_give_the_same_status_to_the_byte() -> None:
    _, state = first()
    state = look.look(
        service(), state, pods((5100, 10), (10, 0)), candidate_problem=None, now=at(30)
    ).apply(state)
    assert "until 2024-05-01T12:01:00Z" in state["rollout"]["lastDecision"]["reason"]
    again = look.look(
        service(), state, pods((5100, 10), (10, 0)), candidate_problem=None, now=at(45)
    ).apply(state)
    assert json.dumps(again["rollout"]) == json.dumps(state["rollout"])


def test_the_variants_show_their_rates_as_the_experiment_s_do() -> None:
    _, state = first()
    state = look.look(
        service(), state, pods((6000, 20), (100, 1)), candidate_problem=None, now=at(30)
    ).apply(state)
    variants = state["rollout"]["variants"]
    assert (variants["v1"]["errorRate"], variants["v2"]["errorRate"]) == (0.01, 0.01)


def test_the_hold_says_why_the_candidate_is_not_ready() -> None:
    _, state = first()
    problem = "Deployment digits-v2: 0/1 replicas updated, 0/1 ready"
    held = look.look(
        service(), state, pods((5100, 10), (5, 0)), candidate_problem=problem, now=at(30)
    )
    assert held.events == [
        (decide.HOLDING, f"Hold at 1: the candidate's pods are not ready: {problem}")
    ]


def test_the_status_shows_the_interval_the_caller_looks_at() -> None:
    previous = {"variants": {v: {"weight": w} for v, w in BEFORE.items()}}
    result = look.look(
        service(),
        previous,
        pods((5000, 10), (0, 0)),
        candidate_problem=None,
        now=T0,
        interval_seconds=1.0,
    )
    assert (result.rollout or {})["intervalSeconds"] == 1.0
    default = look.look(
        service(), previous, pods((5000, 10), (0, 0)), candidate_problem=None, now=T0
    )
    assert (default.rollout or {})["intervalSeconds"] == 30.0
