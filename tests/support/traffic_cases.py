"""The traffic commands' test material: an InferenceService to steer, and JSON Patch as applied.

`three` is what the commands read; `apply_json_patch` plays the API server on what they
send, so a test can compare the patched object with what the file mode writes.
"""

from __future__ import annotations

import copy
from typing import Any

from support import specs


def three() -> dict[str, Any]:
    """Give "digits" with v1=90, v2=10 and v3 mirrored 20%, at resourceVersion 41."""
    obj = specs.isvc(
        specs.variant("v1", 90),
        specs.variant("v2", 10),
        specs.variant("v3", 0),
        routing={"mirror": {"variant": "v3", "percent": 20}},
    )
    obj["metadata"]["resourceVersion"] = "41"
    return obj


def apply_json_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """Apply RFC 6902 add/remove/test, as the API server would (enough for these patches)."""
    doc = copy.deepcopy(doc)
    for op in ops:
        *parents, last = [
            p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]
        ]
        target = doc
        for p in parents:
            target = target[int(p)] if isinstance(target, list) else target[p]
        key: Any = int(last) if isinstance(target, list) else last
        if op["op"] == "test":
            if target[key] != op["value"]:
                raise ValueError(f"test failed at {op['path']}")
        elif op["op"] == "add":
            target[key] = op["value"]
        elif op["op"] == "remove":
            del target[key]
        else:
            raise AssertionError(op)
    return doc
