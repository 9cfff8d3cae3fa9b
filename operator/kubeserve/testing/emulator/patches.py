"""Patch formats and selectors as the API server applies them: RFC 7386, RFC 6902, labels."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any, TypeVar, cast

import orjson

T = TypeVar("T")


def clone(value: T) -> T:
    """Copy a JSON value deeply (a JSON round trip: many times faster than copy.deepcopy)."""
    return cast(T, orjson.loads(orjson.dumps(value)))


class PatchError(Exception):
    """A patch that cannot be applied; `status` is the HTTP code the API server answers."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 JSON merge patch: maps merge, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return clone(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"JSON pointer {path!r} must start with '/'", 400)
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str], path: str) -> Any:
    node = doc
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise PatchError(f"path {path!r} does not exist")
    return node


def _get(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        return doc
    parent = _parent(doc, parts, path)
    key = parts[-1]
    if isinstance(parent, dict) and key in parent:
        return parent[key]
    if isinstance(parent, list) and key.isdigit() and int(key) < len(parent):
        return parent[int(key)]
    raise PatchError(f"path {path!r} does not exist")


def _add(doc: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    parent = _parent(doc, parts, path)
    key = parts[-1]
    if isinstance(parent, dict):
        parent[key] = value
    elif isinstance(parent, list):
        index = len(parent) if key == "-" else int(key) if key.isdigit() else -1
        if not 0 <= index <= len(parent):
            raise PatchError(f"index in {path!r} is out of range")
        parent.insert(index, value)
    else:
        raise PatchError(f"path {path!r} does not exist")
    return doc


def _remove(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    _get(doc, path)
    parent = _parent(doc, parts, path)
    if isinstance(parent, dict):
        del parent[parts[-1]]
    else:
        del parent[int(parts[-1])]
    return doc


def json_patch(target: Any, operations: Any) -> Any:
    """Apply an RFC 6902 JSON patch; a failed `test` refuses the whole patch."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations", 400)
    doc = clone(target)
    for op in operations:
        kind, path = op.get("op"), op.get("path", "")
        if kind == "test":
            if _get(doc, path) != op.get("value"):
                raise PatchError(f"test operation on {path!r} failed")
        elif kind == "add":
            doc = _add(doc, path, clone(op.get("value")))
        elif kind == "remove":
            doc = _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)
            doc = _add(_remove(doc, path), path, clone(op.get("value")))
        elif kind in {"move", "copy"}:
            value = clone(_get(doc, op.get("from", "")))
            if kind == "move":
                doc = _remove(doc, op["from"])
            doc = _add(doc, path, value)
        else:
            raise PatchError(f"unknown JSON patch operation {kind!r}", 400)
    return doc


_REQUIREMENT = re.compile(
    r"^\s*(!?)\s*([^\s=!<>()]+)\s*(?:(=|==|!=|\s+in\s+|\s+notin\s+)\s*(.*?))?\s*$"
)


def _split_requirements(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current] if current.strip() else parts


@dataclasses.dataclass(frozen=True)
class Requirement:
    """One term of a label selector."""

    key: str
    op: str  # exists, !exists, =, !=, in, notin
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        value = labels.get(self.key)
        return {
            "exists": value is not None,
            "!exists": value is None,
            "=": value in self.values,
            "!=": value not in self.values,
            "in": value in self.values,
            "notin": value not in self.values,
        }[self.op]


def parse_label_selector(selector: str | None) -> list[Requirement]:
    """Parse a label selector (`a=b,c!=d,e,!f,g in (x,y),h notin (z)`)."""
    requirements = []
    for text in _split_requirements(selector or ""):
        match = _REQUIREMENT.match(text)
        if not match:
            raise PatchError(f"unable to parse requirement {text!r}", 400)
        negated, key, op, value = match.groups()
        op = (op or "").strip()
        if not op:
            requirements.append(Requirement(key, "!exists" if negated else "exists"))
        elif op in {"=", "=="}:
            requirements.append(Requirement(key, "=", frozenset({value})))
        elif op == "!=":
            requirements.append(Requirement(key, "!=", frozenset({value})))
        else:
            values = frozenset(v.strip() for v in value.strip().strip("()").split(",") if v.strip())
            requirements.append(Requirement(key, op, values))
    return requirements


def label_selector(selector: str | None) -> Callable[[dict[str, str]], bool]:
    """Compile a label selector into a predicate on a label map."""
    requirements = parse_label_selector(selector)
    return lambda labels: all(r.matches(labels) for r in requirements)


def field_selector(selector: str | None) -> Callable[[dict[str, Any]], bool]:
    """Compile the field selectors the API server supports on every kind (name, namespace)."""
    wanted: list[tuple[str, bool, str]] = []
    for requirement in _split_requirements(selector or ""):
        negate = "!=" in requirement
        field, _, value = requirement.replace("!=", "=").replace("==", "=").partition("=")
        field = field.strip()
        if field not in {"metadata.name", "metadata.namespace"}:
            raise PatchError(f"field label not supported: {field}", 400)
        wanted.append((field.split(".")[1], negate, value.strip()))

    def check(obj: dict[str, Any]) -> bool:
        meta = obj.get("metadata", {})
        return all((meta.get(f) == v) != negate for f, negate, v in wanted)

    return check
