"""The rollout's state machine, one transition per test."""

from __future__ import annotations

from kubeserve.api import spec, status
from kubeserve.rollout import decide
from support.rollouts import BEFORE, T0, at, service

UNREADY = "Deployment digits-v2: 1/2 replicas updated, 0/2 ready"


def counts(
    v1: tuple[int, int] = (0, 0), v2: tuple[int, int] = (0, 0)
) -> dict[str, status.VariantCounts]:
    """Requests and errors per variant since the rollout started."""
    return {
        name: status.VariantCounts(requests=n, errors=e)
        for name, (n, e) in (("v1", v1), ("v2", v2))
    }


def step(
    isvc: spec.InferenceService,
    previous: decide.Decided | None,
    seconds: float,
    *,
    served: dict[str, status.VariantCounts] | None = None,
    problem: str | None = None,
    before: dict[str, int] | None = None,
    interval: float | None = None,
) -> decide.Decided:
    """Decide once, from the last decision's status (or `before`, the split live before)."""
    raw = previous.rollout if previous else None
    live = previous.live_weights if previous else before
    return decide.decide(
        isvc,
        raw,
        live,
        served or counts(),
        candidate_problem=problem,
        now=at(seconds),
        interval_seconds=interval,
    )


def started(isvc: spec.InferenceService | None = None) -> decide.Decided:
    return step(isvc or service(), None, 0, before=BEFORE)


def rollout_of(decided: decide.Decided) -> status.RolloutStatus:
    assert decided.rollout is not None
    return status.RolloutStatus.model_validate(decided.rollout)


def walk_to(steps: int) -> tuple[decide.Decided, float, int]:
    """Start and advance `steps` times on healthy counts; give the decision, time, requests."""
    decided, now, served = started(), 0.0, 0
    for _ in range(steps - 1):
        now += 60
        served += 100
        decided = step(service(), decided, now, served=counts((served * 10, 0), (served, 0)))
    return decided, now, served


# --- no rollout ---------------------------------------------------------------------------------


def test_without_spec_rollout_the_spec_weights_are_live_at_once() -> None:
    decided = step(service(with_rollout=False), None, 0, before=BEFORE)
    assert decided.live_weights == {"v1": 0, "v2": 100}
    assert decided.rollout is None and decided.condition is None and not decided.events


def test_a_brand_new_resource_gets_its_destination_at_once() -> None:
    decided = step(service(), None, 0, before=None)
    assert decided.live_weights == {"v1": 0, "v2": 100}
    assert decided.rollout is None


def test_an_unchanged_split_needs_no_rollout() -> None:
    decided = step(service(), None, 0, before={"v1": 0, "v2": 100})
    assert decided.rollout is None and decided.live_weights == {"v1": 0, "v2": 100}


# --- start --------------------------------------------------------------------------------------


def test_a_new_generation_raising_the_candidate_starts_at_the_first_step() -> None:
    decided = started()
    rollout = rollout_of(decided)
    assert decided.live_weights == {"v1": 99, "v2": 1}
    assert decided.fresh
    assert rollout.phase == "Progressing" and rollout.progress == "Progressing 1/5"
    assert (rollout.step, rollout.steps, rollout.generation) == (1, 5, 2)
    assert rollout.start_weights == BEFORE and rollout.baseline == "v1"
    assert rollout.start_time == rollout.step_start_time == "2024-05-01T12:00:00Z"
    assert rollout.last_decision is not None and rollout.last_decision.action == "Start"
    [(reason, message)] = decided.events
    assert reason == decide.STARTED
    assert message.startswith("Start v2 0→100 in 5 steps (1, 5, 25, 50, 100), baseline v1")
    assert decided.condition == {
        "type": "RolloutProgressing",
        "status": "True",
        "reason": "Progressing",
        "message": f"Progressing 1/5: {message}",
    }


