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
    assert errors_of(too_long) == [
        "spec.variants[0].name: '<metadata.name>-<variant>' must be at most 63 characters "
        "(has 64): it names the variant's Deployment and Service"
    ]


@pytest.mark.parametrize("length", [57, 60, 63, 64, 70])
def test_isvc_name_limit_is_56_whatever_the_length(length: int) -> None:
    # Not "at most 63" first and "at most 56" once that is met; never a negative room.
    found = errors_of(specs.isvc(specs.variant("v1"), name="a" * length))
    assert found == [
        f"metadata.name: must be at most 56 characters (has {length}): "
        "the router's objects are named '<name>-router'"
    ]


def test_a_long_variant_beside_a_long_name_says_the_combined_limit() -> None:
    found = errors_of(specs.isvc(specs.variant("canary-b"), name="a" * 70))
    assert found == [
        "metadata.name: must be at most 56 characters (has 70): "
        "the router's objects are named '<name>-router'",
        "spec.variants[0].name: '<metadata.name>-<variant>' must be at most 63 characters "
        "(has 79): it names the variant's Deployment and Service",
    ]


def test_isvc_name_too_long_and_malformed_reports_both() -> None:
    found = validation.validate(specs.isvc(name="A" * 60))
    assert [e.path for e in found] == ["metadata.name", "metadata.name"]
    assert any("must be at most 56 characters (has 60)" in e.message for e in found)
    assert any("is not a DNS-1035 label" in e.message for e in found)


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


def test_unknown_field_is_named_with_the_nearest_known_one() -> None:
    obj = specs.isvc(specs.variant("v1", model={"format": "onnx", "storageURI": "file:///m"}))
    found = errors_of(obj)
    assert "spec.variants[0].model.storageURI: unknown field (did you mean 'storageUri'?)" in found
    assert "spec.variants[0].model.storageUri: required field is missing" in found


@pytest.mark.parametrize(
    ("where", "typo", "nearest"),
    [
        (("spec", "variants", 0), "wieght", "weight"),
        (("spec", "variants", 0), "nodeselector", "nodeSelector"),
        (("spec", "routing"), "overideHeader", "overrideHeader"),
        (("spec", "variants", 0, "resources"), "limit", "limits"),
        (("spec", "variants", 0, "env", 0), "valueFromm", "valueFrom"),
        ((), "specs", "spec"),
    ],
)
def test_unknown_fields_suggest_the_nearest_name(
    where: tuple[str | int, ...], typo: str, nearest: str
) -> None:
    obj = specs.isvc(
        specs.variant("v1", resources={}, env=[{"name": "A", "value": "1"}]), routing={}
    )
    target: Any = obj
    for part in where:
        target = target[part]
    target[typo] = target.pop(nearest, 1)
    path = ".".join(str(p) for p in where).replace(".0", "[0]")
    path = f"{path}.{typo}" if path else typo
    assert f"{path}: unknown field (did you mean {nearest!r}?)" in errors_of(obj)


def test_an_unknown_field_like_no_other_keeps_the_spelling_hint() -> None:
    obj = specs.isvc(specs.variant("v1", colour="blue"))
    assert (
        "spec.variants[0].colour: unknown field (check the spelling; field names are camelCase)"
        in errors_of(obj)
    )


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


def _model_with_max_size(max_size: object) -> dict[str, Any]:
    model = {"format": "onnx", "storageUri": "s3://bucket/m", "maxSize": max_size}
    return specs.isvc(specs.variant("v1", model=model))


@pytest.mark.parametrize(
    ("max_size", "fragment"),
    [
        ("lots", "not a Kubernetes quantity"),
        ("-1Gi", "negative"),
        ("0", "not a size in whole bytes, at least 1"),
        (0, "not a size in whole bytes, at least 1"),
        ("100m", "not a size in whole bytes"),
        ("0.5", "not a size in whole bytes"),
    ],
)
def test_model_max_size_must_be_whole_bytes(max_size: object, fragment: str) -> None:
    assert_error(_model_with_max_size(max_size), "spec.variants[0].model.maxSize", fragment)


