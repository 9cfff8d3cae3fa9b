"""Give the JSON merge patch (RFC 7386) that turns one document into another.

A merge patch merges maps key by key at every depth, so a key the new document no longer
has stays unless the patch says null for it, however deep it is; lists are replaced whole.
The status is written this way: nulling only its top-level keys left a removed variant in
`status.variants`, and the operator found the status changed, and wrote it, at every resync.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """Give the merge patch that turns `before` into `after` ({} when they are equal).

    A null in `after` means "absent", as a merge patch reads it.
    """
    patch: dict[str, Any] = {}
    for key, old in before.items():
        if after.get(key) is None and old is not None:
            patch[key] = None
    for key, new in after.items():
        if new is None:
            continue
        old = before.get(key)
        if isinstance(new, Mapping) and isinstance(old, Mapping):
            sub = diff(old, new)
            if sub:
                patch[key] = sub
        elif not _same(new, old):
            patch[key] = _without_nulls(new)
    return patch


def _same(a: Any, b: Any) -> bool:
    """Compare as JSON does: `true` is not `1`, and `1.0` is not `1`, at any depth."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
    return bool(a == b)


def _without_nulls(value: Any) -> Any:
    # In a map sent whole, a null would read as "delete": "absent" is said by leaving it out.
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value