def test_the_baseline_is_the_spec_s_or_the_variant_with_most_traffic() -> None:
    three = service().model_copy(deep=True)
    model = three.spec.variants[0].model
    variants = [
        spec.Variant(name="v1", weight=0, model=model),
        spec.Variant(name="v2", weight=100, model=model),
        spec.Variant(name="v3", weight=0, model=model),
    ]
    isvc = three.model_copy(update={"spec": three.spec.model_copy(update={"variants": variants})})
    before = {"v1": 30, "v2": 0, "v3": 70}
    assert rollout_of(step(isvc, None, 0, before=before)).baseline == "v3"
    chosen = service(rollout={"baseline": "v1"})
    assert rollout_of(step(chosen, None, 0, before=BEFORE)).baseline == "v1"


def test_a_candidate_not_ready_at_the_start_holds_at_step_0_then_takes_step_1() -> None:
    decided = step(service(), None, 0, before=BEFORE, problem=UNREADY)
    rollout = rollout_of(decided)
    assert (rollout.phase, rollout.step, rollout.progress) == ("Holding", 0, "Holding 0/5")
    assert decided.live_weights == BEFORE
    assert decided.events[0][1].endswith(
        f"held at 0: the candidate's pods are not ready: {UNREADY}"
    )
    assert decided.condition is not None and decided.condition["status"] == "True"
    decided = step(service(), decided, 30)
    assert rollout_of(decided).step == 1 and decided.live_weights == {"v1": 99, "v2": 1}
    assert rollout_of(decided).step_start_time == "2024-05-01T12:00:30Z"
    assert decided.events == [(decide.ADVANCED, "Advance 0→1: the candidate's pods are ready")]


def test_a_lower_destination_is_applied_at_once() -> None:
    decided = step(service(70, 30), None, 0, before={"v1": 50, "v2": 50})
    rollout = rollout_of(decided)
    assert decided.live_weights == {"v1": 70, "v2": 30}
    assert (rollout.phase, rollout.steps, rollout.progress) == ("Succeeded", 0, "Succeeded")
    assert rollout.last_decision is not None and rollout.last_decision.action == "Apply"
    assert decided.events[0][0] == decide.APPLIED
    assert decided.condition is not None and decided.condition["status"] == "False"


# --- steps --------------------------------------------------------------------------------------


def test_a_step_holds_until_its_duration_and_requests_are_met() -> None:
    decided = started()
    early = step(service(), decided, 30, served=counts((5000, 0), (500, 0)))
    assert rollout_of(early).step == 1 and early.live_weights == {"v1": 99, "v2": 1}
    assert rollout_of(early).last_decision.action == "Hold"  # type: ignore[union-attr]
    assert "the step's 60s (until 2024-05-01T12:01:00Z)" in rollout_of(early).last_decision.reason  # type: ignore[union-attr]
    few = step(service(), early, 90, served=counts((5000, 0), (50, 0)))
    assert rollout_of(few).step == 1
    assert "50 of 100 requests" in rollout_of(few).last_decision.reason  # type: ignore[union-attr]
    assert not few.events
    ok = step(service(), few, 120, served=counts((10000, 0), (100, 0)))
    rollout = rollout_of(ok)
    assert rollout.step == 2 and ok.live_weights == {"v1": 95, "v2": 5}
    assert rollout.step_start_requests == 100
    assert rollout.step_start_time == "2024-05-01T12:02:00Z"
    [(reason, message)] = ok.events
    assert reason == decide.ADVANCED
    assert message.startswith("Advance 1→5: errorRate +0.00pp [")


def test_requests_count_from_the_start_of_the_step() -> None:
    decided, now, served = walk_to(2)
    assert rollout_of(decided).step_start_requests == served
    held = step(service(), decided, now + 60, served=counts((1, 0), (served + 99, 0)))
    assert rollout_of(held).step == 2


def test_one_look_advances_at_most_one_step() -> None:
    decided = started()
    lots = counts((10**6, 0), (10**6, 0))
    later = step(service(), decided, 3600, served=lots)
    assert rollout_of(later).step == 2
    # The next step needs its own minimum duration and requests.
    again = step(service(), later, 3601, served=lots)
    assert rollout_of(again).step == 2


