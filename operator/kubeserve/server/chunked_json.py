"""Parse a large JSON body a piece at a time, so that other threads run in between.

``orjson.loads`` is one C call that holds the GIL for the whole document: 0.5-0.7 s for a
16 MiB request on a shared 2-core machine, during which the event loop answers nothing (not
even a liveness probe), even when the parse runs in a worker thread. ``loads`` here gives
the same value while no single call parses more than about ``chunk`` bytes:

- a value of at most ``chunk`` bytes, or a scalar (one long string or number), goes to
  ``orjson.loads`` whole;
- a larger array or object is cut at some of its top-level commas (found with numpy over
  windows of the bytes, outside strings and nested brackets) into runs of elements of at
  most ``chunk`` bytes, each parsed by orjson inside brackets of its own; an element larger
  than ``chunk`` is parsed the same way, recursively.

Every byte of the body is still read by orjson (or is one of the commas and brackets it
was cut at, each checked), so a malformed body is refused as orjson would refuse it, with
``ValueError``. Duplicate keys keep the last value, as orjson does.

Where ``defer`` says that a large array is a tensor's values (its path: the keys and
indexes that lead to it), one that holds no object is not made into lists: it is checked
and stands in the document as a ``numeric_json.Span``, whose values go straight into
numpy later, a window at a time.

A ``layout`` says more, for a body of a known protocol: where its tensors' values are
(``Place.TENSOR``: a span whatever its size, so that many small tensors cost no more than
one large one), which containers hold them (``Place.HOLDER``: parsed an element at a time,
at most ``MOST_ELEMENTS``), and that nothing else may be larger than ``chunk``: such a
value is ``Refused`` before it is built (16 MiB of ``"shape": [1,1,...]`` were 7x their
size in lists, of ``"junk": [[],[],...]`` 25x).
"""

from __future__ import annotations

import contextlib
import enum
import gc
import itertools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import orjson

from kubeserve.server import numeric_json
from kubeserve.server.numeric_json import Malformed

# The keys (str) and indexes (int) from the document to a value.
Path = tuple[str | int, ...]
Defer = Callable[[Path], bool]


class Place(enum.Enum):
    """What a protocol expects at a path of its body."""

    TENSOR = "tensor"  # a tensor's values (an object there is a holder: named tensors)
    HOLDER = "holder"  # an object or array that holds tensors
    OTHER = "other"  # a small field (name, shape, id, parameters, unknown keys)


Layout = Callable[[Path], Place]

CHUNK = 128 * 1024
# Large containers nested deeper than this are refused: no protocol body has more than a
# few levels of them, and each level costs one more pass over its bytes.
MAX_DEPTH = 32
# A holder with more elements than this is refused: no model has that many inputs, and each
# element is parsed on its own.
MOST_ELEMENTS = 1024
# A tensor's array that holds objects ({"b64": ...} values, V1 named rows) with more elements
# than this is refused: each object costs a dict and a string or span, ~240 bytes for an
# 11-byte {"b64": ""}, and a batch of more than 1,024 images or rows written as objects in
# one request is not a real use (numbers go as arrays, which cost no object each).
MOST_OBJECTS = 1024

_WHITESPACE = b" \t\n\r"
_QUOTE, _BACKSLASH, _COMMA, _BRACKET = ord('"'), ord("\\"), ord(","), ord("[")
_BRACE = ord("{")
_OPEN, _CLOSE = {ord("["): ord("]"), ord("{"): ord("}")}, (ord("]"), ord("}"))
_BRACKETS = (b"[", b"]", b"{", b"}")
# Byte -> change of nesting depth, as a ``bytes.translate`` table (0xff is int8 -1).
_STEPS = bytes(1 if b in b"[{" else 0xFF if b in b"]}" else 0 for b in range(256))


__all__ = [
    "CHUNK",
    "MAX_DEPTH",
    "MOST_ELEMENTS",
    "MOST_OBJECTS",
    "Defer",
    "Layout",
    "Malformed",
    "Path",
    "Place",
    "Refused",
    "document",
    "loads",
    "materialize",
    "release",
]


class Refused(ValueError):
    """A valid body that the ``layout`` refuses: a large value where none belongs."""


def loads(
    body: bytes,
    *,
    chunk: int = CHUNK,
    defer: Defer | None = None,
    layout: Layout | None = None,
) -> Any:
    """Return what ``orjson.loads(body)`` returns, parsing at most ~``chunk`` bytes a call.

    A large array of numbers at a path ``defer`` accepts is a ``numeric_json.Span``. With
    a ``layout`` (``defer`` is then not used) a body over ``chunk`` bytes is parsed as it
    says. Raises Malformed where orjson would raise its JSONDecodeError, Refused where
    the layout refuses a value.
    """
    start, end = _strip(body, 0, len(body))
    try:
        if end - start <= chunk:
            return orjson.loads(body)
        if layout is not None:
            return _placed(body, start, end, chunk, 0, (), layout)
        return _value(body, start, end, chunk, 0, (), defer)
    except (Malformed, Refused):
        raise
    except ValueError as exc:  # orjson.JSONDecodeError
        raise Malformed(str(exc)) from None


