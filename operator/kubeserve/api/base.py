"""The pydantic base model shared by every API type: camelCase on the wire, strict shapes."""

from __future__ import annotations

from typing import Any

import pydantic
from pydantic import alias_generators


class ApiModel(pydantic.BaseModel):
    """Base of the API types: YAML's camelCase names, unknown fields refused, values frozen."""

    model_config = pydantic.ConfigDict(
        alias_generator=alias_generators.to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        # YAML gives `replicas: "2"` as a string by mistake; the API server would refuse
        # it, so we do too rather than guess.
        strict=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """Dump as the API server stores it: camelCase, unset fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
