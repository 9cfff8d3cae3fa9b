"""The Kubernetes core types an InferenceService passes through to its pods.

Modelled field by field (not as free-form maps) so that the CRD schema tells `kubectl explain`
and the API server what they hold, and a mistake is refused at `kubectl apply` rather than
when the operator creates a Deployment.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import pydantic

from kubeserve.api import patterns, quantity
from kubeserve.api.base import ApiModel

# Label keys: an optional DNS subdomain prefix and a name (kubernetes validation.IsQualifiedName).
QUALIFIED_NAME = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
_QUALIFIED_NAME_RE = re.compile(QUALIFIED_NAME)
_LABEL_VALUE_RE = re.compile(LABEL_VALUE)


def check_label_key(key: str) -> str:
    """Refuse a label key the API server would refuse, saying why."""
    name = key.rsplit("/", 1)[-1]
    if len(name) > 63 or len(key) - len(name) > 254 or not _QUALIFIED_NAME_RE.match(key):
        raise ValueError(
            f"{key!r} is not a valid label key: an optional DNS prefix and '/', then at most "
            "63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        )
    return key


def check_label_value(value: str) -> str:
    """Refuse a label value the API server would refuse, saying why."""
    if len(value) > 63 or not _LABEL_VALUE_RE.match(value):
        raise ValueError(
            f"{value!r} is not a valid label value: at most 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return value


LabelKey = Annotated[str, pydantic.AfterValidator(check_label_key)]
LabelValue = Annotated[str, pydantic.AfterValidator(check_label_value)]
LabelMap = Annotated[dict[LabelKey, LabelValue], pydantic.Field(max_length=64)]


def _check_quantity(value: str | int) -> str | int:
    if (
        not isinstance(value, bool)
        and quantity.is_quantity(value)
        and quantity.parse_quantity(value) < 0
    ):
        raise ValueError(f"{value!r} is negative; resource amounts must be 0 or more")
    if isinstance(value, bool) or not quantity.is_quantity(value):
        raise ValueError(
            f"{value!r} is not a Kubernetes quantity (examples: 500m, 2, 1.5Gi, 256Mi)"
        )
    return value


INT_OR_STRING_SCHEMA = {
    "x-kubernetes-int-or-string": True,
    "anyOf": [{"type": "integer"}, {"type": "string"}],
}
Quantity = Annotated[
    int | str,
    pydantic.AfterValidator(_check_quantity),
    # A node-level pattern applies to the string form only, as in Kubernetes' own CRDs.
    pydantic.WithJsonSchema(
        INT_OR_STRING_SCHEMA | {"minimum": 0, "pattern": quantity.NON_NEGATIVE_QUANTITY_PATTERN}
    ),
]
ResourceName = Annotated[str, pydantic.AfterValidator(check_label_key)]


class ResourceRequirements(ApiModel):
    """Compute resources of the model server container, as in a Pod's container spec."""

    requests: dict[ResourceName, Quantity] | None = pydantic.Field(
        default=None, max_length=16, description="Minimum resources, e.g. {cpu: 500m, memory: 1Gi}."
    )
    limits: dict[ResourceName, Quantity] | None = pydantic.Field(
        default=None, max_length=16, description="Maximum resources, e.g. {memory: 2Gi}."
    )


class Toleration(ApiModel):
    """A toleration of a node taint, as in a Pod spec."""

    key: str | None = pydantic.Field(default=None, max_length=317)
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = pydantic.Field(default=None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> Toleration:
        if self.key:
            check_label_key(self.key)
        if self.operator == "Exists" and self.value:
            raise ValueError("value must be empty when operator is Exists")
        if not self.key and self.operator != "Exists":
            raise ValueError("operator must be Exists when key is empty")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("tolerationSeconds is only allowed with effect NoExecute")
        return self


class NodeSelectorRequirement(ApiModel):
    """One expression on node labels or fields."""

    key: str = pydantic.Field(max_length=317)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    values: list[str] | None = pydantic.Field(default=None, max_length=64)


class NodeSelectorTerm(ApiModel):
    """Node selector requirements, all of which must hold."""

    match_expressions: list[NodeSelectorRequirement] | None = pydantic.Field(
        default=None, max_length=32
    )
    match_fields: list[NodeSelectorRequirement] | None = pydantic.Field(default=None, max_length=32)


class NodeSelector(ApiModel):
    """Terms of which at least one must hold."""

    node_selector_terms: list[NodeSelectorTerm] = pydantic.Field(min_length=1, max_length=32)


class PreferredSchedulingTerm(ApiModel):
    """A weighted node preference."""

    weight: int = pydantic.Field(ge=1, le=100)
    preference: NodeSelectorTerm


class NodeAffinity(ApiModel):
    """Node affinity scheduling rules."""

    required_during_scheduling_ignored_during_execution: NodeSelector | None = None
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] | None = (
        pydantic.Field(default=None, max_length=32)
    )


