"""YAML text of Kubernetes objects, as people read and apply it."""

from __future__ import annotations

from typing import Any

import yaml


class _PlainDumper(yaml.SafeDumper):
    # A value used twice (a shared schema, a shared label dict) would be written once with an
    # anchor and then as `*id001`: valid YAML, but unreadable in a CRD or a rendered manifest.
    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump(obj: Any) -> str:
    """Give `obj` as block YAML: keys in their order, lines up to 100 wide, no anchors."""
    return yaml.dump(obj, Dumper=_PlainDumper, sort_keys=False, width=100)