def test_the_last_step_applies_the_destination_and_succeeds() -> None:
    decided, now, _ = walk_to(5)
    rollout = rollout_of(decided)
    assert (rollout.phase, rollout.step, rollout.progress) == ("Succeeded", 5, "Succeeded 5/5")
    assert decided.live_weights == {"v1": 0, "v2": 100}
    [(reason, message)] = decided.events
    assert reason == decide.SUCCEEDED and "Advance 50→100" in message
    assert decided.condition is not None
    assert (decided.condition["status"], decided.condition["reason"]) == ("False", "Succeeded")
    # And it stays there.
    stays = step(service(), decided, now + 600, served=counts((1, 1), (1, 1)))
    assert stays.rollout == decided.rollout and not stays.events


# --- failures -----------------------------------------------------------------------------------


HARM = counts((20000, 400), (2000, 140))  # 2% against 7%


def test_harm_rolls_back_at_once_to_the_split_before_the_rollout() -> None:
    decided, now, _ = walk_to(3)
    assert decided.live_weights == {"v1": 75, "v2": 25}
    failed = step(service(), decided, now + 1, served=HARM)
    rollout = rollout_of(failed)
    assert rollout.phase == "RolledBack" and failed.live_weights == BEFORE
    assert rollout.gates is not None and rollout.gates[0].result == "Harm"
    [(reason, message)] = failed.events
    assert reason == decide.ROLLED_BACK and reason in decide.WARNING_REASONS
    assert message.startswith("Roll back 25→0: harm on errorRate +5.00pp [")
    assert failed.condition is not None
    assert (failed.condition["status"], failed.condition["reason"]) == ("False", "RolledBack")
    # It stays rolled back, however healthy the counts, until a new generation.
    stays = step(service(), failed, now + 3600, served=counts((10**6, 0), (10**6, 0)))
    assert stays.rollout == failed.rollout and stays.live_weights == BEFORE
    again = step(service(generation=3), failed, now + 3601)
    assert rollout_of(again).phase == "Progressing" and again.live_weights == {"v1": 99, "v2": 1}
    assert rollout_of(again).start_weights == BEFORE


def test_harm_with_on_failure_pause_holds_the_split() -> None:
    isvc = service(rollout={"onFailure": "Pause"})
    decided = step(isvc, started(isvc), 60, served=HARM)
    rollout = rollout_of(decided)
    assert rollout.phase == "Paused" and decided.live_weights == {"v1": 99, "v2": 1}
    assert decided.events[0][0] == decide.PAUSED
    # Paused: the gates are still shown, nothing moves.
    later = step(isvc, decided, 6000, served=counts((10**6, 0), (10**6, 0)))
    assert rollout_of(later).phase == "Paused" and later.live_weights == {"v1": 99, "v2": 1}


def test_a_rate_over_max_is_a_failed_check_and_the_third_rolls_back() -> None:
    isvc = service(rollout={"gates": [{"metric": "errorRate", "maxIncrease": 0.5, "max": 0.05}]})
    decided = started(isvc)
    over = counts((100, 5), (100, 10))
    for check in (1, 2):
        decided = step(isvc, decided, 60 * check, served=over)
        rollout = rollout_of(decided)
        assert rollout.failed_checks == check and rollout.step == 1
        assert decided.events == [
            (decide.CHECK_FAILED, f"Failed check {check} of 3: errorRate 0.1 over max 0.05")
        ]
    decided = step(isvc, decided, 180, served=over)
    assert rollout_of(decided).phase == "RolledBack" and decided.live_weights == BEFORE
    assert "3 failed checks" in decided.events[0][1]


def test_a_failed_check_holds_the_step_even_when_it_has_enough() -> None:
    isvc = service(rollout={"gates": [{"metric": "errorRate", "maxIncrease": 0.5, "max": 0.05}]})
    decided = step(isvc, started(isvc), 600, served=counts((1000, 50), (1000, 60)))
    assert rollout_of(decided).step == 1
    assert "waiting for a failed check" in rollout_of(decided).last_decision.reason  # type: ignore[union-attr]


