"""The examples a user copies cover the features the README promises."""

from __future__ import annotations

from pathlib import Path

import yaml

from kubeserve.api import validation

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def load(name: str) -> validation.spec.InferenceService:
    return validation.parse(yaml.safe_load((EXAMPLES / name).read_text()))


def test_single_model() -> None:
    assert len(load("single.yaml").spec.variants) == 1


def test_canary_90_10() -> None:
    assert load("canary.yaml").spec.live_weights() == {"v1": 90, "v2": 10}


def test_sticky_ab_test_by_header() -> None:
    isvc = load("ab-sticky.yaml")
    assert isvc.spec.routing.sticky is not None and isvc.spec.routing.sticky.header
    assert sorted(isvc.spec.live_weights().values()) == [50, 50]


def test_shadow_variant() -> None:
    isvc = load("shadow.yaml")
    assert isvc.spec.routing.mirror is not None
    assert isvc.spec.live_weights()[isvc.spec.routing.mirror.variant] == 0


def test_gpu_variant() -> None:
    assert any(v.gpu for v in load("gpu.yaml").spec.variants)


def test_gateway_api() -> None:
    assert load("gateway-api.yaml").spec.routing.mode == "gateway-api"


def test_image_model_has_a_cpu_and_a_gpu_variant() -> None:
    isvc = load("image.yaml")
    gpu = [v for v in isvc.spec.variants if v.gpu]
    cpu = [v for v in isvc.spec.variants if not v.gpu]
    assert gpu and cpu
    assert all(v.model.storage_uri.endswith("/mobilenet/v1") for v in isvc.spec.variants)
