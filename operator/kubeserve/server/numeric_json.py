"""Read a large JSON array of numbers into numpy without a Python object per number.

``orjson.loads`` makes a Python list per ``[...]`` and an object per number (small ints
are shared, but each still takes an 8-byte slot of its list): 16 MiB of one-digit ints
became 7x their size in lists before numpy saw them, and 16 MiB of ``[]`` 25x. A ``Span``
stands for such an array in a parsed document instead: ``scan`` checks its JSON and
its nesting where the document is parsed, and ``Span.values`` gives its numbers later,
a window at a time, once the tensor's datatype is known.

Only arrays with no object inside are spans: brackets, commas, whitespace, numbers,
strings and the literals ``true``, ``false`` and ``null`` (strings are refused among
numbers, but the message depends on the nesting; ``BYTES`` tensors take them). A window
of about ``WINDOW`` bytes at a time (cut after a comma, bracket or blank outside strings,
so no value is split; a value longer than a window is ``TooLong``):

- numpy classifies the bytes and checks that brackets and commas follow each other as
  JSON allows, within ``MAX_DEPTH`` levels, and counts each list's elements, which gives
  the shape and any ragged nesting exactly as ``tensors`` describes them for a parsed list;
- the values alone, a comma between each two, are one flat array that orjson parses and
  numpy converts: orjson judges each number and literal as it would in the whole
  document (``01``, ``1.``, ``NaN``, ``1e400`` are refused alike) and gives the same
  values. The window's list lives only for the window.

A regular array of numbers alone (flat, or nested with no list empty or ragged: what
clients send most) is read a quicker way first, 3-5x faster (``_scan_regular``): windows
cut at its commas, the values of each parsed by orjson, its brackets counted between
them. Anything else, or a doubt, is read again as above, which gives the same ``Span``
or says what is wrong the same way.
"""

from __future__ import annotations

import array
import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson

# Bytes per window: a few milliseconds of work each, so the GIL changes hands in between.
WINDOW = 128 * 1024
# The most dims numpy gives an array (NPY_MAXDIMS): deeper data can never be a tensor.
MAX_DEPTH = 64

# Byte classes; a "symbol" is a bracket, a comma or the first byte of a value.
_SPACE, _OPEN, _CLOSE, _COMMA, _VALUE = 0, 1, 2, 3, 4
_CLASS = np.full(256, _VALUE, dtype=np.uint8)
_CLASS[list(b" \t\n\r")] = _SPACE
_CLASS[ord("[")], _CLASS[ord("]")], _CLASS[ord(",")] = _OPEN, _CLOSE, _COMMA
# ``_FOLLOWS[a, b]``: symbol b may come right after symbol a (a = 0: the span's start).
_FOLLOWS = np.zeros((5, 5), dtype=np.bool_)
_FOLLOWS[0, _OPEN] = True
_FOLLOWS[_OPEN, [_OPEN, _CLOSE, _VALUE]] = True
_FOLLOWS[_CLOSE, [_CLOSE, _COMMA]] = True
_FOLLOWS[_COMMA, [_OPEN, _VALUE]] = True
_FOLLOWS[_VALUE, [_CLOSE, _COMMA]] = True
# Brackets and commas become blanks in the flat text of a window's values.
_BLANKED = np.arange(256, dtype=np.uint8)
_BLANKED[list(b"[],")] = ord(" ")
_QUOTE, _BACKSLASH = ord('"'), ord("\\")
# Bytes that tell what a window's values are: letters of true/false (not 'e', which
# exponents have too), the digits, and what only floats have.
_LETTERS, _DIGITS, _FRACTION = list(b"trufals"), list(b"0123456789"), list(b".eE")
_MINUS, _ZERO = ord("-"), ord("0")
# The bytes of integers, and every other byte a value may have (strings' bytes too).
_INT_BYTES = [*_DIGITS, _MINUS]
_OTHER_BYTES = [b for b in range(256) if _CLASS[b] == _VALUE and b not in _INT_BYTES]
_NAMES = {_OPEN: "'['", _CLOSE: "']'", _COMMA: "','", _VALUE: "value"}
# Bytes that no array of numbers alone has: those of strings, and the first letters of
# true, false and null.
_NOT_NUMBERS = (b'"', b"t", b"f", b"n")
_FLOAT_BYTES = (b".", b"e", b"E")
_BLANK_BYTES = (b" ", b"\t", b"\n", b"\r")
_BLANKS = re.compile(rb"[ \t\n\r]*")
_UNBRACKETED = bytes.maketrans(b"[]", b"  ")  # a window's values alone
_OPEN_BYTE, _CLOSE_BYTE, _COMMA_BYTE = ord("["), ord("]"), ord(",")


