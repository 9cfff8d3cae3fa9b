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


class InferenceServiceStatus(ApiModel):
    """Observed state, written by the operator only."""

    observed_generation: int | None = None
    url: str | None = pydantic.Field(default=None, description="The stable in-cluster endpoint.")
    traffic: str | None = pydantic.Field(
        default=None, description="The live split, e.g. v1=90,v2=10."
    )
    conditions: list[Condition] | None = pydantic.Field(default=None, max_length=16)
    variants: dict[str, VariantStatus] | None = pydantic.Field(default=None, max_length=16)
