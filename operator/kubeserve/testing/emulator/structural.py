"""Prune and default a custom resource by its structural schema, as apiextensions-apiserver does.

A CRD's API server drops fields its schema does not declare (pruning) and fills in the
`default:` of every absent property whose parent object is there (defaulting), in the
request it decodes and in what it reads back from storage. The rules follow
`staging/src/k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning/algorithm.go` and
`.../schema/defaulting/algorithm.go`:

- an object keeps the properties its schema names; `additionalProperties` or
  `x-kubernetes-preserve-unknown-fields: true` keep the rest;
- a null where the schema does not say `nullable: true` is dropped, then defaulted if the
  property has a default;
- a default is applied when the property is absent, and is itself defaulted further down;
- list items are pruned and defaulted by `items`;
- apiVersion, kind and metadata at the root are left to the generic ObjectMeta handling.
"""

from __future__ import annotations

import copy
from typing import Any

Schema = dict[str, Any]
_ROOT_FIELDS = {"apiVersion", "kind", "metadata"}


def prune(value: Any, schema: Schema, *, root: bool = True) -> Any:
    """Drop what `schema` does not declare; give the pruned value (objects change in place)."""
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        keep_unknown = schema.get("x-kubernetes-preserve-unknown-fields") is True
        for key in list(value):
            if root and key in _ROOT_FIELDS:
                continue
            if key in properties:
                sub: Schema | None = properties[key]
            elif isinstance(extra, dict):
                sub = extra
            elif keep_unknown or extra is True:
                continue
            else:
                del value[key]
                continue
            if value[key] is None and sub is not None and not sub.get("nullable"):
                del value[key]
            elif sub is not None:
                value[key] = prune(value[key], sub, root=False)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        value[:] = [prune(item, schema["items"], root=False) for item in value]
    return value


def default(value: Any, schema: Schema) -> None:
    """Fill in the defaults of `schema` in place, down every object and list present."""
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for key, sub in properties.items():
            absent = key not in value or (value[key] is None and not sub.get("nullable"))
            if "default" in sub and absent:
                value[key] = copy.deepcopy(sub["default"])
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if key in properties:
                default(item, properties[key])
            elif isinstance(extra, dict):
                default(item, extra)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            default(item, schema["items"])
