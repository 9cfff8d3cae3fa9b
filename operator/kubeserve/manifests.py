"""Reading and writing multi-document YAML, with errors that say where the problem is."""

from __future__ import annotations

import sys
from collections.abc import Hashable, Iterable
from pathlib import Path
from typing import Any

import yaml

from kubeserve import yaml_text

MAX_INPUT_BYTES = 8 * 1024 * 1024


class InputError(Exception):
    """A file that cannot be read or is not YAML; the message is meant for the user."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, which kubectl refuses too."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    first_line: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if not isinstance(key, Hashable):
            continue  # construct_mapping refuses it, saying where
        if key in first_line:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r}: first defined at line {first_line[key]}, again at line {line}",
                key_node.start_mark,
            )
        first_line[key] = line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def read_text(path: str) -> str:
    """Read a file, or standard input for `-`, refusing what is too large to be a manifest."""
    try:
        if path == "-":
            text = sys.stdin.read(MAX_INPUT_BYTES + 1)
        else:
            with Path(path).open(encoding="utf-8") as f:
                text = f.read(MAX_INPUT_BYTES + 1)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    if len(text) > MAX_INPUT_BYTES:
        raise InputError(
            f"{path}: larger than {MAX_INPUT_BYTES // (1024 * 1024)} MiB, not a manifest"
        )
    return text


def parse_documents(text: str, *, source: str = "<input>") -> list[Any]:
    """Parse every YAML document of a text, skipping empty ones (a stray `---`)."""
    try:
        return [doc for doc in yaml.load_all(text, Loader=_StrictLoader) if doc is not None]
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(f"{source}: not valid YAML{where}: {problem}") from None


def load_documents(path: str) -> list[Any]:
    """Read and parse every YAML document of a file (or `-`)."""
    return parse_documents(read_text(path), source=path)


def dump_documents(objects: Iterable[dict[str, Any]]) -> str:
    """Render objects as multi-document YAML, deterministically."""
    return "---\n".join(yaml_text.dump(o) for o in objects)
