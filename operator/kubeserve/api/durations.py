"""Durations as Kubernetes and Go write them (`250ms`, `30s`, `1m30s`, `2h`), in seconds."""

from __future__ import annotations

import re

from kubeserve.api.patterns import DURATION

# Number-unit pairs in any order, as Go's time.ParseDuration takes them.
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Give a duration's length in seconds, or raise ValueError naming what is wrong."""
    if not re.fullmatch(DURATION, text):
        raise ValueError(f"{text!r} is not a duration such as 250ms, 30s, 1m30s or 2h")
    return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _PART.findall(text))


def format_duration(seconds: float) -> str:
    """Write seconds as the shortest duration text that parses back to them (to the ms)."""
    ms = round(seconds * 1000)
    if ms % 1000:
        return f"{ms}ms"
    s = ms // 1000
    if s % 60 or s < 60:
        return f"{s}s" if s < 60 else f"{s // 60}m{s % 60}s"
    m = s // 60
    return f"{m}m" if m < 60 or m % 60 else f"{m // 60}h"
