"""The InferenceService status: public API that `kubectl get` and `describe` show."""

from __future__ import annotations

from typing import Literal

import pydantic

from kubeserve.api.base import ApiModel


class Condition(ApiModel):
    """One observed aspect of the InferenceService; `Ready` rolls the others up."""

    type: str = pydantic.Field(max_length=64)
    status: Literal["True", "False", "Unknown"]
    reason: str | None = pydantic.Field(
        default=None, max_length=128, description="CamelCase, for machines."
    )
    message: str | None = pydantic.Field(
        default=None, max_length=4096, description="For a human to act on."
    )
    last_transition_time: str | None = pydantic.Field(
        default=None, description="RFC 3339 time of the last status change."
    )
    observed_generation: int | None = None


class VariantStatus(ApiModel):
    """What one variant serves and how many of its replicas are ready."""

    replicas: int = 0
    ready_replicas: int = 0
    weight: int = 0
    storage_uri: str | None = None
    ready: bool = False


Verdict = Literal["Collecting", "Inconclusive", "Better", "Worse", "Equivalent"]


class Latency(ApiModel):
    """Latency percentiles in seconds, read from the histogram (for display only)."""

    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


class VariantCounts(ApiModel):
    """One variant's counts since the experiment started, and the rates they give."""

    weight: int = pydantic.Field(default=0, description="Live weight at the last collection.")
    pods: int = pydantic.Field(default=0, description="Pods read at the last collection.")
    requests: int = pydantic.Field(default=0, description="Inference requests answered.")
    errors: int = pydantic.Field(default=0, description="Of which answered with a 5xx.")
    slow: int = pydantic.Field(default=0, description="Of which slower than the threshold.")
    expected: float = pydantic.Field(
        default=0.0,
        description="Requests the live weights would have sent it (for the sample-ratio check).",
    )
    feedback: int = pydantic.Field(default=0, description="Outcome feedbacks (0 or 1).")
    positives: int = pydantic.Field(default=0, description="Outcome feedbacks equal to 1.")
    values: int = pydantic.Field(default=0, description="Value feedbacks.")
    value_sum: float = 0.0
    value_squares: float = pydantic.Field(default=0.0, description="Sum of squared values.")
    latency_buckets: list[float] | None = pydantic.Field(
        default=None,
        max_length=64,
        description="Requests per latency bucket (not cumulative), the server's bounds.",
    )
    error_rate: float | None = None
    slow_rate: float | None = None
    outcome_rate: float | None = None
    value_mean: float | None = None
    latency: Latency | None = None


class Comparison(ApiModel):
    """One variant against control on one metric: the sequential test's state and verdict.

    `low`/`high` is the confidence sequence of (variant - control), intersected over every
    look; `pValue` is the always-valid p-value, the least seen so far. Both stay valid
    however often they are read.
    """

    variant: str
    metric: str
    samples: int = pydantic.Field(default=0, description="The smaller of the two sample sizes.")
    estimate: float | None = None
    low: float | None = None
    high: float | None = None
    p_value: float = 1.0
    verdict: Verdict = "Collecting"


class HistoryEstimate(ApiModel):
    """One comparison at one look, for drawing the confidence sequences over time."""

    variant: str
    metric: str
    estimate: float | None = None
    low: float | None = None
    high: float | None = None


class HistoryPoint(ApiModel):
    """The comparisons at one collection."""

    time: str
    comparisons: list[HistoryEstimate] = pydantic.Field(default_factory=list, max_length=64)


class SampleRatio(ApiModel):
    """Observed requests per variant against what the live weights should have sent."""

    chi_square: float = 0.0
    p_value: float = 1.0
    mismatch: bool = False


class PodCounters(ApiModel):
    """The counters last read from one pod, kept to count only what came after.

    A counter below its last value, or a container that restarted, means the server
    restarted: its counters began again at zero.
    """

    variant: str
    restarts: int = 0
    requests: float = 0.0
    errors: float = 0.0
    feedback: float = 0.0
    positives: float = 0.0
    values: float = 0.0
    value_sum: float = 0.0
    value_squares: float = 0.0
    latency_buckets: list[float] | None = pydantic.Field(default=None, max_length=64)


class UnreadablePod(ApiModel):
    """A pod whose metrics could not be read at the last collection, and why."""

    pod: str
    reason: str = pydantic.Field(max_length=512)