class Malformed(ValueError):
    """The body is not valid JSON (or nests deeper than any tensor); the message says where."""


class TooLong(Exception):
    """One value is longer than a window: not a tensor's number; parse the array as before."""


@dataclasses.dataclass(eq=False, slots=True)
class Span:
    """A JSON array of ``body[start:end]`` that holds no object: values and arrays only.

    ``shape`` is the nesting its first elements announce (``tensors``' probe); ``ragged``,
    when not None, says at which depth other elements disagree, in ``tensors``' words.
    ``kinds`` are the JSON types of its ``count`` values, and ``low``/``high`` their range
    when all are ints. ``len()`` is its number of elements, as for the list it stands for.
    """

    body: bytes
    start: int
    end: int
    shape: tuple[int, ...]
    ragged: str | None
    count: int
    kinds: frozenset[type]
    low: int
    high: int
    # The values ``scan`` converted already, a window each, when they take no more memory
    # than their text (bools, long floats): ``values`` gives them, and lets them go.
    converted: list[np.ndarray] | None = None
    # A regular array of numbers, read between its commas (``_scan_regular``).
    regular: bool = False

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"<{self.shape[0]} JSON values at bytes {self.start}-{self.end}>"

    def values(self, dtype: np.dtype[Any]) -> Iterator[np.ndarray]:
        """Yield the values row-major, a window at a time, each as ``np.array(values, dtype)``.

        Call it once: the windows ``scan`` converted are let go of as they are given.
        """
        converted, self.converted = self.converted, None
        if converted is not None:
            converted.reverse()
            while converted:
                yield converted.pop().astype(dtype)  # exact: bools or float64
            return
        if self.regular:
            yield from _regular_values(self.body, self.start, self.end, dtype)
            return
        for _, chars, cls in _windows(self.body, self.start, self.end):
            ints = _short_ints(chars, cls, np.bincount(chars, minlength=256))
            if ints is not None:
                yield ints.astype(dtype, copy=False)  # in int64's range: np.array's values
                continue
            text = _flat_text(chars, cls)
            if text is not None:
                yield np.array(orjson.loads(text), dtype=dtype)


def scan(body: bytes, start: int, end: int) -> Span:
    """Check the array ``body[start:end]`` (no object inside) and describe it.

    Raises Malformed where orjson would refuse the document, or where the arrays nest
    deeper than ``MAX_DEPTH``; TooLong for a value longer than a window.
    """
    regular = _scan_regular(body, start, end)
    if regular is not None:
        return regular
    state = _Scan()
    for lo, chars, cls in _windows(body, start, end):
        state.feed(lo, chars, cls)
    return state.finish(body, start, end)


def _scan_regular(body: bytes, start: int, end: int) -> Span | None:
    """Describe a regular array of numbers the quick way; None for any other array.

    The tensors clients send most, and the slowest to classify a byte at a time: 40 ms for
    a flat 224x224x3 image of floats (2.9 MB), where orjson alone reads it in 6. Such an
    array is cut at its commas into windows of under ``WINDOW`` bytes. Each window's
    values, its brackets made blanks, are an array that orjson parses: it judges each
    number and comma as it would in the whole document. Its brackets must stand between
    a comma and a value (``_separators``), and as many ']' close after each value as '['
    open before the next and as a regular array's shape has lists end there (``_Regular``).

    Anything else gives None, and ``scan`` starts again the usual way, which says what is
    wrong and where, as it always did: strings, literals, a window orjson refuses or that
    holds no value, empty lists, ragged nesting, a run of a window's length without a
    comma. The usual way would give the same ``Span`` (ints' range, floats' windows
    converted when they take no more memory than their text): whatever the windows,
    ``kinds`` has float if any value has '.', 'e' or 'E' or is an int beyond 64 bits, and
    int unless every value is such an int.
    """
    if end - start < 2 or body[start] != ord("[") or body[end - 1] != ord("]"):
        return None
    state = _Regular()
    stop = end - 1
    lo = start + 1
    while True:
        cut = _regular_cut(body, lo, stop)
        if cut < 0 or not state.feed(body, lo, cut, first=lo == start + 1, last=cut == stop):
            return None
        if cut == stop:
            return state.span(body, start, end)
        lo = cut + 1


