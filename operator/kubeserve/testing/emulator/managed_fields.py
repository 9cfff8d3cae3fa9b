"""Record who set which fields in metadata.managedFields, as the API server's field manager does.

Every create, update and patch (not server-side apply, which the emulator does not serve)
is an `Update` operation of one manager: the `fieldManager` query parameter, else the
User-Agent up to its first `/` (apiserver `pkg/endpoints/handlers/rest.go`
managerOrUserAgent). One entry per manager, operation and subresource holds the fields that
manager set last: the fields a write changes move to the writer, from whoever held them;
fields it removes leave every entry; an entry left with no fields is dropped; a write that
changes nothing changes no entry. The main resource and the status subresource keep apart
(a kind's status is reset on main writes, its spec on status writes).

Fields are written in the FieldsV1 form of sigs.k8s.io/structured-merge-diff: `f:<name>`
for a field, `k:{<keys>}` for an item of a list keyed by some of its fields (containers by
name, ports by port and protocol: the list types of k8s.io/api), `v:<value>` for an item of
a set (finalizers) and `.` for an item itself. Other lists are atomic: one field. Unlike
structured-merge-diff, which knows each field's Go type, maps and structs are not told
apart: neither carries `.`.
"""

from __future__ import annotations

import json
from typing import Any

# Metadata the API server sets itself: never anyone's field (fieldmanager's stripMeta).
_SYSTEM_METADATA = {
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
}
# Lists of items keyed by some of their fields (`+listType=map` in k8s.io/api, and the
# InferenceService CRD's variants).
_KEYED_BY_NAME = {
    "containers",
    "initContainers",
    "ephemeralContainers",
    "env",
    "volumes",
    "imagePullSecrets",
    "variants",
}
_KEYED = {
    "volumeMounts": ("mountPath",),
    "ownerReferences": ("uid",),
    "conditions": ("type",),
}
_SETS = {"finalizers"}  # `+listType=set`
_ITEM = object()  # a keyed list item, present: the `.` of its entry
FIELD_MANAGER_MAX_LENGTH = 128  # apimachinery validation.FieldManagerMaxLength

Path = tuple[str, ...]
Entry = dict[str, Any]


def manager_of(field_manager: str | None, user_agent: str) -> str:
    """Name the manager of a write: `fieldManager`, else the User-Agent before its first `/`."""
    if field_manager:
        return field_manager
    prefix = "".join(ch for ch in user_agent.split("/")[0] if ch.isprintable())
    return prefix[:FIELD_MANAGER_MAX_LENGTH]


def _list_keys(field: str, items: list[Any]) -> tuple[str, ...] | None:
    if not items or not all(isinstance(item, dict) for item in items):
        return None
    if field in _KEYED_BY_NAME:
        keys: tuple[str, ...] = ("name",)
    elif field in _KEYED:
        keys = _KEYED[field]
    elif field == "ports":
        keys = (
            ("containerPort", "protocol") if "containerPort" in items[0] else ("port", "protocol")
        )
    else:
        return None
    if not all(all(key in item for key in keys) for item in items):
        return None
    identities = [tuple(json.dumps(item[key]) for key in keys) for item in items]
    return keys if len(set(identities)) == len(identities) else None


def _key_element(item: dict[str, Any], keys: tuple[str, ...]) -> str:
    chosen = {key: item[key] for key in sorted(keys)}
    return "k:" + json.dumps(chosen, separators=(",", ":"))


def _flatten(value: Any, path: Path, field: str, out: dict[Path, Any]) -> None:
    """Add the fields of `value` at `path` to `out`, each with its value."""
    if isinstance(value, dict) and value:
        for key, sub in value.items():
            _flatten(sub, (*path, f"f:{key}"), key, out)
        return
    scalars = isinstance(value, list) and all(not isinstance(i, dict | list) for i in value)
    if field in _SETS and value and scalars:
        for item in value:
            out[(*path, "v:" + json.dumps(item))] = True
        return
    if isinstance(value, list) and (keys := _list_keys(field, value)) is not None:
        for item in value:
            item_path = (*path, _key_element(item, keys))
            out[item_path] = _ITEM
            _flatten(item, item_path, "", out)
        return
    out[path] = value


