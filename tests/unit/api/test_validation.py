"""Validation: valid specs pass, each kind of mistake gives an error naming its field."""

from __future__ import annotations

from typing import Any

import pytest

from kubeserve.api import validation
from kubeserve.api.errors import SpecError
from support import specs


def errors_of(obj: Any) -> list[str]:
    return [str(e) for e in validation.validate(obj)]


def assert_error(obj: Any, path: str, fragment: str) -> None:
    found = validation.validate(obj)
    matching = [e for e in found if e.path == path and fragment in e.message]
    assert matching, f"no error at {path} mentioning {fragment!r}; got: {[str(e) for e in found]}"


def test_single_variant_without_weight_takes_all_traffic() -> None:
    isvc = validation.parse(specs.isvc())
    assert isvc.spec.live_weights() == {"v1": 100}


def test_canary_is_valid() -> None:
    assert errors_of(specs.canary()) == []


def test_weights_must_sum_to_100_error_names_the_field_and_the_split() -> None:
    obj = specs.isvc(specs.variant("v1", 80), specs.variant("v2", 10))
    assert errors_of(obj) == [
        "spec.variants[1].weight: weights of live variants sum to 90, must be 100 (v1=80, v2=10)"
    ]


def test_single_variant_with_partial_weight_is_refused() -> None:
    assert_error(specs.isvc(specs.variant("v1", 50)), "spec.variants[0].weight", "sum to 50")


def test_missing_weight_among_several_counts_as_zero() -> None:
    obj = specs.isvc(specs.variant("v1", 100), specs.variant("v2"))
    assert errors_of(obj) == []
    assert validation.parse(obj).spec.live_weights() == {"v1": 100, "v2": 0}


def test_duplicate_variant_names() -> None:
    obj = specs.isvc(specs.variant("v1", 50), specs.variant("v1", 50))
    assert_error(
        obj, "spec.variants[1].name", "duplicate variant name 'v1' (also spec.variants[0].name)"
    )


@pytest.mark.parametrize("name", ["V1", "1v", "v_1", "v1-", "-v", "a" * 64, ""])
def test_variant_names_are_dns1035_labels(name: str) -> None:
    found = validation.validate(specs.isvc(specs.variant(name)))
    assert any(e.path == "spec.variants[0].name" for e in found), found


def test_variant_name_router_is_reserved() -> None:
    assert_error(specs.isvc(specs.variant("router")), "spec.variants[0].name", "reserved")


def test_derived_names_fit_in_63_characters() -> None:
    name = "a" * 50
    ok = specs.isvc(specs.variant("b" * 12), name=name)
    assert errors_of(ok) == []
    too_long = specs.isvc(specs.variant("b" * 13), name=name)
    assert_error(too_long, "spec.variants[0].name", "at most 12 characters")


def test_isvc_name_leaves_room_for_router_suffix() -> None:
    assert_error(specs.isvc(specs.variant("v"), name="a" * 57), "metadata.name", "at most 56")


def test_isvc_name_must_be_dns1035() -> None:
    assert_error(specs.isvc(name="Digits"), "metadata.name", "DNS-1035")


def test_mirror_must_name_an_existing_variant() -> None:
    obj = specs.isvc(specs.variant("v1", 100), routing={"mirror": {"variant": "v3"}})
    assert_error(obj, "spec.routing.mirror.variant", "'v3' is not a variant (variants: v1)")


def test_mirror_target_must_not_take_live_traffic() -> None:
    obj = specs.isvc(
        specs.variant("v1", 90), specs.variant("v2", 10), routing={"mirror": {"variant": "v2"}}
    )
    assert_error(obj, "spec.routing.mirror.variant", "set its weight to 0")


def test_shadow_variant_without_weight_is_valid() -> None:
    obj = specs.isvc(
        specs.variant("v1", 100),
        specs.variant("v2"),
        routing={"mirror": {"variant": "v2", "percent": 20}},
    )
    assert errors_of(obj) == []


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("ftp://host/model", "unsupported storage URI 'ftp'"),
        ("models/v1", "unsupported storage URI 'models/v1'"),
        ("file://relative/path", "absolute path"),
        ("file:///", "absolute path"),
        ("s3:///no-bucket", "need a bucket"),
        ("https:///path", "need a host"),
        ("pvc://Bad_Claim/x", "claim name"),
        ("pvc://claim/../etc", "'..'"),
        ("file:///models/a b", "whitespace"),
    ],
)
def test_storage_uri_schemes_are_checked(uri: str, fragment: str) -> None:
    assert_error(
        specs.isvc(specs.variant("v1", model={"format": "onnx", "storageUri": uri})),
        "spec.variants[0].model.storageUri",
        fragment,
    )


@pytest.mark.parametrize(
    "uri",
    [
        "file:///models/digits/v1",
        "pvc://models-claim/digits/v1",
        "pvc://claim",
        "https://example.com/m.onnx",
        "http://10.0.0.1:8000/m",
        "s3://bucket/digits/v1",
        "gs://bucket/path",
    ],
)
def test_storage_uri_good_schemes(uri: str) -> None:
    assert (
        errors_of(specs.isvc(specs.variant("v1", model={"format": "onnx", "storageUri": uri})))
        == []
    )


