"""The InferenceService spec (serving.kubeserve.dev/v1alpha1), as pydantic models.

Shapes and single-field rules live here; rules that span fields (weights summing to 100, the
mirror naming a variant, name lengths) live in `validation`, so that every problem in a spec
is reported at once instead of the first one only.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pydantic

from kubeserve.api import core, durations, names, patterns, quantity
from kubeserve.api.base import ApiModel

MAX_VARIANTS = 16
STORAGE_SCHEMES = ("file", "pvc", "http", "https", "s3", "gs")


def _dns_label(value: str) -> str:
    problem = names.dns1035_problem(value)
    if problem:
        raise ValueError(problem)
    return value


DnsLabel = Annotated[
    str,
    pydantic.AfterValidator(_dns_label),
    pydantic.Field(
        json_schema_extra={
            "minLength": 1,
            "maxLength": names.MAX_LABEL,
            "pattern": names.DNS1035_LABEL,
        }
    ),
]


def _whole_bytes(value: str | int) -> str | int:
    amount = quantity.parse_quantity(value)
    if amount < 1 or amount != amount.to_integral_value():
        raise ValueError(f"{value!r} is not a size in whole bytes, at least 1 (e.g. 10Gi, 500Mi)")
    return value


# A size on disk: a quantity of whole bytes (10Gi, 500Mi, 2G), as an emptyDir's sizeLimit.
ByteSize = Annotated[
    core.Quantity,
    pydantic.AfterValidator(_whole_bytes),
    pydantic.WithJsonSchema(
        core.INT_OR_STRING_SCHEMA
        | {"minimum": 1, "pattern": quantity.NON_NEGATIVE_QUANTITY_PATTERN}
    ),
]
DEFAULT_MODEL_MAX_SIZE = "10Gi"


class ModelSpec(ApiModel):
    """Which model a variant serves and where it is stored."""

    format: Literal["onnx", "sklearn"] = pydantic.Field(
        description="Model format: onnx (ONNX Runtime) or sklearn (skops file; joblib/pickle only "
        "when the server is told to allow it)."
    )
    storage_uri: str = pydantic.Field(
        min_length=1,
        max_length=2048,
        # The API server checks the pattern; the operator says more (see validation).
        json_schema_extra={"pattern": patterns.STORAGE_URI},
        description="Where the model directory is: file:// (a path in the server image), "
        "pvc://<claim>/<path>, http(s)://, s3://<bucket>/<path> or gs://<bucket>/<path>.",
    )
    sha256: str | None = pydantic.Field(
        default=None,
        pattern=patterns.SHA256,
        description="Expected SHA-256 of the fetched model file (single-file models); the "
        "fetch fails on a mismatch.",
    )
    credentials_secret: DnsLabel | None = pydantic.Field(
        default=None,
        description="Secret whose keys become environment variables of the fetch step only "
        "(e.g. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL).",
    )
    max_size: ByteSize | None = pydantic.Field(
        default=None,
        description="The most the model may take on disk, fetched or extracted (default "
        f"{DEFAULT_MODEL_MAX_SIZE}): the fetch stops past it. Not used for pvc:// models.",
    )

    def max_bytes(self) -> int:
        """Give maxSize in bytes, or the default's."""
        return int(quantity.parse_quantity(self.max_size or DEFAULT_MODEL_MAX_SIZE))


class Autoscaling(ApiModel):
    """CPU-based horizontal autoscaling (a HorizontalPodAutoscaler, autoscaling/v2)."""

    min_replicas: int = pydantic.Field(default=1, ge=1, le=1000)
    max_replicas: int = pydantic.Field(ge=1, le=1000)
    target_cpu_utilization_percentage: int = pydantic.Field(
        default=80,
        ge=1,
        le=1000,
        alias="targetCPUUtilizationPercentage",
        description="Average CPU use, as a percentage of the CPU request, that the HPA aims at.",
    )


# Structural schemas allow int-or-string only as a bare anyOf; the bounds sit beside it and
# apply to the form they fit (minimum to integers, pattern to strings).
IntOrPercent = Annotated[
    int | Annotated[str, pydantic.Field(pattern=patterns.PERCENT)],
    pydantic.WithJsonSchema(
        core.INT_OR_STRING_SCHEMA | {"minimum": 0, "pattern": patterns.PERCENT}
    ),
]