def _changes(
    old: Any, new: Any, path: Path, field: str, changed: set[Path], removed: set[Path]
) -> None:
    """Collect the fields a write sets (new or different) and removes, past equal subtrees."""
    if old == new:
        return
    # The object itself is no field: its top level is compared key by key even when empty.
    if isinstance(old, dict) and isinstance(new, dict) and (not path or (old and new)):
        for key, value in new.items():
            if key in old:
                _changes(old[key], value, (*path, f"f:{key}"), key, changed, removed)
            else:
                added: dict[Path, Any] = {}
                _flatten(value, (*path, f"f:{key}"), key, added)
                changed.update(added)
        for key in old.keys() - new.keys():
            gone: dict[Path, Any] = {}
            _flatten(old[key], (*path, f"f:{key}"), key, gone)
            removed.update(gone)
        return
    before: dict[Path, Any] = {}
    after: dict[Path, Any] = {}
    _flatten(old, path, field, before)
    _flatten(new, path, field, after)
    changed.update(p for p, v in after.items() if p not in before or before[p] != v)
    removed.update(before.keys() - after.keys())


def _scope(
    obj: dict[str, Any] | None, *, subresource: str | None, status_apart: bool
) -> dict[str, Any]:
    """Give the part of `obj` a write of `subresource` can own."""
    out: dict[str, Any] = {}
    for key, value in (obj or {}).items():
        if key in {"apiVersion", "kind"}:
            continue
        if subresource == "status" and key != "status":
            continue
        if subresource is None and status_apart and key == "status":
            continue
        if key == "metadata" and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in _SYSTEM_METADATA}
            if not value:
                continue
        out[key] = value
    return out


def _encode(paths: set[Path]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in paths:
        node = tree
        for element in path:
            node = node.setdefault(element, {})
        if path and path[-1].startswith("k:"):
            node["."] = {}  # a keyed item is itself a field
    return _sorted(tree)


def _sorted(tree: dict[str, Any]) -> dict[str, Any]:
    return {key: _sorted(tree[key]) for key in sorted(tree)}


def _decode(tree: dict[str, Any], path: Path = ()) -> set[Path]:
    out: set[Path] = set()
    for element, node in tree.items():
        if element == ".":
            out.add(path)
        elif node:
            out |= _decode(node, (*path, element))
        else:
            out.add((*path, element))
    return out


def record(
    entries: list[Entry],
    old: dict[str, Any] | None,
    new: dict[str, Any],
    *,
    manager: str,
    subresource: str | None,
    status_apart: bool,
    api_version: str,
    now: str,
) -> list[Entry]:
    """Give the managedFields after `manager` wrote `new` over `old` (None for a create)."""
    changed: set[Path] = set()
    removed: set[Path] = set()
    before = _scope(old, subresource=subresource, status_apart=status_apart)
    after = _scope(new, subresource=subresource, status_apart=status_apart)
    _changes(before, after, (), "", changed, removed)
    if not changed and not removed:
        return entries
    mine: set[Path] = set()
    kept: list[Entry] = []
    for entry in entries:
        owned = _decode(entry.get("fieldsV1") or {})
        is_mine = (entry.get("manager"), entry.get("operation"), entry.get("subresource")) == (
            manager,
            "Update",
            subresource,
        )
        if is_mine:
            mine = owned - removed
            continue
        remaining = owned - changed - removed
        if remaining == owned:
            kept.append(entry)
        elif remaining:
            kept.append(entry | {"fieldsV1": _encode(remaining)})
    mine |= changed
    entry = {
        "manager": manager,
        "operation": "Update",
        "apiVersion": api_version,
        "time": now,
        "fieldsType": "FieldsV1",
        "fieldsV1": _encode(mine),
    }
    if subresource:
        entry["subresource"] = subresource
    kept.append(entry)
    # The API server writes entries sorted by operation, then time, then manager.
    return sorted(kept, key=lambda e: (e["operation"], e["time"], e["manager"]))