def test_candidate_pods_not_ready_hold_without_a_failed_check() -> None:
    isvc = service(rollout={"gates": [{"metric": "errorRate", "maxIncrease": 0.5, "max": 0.05}]})
    decided = started(isvc)
    held = step(isvc, decided, 600, served=counts((1000, 0), (1000, 100)), problem=UNREADY)
    rollout = rollout_of(held)
    assert (rollout.phase, rollout.failed_checks, rollout.step) == ("Holding", 0, 1)
    assert held.live_weights == {"v1": 99, "v2": 1}
    said = f"Hold at 1: the candidate's pods are not ready: {UNREADY}"
    assert held.events == [(decide.HOLDING, said)]
    assert rollout.last_decision is not None and rollout.last_decision.reason == said
    # Still not ready: no new event, no new decision time.
    still = step(isvc, held, 630, served=counts((1000, 0), (1000, 100)), problem=UNREADY)
    assert not still.events and still.rollout == held.rollout
    ready = step(isvc, still, 660, served=counts((1000, 0), (1000, 0)))
    assert rollout_of(ready).phase == "Progressing" and rollout_of(ready).step == 2


def test_holding_still_rolls_back_on_harm() -> None:
    decided = step(service(), started(), 60, served=HARM, problem=UNREADY)
    assert rollout_of(decided).phase == "RolledBack"


# --- spec changes -------------------------------------------------------------------------------


def test_a_new_generation_mid_rollout_restarts_from_the_live_split() -> None:
    decided, now, _ = walk_to(3)  # at 25
    again = step(service(generation=3), decided, now + 1)
    rollout = rollout_of(again)
    assert rollout.start_weights == {"v1": 75, "v2": 25}
    assert again.live_weights == {"v1": 50, "v2": 50}
    assert (rollout.step, rollout.steps, rollout.generation) == (1, 2, 3)
    assert again.fresh and "the spec changed mid-rollout" in again.events[0][1]


def test_a_new_generation_lowering_the_candidate_mid_rollout_applies_at_once() -> None:
    decided, now, _ = walk_to(3)
    lower = step(service(90, 10, generation=3), decided, now + 1)
    assert lower.live_weights == {"v1": 90, "v2": 10}
    assert rollout_of(lower).phase == "Succeeded"
    assert "does not grow (25→10)" in lower.events[0][1]


def test_removing_spec_rollout_applies_the_spec_weights() -> None:
    decided, now, _ = walk_to(2)
    gone = step(service(with_rollout=False, generation=3), decided, now + 1)
    assert gone.rollout is None and gone.live_weights == {"v1": 0, "v2": 100}


# --- manual commands ----------------------------------------------------------------------------


def test_promote_applies_the_destination_once() -> None:
    decided, now, _ = walk_to(2)
    promoted = step(service(manual="promote/1"), decided, now + 1)
    rollout = rollout_of(promoted)
    assert rollout.phase == "Succeeded" and promoted.live_weights == {"v1": 0, "v2": 100}
    assert rollout.manual == "promote/1"
    assert promoted.events[0] == (decide.PROMOTED, "Promote 5→100: kubeserve rollout promote")


def test_promote_after_a_rollback_overrides_the_gates() -> None:
    failed = step(service(), started(), 60, served=HARM)
    promoted = step(service(manual="promote/2"), failed, 61)
    assert rollout_of(promoted).phase == "Succeeded"
    assert promoted.live_weights == {"v1": 0, "v2": 100}


def test_abort_rolls_back() -> None:
    decided, now, _ = walk_to(3)
    aborted = step(service(manual="abort/1"), decided, now + 1)
    assert rollout_of(aborted).phase == "RolledBack" and aborted.live_weights == BEFORE
    assert aborted.events[0] == (decide.ROLLED_BACK, "Roll back 25→0: kubeserve rollout abort")


def test_pause_holds_and_resume_continues_with_fresh_evidence() -> None:
    isvc = service(rollout={"gates": [{"metric": "errorRate", "maxIncrease": 0.5, "max": 0.05}]})
    decided = step(isvc, started(isvc), 60, served=counts((100, 5), (100, 10)))
    assert rollout_of(decided).failed_checks == 1
    paused = step(service(manual="pause/1", rollout=isvc.spec.rollout.to_wire()), decided, 61)  # type: ignore[union-attr]
    assert rollout_of(paused).phase == "Paused"
    assert paused.condition is not None and paused.condition["status"] == "False"
    held = step(service(manual="pause/1", rollout=isvc.spec.rollout.to_wire()), paused, 6000)  # type: ignore[union-attr]
    assert rollout_of(held).phase == "Paused" and held.live_weights == {"v1": 99, "v2": 1}
    resumed = step(service(manual="resume/1", rollout=isvc.spec.rollout.to_wire()), held, 6001)  # type: ignore[union-attr]
    rollout = rollout_of(resumed)
    assert (rollout.phase, rollout.failed_checks, rollout.gates) == ("Progressing", 0, None)
    assert (rollout.step_start_time, rollout.step_start_requests) == ("2024-05-01T13:40:01Z", 0)
    assert resumed.fresh and resumed.events[0][0] == decide.RESUMED