class ExperimentStatus(ApiModel):
    """The A/B test's counts, comparisons and verdict, since `startTime`."""

    start_time: str | None = None
    last_collected: str | None = None
    config: str | None = pydantic.Field(
        default=None,
        description="Fingerprint of spec.experiment and the variants: when it changes, the "
        "experiment starts again.",
    )
    control: str | None = None
    slow_threshold_seconds: float | None = pydantic.Field(
        default=None, description="The histogram bucket bound slow requests are counted above."
    )
    verdict: Verdict = "Collecting"
    summary: str | None = pydantic.Field(default=None, max_length=1024)
    variants: dict[str, VariantCounts] | None = pydantic.Field(default=None, max_length=16)
    comparisons: list[Comparison] | None = pydantic.Field(default=None, max_length=64)
    sample_ratio: SampleRatio | None = None
    unreadable: list[UnreadablePod] | None = pydantic.Field(default=None, max_length=32)
    pods: dict[str, PodCounters] | None = pydantic.Field(
        default=None, description="Counters last read per pod uid."
    )
    history: list[HistoryPoint] | None = pydantic.Field(default=None, max_length=100)


RolloutPhase = Literal["Progressing", "Paused", "Succeeded", "RolledBack", "Holding"]


class GateResult(ApiModel):
    """One gate at the last check: the two rates, the interval of their difference, the result."""

    metric: str
    baseline: float | None = pydantic.Field(default=None, description="Baseline rate or mean.")
    candidate: float | None = pydantic.Field(default=None, description="Candidate rate or mean.")
    estimate: float | None = None
    low: float | None = None
    high: float | None = None
    p_value: float = 1.0
    result: Literal["Collecting", "Pass", "Harm", "OverMax"] = "Collecting"


class Decision(ApiModel):
    """What the rollout did last, and why."""

    action: str = pydantic.Field(
        max_length=32, description="Start, Advance, Hold, Promote, RollBack, Pause, Resume."
    )
    reason: str = pydantic.Field(default="", max_length=1024)
    time: str | None = None


class RolloutStatus(ApiModel):
    """Where a rollout is: the live split the router applies, and the evidence for it."""

    phase: RolloutPhase = "Progressing"
    progress: str | None = pydantic.Field(
        default=None, description="Phase and step for kubectl get, e.g. Progressing 2/5."
    )
    generation: int | None = pydantic.Field(
        default=None, description="The spec generation this rollout moves towards."
    )
    candidate: str | None = None
    baseline: str | None = None
    step: int = pydantic.Field(default=0, description="Steps taken (0: not yet at the first).")
    steps: int = pydantic.Field(default=0, description="Steps in all, the destination's last.")
    live_weights: dict[str, int] | None = pydantic.Field(default=None, max_length=16)
    start_weights: dict[str, int] | None = pydantic.Field(
        default=None, max_length=16, description="The split before the rollout: rollback's target."
    )
    start_time: str | None = None
    step_start_time: str | None = None
    step_start_requests: int = pydantic.Field(
        default=0, description="The candidate's requests when the step began."
    )
    failed_checks: int = 0
    interval_seconds: float | None = None
    gates: list[GateResult] | None = pydantic.Field(default=None, max_length=8)
    last_decision: Decision | None = None
    variants: dict[str, VariantCounts] | None = pydantic.Field(
        default=None, max_length=16, description="Counts since the rollout started."
    )
    pods: dict[str, PodCounters] | None = pydantic.Field(
        default=None, description="Counters last read per pod uid."
    )
    last_collected: str | None = None
    manual: str | None = pydantic.Field(
        default=None, description="The last manual command honoured (its annotation value)."
    )


class InferenceServiceStatus(ApiModel):
    """Observed state, written by the operator only."""

    observed_generation: int | None = None
    url: str | None = pydantic.Field(default=None, description="The stable in-cluster endpoint.")
    traffic: str | None = pydantic.Field(
        default=None, description="The live split, e.g. v1=90,v2=10."
    )
    conditions: list[Condition] | None = pydantic.Field(default=None, max_length=16)
    variants: dict[str, VariantStatus] | None = pydantic.Field(default=None, max_length=16)
    experiment: ExperimentStatus | None = None
    rollout: RolloutStatus | None = None