class LabelSelectorRequirement(ApiModel):
    """One expression on pod labels."""

    key: str = pydantic.Field(max_length=317)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] | None = pydantic.Field(default=None, max_length=64)


class LabelSelector(ApiModel):
    """A label query over pods."""

    match_labels: LabelMap | None = None
    match_expressions: list[LabelSelectorRequirement] | None = pydantic.Field(
        default=None, max_length=32
    )


class PodAffinityTerm(ApiModel):
    """Pods this pod should (or should not) run beside, within a topology domain."""

    label_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    namespaces: list[str] | None = pydantic.Field(default=None, max_length=64)
    topology_key: str = pydantic.Field(min_length=1, max_length=317)
    match_label_keys: list[str] | None = pydantic.Field(default=None, max_length=32)
    mismatch_label_keys: list[str] | None = pydantic.Field(default=None, max_length=32)


class WeightedPodAffinityTerm(ApiModel):
    """A weighted pod (anti-)affinity preference."""

    weight: int = pydantic.Field(ge=1, le=100)
    pod_affinity_term: PodAffinityTerm


class PodAffinity(ApiModel):
    """Pod affinity or anti-affinity rules."""

    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] | None = (
        pydantic.Field(default=None, max_length=32)
    )
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] | None = (
        pydantic.Field(default=None, max_length=32)
    )


class Affinity(ApiModel):
    """Scheduling constraints, as in a Pod spec."""

    node_affinity: NodeAffinity | None = None
    pod_affinity: PodAffinity | None = None
    pod_anti_affinity: PodAffinity | None = None


class KeySelector(ApiModel):
    """A key of a Secret or ConfigMap."""

    name: str = pydantic.Field(min_length=1, max_length=253)
    key: str = pydantic.Field(min_length=1, max_length=253)
    optional: bool | None = None


class ObjectFieldSelector(ApiModel):
    """A field of the pod, e.g. metadata.name."""

    field_path: str = pydantic.Field(min_length=1, max_length=253)
    api_version: str | None = None


class ResourceFieldSelector(ApiModel):
    """A resource limit or request of a container."""

    resource: str = pydantic.Field(min_length=1, max_length=253)
    container_name: str | None = None
    divisor: Quantity | None = None


class EnvVarSource(ApiModel):
    """Where an environment variable's value comes from; exactly one source."""

    secret_key_ref: KeySelector | None = None
    config_map_key_ref: KeySelector | None = None
    field_ref: ObjectFieldSelector | None = None
    resource_field_ref: ResourceFieldSelector | None = None

    @pydantic.model_validator(mode="after")
    def _exactly_one(self) -> EnvVarSource:
        given = [n for n, v in self if v is not None]
        if len(given) != 1:
            raise ValueError(
                "exactly one of secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef is needed"
            )
        return self


class EnvVar(ApiModel):
    """An environment variable of the model server container."""

    name: str = pydantic.Field(min_length=1, max_length=253, pattern=patterns.ENV_NAME)
    value: str | None = pydantic.Field(default=None, max_length=32768)
    value_from: EnvVarSource | None = None

    @pydantic.model_validator(mode="after")
    def _one_source(self) -> EnvVar:
        if self.value is not None and self.value_from is not None:
            raise ValueError("set value or valueFrom, not both")
        return self