def test_a_command_is_honoured_once() -> None:
    decided, now, _ = walk_to(2)
    paused = step(service(manual="pause/1"), decided, now + 1)
    resumed = step(service(manual="resume/1"), paused, now + 2)
    # The same annotation value again is not a new command.
    same = step(service(manual="resume/1"), resumed, now + 3)
    assert rollout_of(same).phase == "Progressing" and not same.events
    # A new nonce is.
    again = step(service(manual="pause/2"), same, now + 4)
    assert rollout_of(again).phase == "Paused"


def test_a_command_given_before_the_rollout_started_is_not_for_it() -> None:
    decided = step(service(manual="abort/old"), None, 0, before=BEFORE)
    assert rollout_of(decided).manual == "abort/old"
    later = step(service(manual="abort/old"), decided, 60, served=counts((1000, 0), (100, 0)))
    assert rollout_of(later).step == 2


def test_a_command_that_does_not_apply_is_recorded_and_ignored() -> None:
    decided, now, _ = walk_to(2)
    ignored = step(service(manual="resume/1"), decided, now + 1)
    rollout = rollout_of(ignored)
    assert rollout.phase == "Progressing" and rollout.manual == "resume/1"
    assert ignored.live_weights == decided.live_weights
    assert ignored.events == [
        (
            decide.IGNORED,
            "Ignored kubeserve rollout resume: resume does nothing while the rollout is "
            "Progressing",
        )
    ]
    garbage = step(service(manual="launch/1"), ignored, now + 2)
    assert "'launch/1' is not <command>/<nonce>" in garbage.events[0][1]
    assert rollout_of(garbage).manual == "launch/1"


def test_parse_command_reads_the_command_before_the_nonce() -> None:
    assert decide.parse_command("promote/2024-05-01T12:00:00Z") == "promote"
    assert decide.parse_command("Abort") == "abort"
    assert decide.parse_command("nope/1") is None
    assert decide.parse_command(None) is None


# --- status is the only state -------------------------------------------------------------------


def test_an_unreadable_previous_rollout_starts_again_from_its_split() -> None:
    decided = decide.decide(
        service(), {"phase": "Bogus"}, BEFORE, counts(), candidate_problem=None, now=T0
    )
    assert rollout_of(decided).step == 1


def test_the_live_split_before_comes_from_status() -> None:
    assert decide.live_split_before(None) is None
    assert decide.live_split_before({"variants": {"v1": {"weight": 90}, "v2": {}}}) == {
        "v1": 90,
        "v2": 0,
    }
    assert decide.live_split_before(
        {"variants": {"v1": {"weight": 90}}, "rollout": {"liveWeights": {"v1": 60, "v2": 40}}}
    ) == {"v1": 60, "v2": 40}
    assert decide.live_split_before({"variants": {"v1": {"weight": "x"}}}) is None


def test_a_hold_with_the_same_reason_keeps_its_time() -> None:
    decided = started()
    first = step(service(), decided, 30, served=counts((10, 0), (10, 0)))
    # Waiting for the step's duration says until when: nothing new, the same status.
    second = step(service(), first, 45, served=counts((10, 0), (10, 0)))
    assert second.rollout == first.rollout
    # Past the step's duration, still short of requests: a new reason, then the same again.
    waiting = step(service(), second, 70, served=counts((10, 0), (10, 0)))
    later = step(service(), waiting, 100, served=counts((10, 0), (10, 0)))
    assert later.rollout == waiting.rollout
    assert rollout_of(later).last_decision.time == "2024-05-01T12:01:10Z"  # type: ignore[union-attr]
