"""nginx's split_clients, in Python: predicts exactly which variant a sticky key reaches.

nginx hashes the key with MurmurHash2 (seed 0) and compares the 32-bit hash with cumulative
boundaries: a part of p percent (two decimals, stored as p*100) moves the boundary up by
p*100 * 0xffffffff // 10000; the first part whose boundary is above the hash wins, and `*`
takes the rest. The data-plane tests check this model against real nginx, then use it to
state exactly which keys a weight change moves. `parts` reads the split a router config holds.
"""

from __future__ import annotations

import re

from scipy import stats

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def parts(nginx_conf: str) -> list[tuple[str, str]]:
    """Give the parts of the config's split_clients, in order: (share, variant); none without."""
    if "split_clients" not in nginx_conf:
        return []
    block = nginx_conf[nginx_conf.index("split_clients") :]
    return re.findall(r"^\s+(\S+) (\S+);$", block[: block.index("}")], re.M)


def murmur2(data: bytes) -> int:
    """Give nginx's ngx_murmur_hash2 of `data`."""
    h = len(data) & _MASK
    n = len(data) - len(data) % 4
    for i in range(0, n, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = data[n:]
    if len(tail) == 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h ^= tail[0]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def boundaries(weights: list[tuple[str, int]]) -> list[tuple[str, int | None]]:
    """Give each live variant's upper hash boundary (None for the last, nginx's `*`)."""
    live = [(v, w) for v, w in weights if w > 0]
    out: list[tuple[str, int | None]] = []
    last = 0
    for v, w in live[:-1]:
        last += w * 100 * 0xFFFFFFFF // 10000
        out.append((v, last))
    out.append((live[-1][0], None))
    return out


def variant_for(key: str, weights: list[tuple[str, int]]) -> str:
    """Give the variant nginx's split_clients picks for `key` (the salted string it hashes)."""
    h = murmur2(key.encode())
    for v, bound in boundaries(weights):
        if bound is None or h < bound:
            return v
    raise AssertionError("unreachable: the last part takes the rest")


def interval(n: int, percent: float) -> tuple[int, int]:
    """Give the counts a share of `percent` lands in with 99.9% probability out of n."""
    low, high = stats.binom.interval(0.999, n, percent / 100)
    return int(low), int(high)