def _regular_cut(body: bytes, lo: int, stop: int) -> int:
    """Return where the window of values from ``lo`` ends (at a comma, or at ``stop``, the
    closing bracket), or -1 when there is no comma in a window's length."""
    if stop - lo < WINDOW:
        return stop
    return body.rfind(b",", lo, lo + WINDOW)


def _has_brackets(body: bytes, lo: int, cut: int) -> bool:
    """Whether ``body[lo:cut]`` opens or closes a list: the values of a nested array."""
    return body.find(b"[", lo, cut) >= 0 or body.find(b"]", lo, cut) >= 0


def _values_text(body: bytes, lo: int, cut: int, bracketed: bool) -> bytes:
    """Return ``[`` + ``body[lo:cut]`` + ``]``, its inner brackets made blanks, without the
    blanks it would open with: orjson 3.13 refuses some dense arrays of ints that open with
    two ("failed to allocate memory")."""
    inside: bytes | memoryview
    if bracketed:
        inside = body[lo:cut].translate(_UNBRACKETED).lstrip(b" \t\n\r")  # not \x0b
    else:
        blanks = _BLANKS.match(body, lo, cut)
        inside = memoryview(body)[blanks.end() if blanks else lo : cut]
    return b"".join((b"[", inside, b"]"))


def _separators(body: bytes, lo: int, cut: int, count: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Return how many '[' open before each of the ``count`` values of ``body[lo:cut]``
    and how many ']' close after it; None where a bracket is elsewhere than between a
    comma and a value (``[1]2``, ``1[2]``, ``][``, ``[]``).

    orjson has taken the values, a comma between each two: so each value stands between
    two commas (or a window's edge) with only '['s before it and ']'s after it, and none
    of those makes an empty list (``[]`` would leave two commas or an edge with no value
    between them). The blanks go first: ``[ 1`` is ``[1``.
    """
    window = body[lo:cut]
    if any(window.find(b) >= 0 for b in _BLANK_BYTES):
        window = window.translate(None, b" \t\n\r")
    chars = np.frombuffer(window, dtype=np.uint8)
    commas = np.flatnonzero(chars == _COMMA_BYTE)
    opening = np.flatnonzero(chars == _OPEN_BYTE)
    closing = np.flatnonzero(chars == _CLOSE_BYTE)
    # The bytes around the window are ',' or the span's own brackets.
    before = chars[opening[opening > 0] - 1]
    after = chars[closing[closing < chars.size - 1] + 1]
    if (
        commas.size != count - 1
        or ((before != _OPEN_BYTE) & (before != _COMMA_BYTE)).any()
        or ((after != _CLOSE_BYTE) & (after != _COMMA_BYTE)).any()
    ):
        return None
    opens = np.bincount(np.searchsorted(commas, opening), minlength=count)
    closes = np.bincount(np.searchsorted(commas, closing), minlength=count)
    return opens, closes


class _Regular:
    """What ``_scan_regular`` learns window by window; ``feed`` says False to give up."""

    def __init__(self) -> None:
        self.ndim = 1
        # The values of the lists at each level, innermost first, once one has closed.
        self.periods: list[int] = []
        self.carried = 0  # the ']' before the last cut: as many '[' must follow it
        self.count = 0
        self.kinds: set[type] = set()
        self.low = self.high = 0
        self.ranged = False
        self.converted: list[np.ndarray] | None = []

    def feed(self, body: bytes, lo: int, cut: int, *, first: bool, last: bool) -> bool:
        """Take the values of ``body[lo:cut]``; False if the quick way cannot."""
        if any(body.find(b, lo, cut) >= 0 for b in _NOT_NUMBERS):
            return False
        bracketed = _has_brackets(body, lo, cut)
        text = _values_text(body, lo, cut, bracketed)
        try:
            values = orjson.loads(text)
        except orjson.JSONDecodeError:
            return False
        if not values:
            return first and last and not bracketed  # ``[]``; any other: a comma too many
        if bracketed:
            found = _separators(body, lo, cut, len(values))
            if found is None or not self._nesting(*found, first=first, last=last):
                return False
        elif self.carried or (last and self.ndim > 1) or not self._unclosed(len(values)):
            return False
        self.count += len(values)
        self._values(values, text, body, lo, cut)
        return True

    def _nesting(self, opens: np.ndarray, closes: np.ndarray, *, first: bool, last: bool) -> bool:
        # Every value at the depth of the first; lists end where a regular array's do.
        if first:
            self.ndim = int(opens[0]) + 1
            if self.ndim > MAX_DEPTH:
                return False
        if int(opens[0]) != (self.ndim - 1 if first else self.carried):
            return False
        self.carried = int(closes[-1])
        if (
            (opens[1:] != closes[:-1]).any()
            or int(closes.max()) > self.ndim - 1  # the span's own ']' closes the outermost
            or (last and self.carried != self.ndim - 1)
        ):
            return False
        for level in range(1, self.ndim):
            at = np.flatnonzero(closes >= level)  # the values a list of this level ends with
            if level > len(self.periods):
                if not at.size:
                    break  # its first list (and the outer ones) are still open
                self.periods.append(self.count + int(at[0]) + 1)
            period = self.periods[level - 1]
            if not np.array_equal(at, np.arange(-(self.count + 1) % period, closes.size, period)):
                return False
        return True

    def _unclosed(self, count: int) -> bool:
        # A window without brackets: no list that has a length yet may end in it.
        return not self.periods or -(self.count + 1) % self.periods[0] >= count

    def _values(self, values: list[Any], text: bytes, body: bytes, lo: int, cut: int) -> None:
        keep: np.ndarray | None = None
        if any(body.find(b, lo, cut) >= 0 for b in _FLOAT_BYTES):
            self.kinds |= {int, float}  # maybe no int: it makes no difference with floats
            if len(text) >= 8 * len(values):  # longer numbers than float64's 8 bytes
                keep = np.array(values, dtype=np.float64)
        else:
            kinds, low, high = _int_range(values)
            self.kinds |= kinds
            if kinds == {int}:
                if self.ranged:
                    low, high = min(self.low, low), max(self.high, high)
                self.low, self.high, self.ranged = low, high, True
        if keep is None or self.converted is None:
            self.converted = None  # ints cost more than their text: read again, all of them
        else:
            self.converted.append(keep)

    def span(self, body: bytes, start: int, end: int) -> Span:
        # Values per list at each level, a value's 1 to the whole array's count.
        sizes = [1, *self.periods, self.count]
        shape = tuple(sizes[i + 1] // sizes[i] for i in reversed(range(self.ndim)))
        if not self.count:
            shape = (0,)
        kinds = frozenset(self.kinds)
        return Span(
            body,
            start,
            end,
            shape,
            None,
            self.count,
            kinds,
            self.low,
            self.high,
            self.converted,
            True,
        )


def _int_range(values: list[Any]) -> tuple[set[type], int, int]:
    """Return the JSON types of ``values`` (parsed from digits and '-' alone) and, when all
    are ints, their range: C loops first, bytes (0-255) then int64, orjson's ints beyond."""
    try:
        small = np.frombuffer(bytes(values), dtype=np.uint8)
    except (TypeError, ValueError, OverflowError):
        pass
    else:
        return {int}, int(small.min()), int(small.max())
    try:
        wide = np.frombuffer(array.array("q", values), dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        pass
    else:
        return {int}, int(wide.min()), int(wide.max())
    kinds = set(map(type, values))  # ints beyond int64, or beyond uint64 (floats to orjson)
    if kinds == {int}:
        return kinds, min(values), max(values)
    return kinds, 0, 0


def _regular_values(
    body: bytes, start: int, end: int, dtype: np.dtype[Any]
) -> Iterator[np.ndarray]:
    """Yield the values of a span ``_scan_regular`` took, a window at a time."""
    stop = end - 1
    lo = start + 1
    while lo < stop:
        cut = _regular_cut(body, lo, stop)
        if cut < 0:  # a smaller window than ``scan`` had: the next comma will do
            cut = body.find(b",", lo, stop)
            cut = stop if cut < 0 else cut
        values = orjson.loads(_values_text(body, lo, cut, _has_brackets(body, lo, cut)))
        small: bytes | None = None
        if values and not any(body.find(b, lo, cut) >= 0 for b in _FLOAT_BYTES):
            try:
                small = bytes(values)  # ints of 0-255: a C loop, a quarter of np.array's time
            except (TypeError, ValueError, OverflowError):
                small = None
        if small is not None:
            yield np.frombuffer(small, dtype=np.uint8).astype(dtype)  # np.array's values
        elif values:
            yield np.array(values, dtype=dtype)
        lo = cut + 1


def _windows(body: bytes, start: int, end: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Cut ``body[start:end]`` into windows that end outside a value; yield each one's
    offset, bytes and byte classes."""
    lo = start
    while lo < end:
        hi = min(lo + WINDOW, end)
        chars = np.frombuffer(body, dtype=np.uint8, count=hi - lo, offset=lo)
        cls = _classes(body, lo, hi, chars)
        if hi < end:
            # After the last bracket, comma or blank (a window starts outside a string).
            breaks = np.flatnonzero(cls != _VALUE)
            if not breaks.size:
                raise TooLong(f"a value of over {WINDOW} bytes at byte {lo}")
            cut = int(breaks[-1]) + 1
            chars, cls, hi = chars[:cut], cls[:cut], lo + cut
        yield lo, chars, cls
        lo = hi


def _classes(body: bytes, lo: int, hi: int, chars: np.ndarray) -> np.ndarray:
    """Classify the bytes of a window that starts outside a string; strings are values."""
    cls: np.ndarray = _CLASS[chars]
    if body.find(b'"', lo, hi) < 0:  # memchr: numbers alone need no more
        return cls
    quotes = np.flatnonzero(chars == _QUOTE)
    if body.find(b"\\", lo, hi) >= 0:
        quotes = quotes[unescaped(quotes, chars == _BACKSLASH, 0)]
    toggles = np.zeros(chars.size, dtype=np.uint8)
    toggles[quotes] = 1
    inside = np.bitwise_xor.accumulate(toggles).view(np.bool_)
    inside[quotes] = True  # the closing quotes too
    cls[inside] = _VALUE
    return cls


def unescaped(quotes: np.ndarray, is_backslash: np.ndarray, carried: int) -> np.ndarray:
    """Tell which quotes end a run of an even number of backslashes (are not escaped).

    ``carried``: the run of backslashes the bytes before ``is_backslash`` ended with.
    """
    index = np.arange(is_backslash.size)
    # For each position, the last one at or before it that is not a backslash (-1: none).
    last_other = np.maximum.accumulate(np.where(is_backslash, -1, index))
    before = quotes - 1
    run = np.where(before >= 0, before - last_other[np.maximum(before, 0)], 0)
    # A run reaching back to the window's start continues the previous window's.
    run = np.where((before < 0) | (last_other[np.maximum(before, 0)] < 0), run + carried, run)
    result: np.ndarray = run % 2 == 0
    return result


def _flat_text(chars: np.ndarray, cls: np.ndarray) -> bytes | None:
    """Return ``[v1,v2,...]`` of the values among ``chars``, or None when there is none.

    No blanks: orjson 3.13 refuses a dense array that opens with two blanks ("failed to
    allocate memory"), and fewer bytes parse faster. ``_text_offset`` maps an offset back.
    """
    value = cls == _VALUE
    after = np.flatnonzero(value[:-1] & ~value[1:]) + 1  # the byte after each value
    if after.size == 0:
        return None
    keep = value.copy()
    keep[after[:-1]] = True  # a comma each, but after the last
    kept = chars[keep]
    kept[~value[keep]] = ord(",")
    text: bytes = b"[" + kept.tobytes() + b"]"
    return text


def _short_ints(chars: np.ndarray, cls: np.ndarray, counts: np.ndarray) -> np.ndarray | None:
    """Read a window whose values are made of digits and '-' alone, with numpy.

    Return them as int64 when each is a JSON integer (``-?(0|[1-9][0-9]*)``) of at most
    18 digits; else None, and orjson reads them (and says what is wrong), as it does
    windows without a value. No Python object per value: a third of the time of orjson's
    list and ``np.array``.
    """
    if counts[_OTHER_BYTES].any() or not counts[_INT_BYTES].any():
        return None
    edges = np.flatnonzero(np.diff((cls == _VALUE).view(np.int8), prepend=0, append=0))
    starts, ends = edges[::2], edges[1::2]  # a value's first byte, the byte after its last
    negative = chars[starts] == _MINUS
    first = starts + negative
    digits = ends - first
    if (
        int(counts[_MINUS]) != int(negative.sum())  # a '-' elsewhere than first
        or int(digits.min()) < 1
        or int(digits.max()) > 18
        or ((digits > 1) & (chars[np.minimum(first, chars.size - 1)] == _ZERO)).any()
    ):
        return None
    values = np.zeros(starts.size, dtype=np.int64)
    scale = 1
    for k in range(int(digits.max())):
        # Add the digit k places from the right of each value that has one there.
        at = ends - 1 - k
        values += np.where(digits > k, chars[np.maximum(at, 0)].astype(np.int64) - _ZERO, 0) * scale
        scale *= 10
    np.negative(values, out=values, where=negative)
    return values


def _text_offset(cls: np.ndarray, at: int) -> int:
    """Return the window offset of ``_flat_text(chars, cls)[at]``."""
    value = cls == _VALUE
    keep = value.copy()
    keep[np.flatnonzero(value[:-1] & ~value[1:]) + 1] = True
    kept = np.flatnonzero(keep)
    return int(kept[min(max(at - 1, 0), kept.size - 1)])


class _Scan:
    """What ``scan`` learns window by window."""

    def __init__(self) -> None:
        self.last = 0  # the previous window's last symbol (0: none yet)
        self.depth = 0
        self.ndim = 0  # 0 until the first non-'[' symbol shows how deep values sit
        self.leading = 0  # the run of '[' the span opens with
        self.pending = [0] * (MAX_DEPTH + 2)  # values counted in each level's open list
        self.shape: list[int | None] = []
        self.lengths: list[np.ndarray] = []  # each level's smallest distinct list lengths
        self.varied: list[bool] = []
        self.mixed = MAX_DEPTH + 1  # the shallowest depth where lists and values mix
        self.count = 0
        self.kinds: set[type] = set()
        self.low = self.high = 0  # the ints' range, once ``ranged``
        self.ranged = False
        self.converted: list[np.ndarray] | None = []

    def feed(self, lo: int, chars: np.ndarray, cls: np.ndarray) -> None:
        value = cls == _VALUE
        first = value.copy()
        first[1:] &= ~value[:-1]
        at = np.flatnonzero((cls != _SPACE) & (~value | first))
        if at.size == 0:
            return
        sym = cls[at]
        before = np.empty_like(sym)
        before[0] = self.last
        before[1:] = sym[:-1]
        follows = _FOLLOWS[before, sym]
        if not follows.all():
            bad = int(np.argmin(follows))
            raise Malformed(f"unexpected {_NAMES[int(sym[bad])]} at byte {lo + int(at[bad])}")
        self.last = int(sym[-1])
        step = (sym == _OPEN).astype(np.int8) - (sym == _CLOSE).astype(np.int8)
        after = np.cumsum(step, dtype=np.int32)
        after += self.depth
        level = after - step  # the depth each symbol sits at: its value's depth
        # Only the span's own '[' (its first symbol) sits at depth 0.
        outside = np.flatnonzero(level[1:] < 1) + 1 if before[0] == 0 else np.flatnonzero(level < 1)
        if outside.size:
            bad = int(outside[0])
            raise Malformed(f"unexpected {_NAMES[int(sym[bad])]} at byte {lo + int(at[bad])}")
        if int(after.max()) > MAX_DEPTH:
            raise Malformed(f"arrays nested deeper than {MAX_DEPTH} levels")
        self.depth = int(after[-1])
        if not self.ndim:
            others = np.flatnonzero(sym != _OPEN)
            if not others.size:
                for depth in level.tolist():  # at most MAX_DEPTH of them
                    self.pending[depth] += depth > 0  # each an element of the one before
                self.leading += sym.size
                return  # only '[': the depth of values is not known yet
            self.ndim = self.leading + int(others[0])
            self.shape = [None] * self.ndim
            self.lengths = [np.empty(0, dtype=np.int64)] * self.ndim
            self.varied = [False] * self.ndim
        self._levels(sym, level)
        counts = np.bincount(chars, minlength=256)
        ints = _short_ints(chars, cls, counts)
        if ints is not None:
            self.count += ints.size
            self.kinds.add(int)
            self._range(int(ints.min()), int(ints.max()))
            self._keep(None)  # read again as cheaply: keeping them would cost memory
            return
        text = _flat_text(chars, cls)
        if text is not None:
            self._values(text, counts.astype(np.bool_), cls, lo)

    def _levels(self, sym: np.ndarray, level: np.ndarray) -> None:
        ndim = self.ndim
        is_value = sym == _VALUE
        values = level[is_value]
        if values.size and int(values.min()) < ndim:
            self.mixed = min(self.mixed, int(values.min()))
        is_open = sym == _OPEN
        if (level[is_open] == ndim).any():
            self.mixed = min(self.mixed, ndim)
        elements = is_value | is_open
        is_close = sym == _CLOSE
        for depth in range(1, min(ndim, int(level.max())) + 1):
            # Lists at depth - 1 hold the elements at ``depth`` up to their closing ']'.
            here = level == depth
            closes = np.flatnonzero(is_close & here)
            counted = np.cumsum(elements & here)
            if not closes.size:
                self.pending[depth] += int(counted[-1])
                continue
            ends = counted[closes]
            lengths = np.diff(ends, prepend=0)
            lengths[0] += self.pending[depth]
            self.pending[depth] = int(counted[-1] - ends[-1])
            self._lengths(depth - 1, lengths)

    def _lengths(self, depth: int, lengths: np.ndarray) -> None:
        if self.shape[depth] is None:
            self.shape[depth] = int(lengths[0])  # the first list: tensors' probe
        if depth == 0:
            return
        seen = np.union1d(self.lengths[depth], lengths)
        self.varied[depth] = self.varied[depth] or seen.size > 1
        self.lengths[depth] = seen[:4]

    def _values(self, text: bytes, present: np.ndarray, cls: np.ndarray, lo: int) -> None:
        try:
            values = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise Malformed(f"{exc.msg} at byte {lo + _text_offset(cls, exc.pos)}") from None
        self.count += len(values)
        # What the values are, from their bytes where that is cheap; their types otherwise.
        words = present[_LETTERS].any()
        digits = present[_DIGITS].any()
        converted: np.ndarray | None = None
        if present[_QUOTE] or (words and digits) or present[ord("n")]:
            kinds = set(map(type, values))  # strings, nulls, or literals among numbers
        elif words:
            kinds = {bool}
            converted = np.array(values, dtype=np.bool_)
        elif present[_FRACTION].any():
            kinds = {int, float}  # maybe ints too: it makes no difference with floats
            if len(text) >= 8 * len(values):  # longer numbers than float64's 8 bytes
                converted = np.array(values, dtype=np.float64)
        else:
            kinds = set(map(type, values))
        if kinds == {int}:
            self._range(min(values), max(values))
        self.kinds |= kinds
        self._keep(converted)

    def _keep(self, converted: np.ndarray | None) -> None:
        if converted is None or self.converted is None:
            self.converted = None  # one window to parse again: parse them all again
        else:
            self.converted.append(converted)

    def _range(self, low: int, high: int) -> None:
        if self.ranged:
            low, high = min(self.low, low), max(self.high, high)
        self.low, self.high, self.ranged = low, high, True

    def finish(self, body: bytes, start: int, end: int) -> Span:
        if self.depth != 0 or not self.ndim:
            raise Malformed(f"the array at byte {start} is not closed at byte {end - 1}")
        shape = tuple(0 if d is None else d for d in self.shape)
        return Span(
            body,
            start,
            end,
            shape,
            self._ragged(),
            self.count,
            frozenset(self.kinds),
            self.low,
            self.high,
            self.converted,
        )

    def _ragged(self) -> str | None:
        # tensors checks a depth at a time: values among lists first, then list lengths.
        for depth in range(1, self.ndim):
            if self.mixed == depth:
                break
            if self.varied[depth]:
                shown = ", ".join(str(n) for n in self.lengths[depth].tolist())
                return f"ragged nesting: lists at depth {depth} have lengths {shown}"
        if self.mixed <= self.ndim:
            return f"ragged nesting: lists and values mix at depth {self.mixed}"
        return None
