"""The CRD: generated from the models, committed, structural, schema-valid, CEL rules correct."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from kubeserve import manifests
from kubeserve.api import crd
from support import cel, k8s_schema, specs

ROOT = Path(__file__).resolve().parents[3]
COMMITTED = ROOT / "crds" / "serving.kubeserve.dev_inferenceservices.yaml"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_committed_crd_matches_the_generator() -> None:
    assert COMMITTED.read_text() == manifests.crd_text(), (
        "crds/ drifted from operator/kubeserve/api: run `kubeserve crd -o "
        + str(COMMITTED.relative_to(ROOT))
        + "`"
    )


def test_crd_passes_the_official_schema() -> None:
    k8s_schema.assert_valid(yaml.safe_load(COMMITTED.read_text()))


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for key, sub in node.get("properties", {}).items():
        out += _walk(sub, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        out += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        out += _walk(node["additionalProperties"], f"{path}{{}}")
    return out


def test_schema_is_structural(schema: dict[str, Any]) -> None:
    for path, node in _walk(schema):
        where = path or "<root>"
        assert "$ref" not in node and "$defs" not in node, where
        assert "nullable" not in node and "const" not in node and "title" not in node, where
        if node.get("x-kubernetes-int-or-string"):
            assert node.get("anyOf") == [{"type": "integer"}, {"type": "string"}], where
            assert "type" not in node, where
            continue
        assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}, (
            where
        )
        assert "anyOf" not in node and "oneOf" not in node and "allOf" not in node, where
        assert not ("properties" in node and "additionalProperties" in node), where
        if node["type"] == "array":
            assert "items" in node, where
        if "default" in node:
            # OpenAPI v3.0, as CRDs speak it, has draft 4's boolean exclusiveMinimum.
            rest = {k: v for k, v in node.items() if k != "default"}
            jsonschema.Draft4Validator(rest).validate(node["default"])


def test_lists_and_strings_under_cel_rules_are_bounded(schema: dict[str, Any]) -> None:
    # The API server estimates CEL cost from maxItems/maxLength; unbounded ones blow the budget.
    spec = schema["properties"]["spec"]
    assert spec["properties"]["variants"]["maxItems"] <= 16
    assert spec["properties"]["variants"]["items"]["properties"]["name"]["maxLength"] == 63


def test_names_columns_and_subresources() -> None:
    obj = crd.build_crd()
    names = obj["spec"]["names"]
    assert names["kind"] == "InferenceService" and names["plural"] == "inferenceservices"
    assert not {"isvc", "ksvc"} & set(names["shortNames"])
    version = obj["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[:3] == ["URL", "Ready", "Traffic"] and "Age" in columns
    assert obj["metadata"]["name"] == "inferenceservices.serving.kubeserve.dev"


def test_variants_list_is_keyed_by_name(schema: dict[str, Any]) -> None:
    variants = schema["properties"]["spec"]["properties"]["variants"]
    assert variants["x-kubernetes-list-type"] == "map"
    assert variants["x-kubernetes-list-map-keys"] == ["name"]
    assert "name" in variants["items"]["required"]


def test_every_field_is_described_for_kubectl_explain(schema: dict[str, Any]) -> None:
    spec = schema["properties"]["spec"]
    for path, node in _walk(spec):
        if node.get("type") == "object" and "properties" in node:
            assert node.get("description"), f"spec{path} has no description"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_pass_openapi_and_cel(path: Path, schema: dict[str, Any]) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        jsonschema.Draft4Validator(schema).validate(doc)  # OpenAPI v3.0 is draft 4 based
        assert list(cel.violations(schema, doc)) == []


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (
            specs.isvc(specs.variant("v1", 80), specs.variant("v2", 10)),
            "weights of live variants must sum to 100",
        ),
        (specs.isvc(specs.variant("v1", 50)), "weights of live variants must sum to 100"),
        (
            specs.isvc(specs.variant("v1", 50), specs.variant("v1", 50)),
            "variant names must be unique",
        ),
        (
            specs.isvc(specs.variant("v1", 100), routing={"mirror": {"variant": "v9"}}),
            "routing.mirror.variant must name one of spec.variants",
        ),
        (
            specs.isvc(
                specs.variant("v1", 90),
                specs.variant("v2", 10),
                routing={"mirror": {"variant": "v2"}},
            ),
            "must have weight 0",
        ),
        (specs.isvc(routing={"mode": "gateway-api"}), "needs parentRefs"),
        (
            specs.isvc(routing={"parentRefs": [{"name": "gw"}]}),
            "only used with routing mode gateway-api",
        ),
        (
            specs.isvc(routing={"sticky": {"header": "a", "cookie": "b"}}),
            "exactly one of header and cookie",
        ),
        (specs.isvc(routing={"sticky": {}}), "exactly one of header and cookie"),
        (
            specs.isvc(
                routing={
                    "mode": "gateway-api",
                    "parentRefs": [{"name": "gw"}],
                    "sticky": {"header": "x"},
                }
            ),
            "sticky is not supported in routing mode gateway-api",
        ),
        (
            specs.isvc(
                routing={
                    "mode": "gateway-api",
                    "parentRefs": [{"name": "gw"}],
                    "router": {"replicas": 3},
                }
            ),
            "router is only used with routing mode nginx",
        ),
        (specs.isvc(specs.variant("v1", replicas=1, autoscaling={"maxReplicas": 2})), "not both"),
        (
            specs.isvc(specs.variant("v1", autoscaling={"minReplicas": 3, "maxReplicas": 2})),
            "maxReplicas must be at least minReplicas",
        ),
        (specs.isvc(specs.variant("v1", disruptionBudget={})), "exactly one of minAvailable"),
        (specs.isvc(specs.variant("router")), "reserved for the router"),
        (specs.isvc(name="a" * 57), "at most 56 characters"),
        (specs.isvc(name="Digits"), "DNS-1035"),
        (
            specs.isvc(specs.variant("b" * 20), name="a" * 45),
            "'<metadata.name>-<variant>' must be at most 63 characters",
        ),
    ],
)
def test_cel_rules_reject_what_validation_rejects(
    obj: dict[str, Any], message: str, schema: dict[str, Any]
) -> None:
    from kubeserve.api import validation

    assert validation.validate(obj), "the operator's validation must reject it too"
    messages = [m for _, m in cel.violations(schema, obj)]
    assert any(message in m for m in messages), messages
