"""Generate the InferenceService CustomResourceDefinition from the pydantic models.

Pydantic writes JSON Schema with `$ref`s, `anyOf [X, null]` for optional fields and titles;
a CRD needs a *structural* schema: everything inline, one type per node, no nulls. This module
rewrites the one into the other and adds what only a CRD has: CEL rules, printer columns,
the status subresource. `crds/` holds its output; a test fails when the two drift apart.
"""

from __future__ import annotations

from typing import Any

import kubeserve
from kubeserve.api import base, names, spec, status

PLURAL = kubeserve.PLURAL
SINGULAR = "inferenceservice"
# KServe has `isvc` and Knative `ksvc`; these are ours.
SHORT_NAMES = ["infsvc", "kis"]

# Rules the API server enforces at admission (Kubernetes CEL, incl. its list library's sum()).
SPEC_RULES = [
    {
        "rule": "self.variants.all(a, self.variants.exists_one(b, b.name == a.name))",
        "message": "variant names must be unique",
        "fieldPath": ".variants",
    },
    {
        "rule": "(self.variants.size() == 1 && !has(self.variants[0].weight))"
        " || self.variants.map(v, has(v.weight) ? v.weight : 0).sum() == 100",
        "message": "weights of live variants must sum to 100",
        "fieldPath": ".variants",
    },
    {
        "rule": "!has(self.routing) || !has(self.routing.mirror)"
        " || self.variants.exists(v, v.name == self.routing.mirror.variant)",
        "message": "routing.mirror.variant must name one of spec.variants",
        "fieldPath": ".routing.mirror.variant",
    },
    {
        "rule": "!has(self.routing) || !has(self.routing.mirror)"
        " || self.variants.all(v, v.name != self.routing.mirror.variant"
        " || !has(v.weight) || v.weight == 0)",
        "message": "the mirror (shadow) variant must have weight 0: it gets copies, not live traffic",
        "fieldPath": ".routing.mirror.variant",
    },
    {
        "rule": "!has(self.experiment) || self.variants.exists(v, v.name == "
        "self.experiment.control && (self.variants.size() == 1 || "
        "(has(v.weight) && v.weight > 0)))",
        "message": "experiment.control must name a live variant (weight above 0)",
        "fieldPath": ".experiment.control",
    },
    {
        "rule": "!has(self.rollout) || self.variants.exists(v, v.name == self.rollout.candidate)",
        "message": "rollout.candidate must name one of spec.variants",
        "fieldPath": ".rollout.candidate",
    },
]
ROUTING_RULES = [
    {
        "rule": "!has(self.sticky) || !has(self.mode) || self.mode != 'gateway-api'",
        "message": "sticky is not supported in routing mode gateway-api "
        "(Gateway API's standard channel has no session persistence)",
        "fieldPath": ".sticky",
    },
    {
        "rule": "!has(self.mode) || self.mode != 'gateway-api'"
        " || (has(self.parentRefs) && self.parentRefs.size() > 0)",
        "message": "routing mode gateway-api needs parentRefs naming at least one Gateway",
        "fieldPath": ".parentRefs",
    },
    {
        "rule": "!has(self.parentRefs) || (has(self.mode) && self.mode == 'gateway-api')",
        "message": "parentRefs is only used with routing mode gateway-api",
        "fieldPath": ".parentRefs",
    },
    {
        "rule": "!has(self.router) || !has(self.mode) || self.mode == 'nginx'",
        "message": "router is only used with routing mode nginx",
        "fieldPath": ".router",
    },
]
VARIANT_RULES = [
    {
        "rule": "!(has(self.replicas) && has(self.autoscaling))",
        "message": "set replicas or autoscaling, not both",
    },
    {
        "rule": "self.name != '" + names.ROUTER_SUFFIX + "'",
        "message": "variant name '" + names.ROUTER_SUFFIX + "' is reserved for the router",
        "fieldPath": ".name",
    },
]
ONE_OF_RULES = {
    "Sticky": [
        {
            "rule": "has(self.header) != has(self.cookie)",
            "message": "set exactly one of header and cookie",
        }
    ],
    "DisruptionBudget": [
        {
            "rule": "has(self.minAvailable) != has(self.maxUnavailable)",
            "message": "set exactly one of minAvailable and maxUnavailable",
        }
    ],
    "Autoscaling": [
        {
            "rule": "!has(self.minReplicas) || self.maxReplicas >= self.minReplicas",
            "message": "maxReplicas must be at least minReplicas",
        }
    ],
}
ROOT_RULES = [
    {
        "rule": "self.metadata.name.size() <= " + str(names.MAX_SERVICE_NAME),
        "message": f"metadata.name must be at most {names.MAX_SERVICE_NAME} characters "
        f"(room for the '-{names.ROUTER_SUFFIX}' suffix)",
    },
    {
        "rule": "self.metadata.name.matches('" + names.DNS1035_LABEL + "')",
        "message": "metadata.name must be a DNS-1035 label (it names a Service)",
    },
    {
        "rule": "self.spec.variants.all(v, self.metadata.name.size() + v.name.size() < "
        + str(names.MAX_LABEL)
        + ")",
        "message": f"'<metadata.name>-<variant>' must be at most {names.MAX_LABEL} characters "
        "for every variant (it names the variant's Deployment and Service)",
    },
]
PRINTER_COLUMNS = [
    {"name": "URL", "type": "string", "jsonPath": ".status.url"},
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    },
    {"name": "Traffic", "type": "string", "jsonPath": ".status.traffic"},
    {"name": "Rollout", "type": "string", "jsonPath": ".status.rollout.progress"},
    {"name": "Verdict", "type": "string", "jsonPath": ".status.experiment.verdict"},
    {
        "name": "Reason",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
        "priority": 1,
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {
        "name": "Experiment",
        "type": "string",
        "jsonPath": ".status.experiment.summary",
        "priority": 1,
    },
]
_RULES_BY_MODEL = {
    "InferenceServiceSpec": SPEC_RULES,
    "Routing": ROUTING_RULES,
    "Variant": VARIANT_RULES,
    **ONE_OF_RULES,
}