def test_unknown_field_is_named() -> None:
    obj = specs.isvc(specs.variant("v1", model={"format": "onnx", "storageURI": "file:///m"}))
    found = errors_of(obj)
    assert (
        "spec.variants[0].model.storageURI: unknown field (check the spelling; field names are camelCase)"
        in found
    )
    assert "spec.variants[0].model.storageUri: required field is missing" in found


def test_wrong_types_are_named() -> None:
    obj = specs.isvc(specs.variant("v1", weight="100", replicas=1.5))
    assert "spec.variants[0].weight: must be an integer" in errors_of(obj)
    assert any(e.startswith("spec.variants[0].replicas:") for e in errors_of(obj))


def test_unknown_format_lists_the_choices() -> None:
    obj = specs.isvc(specs.variant("v1", model={"format": "tensorflow", "storageUri": "file:///m"}))
    assert "spec.variants[0].model.format: must be 'onnx' or 'sklearn'" in errors_of(obj)


def test_replicas_and_autoscaling_are_exclusive() -> None:
    obj = specs.isvc(specs.variant("v1", replicas=2, autoscaling={"maxReplicas": 3}))
    assert_error(obj, "spec.variants[0].autoscaling", "not both")


def test_autoscaling_bounds() -> None:
    obj = specs.isvc(specs.variant("v1", autoscaling={"minReplicas": 4, "maxReplicas": 2}))
    assert_error(obj, "spec.variants[0].autoscaling.maxReplicas", "at least minReplicas (4)")


def test_autoscaling_needs_a_cpu_request_when_resources_are_given() -> None:
    obj = specs.isvc(
        specs.variant(
            "v1", autoscaling={"maxReplicas": 2}, resources={"requests": {"memory": "1Gi"}}
        )
    )
    assert_error(obj, "spec.variants[0].resources.requests.cpu", "needs a cpu request")


def test_live_variant_needs_a_replica() -> None:
    assert_error(
        specs.isvc(specs.variant("v1", replicas=0)), "spec.variants[0].replicas", "at least 1"
    )
    dark = specs.isvc(specs.variant("v1", 100), specs.variant("v2", 0, replicas=0))
    assert errors_of(dark) == []


def test_requests_above_limits() -> None:
    obj = specs.isvc(
        specs.variant(
            "v1", resources={"requests": {"memory": "2Gi"}, "limits": {"memory": "1500Mi"}}
        )
    )
    assert_error(obj, "spec.variants[0].resources.requests.memory", "more than the limit 1500Mi")


def test_bad_quantity() -> None:
    obj = specs.isvc(specs.variant("v1", resources={"requests": {"cpu": "lots"}}))
    assert_error(obj, "spec.variants[0].resources.requests.cpu", "not a Kubernetes quantity")


def test_gpu_resources_must_go_through_the_gpu_field() -> None:
    obj = specs.isvc(specs.variant("v1", resources={"limits": {"nvidia.com/gpu": 1}}))
    assert_error(obj, "spec.variants[0].resources.limits", "use the variant's gpu field")


def test_gpu_product_conflicting_node_selector() -> None:
    obj = specs.isvc(
        specs.variant(
            "v1", gpu={"product": "NVIDIA-A100"}, nodeSelector={"nvidia.com/gpu.product": "T4"}
        )
    )
    assert_error(obj, "spec.variants[0].nodeSelector", "contradicts gpu.product")


def test_bad_mig_profile() -> None:
    obj = specs.isvc(specs.variant("v1", gpu={"migProfile": "huge"}))
    assert any(e.path == "spec.variants[0].gpu.migProfile" for e in validation.validate(obj))


def test_bad_node_selector_label() -> None:
    obj = specs.isvc(specs.variant("v1", nodeSelector={"bad key!": "x"}))
    assert any("not a valid label key" in str(e) for e in validation.validate(obj))


