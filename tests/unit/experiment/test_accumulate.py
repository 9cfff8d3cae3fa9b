"""Adding pod counters to an experiment's counts: resets, new and gone pods, unreadable ones."""

from __future__ import annotations

import dataclasses
import datetime
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from kubeserve.api import status
from kubeserve.experiment import accumulate, readings

START = datetime.datetime(2025, 1, 1, 12, 0, tzinfo=datetime.UTC)
BEFORE, AFTER = "2025-01-01T11:00:00Z", "2025-01-01T12:30:00Z"
WEIGHTS = {"a": 50, "b": 50}
SLOW_AFTER = readings.BOUNDS.index(0.25)


def counters(
    variant: str, requests: float, *, restarts: int = 0, **more: float
) -> status.PodCounters:
    buckets = [0.0] * len(readings.BOUNDS)
    buckets[0] = requests - more.pop("slow", 0.0)
    buckets[-1] = requests - buckets[0]
    return status.PodCounters(
        variant=variant, restarts=restarts, requests=requests, latency_buckets=buckets, **more
    )


def reading(
    uid: str,
    variant: str,
    requests: float | None,
    *,
    restarts: int = 0,
    started: str = BEFORE,
    **more: float,
) -> readings.PodReading:
    return readings.PodReading(
        uid=uid,
        name=f"pod-{uid}",
        variant=variant,
        restarts=restarts,
        started=started,
        counters=None
        if requests is None
        else counters(variant, requests, restarts=restarts, **more),
        problem="connection refused" if requests is None else None,
    )


def run(
    looks: list[list[readings.PodReading] | None], weights: dict[str, int] = WEIGHTS
) -> accumulate.Accumulated:
    variants: dict[str, status.VariantCounts] = {}
    pods: dict[str, status.PodCounters] = {}
    result = None
    for looked in looks:
        result = accumulate.accumulate(
            variants, pods, looked, weights, start_time=START, slow_after=SLOW_AFTER
        )
        variants, pods = result.variants, result.pods
    assert result is not None
    return result


def test_a_pod_serving_before_the_start_is_a_baseline_then_counts_its_increase() -> None:
    first = run([[reading("1", "a", 100)]])
    assert first.variants["a"].requests == 0 and first.pods["1"].requests == 100
    later = run([[reading("1", "a", 100)], [reading("1", "a", 130, errors=2)]])
    assert (later.variants["a"].requests, later.variants["a"].errors) == (30, 2)


def test_a_pod_started_after_the_start_counts_everything_it_has() -> None:
    result = run([[reading("1", "a", 40, started=AFTER)]])
    assert result.variants["a"].requests == 40


def test_a_restart_counts_the_new_values_from_zero() -> None:
    result = run(
        [
            [reading("1", "a", 100)],
            [reading("1", "a", 150)],
            [reading("1", "a", 20, restarts=1)],
        ]
    )
    assert result.variants["a"].requests == 50 + 20


def test_a_restart_seen_only_in_the_restart_count_counts_from_zero() -> None:
    # The restarted server served more than before already: the counter alone hides it.
    result = run([[reading("1", "a", 100)], [reading("1", "a", 300, restarts=1)]])
    assert result.variants["a"].requests == 300


def test_a_counter_below_its_last_value_is_a_restart() -> None:
    result = run(
        [[reading("1", "a", 100)], [reading("1", "a", 100, feedback=5)], [reading("1", "a", 7)]]
    )
    assert result.variants["a"].requests == 7
    assert result.variants["a"].feedback == 5


def test_a_value_sum_that_goes_down_is_not_a_restart() -> None:
    result = run(
        [
            [reading("1", "a", 10, values=1, value_sum=5.0, value_squares=25.0)],
            [reading("1", "a", 12, values=2, value_sum=2.0, value_squares=34.0)],
        ]
    )
    counts = result.variants["a"]
    assert (counts.requests, counts.values, counts.value_sum, counts.value_squares) == (
        2,
        1,
        -3.0,
        9.0,
    )


def test_an_unreadable_pod_keeps_its_last_counters_and_is_listed_with_the_reason() -> None:
    result = run([[reading("1", "a", 100)], [reading("1", "a", None)]])
    assert result.pods["1"].requests == 100
    assert result.unreadable == [status.UnreadablePod(pod="pod-1", reason="connection refused")]
    back = run([[reading("1", "a", 100)], [reading("1", "a", None)], [reading("1", "a", 160)]])
    assert back.variants["a"].requests == 60 and not back.unreadable


def test_a_gone_pod_is_dropped_and_what_it_was_counted_for_stays() -> None:
    result = run(
        [
            [reading("1", "a", 10), reading("2", "a", 10)],
            [reading("1", "a", 15), reading("2", "a", 30)],
            [reading("1", "a", 15)],
        ]
    )
    assert set(result.pods) == {"1"}
    assert result.variants["a"].requests == 5 + 20
    assert result.variants["a"].pods == 1


def test_no_reading_keeps_every_pod_and_the_next_reading_counts_since_the_last() -> None:
    first = [reading("1", "a", 10), reading("2", "b", 10)]
    result = run([first, [reading("1", "a", 15), reading("2", "b", 30)], None])
    assert set(result.pods) == {"1", "2"} and not result.unreadable and result.added == 0
    assert (result.variants["a"].pods, result.variants["b"].pods) == (1, 1)
    later = run([first, None, [reading("1", "a", 19), reading("2", "b", 40)]])
    assert (later.variants["a"].requests, later.variants["b"].requests) == (9, 30)