_EXCLUSIVE_BOUNDS = {"exclusiveMinimum": "minimum", "exclusiveMaximum": "maximum"}


def structural(model: type[base.ApiModel]) -> dict[str, Any]:
    """Give the structural OpenAPI v3 schema of a model, CEL rules attached."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _rewrite(raw, defs, model.__name__)


def _rewrite(
    node: dict[str, Any], defs: dict[str, Any], model_name: str | None = None
) -> dict[str, Any]:
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        resolved = _rewrite(defs[name], defs, name)
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        return {**resolved, **_rewrite(siblings, defs)} if siblings else resolved
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        branches = [b for b in node["anyOf"] if b != {"type": "null"}]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if len(branches) != 1:
            raise ValueError(f"cannot express a union of {branches} in a structural schema")
        return _rewrite({**branches[0], **rest}, defs, model_name)

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in {"title", "propertyNames"}:
            continue
        if key == "additionalProperties" and value is False:
            continue  # the API server prunes unknown fields; `false` is not structural
        if key == "default" and (value is None or isinstance(value, dict | list)):
            continue
        if key == "properties":
            out[key] = {k: _rewrite(v, defs) for k, v in value.items()}
        elif key in {"items", "additionalProperties"}:
            out[key] = _rewrite(value, defs)
        elif key == "const":
            out["enum"] = [value]
        elif key in _EXCLUSIVE_BOUNDS and not isinstance(value, bool):
            # JSON Schema 2020-12 gives the bound itself; OpenAPI v3.0 (CRDs) a flag beside it.
            out[_EXCLUSIVE_BOUNDS[key]] = value
            out[key] = True
        else:
            out[key] = value
    if model_name in _RULES_BY_MODEL and out.get("type") == "object":
        out["x-kubernetes-validations"] = _RULES_BY_MODEL[model_name]
    return out


def _variants_as_map(schema: dict[str, Any]) -> dict[str, Any]:
    # A map-type list lets the API server refuse duplicate names and lets server-side apply
    # and `kubectl patch` address a variant by name rather than by index.
    variants = schema["properties"]["variants"]
    variants["x-kubernetes-list-type"] = "map"
    variants["x-kubernetes-list-map-keys"] = ["name"]
    return schema


def _without_defaults(node: Any) -> Any:
    # The API server applies schema defaults to the status too; in these large subtrees a
    # default the writer leaves out would make every status it writes differ from the one it
    # reads back.
    if isinstance(node, dict):
        return {k: _without_defaults(v) for k, v in node.items() if k != "default"}
    if isinstance(node, list):
        return [_without_defaults(v) for v in node]
    return node


def _status_schema() -> dict[str, Any]:
    schema = structural(status.InferenceServiceStatus)
    for key in ("experiment", "rollout"):
        schema["properties"][key] = _without_defaults(schema["properties"][key])
    return schema


def openapi_schema() -> dict[str, Any]:
    """Give the whole object's schema: spec, status and the rules on metadata.name."""
    return {
        "type": "object",
        "description": "InferenceService serves one or more versions of a model behind one "
        "stable endpoint that splits traffic between them (canary, A/B, shadow).",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": _variants_as_map(structural(spec.InferenceServiceSpec)),
            "status": _status_schema(),
        },
        "x-kubernetes-validations": ROOT_RULES,
    }


def build_crd() -> dict[str, Any]:
    """Build the CustomResourceDefinition object."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{kubeserve.API_GROUP}",
            "labels": {
                "app.kubernetes.io/name": "kubeserve",
                "app.kubernetes.io/part-of": "kubeserve",
            },
        },
        "spec": {
            "group": kubeserve.API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kubeserve.KIND,
                "listKind": f"{kubeserve.KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": ["kubeserve", "all"],
            },
            "versions": [
                {
                    "name": kubeserve.API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                }
            ],
        },
    }
