"""Evaluate a CRD's `x-kubernetes-validations` rules on an object, as the API server would.

cel-python implements standard CEL; Kubernetes adds libraries on top. Only what our rules
use is added here: the list library's `sum()`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import celpy
from celpy import celtypes


def _sum(values: celtypes.ListType) -> celtypes.IntType:
    return celtypes.IntType(sum(int(v) for v in values))


_ENV = celpy.Environment()
_FUNCTIONS = {"sum": _sum}


def _program(rule: str) -> Any:
    return _ENV.program(_ENV.compile(rule), functions=_FUNCTIONS)


def violations(schema: dict[str, Any], obj: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Yield (path, message) for every rule that is false on `obj` or a part of it."""
    for rule in schema.get("x-kubernetes-validations", []):
        result = _program(rule["rule"]).evaluate({"self": celpy.json_to_cel(obj)})
        if isinstance(result, Exception):
            raise AssertionError(
                f"rule {rule['rule']!r} failed to evaluate at {path or '<root>'}: {result}"
            )
        if not bool(result):
            yield path + rule.get("fieldPath", ""), rule["message"]
    if isinstance(obj, dict):
        for key, value in obj.items():
            sub = schema.get("properties", {}).get(key) or schema.get("additionalProperties")
            if isinstance(sub, dict):
                yield from violations(sub, value, f"{path}.{key}")
    elif isinstance(obj, list) and "items" in schema:
        for i, value in enumerate(obj):
            yield from violations(schema["items"], value, f"{path}[{i}]")
