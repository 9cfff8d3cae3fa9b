"""Read a feedback body: the outcome or value a client reports for a request served earlier.

An A/B test compares variants on what happened after their answers: a conversion (an
``outcome``, 0 or 1) or a reward (a ``value``, any finite number). The client sends it to
the variant that served the request (the router's override header names it), which counts
it per model version in its metrics. The body is one small JSON object::

    {"outcome": 1}                      {"value": 12.5, "requestId": "8f1c..."}

Nothing here is stored beyond those counts: ``requestId`` is checked, for the client's own
records and logs, not remembered (remembering ids to drop duplicates would cost memory per
request without bound). Every problem is a 400 that names the field.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from typing import Any

import orjson

from kubeserve.server import errors

# A feedback is a few dozen bytes; a larger body is refused before it is parsed on the
# event loop (the transport's --max-body-bytes, 16 MiB, is an inference request's limit).
MAX_BYTES = 16 * 1024
MAX_REQUEST_ID = 256
# Values beyond this are refused so that the sums the metrics keep stay finite: the square
# of 1e100 is 1e200, and no count of requests brings such squares near float's 1.8e308.
MAX_VALUE = 1e100
FIELDS = ("outcome", "value", "requestId")
_EXAMPLE = '{"outcome": 1} or {"value": 2.5}'


class Kind(enum.Enum):
    """What a feedback reports: a conversion (0 or 1) or a reward (a number)."""

    OUTCOME = "outcome"
    VALUE = "value"


@dataclasses.dataclass(frozen=True, slots=True)
class Feedback:
    """One checked feedback; ``value`` is 0.0 or 1.0 for an outcome."""

    kind: Kind
    value: float
    request_id: str | None = None


def parse(body: bytes) -> Feedback:
    """Check a feedback body and return what it reports, or raise BadRequest/PayloadTooLarge."""
    if len(body) > MAX_BYTES:
        raise errors.PayloadTooLarge(
            f"a feedback body is at most {MAX_BYTES} bytes, got {len(body)}; send {_EXAMPLE}"
        )
    if not body.strip():
        raise errors.BadRequest(f"request body is empty; send {_EXAMPLE}")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # NaN, Infinity and numbers past float's range (1e400) are not JSON, or not finite;
        # read the body once more, leniently, only to name the field that holds one.
        lenient = _lenient(body)
        if lenient is not _UNREADABLE:
            _check(lenient)
        raise errors.BadRequest(f"malformed JSON: {exc}") from None
    return _check(payload)


def _check(payload: Any) -> Feedback:
    """Check a parsed feedback document; raise BadRequest naming the field at fault."""
    if type(payload) is not dict:
        raise errors.BadRequest(
            f"a feedback must be a JSON object such as {_EXAMPLE}, got {errors.brief(payload)}"
        )
    unknown = [k for k in payload if k not in FIELDS]
    if unknown:
        shown = ", ".join(errors.brief(k) for k in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise errors.BadRequest(
            f"unknown field{'s' if len(unknown) > 1 else ''} {shown}{more}: a feedback takes "
            "'outcome' (0 or 1) or 'value' (a number), and optionally 'requestId'"
        )
    request_id = payload.get("requestId")
    if "requestId" in payload:
        if type(request_id) is not str:
            raise errors.BadRequest(f"'requestId' must be a string, got {_shown(request_id)}")
        if len(request_id) > MAX_REQUEST_ID:
            raise errors.BadRequest(
                f"'requestId' must be at most {MAX_REQUEST_ID} characters, got {len(request_id)}"
            )
    if "outcome" in payload and "value" in payload:
        raise errors.BadRequest("send 'outcome' or 'value', not both: one feedback, one kind")
    if "outcome" in payload:
        return Feedback(Kind.OUTCOME, _outcome(payload["outcome"]), request_id)
    if "value" in payload:
        return Feedback(Kind.VALUE, _value(payload["value"]), request_id)
    raise errors.BadRequest(
        "a feedback needs 'outcome' (0 or 1) or 'value' (a finite number), e.g. " + _EXAMPLE
    )


def _outcome(raw: Any) -> float:
    # bool before int: True is an int to Python, and 1.0 is not 1 here (a probability is
    # not an outcome).
    if type(raw) is bool or (type(raw) is int and raw in (0, 1)):
        return float(raw)
    raise errors.BadRequest(f"'outcome' must be 0 or 1 (or false/true), got {_shown(raw)}")


def _value(raw: Any) -> float:
    if type(raw) is not int and type(raw) is not float:
        raise errors.BadRequest(f"'value' must be a finite number, got {_shown(raw)}")
    if not -MAX_VALUE <= raw <= MAX_VALUE:  # an int compares exactly, without overflow
        raise errors.BadRequest(
            f"'value' must be between -{MAX_VALUE:g} and {MAX_VALUE:g}, got {_shown(raw)}"
        )
    return float(raw)


def _shown(raw: Any) -> str:
    """Show a client's value as JSON spells it where Python would not (true, null)."""
    if raw is None or type(raw) is bool:
        return orjson.dumps(raw).decode()
    if type(raw) is int and raw.bit_length() > 64:
        return f"an integer of {len(str(abs(raw)))} digits"
    return errors.brief(raw)


class _NonFinite:
    """A number JSON cannot carry (NaN, Infinity, 1e400), as the client wrote it."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


_UNREADABLE = object()


def _lenient(body: bytes) -> Any:
    """Parse ``body`` accepting non-finite numbers as ``_NonFinite``; ``_UNREADABLE`` if not JSON."""

    def number(text: str) -> Any:
        value = float(text)
        return value if math.isfinite(value) else _NonFinite(text)

    try:
        return json.loads(body.decode("utf-8"), parse_constant=_NonFinite, parse_float=number)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are both
        return _UNREADABLE