@contextlib.contextmanager
def document(
    body: bytes, *, chunk: int = CHUNK, defer: Defer | None = None, layout: Layout | None = None
) -> Iterator[Any]:
    """Parse ``body`` with ``loads``, and ``release`` the document when the block ends.

    The cyclic garbage collector stays off from the parse to the release. Each list the
    parser makes counts towards the next collection, and a full collection walks every
    object of the process, the document too: 55-80 ms in one go, the event loop waiting,
    whether it falls inside the parse or right after it. A JSON document holds no cycles,
    so nothing is freed later than it would have been.
    """
    with _COLLECTOR_PAUSE:
        value = loads(body, chunk=chunk, defer=defer, layout=layout)
        try:
            yield value
        finally:
            release(value)


class _CollectorPause:
    """Keep the cyclic garbage collector off while any thread holds a pause.

    Counted, because several worker threads handle large requests at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._resume = False

    def __enter__(self) -> None:
        with self._lock:
            if self._holders == 0:
                self._resume = gc.isenabled()
                gc.disable()
            self._holders += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._holders -= 1
            if self._holders == 0 and self._resume:
                gc.enable()


_COLLECTOR_PAUSE = _CollectorPause()


def _strip(body: bytes, start: int, end: int) -> tuple[int, int]:
    while start < end and body[start] in _WHITESPACE:
        start += 1
    while end > start and body[end - 1] in _WHITESPACE:
        end -= 1
    return start, end


def materialize(span: numeric_json.Span) -> list[Any]:
    """Parse a span into the lists it stands for, for a reader that needs them after all."""
    value: list[Any] = _value(span.body, span.start, span.end, CHUNK, 0, (), None)
    return value


def _everywhere(path: Path) -> bool:
    return True


def _shown(path: Path) -> str:
    """``inputs[0].shape``: a path as a client writes it."""
    text = "".join(f"[{p}]" if type(p) is int else f".{p}" for p in path)
    return text.lstrip(".") or "the body"


def _placed(
    body: bytes, start: int, end: int, chunk: int, depth: int, path: Path, layout: Layout
) -> Any:
    """Parse the value ``body[start:end]`` at ``path`` as ``layout`` places it."""
    first = body[start] if start < end else -1
    place = layout(path)
    if place is Place.TENSOR and first == _BRACKET:
        if body.find(b"{", start, end) < 0:
            with contextlib.suppress(numeric_json.TooLong):
                return numeric_json.scan(body, start, end)
        return _tensor_with_objects(body, start, end, chunk, depth, path, layout)
    if place is Place.OTHER or first not in _OPEN:
        if end - start > chunk:
            raise Refused(
                f"{_shown(path)} is {end - start} bytes of JSON: only a tensor's values "
                f"may be over {chunk} bytes"
            )
        return orjson.loads(memoryview(body)[start:end])
    _check_container(body, start, end, depth)
    # Every element on its own, however small: a tensor in it is placed as well.
    cuts = [start, *_cuts(body, start + 1, end - 1, chunk, most=MOST_ELEMENTS, path=path), end - 1]
    is_list = first == _BRACKET
    items: list[Any] = []
    members: dict[str, Any] = {}
    for s, e in _elements(body, cuts):
        if is_list:
            items.append(_placed(body, s, e, chunk, depth + 1, (*path, len(items)), layout))
        else:
            key, value_at = _key(body, s, e)
            members[key] = _placed(body, value_at, e, chunk, depth + 1, (*path, key), layout)
    return items if is_list else members


def _tensor_with_objects(
    body: bytes, start: int, end: int, chunk: int, depth: int, path: Path, layout: Layout
) -> Any:
    """Parse a tensor's array that has a '{' in it: objects among its elements, or in a string.

    An array with no object element (a '{' in a string, or a value over a window) is parsed
    as any value. One that holds objects ({"b64": ...} values, V1 named rows) is parsed an
    element at a time, at most ``MOST_OBJECTS``: each object costs a dict and its members
    several times their text, which the cap keeps to a constant. A member the layout
    places as a tensor's values (a named row's input) is a span like any other.
    """
    _check_container(body, start, end, depth)
    objects = [0]
    _cuts(body, start + 1, end - 1, chunk, objects=objects)
    if not objects[0]:
        return _value(body, start, end, chunk, depth, path, _everywhere)
    try:
        cuts = [start, *_cuts(body, start + 1, end - 1, chunk, most=MOST_OBJECTS), end - 1]
    except Refused:
        raise Refused(
            f'{_shown(path)} holds objects ({{"b64": ...}} values or named rows) and more '
            f"than {MOST_OBJECTS} elements: send at most {MOST_OBJECTS} of them a request"
        ) from None
    items: list[Any] = []
    for s, e in _elements(body, cuts):
        at = (*path, len(items))
        if body[s] == ord("{"):
            items.append(_object(body, s, e, chunk, depth + 1, at, layout))
        else:
            items.append(_value(body, s, e, chunk, depth + 1, at, _everywhere))
    return items


def _object(
    body: bytes, start: int, end: int, chunk: int, depth: int, path: Path, layout: Layout
) -> dict[str, Any]:
    """Parse an object among a tensor's values: its members as any value, but those the
    layout places as a tensor's values, which are spans where they hold no object."""
    _check_container(body, start, end, depth)
    cuts = [start, *_cuts(body, start + 1, end - 1, chunk, most=MOST_ELEMENTS, path=path), end - 1]
    members: dict[str, Any] = {}
    for s, e in _elements(body, cuts):
        key, value_at = _key(body, s, e)
        at = (*path, key)
        if (
            layout(at) is Place.TENSOR
            and body[value_at] == _BRACKET
            and body.find(b"{", value_at, e) < 0
        ):
            with contextlib.suppress(numeric_json.TooLong):
                members[key] = numeric_json.scan(body, value_at, e)
                continue
        members[key] = _value(body, value_at, e, chunk, depth + 1, at, _everywhere)
    return members


