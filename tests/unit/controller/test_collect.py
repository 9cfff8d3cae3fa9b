"""The experiments' schedule: spread over the interval, one collection at a time, untracked stops."""

from __future__ import annotations

import threading
import time
from collections.abc import Collection

from kubeserve.controller import collect, scrape, work
from kubeserve.experiment import readings


def test_a_thousand_experiments_spread_their_collections_over_the_interval() -> None:
    owners = [("ns", f"isvc-{i}") for i in range(1000)]
    phases = sorted(collect.phase(owner, 30.0) for owner in owners)
    assert all(0 <= p < 30 for p in phases)
    per_second = [sum(1 for p in phases if s <= p < s + 1) for s in range(30)]
    assert max(per_second) < 3 * 1000 / 30  # no second takes more than 3x its share
    assert collect.phase(owners[0], 30.0) == collect.phase(owners[0], 30.0)  # stable


class Recorder:
    def __init__(self, *, slow: float = 0.0) -> None:
        self.delivered: list[tuple[object, list[readings.PodReading], float]] = []
        self.purposes: list[collect.Purpose] = []
        self.asked: list[Collection[str]] = []
        self.slow = slow
        self.lock = threading.Lock()

    def targets(self, owner: object, variants: Collection[str]) -> list[scrape.Target]:
        self.asked.append(variants)
        return [
            scrape.Target(f"u-{v}", f"p-{v}", v, "127.0.0.1", 1, True, 0, None) for v in variants
        ]

    def read(self, target: scrape.Target) -> readings.PodReading:
        time.sleep(self.slow)
        return target.reading(None, "fake")

    def deliver(
        self,
        owner: object,
        purpose: collect.Purpose,
        looked: list[readings.PodReading],
        totals: readings.VariantTotals | None = None,
    ) -> None:
        with self.lock:
            self.delivered.append((owner, looked, time.monotonic()))
            self.purposes.append(purpose)


def test_a_tracked_experiment_is_collected_every_interval_until_untracked() -> None:
    rec = Recorder()
    collector = collect.Collector(rec.targets, rec.deliver, read=rec.read)
    collector.start()
    try:
        collector.track(("ns", "a"), 0.2, ["v1", "v2"])
        collector.track(("ns", "b"), None, ["v1"])  # no experiment: nothing scheduled
        time.sleep(0.75)
        collector.track(("ns", "a"), None, ())
        seen = len(rec.delivered)
        time.sleep(0.45)
    finally:
        collector.stop()
    assert 3 <= seen <= 5
    assert len(rec.delivered) <= seen + 1  # at most one already under way
    assert {owner for owner, _, _ in rec.delivered} == {("ns", "a")}
    assert sorted(r.variant for r in rec.delivered[0][1]) == ["v1", "v2"]
    assert collector.tracked() == 0


def test_a_collection_still_reading_skips_the_next_one() -> None:
    rec = Recorder(slow=0.5)
    collector = collect.Collector(rec.targets, rec.deliver, read=rec.read)
    collector.start()
    try:
        collector.track(("ns", "a"), 0.1, ["v1"])
        time.sleep(1.15)
    finally:
        collector.stop()
    assert 1 <= len(rec.delivered) <= 3  # not the ~11 the interval alone would give


def test_an_experiment_and_a_rollout_of_one_inferenceservice_keep_schedules_of_their_own() -> None:
    rec = Recorder()
    collector = collect.Collector(rec.targets, rec.deliver, read=rec.read)
    collector.start()
    try:
        collector.track(("ns", "a"), 0.5, ["v1"])
        collector.track(("ns", "a"), 0.1, ["v1", "v2"], purpose="rollout")
        assert collector.tracked() == 1 and collector.tracked("rollout") == 1
        time.sleep(0.55)
        collector.track(("ns", "a"), None, (), purpose="rollout")
        time.sleep(0.3)
        assert collector.tracked() == 1 and collector.tracked("rollout") == 0
        collector.untrack(("ns", "a"))
        assert collector.tracked() == 0
    finally:
        collector.stop()
    assert 4 <= rec.purposes.count("rollout") <= 7
    assert 1 <= rec.purposes.count("experiment") <= 2


def test_a_rollout_reads_its_pods_even_where_experiments_ask_prometheus() -> None:
    rec = Recorder()
    asked: list[object] = []

    def query(owner: object, variants: object) -> readings.VariantTotals:
        asked.append(owner)
        return readings.VariantTotals(since="2024-01-01T00:00:00Z", counters={})

    collector = collect.Collector(rec.targets, rec.deliver, read=rec.read, query=query)
    collector.start()
    try:
        collector.track(("ns", "a"), 0.1, ["v1"], purpose="rollout")
        time.sleep(0.35)
    finally:
        collector.stop()
    assert asked == [] and rec.delivered and set(rec.purposes) == {"rollout"}
    assert all(looked for _, looked, _ in rec.delivered), "every delivery has pod readings"


def reading(problem: str) -> work.Readings:
    return work.Readings([readings.PodReading("1", "p", "v1", 0, None, None, problem)])


def test_collections_merge_keeping_the_latest_readings_and_the_other_work() -> None:
    first = work.Collect(experiment=reading("old"))
    latest = work.Collect(experiment=reading("new"))
    merged = work.merge(work.merge(first, work.compare(("Deployment", "x"))), latest)
    assert isinstance(merged, work.Collect)
    assert merged.experiment == latest.experiment
    assert merged.then == work.compare(("Deployment", "x"))
    assert work.merge(work.FullReconcile(), merged) == work.Collect(
        experiment=latest.experiment, then=work.FullReconcile()
    )
    # whatever else it does, a collection computes and writes the status at once
    assert merged.other_work() == work.CompareChildren(
        frozenset({("Deployment", "x")}), work.RefreshStatus(settled=True)
    )
    assert work.Collect().other_work() == work.RefreshStatus(settled=True)


def test_a_rollouts_collection_and_an_experiments_merge_without_losing_either() -> None:
    rollout = work.Collect(rollout=reading("rollout"))
    experiment = work.Collect(experiment=reading("experiment"))
    for merged in (work.merge(rollout, experiment), work.merge(experiment, rollout)):
        assert merged == work.Collect(experiment=experiment.experiment, rollout=rollout.rollout)
    later = work.Collect(rollout=reading("later"))
    assert work.merge(work.merge(rollout, experiment), later) == work.Collect(
        experiment=experiment.experiment, rollout=later.rollout
    )
