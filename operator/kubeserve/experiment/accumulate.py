"""Add one look's pod counters to the experiment's running counts per variant. Pure: no I/O.

A server's counters count from its own start, not the experiment's, and begin again at zero
when it restarts. So the last counters read from each pod (by uid) are kept in status, and a
look adds, per pod:

- the same pod, not restarted, every counter at or above its last value: the difference;
- a counter below its last value, or a container restart count that grew: the server
  restarted and counted again from zero, so the whole new value;
- a pod not seen before: everything it has when it started after the experiment did; when
  it was serving before, its counters are the baseline and nothing is added yet;
- a pod gone: dropped from the last counters (what it was counted for stays counted);
- a pod that could not be read: its last counters are kept, and the reason is listed;
- no reading at all (`looked` None: a look taken for another reason, say a command): every
  pod's last counters are kept and nothing is added. An empty reading is not that: it says
  the pods were listed and none was found, so every pod is gone.

No count is added twice, and none is lost but these: what a pod served between its last
read and its disappearance or restart; and what a pod already serving when the experiment
started served before its first successful read (its first read is its baseline).

The sum of the live variants' new requests is shared out by the live weights into each
variant's `expected`, what the sample-ratio check compares the observed requests with.
Variants of weight 0 are not read: their counts stay as they were.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence

from kubeserve.api import status
from kubeserve.experiment import readings

# The counters of a pod, in the order of `_vector`; the value sum may go down (negative
# values), so it never tells a restart.
_FIELDS = (
    "requests",
    "errors",
    "feedback",
    "positives",
    "values",
    "value_sum",
    "value_squares",
)
_MAY_DECREASE = _FIELDS.index("value_sum")
_BUCKETS = len(readings.BOUNDS)
MAX_UNREADABLE = 32
MAX_REASON = 512


@dataclasses.dataclass(frozen=True)
class Accumulated:
    """The counts after one look: per variant, the last counters per pod uid, the unreadable."""

    variants: dict[str, status.VariantCounts]
    pods: dict[str, status.PodCounters]
    unreadable: list[status.UnreadablePod]
    added: int  # requests this look added over the live variants


def parse_time(text: str) -> datetime.datetime:
    """Read an RFC 3339 time as the API server writes it (`2024-05-01T10:00:00Z`)."""
    moment = datetime.datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def _vector(counters: status.PodCounters) -> list[float]:
    buckets = list(counters.latency_buckets or [])
    buckets += [0.0] * (_BUCKETS - len(buckets))
    return [float(getattr(counters, f)) for f in _FIELDS] + buckets[:_BUCKETS]


def _restarted(new: status.PodCounters, last: status.PodCounters) -> bool:
    if new.restarts > last.restarts:
        return True
    return any(
        n < o
        for i, (n, o) in enumerate(zip(_vector(new), _vector(last), strict=True))
        if i != _MAY_DECREASE
    )


def pod_increase(
    reading: readings.PodReading,
    last: status.PodCounters | None,
    start_time: datetime.datetime,
) -> list[float] | None:
    """Give what one readable pod served since its last read (see the module's rules).

    None when the pod is new and was serving before the experiment started: its counters
    are a baseline.
    """
    assert reading.counters is not None
    new = _vector(reading.counters)
    if last is None:
        started = parse_time(reading.started) if reading.started else None
        if started is None or started <= start_time:
            return None
        return new
    if _restarted(reading.counters, last):
        return new
    return [n - o for n, o in zip(new, _vector(last), strict=True)]


def _add(
    counts: status.VariantCounts, increase: Sequence[float], slow_after: int
) -> status.VariantCounts:
    fields = dict(zip(_FIELDS, increase[: len(_FIELDS)], strict=True))
    buckets = list(counts.latency_buckets or [0.0] * _BUCKETS)
    buckets += [0.0] * (_BUCKETS - len(buckets))
    buckets = [b + d for b, d in zip(buckets, increase[len(_FIELDS) :], strict=True)]
    return counts.model_copy(
        update={
            "requests": counts.requests + round(fields["requests"]),
            "errors": counts.errors + round(fields["errors"]),
            "feedback": counts.feedback + round(fields["feedback"]),
            "positives": counts.positives + round(fields["positives"]),
            "values": counts.values + round(fields["values"]),
            "value_sum": counts.value_sum + fields["value_sum"],
            "value_squares": counts.value_squares + fields["value_squares"],
            "latency_buckets": buckets,
            "slow": round(sum(buckets[slow_after + 1 :])),
        }
    )


def accumulate(
    variants: Mapping[str, status.VariantCounts],
    pods: Mapping[str, status.PodCounters],
    looked: Sequence[readings.PodReading] | None,
    weights: Mapping[str, int],
    *,
    start_time: datetime.datetime,
    slow_after: int,
) -> Accumulated:
    """Add one look to the counts.

    `variants` and `pods` are the counts and last counters before the look (empty at the
    experiment's start); `looked` a reading per pod, or None when nothing was read; `weights`
    the live weights now, every variant of the spec; `slow_after` the index of the latency
    bucket at the slow threshold (later ones are slow).
    """
    live = {name: w for name, w in weights.items() if w > 0}
    new_pods: dict[str, status.PodCounters] = dict(pods) if looked is None else {}
    unreadable: list[status.UnreadablePod] = []
    increase: dict[str, list[float]] = {}
    read: dict[str, int] | None = None if looked is None else dict.fromkeys(live, 0)
    for reading in sorted(looked or (), key=lambda r: (r.variant, r.name, r.uid)):
        if reading.variant not in live:
            continue  # not part of the experiment now
        last = pods.get(reading.uid)
        if reading.counters is None:
            unreadable.append(
                status.UnreadablePod(
                    pod=reading.name, reason=(reading.problem or "unreadable")[:MAX_REASON]
                )
            )
            if last is not None:
                new_pods[reading.uid] = last
            continue
        assert read is not None
        read[reading.variant] += 1
        new_pods[reading.uid] = reading.counters
        more = pod_increase(reading, last, start_time)
        if more is not None:
            total = increase.setdefault(reading.variant, [0.0] * (len(_FIELDS) + _BUCKETS))
            for i, d in enumerate(more):
                total[i] += d
    added = sum(round(inc[0]) for inc in increase.values())
    share = sum(live.values())
    out: dict[str, status.VariantCounts] = {}
    for name in weights:
        counts = variants.get(name)
        if name not in live:
            if counts is not None:  # taken out of the live split: kept as counted
                out[name] = counts.model_copy(update={"weight": 0, "pods": 0})
            continue
        counts = counts or status.VariantCounts()
        more = increase.get(name)
        if more is not None and any(more):  # nothing new must change nothing, to the byte
            counts = _add(counts, more, slow_after)
        out[name] = counts.model_copy(
            update={
                "weight": live[name],
                "pods": counts.pods if read is None else read[name],
                "expected": counts.expected + added * live[name] / share,
            }
        )
    return Accumulated(
        variants=out, pods=new_pods, unreadable=unreadable[:MAX_UNREADABLE], added=added
    )


def from_totals(
    variants: Mapping[str, status.VariantCounts],
    totals: Mapping[str, status.PodCounters],
    weights: Mapping[str, int],
    *,
    slow_after: int,
) -> Accumulated:
    """Take cumulative counts per variant (from Prometheus) in place of the running ones.

    Prometheus' increase() extrapolates to the window's edges, so its counts are rounded,
    and a count that came out lower than last look's is kept at last look's (a count never
    goes down); `expected` grows by the new requests, shared by the live weights as above.
    """
    live = {name: w for name, w in weights.items() if w > 0}
    out: dict[str, status.VariantCounts] = {}
    grown: dict[str, status.VariantCounts] = {}
    for name in live:
        before = variants.get(name) or status.VariantCounts()
        total = totals.get(name)
        if total is None:
            grown[name] = before
            continue
        buckets = [float(round(b)) for b in _vector(total)[len(_FIELDS) :]]
        counts = before.model_copy(
            update={
                "requests": max(before.requests, round(total.requests)),
                "errors": max(before.errors, round(total.errors)),
                "feedback": max(before.feedback, round(total.feedback)),
                "positives": max(before.positives, round(total.positives)),
                "values": max(before.values, round(total.values)),
                "value_sum": total.value_sum,
                "value_squares": max(before.value_squares, total.value_squares),
                "latency_buckets": buckets if any(buckets) else before.latency_buckets,
                "slow": max(before.slow, round(sum(buckets[slow_after + 1 :]))),
            }
        )
        grown[name] = before if counts == before else counts
    added = sum(
        grown[n].requests - (variants.get(n) or status.VariantCounts()).requests for n in live
    )
    share = sum(live.values())
    for name in weights:
        if name not in live:
            kept = variants.get(name)
            if kept is not None:
                out[name] = kept.model_copy(update={"weight": 0, "pods": 0})
            continue
        counts = grown[name]
        out[name] = counts.model_copy(
            update={
                "weight": live[name],
                "pods": 0,
                "expected": counts.expected + added * live[name] / share,
            }
        )
    return Accumulated(variants=out, pods={}, unreadable=[], added=added)