def test_toleration_rules() -> None:
    obj = specs.isvc(
        specs.variant("v1", tolerations=[{"key": "k", "operator": "Exists", "value": "v"}])
    )
    assert_error(obj, "spec.variants[0].tolerations[0]", "value must be empty")
    obj = specs.isvc(
        specs.variant(
            "v1", tolerations=[{"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5}]
        )
    )
    assert_error(obj, "spec.variants[0].tolerations[0]", "NoExecute")


def test_reserved_and_duplicate_env() -> None:
    obj = specs.isvc(
        specs.variant(
            "v1",
            env=[
                {"name": "KUBESERVE_PORT", "value": "1"},
                {"name": "A", "value": "1"},
                {"name": "A", "value": "2"},
                {"name": "HOME", "value": "/"},
            ],
        )
    )
    assert_error(obj, "spec.variants[0].env[0].name", "set by kubeserve")
    assert_error(obj, "spec.variants[0].env[2].name", "duplicate")
    assert_error(obj, "spec.variants[0].env[3].name", "set by kubeserve")


def test_env_value_from_needs_one_source() -> None:
    obj = specs.isvc(specs.variant("v1", env=[{"name": "A", "valueFrom": {}}]))
    assert_error(obj, "spec.variants[0].env[0].valueFrom", "exactly one of")


def test_sticky_needs_exactly_one_key() -> None:
    obj = specs.isvc(routing={"sticky": {"header": "x-user", "cookie": "uid"}})
    assert_error(obj, "spec.routing.sticky", "exactly one of header and cookie")


@pytest.mark.parametrize("header", ["x user", "x_user", "x-user\n", "ü", ""])
def test_header_names_cannot_smuggle_proxy_syntax(header: str) -> None:
    found = validation.validate(specs.isvc(routing={"sticky": {"header": header}}))
    assert any(e.path == "spec.routing.sticky.header" for e in found), found


def test_override_and_sticky_headers_differ() -> None:
    obj = specs.isvc(routing={"sticky": {"header": "x-user"}, "overrideHeader": "X-User"})
    assert_error(obj, "spec.routing.overrideHeader", "must differ")


def test_gateway_api_mode_needs_parent_refs() -> None:
    assert_error(
        specs.isvc(routing={"mode": "gateway-api"}),
        "spec.routing.parentRefs",
        "at least one Gateway",
    )
    assert_error(
        specs.isvc(routing={"parentRefs": [{"name": "gw"}]}), "spec.routing.parentRefs", "only used"
    )


def test_sticky_is_refused_in_gateway_mode() -> None:
    obj = specs.isvc(
        routing={"mode": "gateway-api", "parentRefs": [{"name": "gw"}], "sticky": {"header": "x-u"}}
    )
    assert_error(obj, "spec.routing.sticky", "no session persistence")


def test_router_settings_are_refused_in_gateway_mode() -> None:
    obj = specs.isvc(
        routing={"mode": "gateway-api", "parentRefs": [{"name": "gw"}], "router": {"replicas": 3}}
    )
    assert_error(obj, "spec.routing.router", "only used with routing mode nginx")


def test_router_settings_are_checked_like_a_variant() -> None:
    assert errors_of(specs.isvc(routing={"router": {}})) == []
    assert_error(
        specs.isvc(routing={"router": {"replicas": 0}}), "spec.routing.router.replicas", ""
    )
    assert_error(specs.isvc(routing={"router": {"workers": 0}}), "spec.routing.router.workers", "")
    too_much = {"requests": {"memory": "256Mi"}, "limits": {"memory": "128Mi"}}
    assert_error(
        specs.isvc(routing={"router": {"resources": too_much}}),
        "spec.routing.router.resources.requests.memory",
        "more than the limit 128Mi",
    )
    assert_error(
        specs.isvc(routing={"router": {"resources": {"requests": {"cpu": "-1"}}}}),
        "spec.routing.router.resources.requests.cpu",
        "",
    )


def test_disruption_budget_needs_exactly_one() -> None:
    obj = specs.isvc(specs.variant("v1", disruptionBudget={}))
    assert_error(obj, "spec.variants[0].disruptionBudget", "exactly one")
    obj = specs.isvc(specs.variant("v1", disruptionBudget={"minAvailable": "150%"}))
    assert any(
        e.path.startswith("spec.variants[0].disruptionBudget.minAvailable")
        for e in validation.validate(obj)
    )


@pytest.mark.parametrize(
    ("obj", "path"),
    [
        (None, "(document)"),
        ([], "(document)"),
        ("text", "(document)"),
        ({}, "apiVersion"),
        ({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {}}, "kind"),
        (specs.isvc() | {"spec": None}, "spec"),
        (specs.isvc() | {"spec": {"variants": []}}, "spec.variants"),
        (specs.isvc() | {"metadata": {}}, "metadata.name"),
    ],
)
def test_malformed_documents_give_errors_not_exceptions(obj: Any, path: str) -> None:
    found = validation.validate(obj)
    assert any(e.path == path for e in found), found


def test_parse_raises_spec_error_with_all_errors() -> None:
    obj = specs.isvc(
        specs.variant("v1", 80), specs.variant("v2", 10), routing={"mirror": {"variant": "nope"}}
    )
    with pytest.raises(SpecError) as info:
        validation.parse(obj)
    assert len(info.value.errors) == 2
    assert "spec.routing.mirror.variant" in str(info.value)


def test_every_pattern_has_an_explanation_for_users() -> None:
    from kubeserve.api import crd, names, patterns, quantity

    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                found.add(node["pattern"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(crd.openapi_schema())
    # These two get their own sentences (names.dns1035_problem, core._check_quantity).
    explained_elsewhere = {names.DNS1035_LABEL, quantity.NON_NEGATIVE_QUANTITY_PATTERN}
    assert found - explained_elsewhere <= set(patterns.EXPLANATIONS)