@pytest.mark.parametrize(
    ("max_size", "max_bytes"),
    [("10Gi", 10 * 2**30), ("1.5k", 1500), (4096, 4096), ("2G", 2 * 10**9)],
)
def test_model_max_size_takes_quantities(max_size: object, max_bytes: int) -> None:
    model = validation.parse(_model_with_max_size(max_size)).spec.variants[0].model
    assert model.max_bytes() == max_bytes


def test_model_max_size_defaults_to_10gi() -> None:
    assert validation.parse(specs.isvc()).spec.variants[0].model.max_bytes() == 10 * 2**30


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


# --- a wrong type hides no other problem ------------------------------------------------------


def test_a_wrong_type_hides_no_other_problem() -> None:
    obj = specs.isvc(
        specs.variant(
            "v1",
            "fifty",
            model={"format": "onnx", "storageUri": "ftp://host/m"},
            env=[{"name": "KUBESERVE_PORT", "value": "1"}],
        ),
        specs.variant("v2", 50, replicas=1, autoscaling={"maxReplicas": 2}),
        routing={"overrideHeader": "x-v", "sticky": {"header": "X-V"}},
    )
    assert errors_of(obj) == [
        "spec.routing.overrideHeader: must differ from sticky.header",
        "spec.variants[0].env[0].name: 'KUBESERVE_PORT' is set by kubeserve "
        "(reserved: KUBESERVE_*, HOME)",
        "spec.variants[0].model.storageUri: unsupported storage URI 'ftp': "
        "use one of file://, pvc://, http://, https://, s3://, gs://",
        "spec.variants[0].weight: must be an integer",
        "spec.variants[1].autoscaling: set replicas or autoscaling, not both",
    ]


def test_a_dropped_weight_invents_no_sum_or_replica_problem() -> None:
    obj = specs.isvc(specs.variant("v1", "fifty", replicas=0), specs.variant("v2", 50))
    assert errors_of(obj) == ["spec.variants[0].weight: must be an integer"]


def test_a_variant_that_cannot_parse_leaves_the_others_at_their_indices() -> None:
    obj = specs.isvc(
        specs.variant("v1", 50),
        specs.variant("v2", 50, model={"format": "pytorch", "storageUri": "file:///m"}),
        specs.variant("v3", 0, model={"format": "onnx", "storageUri": "s3:///no-bucket"}),
        specs.variant("v1", 0),
    )
    assert errors_of(obj) == [
        "spec.variants[1].model.format: must be 'onnx' or 'sklearn'",
        "spec.variants[2].model.storageUri: s3 URIs need a bucket, e.g. s3://bucket/models/v1",
        "spec.variants[3].name: duplicate variant name 'v1' (also spec.variants[0].name)",
    ]


def test_an_env_entry_that_cannot_parse_leaves_the_others_at_their_indices() -> None:
    env = [{"name": 7}, {"name": "HOME", "value": "/"}]
    found = errors_of(specs.isvc(specs.variant("v1", env=env)))
    assert found == [
        "spec.variants[0].env[0].name: must be a string",
        "spec.variants[0].env[1].name: 'HOME' is set by kubeserve (reserved: KUBESERVE_*, HOME)",
    ]


def test_a_bad_quantity_is_not_also_a_missing_cpu_request() -> None:
    obj = specs.isvc(
        specs.variant("v1", autoscaling={"maxReplicas": 3}, resources={"requests": {"cpu": "lots"}})
    )
    assert [e.split(":")[0] for e in errors_of(obj)] == ["spec.variants[0].resources.requests.cpu"]


def test_a_bad_routing_mode_invents_no_mode_problems() -> None:
    obj = specs.isvc(routing={"mode": "istio", "parentRefs": [{"name": "gw"}]})
    assert errors_of(obj) == ["spec.routing.mode: must be 'nginx' or 'gateway-api'"]


@pytest.mark.parametrize("metadata", [{"name": 7}, {}, "digits"])
def test_a_bad_metadata_still_has_the_spec_checked(metadata: Any) -> None:
    obj = specs.isvc(specs.variant("v1", model={"format": "onnx", "storageUri": "ftp://h/m"}))
    obj["metadata"] = metadata
    found = errors_of(obj)
    assert "spec.variants[0].model.storageUri: unsupported storage URI 'ftp'" in found[-1]
    assert not any("unnamed" in e for e in found)
