"""Field errors: what is wrong with a spec, said with the path of the field that is wrong."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Sequence

import pydantic

from kubeserve.api import patterns


@dataclasses.dataclass(frozen=True, order=True)
class FieldError:
    """One problem in a resource, located by a kubectl-style field path."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class SpecError(ValueError):
    """Raised when a resource is invalid; carries every problem found, not only the first."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors: tuple[FieldError, ...] = tuple(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def join_path(*parts: str | int) -> str:
    """Render path parts as `spec.variants[1].weight`: names dotted, list indices bracketed.

    Map keys that are not plain names (`nvidia.com/gpu`, or an empty key) are bracketed and
    quoted, so the path stays unambiguous.
    """
    return extend_path("", *parts)


def extend_path(base: str, *parts: str | int) -> str:
    """Append path parts to an already rendered path such as `spec.variants[0]`."""
    out = base
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _PLAIN_KEY.match(part):
            out += f"[{json.dumps(part)}]"
        elif out:
            out += f".{part}"
        else:
            out = part
    return out


# Pydantic's wording is written for Python programmers; these say it for YAML writers.
_MESSAGES = {
    "missing": "required field is missing",
    "extra_forbidden": "unknown field (check the spelling; field names are camelCase)",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "dict_type": "must be a mapping",
    "list_type": "must be a list",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be a whole number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
}


def from_pydantic(
    exc: pydantic.ValidationError, *, prefix: Iterable[str | int] = ()
) -> list[FieldError]:
    """Turn a pydantic ValidationError into field errors with YAML field paths."""
    errors = []
    for err in exc.errors(include_url=False):
        # Union members and function validators add their own names to the location;
        # a user only knows the field names they wrote.
        loc = [p for p in err["loc"] if isinstance(p, int) or not _is_internal_loc(p)]
        message = _MESSAGES.get(err["type"]) or _reword(err["msg"])
        if err["type"] == "string_pattern_mismatch":
            explained = patterns.EXPLANATIONS.get(err.get("ctx", {}).get("pattern", ""))
            message = f"{err['input']!r} {explained}" if explained else message
        errors.append(FieldError(join_path(*prefix, *loc), message))
    return sorted(set(errors), key=lambda e: (e.path, e.message))


# Pydantic's sentence openings, and what a YAML writer reads instead.
_REWORDINGS = (
    ("Value error, ", ""),
    ("Input should be", "must be"),
    ("String should match pattern", "must match the pattern"),
    ("String should have", "must have"),
    ("List should have", "must have"),
    ("Dictionary should have", "must have"),
    (" after validation", ""),
)


def _reword(message: str) -> str:
    for old, new in _REWORDINGS:
        message = message.replace(old, new)
    return message


def _is_internal_loc(part: str) -> bool:
    return part.startswith(("function-", "tagged-union[", "union[")) or part in {
        "int",
        "str",
        "constrained-str",
        "list[...]",
    }
