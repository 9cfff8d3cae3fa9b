"""An InferenceService "digits" rolling v2 out over v1, and the clock its rollout runs on.

The rollout's unit tests (the state machine, one look, its properties) share these: a
service with both variants and a `spec.rollout` to change per test, and times counted in
seconds from `T0`.
"""

from __future__ import annotations

import datetime
from typing import Any

from kubeserve.api import spec
from kubeserve.rollout import decide

T0 = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.UTC)
# The split live before the rollout starts: the candidate v2 has no traffic.
BEFORE = {"v1": 100, "v2": 0}


def at(seconds: float) -> datetime.datetime:
    """Give the time `seconds` after `T0`."""
    return T0 + datetime.timedelta(seconds=seconds)


def service(
    v1: int = 0,
    v2: int = 100,
    *,
    generation: int = 2,
    manual: str | None = None,
    rollout: dict[str, Any] | None = None,
    with_rollout: bool = True,
) -> spec.InferenceService:
    """Give "digits" with these weights, rolling v2 out unless not `with_rollout`.

    `rollout` overrides fields of `spec.rollout`; `manual` is a command in the annotation.
    """
    model = {"format": "onnx", "storageUri": "file:///models/digits"}
    body: dict[str, Any] = {
        "apiVersion": "serving.kubeserve.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "digits", "namespace": "default", "generation": generation},
        "spec": {
            "variants": [
                {"name": "v1", "weight": v1, "model": model},
                {"name": "v2", "weight": v2, "model": model},
            ],
        },
    }
    if with_rollout:
        body["spec"]["rollout"] = {
            "candidate": "v2",
            "minRequestsPerStep": 100,
            "minStepDuration": "60s",
            **(rollout or {}),
        }
    if manual is not None:
        body["metadata"]["annotations"] = {decide.MANUAL_ANNOTATION: manual}
    return spec.InferenceService.model_validate(body)
