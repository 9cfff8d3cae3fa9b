"""Field errors: what is wrong with a spec, said with the path of the field that is wrong."""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import types
import typing
from collections.abc import Iterable, Sequence
from typing import Any

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


Loc = tuple[str | int, ...]


def from_pydantic(
    exc: pydantic.ValidationError,
    *,
    prefix: Iterable[str | int] = (),
    model: type[pydantic.BaseModel] | None = None,
) -> list[FieldError]:
    """Turn a pydantic ValidationError into field errors with YAML field paths.

    Given the `model` that was validated, an unknown field names the nearest known one.
    """
    errors = []
    for err in exc.errors(include_url=False):
        loc = user_loc(err["loc"])
        message = _MESSAGES.get(err["type"]) or _reword(err["msg"])
        if err["type"] == "string_pattern_mismatch":
            explained = patterns.EXPLANATIONS.get(err.get("ctx", {}).get("pattern", ""))
            message = f"{err['input']!r} {explained}" if explained else message
        if err["type"] == "extra_forbidden" and model is not None and loc:
            nearest = _nearest_field(model, loc)
            message = f"unknown field (did you mean {nearest!r}?)" if nearest else message
        errors.append(FieldError(join_path(*prefix, *loc), message))
    return sorted(set(errors), key=lambda e: (e.path, e.message))


def user_loc(loc: Iterable[str | int]) -> Loc:
    """Keep the parts of a pydantic error location that a user wrote: keys and indices.

    Union members and function validators add their own names to the location, and a bad
    mapping key ends in `[key]`; a user only knows the field names they wrote.
    """
    return tuple(p for p in loc if isinstance(p, int) or not _is_internal_loc(p))


def _nearest_field(model: type[pydantic.BaseModel], loc: Loc) -> str | None:
    """Give the known field name closest to the unknown one at `loc`, if one is close."""
    parent = _model_at(model, loc[:-1])
    if parent is None or not isinstance(loc[-1], str):
        return None
    known = {(f.alias or name).lower(): f.alias or name for name, f in parent.model_fields.items()}
    close = difflib.get_close_matches(loc[-1].lower(), known, n=1, cutoff=0.6)
    return known[close[0]] if close else None


def _model_at(annotation: Any, loc: Loc) -> type[pydantic.BaseModel] | None:
    """Follow `loc` through the type annotations from `annotation` to the model found there."""
    for part in loc:
        annotation = next(
            (t for c in _members(annotation) if (t := _step(c, part)) is not None), None
        )
        if annotation is None:
            return None
    return next((c for c in _members(annotation) if _is_model(c)), None)


def _members(annotation: Any) -> list[Any]:
    """Unwrap Annotated[X, ...] and X | Y | None into the types a value may have."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in _members(a)]
    return [annotation]


def _step(annotation: Any, part: str | int) -> Any:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if isinstance(part, int):
        return args[0] if origin is list and args else None
    if origin is dict and len(args) == 2:
        return args[1]
    if _is_model(annotation):
        for name, field in annotation.model_fields.items():
            if part in (name, field.alias):
                return field.annotation
    return None


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel)


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
        "[key]",
    }
