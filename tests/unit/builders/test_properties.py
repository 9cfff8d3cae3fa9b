"""Properties: any valid spec renders schema-valid manifests; any invalid input gives field errors."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubeserve import manifests
from kubeserve.api import crd, names, spec, validation
from kubeserve.api.errors import FieldError
from kubeserve.builders import children
from support import cel, gateway_schema, k8s_schema, strategies

SCHEMA = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
PROFILE = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROFILE
@given(strategies.inference_services())
def test_valid_specs_render_schema_valid_manifests(obj: dict[str, Any]) -> None:
    assert validation.validate(obj) == []
    isvc = validation.parse(obj)
    objects = children.build_children(isvc)
    assert objects
    for o in objects:
        # Gateway API's routes are CRDs the official schemas lack: their own CRDs check them
        # in test_router_build.py and test_grpc_routing.py (CEL in Python is slow).
        if o["kind"] not in gateway_schema.FILES:
            k8s_schema.assert_valid(o)
        assert len(o["metadata"]["name"]) <= names.MAX_LABEL
        assert o["metadata"]["namespace"] == obj["metadata"]["namespace"]
        for value in o["metadata"]["labels"].values():
            assert len(value) <= names.MAX_LABEL
    kinds = [o["kind"] for o in objects]
    # One Deployment and Service per variant, plus the nginx router's (not in gateway-api mode).
    router = int(isvc.spec.routing.mode == "nginx")
    assert kinds.count("Deployment") == kinds.count("Service") == len(isvc.spec.variants) + router
    # A budget per variant that asks for one, and the router's when it has replicas to spare.
    settings = isvc.spec.routing.router or spec.Router()
    budgets = sum(v.disruption_budget is not None for v in isvc.spec.variants)
    assert kinds.count("PodDisruptionBudget") == budgets + router * (settings.replicas > 1)
    assert manifests.dump_documents(objects) == manifests.dump_documents(
        children.build_children(validation.parse(copy.deepcopy(obj)))
    )


@PROFILE
@given(strategies.inference_services())
def test_valid_specs_pass_the_crd_schema_and_its_cel_rules(obj: dict[str, Any]) -> None:
    jsonschema.Draft4Validator(SCHEMA).validate(obj)  # OpenAPI v3.0 is draft 4 based
    assert list(cel.violations(SCHEMA, obj)) == []


def _assert_field_errors(found: list[FieldError]) -> None:
    assert found
    for e in found:
        assert isinstance(e, FieldError)
        assert e.path and e.message
        assert "Traceback" not in e.message


@PROFILE
@given(strategies.json_values)
def test_arbitrary_documents_give_field_errors_not_exceptions(obj: Any) -> None:
    _assert_field_errors(validation.validate(obj))


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """Replace one value somewhere in a valid spec with an arbitrary one."""
    obj = draw(strategies.inference_services())
    node: Any = obj
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        key = draw(st.sampled_from(keys))
        child = node[key]
        if isinstance(child, dict | list) and child and draw(st.booleans()):
            node = child
            continue
        node[key] = draw(strategies.json_values)
        break
    return obj


@PROFILE
@given(mutated())
def test_mutated_specs_are_either_valid_and_renderable_or_give_field_errors(
    obj: dict[str, Any],
) -> None:
    found = validation.validate(obj)
    if not found:
        # The mutation happened to keep it valid: it must then render cleanly.
        for o in children.build_children(validation.parse(obj)):
            k8s_schema.assert_valid(o)
        return
    _assert_field_errors(found)
    top = {"apiVersion", "kind", "metadata", "spec", "status", "(document)"}
    for e in found:
        assert e.path.split(".")[0].split("[")[0] in top, e