def test_an_empty_reading_means_every_pod_is_gone() -> None:
    result = run([[reading("1", "a", 10)], []])
    assert result.pods == {} and result.variants["a"].pods == 0


def test_slow_requests_are_those_above_the_threshold_bucket() -> None:
    result = run([[reading("1", "a", 10)], [reading("1", "a", 30, slow=8)]])
    assert (result.variants["a"].requests, result.variants["a"].slow) == (20, 8)


def test_expected_shares_the_new_requests_by_the_live_weights() -> None:
    result = run(
        [
            [reading("1", "a", 0), reading("2", "b", 0)],
            [reading("1", "a", 70), reading("2", "b", 30)],
        ],
        {"a": 80, "b": 20, "shadow": 0},
    )
    assert result.added == 100
    assert (result.variants["a"].expected, result.variants["b"].expected) == (80.0, 20.0)
    assert "shadow" not in result.variants


def test_a_variant_taken_out_of_the_split_keeps_its_counts_and_is_not_read() -> None:
    looks = [
        [reading("1", "a", 0), reading("2", "b", 0)],
        [reading("1", "a", 10), reading("2", "b", 10)],
    ]
    before = run(looks)
    after = accumulate.accumulate(
        before.variants,
        before.pods,
        [reading("1", "a", 20), reading("2", "b", 50)],
        {"a": 100, "b": 0},
        start_time=START,
        slow_after=SLOW_AFTER,
    )
    assert after.variants["b"].requests == 10 and after.variants["b"].weight == 0
    assert after.variants["a"].requests == 20 and "2" not in after.pods


# The property: random histories of pods, looks, restarts, failures; every count is counted
# once, and only the documented losses are missing.


@dataclasses.dataclass
class Pod:
    uid: str
    variant: str
    started: str
    value: int = 0
    restarts: int = 0
    unread: int = 0  # served since the last read: counted at the next read, lost at a restart
    baseline: bool = False  # serving before the start and never read: its first read counts 0


Step = tuple[str, int, int]  # (what, which pod or variant, how many)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("serve"), st.integers(0, 9), st.integers(1, 50)),
        st.tuples(st.just("restart"), st.integers(0, 9), st.just(0)),
        st.tuples(st.just("new"), st.integers(0, 1), st.just(0)),
        st.tuples(st.just("gone"), st.integers(0, 9), st.just(0)),
        # Which pods a look cannot read: a bit per pod; mostly none.
        st.tuples(st.just("look"), st.one_of(st.just(0), st.integers(0, 1023)), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(before=st.lists(st.integers(0, 1), min_size=0, max_size=4), history=steps)
def test_no_count_is_lost_or_counted_twice_but_the_documented_losses(
    before: list[int], history: list[Step]
) -> None:
    variants_ = ["a", "b"]
    pods: list[Pod] = [
        Pod(str(i), variants_[v], BEFORE, value=100, baseline=True) for i, v in enumerate(before)
    ]
    truth = {"a": 0, "b": 0}
    uids = itertools.count()
    counts: dict[str, status.VariantCounts] = {}
    last: dict[str, status.PodCounters] = {}

    def look(failing: int) -> None:
        nonlocal counts, last
        looked = []
        for i, pod in enumerate(pods):
            unreadable = bool(failing >> i & 1)
            looked.append(
                reading(
                    pod.uid,
                    pod.variant,
                    None if unreadable else pod.value,
                    restarts=pod.restarts,
                    started=pod.started,
                )
            )
            if not unreadable:
                if not pod.baseline:
                    truth[pod.variant] += pod.unread
                pod.unread, pod.baseline = 0, False
        result = accumulate.accumulate(
            counts, last, looked, WEIGHTS, start_time=START, slow_after=SLOW_AFTER
        )
        counts, last = result.variants, result.pods
        assert set(last) <= {p.uid for p in pods}

    for what, which, n in history:
        if what == "look":
            look(which)
        elif what == "new":
            pods.append(Pod(f"n{next(uids)}", variants_[which], AFTER))  # uids are unique
        elif pods:
            pod = pods[which % len(pods)]
            if what == "serve":
                pod.value += n
                pod.unread += n
            elif what == "restart":
                pod.value, pod.unread = 0, 0  # what it served since its last read is lost
                pod.restarts += 1
            elif what == "gone":
                pods.remove(pod)  # and so is what it served since its last read
    look(0)
    assert {v: counts[v].requests for v in variants_} == truth
    added = sum(c.requests for c in counts.values())
    assert abs(sum(c.expected for c in counts.values()) - added) < 1e-6 * max(1, added)


def test_a_look_that_adds_nothing_leaves_the_counts_as_they_were() -> None:
    first = run([[reading("1", "a", 100)]])
    again = accumulate.accumulate(
        first.variants,
        first.pods,
        [reading("1", "a", 100)],
        WEIGHTS,
        start_time=START,
        slow_after=SLOW_AFTER,
    )
    assert again.variants == first.variants