def _value(
    body: bytes, start: int, end: int, chunk: int, depth: int, path: Path, defer: Defer | None
) -> Any:
    view = memoryview(body)[start:end]
    first = body[start] if start < end else -1
    if end - start <= chunk or first not in _OPEN:
        return orjson.loads(view)
    if (
        defer is not None
        and first == _BRACKET
        and defer(path)
        and body.find(b"{", start, end) < 0  # a '{' in a string costs only the usual way
    ):
        with contextlib.suppress(numeric_json.TooLong):
            return numeric_json.scan(body, start, end)
    _check_container(body, start, end, depth)
    cuts = [start, *_cuts(body, start + 1, end - 1, chunk), end - 1]
    is_list = first == ord("[")
    items: list[Any] = []
    members: dict[str, Any] = {}
    for s, e in _elements(body, cuts):
        if e - s > chunk:
            # Only one element: the cuts leave several together only within ``chunk``.
            if is_list:
                items.append(_value(body, s, e, chunk, depth + 1, (*path, len(items)), defer))
            else:
                key, value_at = _key(body, s, e)
                members[key] = _value(body, value_at, e, chunk, depth + 1, (*path, key), defer)
        elif is_list:
            items.extend(orjson.loads(b"[" + body[s:e] + b"]"))
        else:
            members.update(orjson.loads(b"{" + body[s:e] + b"}"))
    return items if is_list else members


def _check_container(body: bytes, start: int, end: int, depth: int) -> None:
    """Refuse a large container nested too deep, or one whose last byte does not close it."""
    if depth >= MAX_DEPTH:
        raise Malformed(f"large containers nested deeper than {MAX_DEPTH} levels")
    if body[end - 1] != _OPEN[body[start]]:
        raise Malformed(f"the container opened at byte {start} is not closed at byte {end - 1}")


def _elements(body: bytes, cuts: list[int]) -> Iterator[tuple[int, int]]:
    """Give where each run between the cuts starts and ends, stripped; none for ``[ ]``."""
    for left, right in itertools.pairwise(cuts):
        s, e = _strip(body, left + 1, right)
        if s == e and len(cuts) == 2:
            return  # an empty container, padded with whitespace
        if s == e:
            raise Malformed(f"empty element at byte {s}")
        yield s, e


def _key(body: bytes, start: int, end: int) -> tuple[str, int]:
    """Parse the key of the object member ``body[start:end]``; return it and where its value starts."""
    if body[start] != _QUOTE:
        raise Malformed(f"expected a key string at byte {start}")
    close = body.find(b'"', start + 1, end)
    while close > 0 and _escaped(body, close):
        close = body.find(b'"', close + 1, end)
    if close < 0:
        raise Malformed(f"unterminated key at byte {start}")
    key = orjson.loads(body[start : close + 1])
    colon, _ = _strip(body, close + 1, end)
    if colon >= end or body[colon] != ord(":"):
        raise Malformed(f"expected ':' at byte {colon}")
    value_at, _ = _strip(body, colon + 1, end)
    if value_at >= end:
        raise Malformed(f"member without a value at byte {start}")
    return str(key), value_at


def _escaped(body: bytes, at: int) -> bool:
    run = 0
    while body[at - 1 - run] == _BACKSLASH:
        run += 1
    return run % 2 == 1


