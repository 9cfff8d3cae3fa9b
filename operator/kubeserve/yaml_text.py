"""YAML text of Kubernetes objects, as people read, apply and review it.

`dump` writes objects as block YAML; `edit_documents` changes documents of a file a person
wrote and keeps everything else as it was (comments, key order, flow mappings, quotes), so
that a GitOps diff shows only the values that changed.
"""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Callable
from typing import Any

import yaml
from ruamel.yaml import YAML


class _PlainDumper(yaml.SafeDumper):
    # A value used twice (a shared schema, a shared label dict) would be written once with an
    # anchor and then as `*id001`: valid YAML, but unreadable in a CRD or a rendered manifest.
    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump(obj: Any) -> str:
    """Give `obj` as block YAML: keys in their order, lines up to 100 wide, no anchors."""
    return yaml.dump(obj, Dumper=_PlainDumper, sort_keys=False, width=100)


_KEY_LINE = re.compile(r"^(?P<indent>[ -]*)[^ #-][^#]*:\s*(#.*)?$")
_CONTENT_LINE = re.compile(r"^(?P<spaces> *)(?P<dash>- )?[^ #]")
# A document starts at `---` in column 0: YAML forbids that line inside a scalar.
_DOCUMENT_START = re.compile(r"^---(\s|$)")


def edit_documents(text: str, edit: Callable[[Any], Any | None]) -> str:
    """Give `text` with the documents `edit` changes rewritten in place.

    `edit` gets each document as plain data and gives its new value, or None to leave it
    alone. A document left alone keeps its text to the byte; in a changed one only the
    values that differ are written anew.
    """
    return "".join(_edit_document(chunk, edit) for chunk in _documents(text))


def _documents(text: str) -> list[str]:
    """Split a YAML stream into the text of each document, its `---` and comments included."""
    chunks = [""]
    for line in text.splitlines(keepends=True):
        if _DOCUMENT_START.match(line) and _significant_lines(chunks[-1]):
            chunks.append("")
        chunks[-1] += line
    return chunks


def _edit_document(chunk: str, edit: Callable[[Any], Any | None]) -> str:
    body = [line for line in _significant_lines(chunk) if line not in ("---", "...")]
    if not body:
        return chunk
    # Each document may be indented its own way: ruamel.yaml writes one way per stream.
    rt = _round_trip(chunk)
    document = rt.load(chunk)
    new = edit(_plain(document))
    if new is None:
        return chunk
    out = io.StringIO()
    rt.dump(_merge(document, new), out)
    # ruamel.yaml keeps no `...`; put back the one a person wrote.
    if _significant_lines(chunk)[-1:] == ["..."]:
        out.write("...\n")
    return out.getvalue()


def _significant_lines(text: str) -> list[str]:
    return [
        line.rstrip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def _round_trip(text: str) -> YAML:
    rt = YAML(typ="rt")
    rt.preserve_quotes = True
    rt.width = 4096  # never re-wrap a long line a person wrote
    rt.brace_single_entry_mapping_in_flow_sequence = True  # [{name: gw}], not [name: gw]
    mapping, offset = _indentation(text)
    rt.indent(mapping=mapping, sequence=offset + 2, offset=offset)
    rt.explicit_start = bool(_DOCUMENT_START.match(_significant_lines(text)[0]))
    return rt


def _indentation(text: str) -> tuple[int, int]:
    """Guess how the text indents a mapping in a mapping, and a list's dash under its key.

    ruamel.yaml writes a document with one indentation; taking the document's own keeps every
    line that did not change as it was (`examples/` indent lists by 2, others by 0).
    """
    mapping, offset = None, None
    lines = [line for line in text.splitlines() if line.strip()]
    for above, line in itertools.pairwise(lines):
        key = _KEY_LINE.match(above)
        content = _CONTENT_LINE.match(line)
        if not key or not content:
            continue
        step = len(content["spaces"]) - len(key["indent"])
        if content["dash"] and offset is None and step >= 0:
            offset = step
        elif not content["dash"] and mapping is None and step > 0:
            mapping = step
    return mapping or 2, offset if offset is not None else 2


def _plain(value: Any) -> Any:
    """Copy ruamel.yaml's commented types into plain dicts, lists and scalars."""
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return value


def _merge(old: Any, new: Any) -> Any:
    """Give `old` changed to equal `new`, keeping the formatting of every part that is equal."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [k for k in old if k not in new]:
            del old[key]
        for key, value in new.items():
            if key not in old:
                old[key] = value
            else:
                merged = _merge(old[key], value)
                if merged is not old[key]:
                    old[key] = merged
        return old
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, value in enumerate(new):
            merged = _merge(old[i], value)
            if merged is not old[i]:
                old[i] = merged
        return old
    plain = _plain(old)
    return old if type(plain) is type(new) and plain == new else new
