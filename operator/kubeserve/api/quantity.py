"""Kubernetes resource quantities (`500m`, `1Gi`, `2`): checked and compared, never rounded."""

from __future__ import annotations

import decimal
import re

# The grammar of resource.Quantity: a signed decimal then a binary-SI suffix, a
# decimal-SI suffix or a decimal exponent.
QUANTITY_PATTERN = (
    r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$"
)
_QUANTITY_RE = re.compile(QUANTITY_PATTERN)
# Resource amounts cannot be negative; the CRD holds strings to this shape.
NON_NEGATIVE_QUANTITY_PATTERN = QUANTITY_PATTERN.replace("^[+-]?", "^[+]?")

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": decimal.Decimal("1e-9"),
    "u": decimal.Decimal("1e-6"),
    "m": decimal.Decimal("1e-3"),
    "": decimal.Decimal(1),
    "k": decimal.Decimal("1e3"),
    "M": decimal.Decimal("1e6"),
    "G": decimal.Decimal("1e9"),
    "T": decimal.Decimal("1e12"),
    "P": decimal.Decimal("1e15"),
    "E": decimal.Decimal("1e18"),
}


def is_quantity(value: str | int) -> bool:
    """Tell whether `value` is a quantity the API server accepts."""
    return bool(_QUANTITY_RE.match(str(value)))


def parse_quantity(value: str | int) -> decimal.Decimal:
    """Give the exact value of a quantity; raise ValueError for anything else."""
    text = str(value)
    match = _QUANTITY_RE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (examples: 500m, 2, 1.5Gi, 256Mi)")
    suffix = match.group(3) or ""
    number = decimal.Decimal(text[: len(text) - len(suffix)])
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    return number * decimal.Decimal(10) ** int(suffix[1:])