def _cuts(
    body: bytes,
    start: int,
    end: int,
    chunk: int,
    *,
    most: int = 0,
    path: Path = (),
    objects: list[int] | None = None,
) -> list[int]:
    """Return top-level commas of the container whose inside is ``body[start:end]``.

    With ``most`` > 0, every one, and Refused once there are ``most`` (the container at
    ``path`` has more elements than that). Otherwise not every comma: the first and the
    last of each window of ``chunk // 2`` bytes. Between
    two consecutive ones lie either at most two windows (``chunk`` bytes), or exactly one
    element (the windows between had no top-level comma). Checks on the way that the
    brackets inside balance and that no string is left open. ``objects``, when given, has
    its one count raised by the objects among the container's elements.
    """
    window = max(chunk // 2, 1)
    cuts: list[int] = []
    depth = 1  # inside the container
    in_string = 0
    backslashes = 0  # the run of backslashes the previous window ended with
    for pos in range(start, end, window):
        stop = min(pos + window, end)
        n = stop - pos
        # memchr answers these in microseconds; numbers and brackets alone need neither.
        has_quote = body.find(b'"', pos, stop) >= 0
        has_backslash = body.find(b"\\", pos, stop) >= 0
        if (
            depth >= 2
            and not (has_quote or has_backslash or in_string)
            and all(body.find(bracket, pos, stop) < 0 for bracket in _BRACKETS)
        ):
            # Inside an element, among numbers alone (a tensor's flat values, most often):
            # no comma of the container's, no bracket to count. memchr says so in
            # microseconds where numpy takes a millisecond a window.
            backslashes = 0
            continue
        chars = np.frombuffer(body, dtype=np.uint8, count=n, offset=pos)
        outside: np.ndarray | None = None  # None: no byte of the window is in a string
        if has_quote:
            quotes = np.flatnonzero(chars == _QUOTE)
            if backslashes or has_backslash:
                quotes = quotes[numeric_json.unescaped(quotes, chars == _BACKSLASH, backslashes)]
            toggles = np.zeros(n, dtype=np.uint8)
            toggles[quotes] = 1
            inside = np.bitwise_xor.accumulate(toggles)
            if in_string:
                inside ^= 1
            outside = inside == 0
            in_string = int(inside[-1])
        if has_backslash:
            backslashes = _trailing_run(chars == _BACKSLASH, backslashes)
        elif n:
            backslashes = 0
        if outside is None and in_string:
            continue  # all of this window is inside one string
        steps = np.frombuffer(body[pos:stop].translate(_STEPS), dtype=np.int8)
        if outside is not None:
            steps = steps * outside
        depths = np.cumsum(steps, dtype=np.int32)
        depths += depth
        if depths.min() < 1:
            raise Malformed(f"unbalanced brackets near byte {pos}")
        depth = int(depths[-1])
        at_top = (chars == _COMMA) & (depths == 1)
        if outside is not None:
            at_top &= outside
        commas = np.flatnonzero(at_top)
        if objects is not None:
            # An element's '{' takes the depth from 1 to 2.
            opening = (chars == _BRACE) & (depths == 2)
            if outside is not None:
                opening &= outside
            objects[0] += int(np.count_nonzero(opening))
        if most:
            cuts.extend((commas + pos).tolist())
            if len(cuts) >= most:
                raise Refused(f"{_shown(path)} holds more than {most} elements")
        elif commas.size:
            cuts.append(pos + int(commas[0]))
            if commas.size > 1:
                cuts.append(pos + int(commas[-1]))
    if depth != 1 or in_string:
        raise Malformed(f"unbalanced brackets or an open string before byte {end}")
    return cuts


def _trailing_run(is_backslash: np.ndarray, carried: int) -> int:
    others = np.flatnonzero(~is_backslash)
    if others.size == 0:
        return carried + int(is_backslash.size)
    return int(is_backslash.size - 1 - others[-1])


def release(value: Any, *, budget: int = 65536) -> None:
    """Free a parsed document about ``budget`` objects at a time.

    Freeing a document is one recursive deallocation, as uninterruptible as parsing it
    (0.16 s for five million empty lists); deleting its lists' elements in slices keeps each
    step short. The size of a list's last element sets how many go at once. Call it when
    nothing else needs the document's containers.
    """
    pending = [value]
    while pending:
        item = pending.pop()
        if type(item) is dict:
            pending.extend(v for v in item.values() if type(v) in (list, dict))
            item.clear()
            continue
        while item:
            last = item[-1]
            size = len(last) + 1 if type(last) in (list, dict) else 1
            if size > budget:
                pending.append(item)  # back to this list once its last element is gone
                pending.append(item.pop())
                break
            del item[-max(budget // size, 1) :]
