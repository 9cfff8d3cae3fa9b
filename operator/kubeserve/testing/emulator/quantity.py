"""Write resource quantities in the canonical form kube-apiserver stores and returns.

The API server parses every `resource.Quantity` it decodes and writes it back in canonical
form (`0.5` → `500m`, `1024Mi` → `1Gi`, `1000m` → `1`), so what a client reads back is not
always what it sent. The rules follow apimachinery's
`staging/src/k8s.io/apimachinery/pkg/api/resource/quantity.go` (`ParseQuantity`,
`CanonicalizeBytes`) and `amount.go` (`AsCanonicalBytes`, `AsCanonicalBase1024Bytes`):

- the suffix family is kept: a binary-SI amount stays binary (`Ki`..`Ei`), a decimal-SI
  one decimal (`n`..`E`), an exponent stays an exponent (`e3`);
- the mantissa is an integer and the suffix as large as it can be without losing
  precision (`1.5Gi` → `1536Mi`, `1500` → `1500`, `1000` → `1k`);
- a binary amount under 1024 in magnitude, or one that is not a whole number, is written
  in decimal-SI (`0.5Ki` → `512`, `1.1Ki` → `1126400m`);
- values are rounded up (away from zero) to nano units when parsed, and to milli units in
  a ResourceList (`pkg/apis/core/v1/defaults.go SetDefaults_ResourceList`);
- a string already in canonical shape is returned as sent, sign and leading zeros included
  (`ParseQuantity` keeps the input string on that fast path: `+5` stays `+5`).
"""

from __future__ import annotations

import dataclasses
import decimal
import re

# `<signedNumber><suffix>`; the number may be `1`, `1.`, `.5` or `1.5` (quantity.go's grammar).
_QUANTITY = re.compile(r"^([+-]?)([0-9]*)(?:\.([0-9]*))?([a-zA-Z]*(?:[+-]?[0-9]+)?)$")
_DECIMAL_SI = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY_SI = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL_SUFFIX = {exponent: suffix for suffix, exponent in _DECIMAL_SI.items()}
_BINARY_SUFFIX = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
_EXPONENT = re.compile(r"^[eE]([+-]?[0-9]+)$")
_INT64_MAX = 2**63 - 1
NANO, MILLI = -9, -3
# Quantities reach 2**63 with nano digits: far past the default 28 significant digits.
_EXACT = decimal.Context(prec=120)

BINARY, DECIMAL, EXPONENT = "BinarySI", "DecimalSI", "DecimalExponent"


class QuantityError(ValueError):
    """A string the API server would refuse to decode as a quantity."""


@dataclasses.dataclass(frozen=True)
class _Parsed:
    amount: decimal.Decimal
    format: str
    # The input when ParseQuantity's fast path keeps it, and the power of ten of its last
    # digit (what a ResourceList's rounding to milli looks at before it drops the text).
    kept: str | None
    scale: int


def _parse(text: str) -> _Parsed:
    if text == "0":
        return _Parsed(decimal.Decimal(0), DECIMAL, text, 0)
    match = _QUANTITY.match(text)
    if not match or not text:
        raise QuantityError(f"quantities must match the grammar of quantity.go: {text!r}")
    sign, whole, fraction, suffix = match.groups()
    fraction = fraction or ""
    if suffix in _BINARY_SI:
        base, exponent, fmt = 2, _BINARY_SI[suffix], BINARY
    elif suffix in _DECIMAL_SI:
        base, exponent, fmt = 10, _DECIMAL_SI[suffix], DECIMAL
    elif found := _EXPONENT.match(suffix):
        base, exponent, fmt = 10, int(found.group(1)), EXPONENT
    else:
        raise QuantityError(f"unable to parse quantity's suffix: {text!r}")
    digits = (whole.lstrip("0") or "0") + fraction
    number = decimal.Decimal(int(digits)).scaleb(-len(fraction))
    if sign == "-":
        number = -number
    if base == 2:
        amount, scale = number * 2**exponent, 0
    else:
        amount, scale = number.scaleb(exponent), exponent - len(fraction)
    return _Parsed(amount, fmt, _fast_path(text, fmt, exponent, digits, fraction), scale)


def _fast_path(text: str, fmt: str, exponent: int, digits: str, fraction: str) -> str | None:
    """Give `text` when ParseQuantity would keep it as the quantity's string, else None."""
    if fmt == BINARY:
        # A whole binary amount whose mantissa is not a multiple of 8 keeps its text.
        precision = 15 - (len(digits) - len(fraction)) - exponent * 3 // 10 - 1
        if fraction or precision < 0 or int(digits) * 2**exponent > _INT64_MAX:
            return None
        return text if int(digits) & 0x07 != 0 else None
    scale = exponent - len(fraction)
    if len(digits) > 18 or scale < NANO:
        return None
    if scale % 3 == 0 and not digits.endswith("000") and digits[0] != "0":
        return text
    return None


def _decimal_form(amount: decimal.Decimal) -> tuple[int, int]:
    """Give (mantissa, exponent): no trailing zeros, then the exponent lowered to a multiple of 3."""
    sign, digits, exponent = amount.normalize().as_tuple()
    assert isinstance(exponent, int)
    mantissa = int("".join(map(str, digits))) * (-1 if sign else 1)
    lower = exponent % 3
    return mantissa * 10**lower, exponent - lower


def _format(amount: decimal.Decimal, fmt: str) -> str:
    if amount == 0:
        return "0"
    if fmt == BINARY and abs(amount) >= 1024 and amount == amount.to_integral_value():
        mantissa, power = int(amount), 0
        while mantissa % 1024 == 0 and power < len(_BINARY_SUFFIX) - 1:
            mantissa, power = mantissa // 1024, power + 1
        return f"{mantissa}{_BINARY_SUFFIX[power]}"
    mantissa, exponent = _decimal_form(amount)
    if fmt == EXPONENT or exponent not in _DECIMAL_SUFFIX:
        # Past `E` (10**18) decimal-SI has no suffix left; the exponent form says it exactly.
        return f"{mantissa}e{exponent}" if exponent else str(mantissa)
    return f"{mantissa}{_DECIMAL_SUFFIX[exponent]}"


def canonical(value: str | int | float, *, round_to: int = NANO) -> str:
    """Give the string the API server returns for a quantity sent as `value`.

    `round_to` is the power of ten of the smallest unit kept: nano for a Quantity field,
    milli for a ResourceList entry (container requests and limits, pod overhead).
    A JSON number is read as its decimal text (`0.5` as "0.5").
    """
    text = repr(value) if isinstance(value, float) else str(value)
    with decimal.localcontext(_EXACT):
        parsed = _parse(text)
        if parsed.kept is not None and parsed.scale >= round_to:
            return parsed.kept
        # Rounded up, away from zero: asking for a sliver of a resource gets the smallest unit.
        amount = parsed.amount.quantize(decimal.Decimal(1).scaleb(round_to), decimal.ROUND_UP)
        fmt = parsed.format
        if fmt == BINARY and abs(amount) > _INT64_MAX:
            amount = decimal.Decimal(_INT64_MAX).copy_sign(amount)  # binary amounts are capped
        return _format(amount, fmt)


def canonical_resource_list(resources: object) -> None:
    """Canonicalise a ResourceList in place, rounded up to milli units as the API server does."""
    if isinstance(resources, dict):
        for name, amount in resources.items():
            if isinstance(amount, str | int | float) and not isinstance(amount, bool):
                resources[name] = canonical(amount, round_to=MILLI)