class DisruptionBudget(ApiModel):
    """A PodDisruptionBudget for the variant's pods: set exactly one of the two."""

    min_available: IntOrPercent | None = None
    max_unavailable: IntOrPercent | None = None

    @pydantic.field_validator("min_available", "max_unavailable")
    @classmethod
    def _non_negative(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and value < 0:
            raise ValueError("must be a non-negative integer or a percentage like 50%")
        return value

    @pydantic.model_validator(mode="after")
    def _exactly_one(self) -> DisruptionBudget:
        if (self.min_available is None) == (self.max_unavailable is None):
            raise ValueError("set exactly one of minAvailable and maxUnavailable")
        return self


class Gpu(ApiModel):
    """GPUs for each replica: NVIDIA device-plugin resources and GPU node scheduling."""

    count: int = pydantic.Field(
        default=1, ge=1, le=16, description="GPUs (or MIG slices) per replica."
    )
    product: core.LabelValue | None = pydantic.Field(
        default=None,
        max_length=63,
        description="Schedule onto nodes whose nvidia.com/gpu.product label has this value, "
        "e.g. NVIDIA-A100-SXM4-40GB.",
    )
    mig_profile: str | None = pydantic.Field(
        default=None,
        pattern=patterns.MIG_PROFILE,
        description="Request a MIG slice (resource nvidia.com/mig-<profile>, the device "
        "plugin's mixed strategy) instead of whole GPUs, e.g. 1g.5gb.",
    )


class Variant(ApiModel):
    """One model version and the share of live traffic it gets."""

    name: DnsLabel = pydantic.Field(description="DNS label, unique in the InferenceService.")
    weight: int | None = pydantic.Field(
        default=None,
        ge=0,
        le=100,
        description="Percent of live traffic. Live weights sum to 100; a single variant may "
        "leave it out (100); 0 is a dark launch, reachable by the override header only.",
    )
    model: ModelSpec
    replicas: int | None = pydantic.Field(
        default=None,
        ge=0,
        le=1000,
        description="Fixed replica count (default 1); or use autoscaling.",
    )
    autoscaling: Autoscaling | None = None
    disruption_budget: DisruptionBudget | None = None
    resources: core.ResourceRequirements | None = None
    gpu: Gpu | None = None
    node_selector: core.LabelMap | None = None
    tolerations: list[core.Toleration] | None = pydantic.Field(default=None, max_length=32)
    affinity: core.Affinity | None = None
    env: list[core.EnvVar] | None = pydantic.Field(default=None, max_length=64)
    image: str | None = pydantic.Field(
        default=None,
        max_length=512,
        pattern=patterns.IMAGE,
        description="Server image for this variant, instead of the operator's default.",
    )


class Sticky(ApiModel):
    """What keeps a user on one variant: a request header or a cookie (set exactly one)."""

    header: str | None = pydantic.Field(default=None, max_length=64, pattern=patterns.HEADER_NAME)
    cookie: str | None = pydantic.Field(default=None, max_length=64, pattern=patterns.COOKIE_NAME)

    @pydantic.model_validator(mode="after")
    def _exactly_one(self) -> Sticky:
        if (self.header is None) == (self.cookie is None):
            raise ValueError("set exactly one of header and cookie")
        return self


class Mirror(ApiModel):
    """Shadow traffic: a copy of live requests goes to this variant; its answers are dropped."""

    variant: DnsLabel
    percent: int = pydantic.Field(
        default=100, ge=1, le=100, description="Share of live requests copied."
    )


class ParentReference(ApiModel):
    """A Gateway (or a listener of one) the HTTPRoute attaches to."""

    name: str = pydantic.Field(min_length=1, max_length=253, pattern=patterns.DNS1123_SUBDOMAIN)
    namespace: str | None = pydantic.Field(
        default=None, max_length=63, pattern=patterns.DNS1123_LABEL
    )
    section_name: str | None = pydantic.Field(
        default=None, max_length=253, pattern=patterns.DNS1123_SUBDOMAIN
    )
    port: int | None = pydantic.Field(default=None, ge=1, le=65535)


class Router(ApiModel):
    """The built-in nginx router's pods (routing mode nginx only)."""

    replicas: int = pydantic.Field(
        default=2,
        ge=1,
        le=100,
        description="Router pods. With more than one, a PodDisruptionBudget lets a node drain "
        "evict only one at a time, so the endpoint never loses every router.",
    )
    workers: int = pydantic.Field(
        default=2,
        ge=1,
        le=32,
        description="nginx worker processes per pod. More than the pod's CPUs only adds "
        "context switches.",
    )
    resources: core.ResourceRequirements | None = pydantic.Field(
        default=None,
        description="Compute resources of the nginx container; default requests cpu 50m, "
        "memory 32Mi and limits memory 128Mi.",
    )


class Routing(ApiModel):
    """How the stable endpoint splits traffic between variants."""

    mode: Literal["nginx", "gateway-api"] = pydantic.Field(
        default="nginx",
        description="nginx: a built-in router per InferenceService. gateway-api: an HTTPRoute "
        "on a Gateway of yours (see parentRefs).",
    )
    sticky: Sticky | None = None
    override_header: str | None = pydantic.Field(
        default=None,
        max_length=64,
        pattern=patterns.HEADER_NAME,
        description="A request header whose value names a variant to force, e.g. x-kubeserve-variant.",
    )
    mirror: Mirror | None = None
    parent_refs: list[ParentReference] | None = pydantic.Field(
        default=None, max_length=16, description="Gateways for routing mode gateway-api."
    )
    router: Router | None = pydantic.Field(
        default=None,
        description="Replicas, workers and resources of the nginx router (routing mode nginx "
        "only); defaults when left out.",
    )


Metric = Literal["errorRate", "slowRate", "outcome", "value"]
METRICS: tuple[Metric, ...] = ("errorRate", "slowRate", "outcome", "value")
Duration = Annotated[str, pydantic.Field(max_length=32, pattern=patterns.DURATION)]


class Margins(ApiModel):
    """The smallest difference from control that matters, per metric.

    Rates are fractions (0.005 = half a percentage point); `value` is in the feedback values'
    own units. A difference inside ±margin counts as no difference (verdict Equivalent), and
    the margin sets the test's mixing variance: the test is most powerful near it.
    """

    error_rate: float = pydantic.Field(default=0.005, gt=0, le=0.5)
    slow_rate: float = pydantic.Field(default=0.01, gt=0, le=0.5)
    outcome: float = pydantic.Field(default=0.01, gt=0, le=0.5)
    value: float | None = pydantic.Field(
        default=None,
        gt=0,
        description="In the values' units; default a tenth of the pooled standard deviation.",
    )


class Experiment(ApiModel):
    """An A/B test: each live variant is compared with `control`, valid at every look."""

    control: DnsLabel = pydantic.Field(description="The live variant the others are compared with.")
    metrics: list[Metric] | None = pydantic.Field(
        default=None,
        min_length=1,
        max_length=len(METRICS),
        description="errorRate (5xx), slowRate (slower than slowThreshold), outcome (feedback "
        "0/1), value (numeric feedback). Default: every metric that has data.",
    )
    slow_threshold: Duration = pydantic.Field(
        default="250ms",
        description="A request slower than this is slow; rounded up to the server's latency "
        "histogram bucket at or above it (status says which).",
    )
    confidence: float = pydantic.Field(default=0.95, ge=0.8, le=0.999)
    min_samples: int = pydantic.Field(
        default=1000,
        ge=10,
        le=1_000_000_000,
        description="Requests (or feedbacks, for outcome and value) a variant needs before "
        "any verdict.",
    )
    margin: Margins = pydantic.Field(default_factory=Margins)
    interval: Duration = pydantic.Field(
        default="30s", description="How often the operator collects the variants' counts."
    )

    def slow_threshold_seconds(self) -> float:
        """Give slowThreshold in seconds."""
        return durations.parse_duration(self.slow_threshold)

    def interval_seconds(self) -> float:
        """Give interval in seconds."""
        return durations.parse_duration(self.interval)


class Gate(ApiModel):
    """A check a rollout step must pass: the candidate against the baseline on one metric."""

    metric: Metric
    max_increase: float = pydantic.Field(
        ge=0,
        description="The tolerated harm, candidate minus baseline (a fraction for rates, "
        "0.01 = 1 percentage point; for outcome and value a decrease is the harm). A "
        "confidence sequence entirely beyond it rolls back at once.",
    )
    max: float | None = pydantic.Field(
        default=None,
        ge=0,
        description="An absolute limit on the candidate's rate (or mean): each look above it "
        "is a failed check.",
    )


DEFAULT_STEPS = (1, 5, 25, 50, 100)


class Rollout(ApiModel):
    """Walk the live split towards the spec's weights in steps, each gated on evidence."""

    candidate: DnsLabel = pydantic.Field(description="The variant whose share grows.")
    steps: list[int] = pydantic.Field(
        default_factory=lambda: list(DEFAULT_STEPS),
        min_length=1,
        max_length=20,
        description="The candidate's weights, in percent, increasing; the spec's weight is "
        "the destination and no step goes beyond it.",
    )
    baseline: DnsLabel | None = pydantic.Field(
        default=None,
        description="The variant the candidate is compared with; default the one with the "
        "most live traffic when the rollout starts.",
    )
    interval: Duration = pydantic.Field(default="30s", description="How often gates are checked.")
    min_requests_per_step: int = pydantic.Field(default=500, ge=1, le=1_000_000_000)
    min_step_duration: Duration = pydantic.Field(default="1m")
    gates: list[Gate] | None = pydantic.Field(
        default=None,
        min_length=1,
        max_length=8,
        description="Default: errorRate with maxIncrease 0.01.",
    )
    max_failed_checks: int = pydantic.Field(default=3, ge=1, le=100)
    on_failure: Literal["Rollback", "Pause"] = "Rollback"
    slow_threshold: Duration = pydantic.Field(default="250ms")
    confidence: float = pydantic.Field(default=0.95, ge=0.8, le=0.999)

    def interval_seconds(self) -> float:
        """Give interval in seconds."""
        return durations.parse_duration(self.interval)

    def min_step_seconds(self) -> float:
        """Give minStepDuration in seconds."""
        return durations.parse_duration(self.min_step_duration)

    def slow_threshold_seconds(self) -> float:
        """Give slowThreshold in seconds."""
        return durations.parse_duration(self.slow_threshold)

    def effective_gates(self) -> list[Gate]:
        """Give the gates, or the default one."""
        return list(self.gates) if self.gates else [Gate(metric="errorRate", max_increase=0.01)]


class InferenceServiceSpec(ApiModel):
    """Desired state of an InferenceService: its model variants and how traffic reaches them."""

    variants: list[Variant] = pydantic.Field(min_length=1, max_length=MAX_VARIANTS)
    routing: Routing = pydantic.Field(default_factory=Routing)
    experiment: Experiment | None = pydantic.Field(
        default=None,
        description="An A/B test between the live variants, concluded in status.experiment.",
    )
    rollout: Rollout | None = pydantic.Field(
        default=None,
        description="Move traffic to a candidate in steps when its weight grows, rolling back "
        "on harm; the live split is in status.rollout.",
    )

    def live_weights(self) -> dict[str, int]:
        """Give each variant's effective share of live traffic (a lone variant defaults to 100)."""
        if len(self.variants) == 1 and self.variants[0].weight is None:
            return {self.variants[0].name: 100}
        return {v.name: v.weight or 0 for v in self.variants}


class ObjectMeta(ApiModel):
    """The metadata fields kubeserve reads; the rest is the API server's and passes through."""

    model_config = pydantic.ConfigDict(extra="allow")

    name: str
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class InferenceService(ApiModel):
    """A whole InferenceService object as read from YAML or the API."""

    api_version: Literal["serving.kubeserve.dev/v1alpha1"]
    kind: Literal["InferenceService"]
    metadata: ObjectMeta
    spec: InferenceServiceSpec
    # Status belongs to the operator; it is accepted and ignored on input.
    status: dict[str, Any] | None = None
