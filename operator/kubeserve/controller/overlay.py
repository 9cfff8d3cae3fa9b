"""The answers to the operator's own writes, laid over the watch caches until they catch up.

A write's answer is the object as the API server stored it; its watch event comes later.
A reconcile in between would read the cache's older copy and write again what it has just
written (or, for a status, compute it from an old one). The overlay keeps each answer, by
resourceVersion, until a watch event shows that version or a newer one.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from kubeserve.controller import packed

ObjectKey = tuple[str, str | None, str]  # kind, namespace, name


def revision(obj: Mapping[str, Any] | None) -> int:
    """Give an object's resourceVersion as a number (-1 when it has none that is a number).

    Kubernetes calls resourceVersions opaque; every API server we know of (etcd's revisions,
    the emulator's counter) gives integers that grow, which is all the overlay relies on.
    """
    try:
        return int((obj or {}).get("metadata", {}).get("resourceVersion", ""))
    except ValueError:
        return -1


class WriteOverlay:
    """The last answer to our own write of each object, kept packed; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (revision, packed object): a burst of creates would otherwise hold thousands of dicts.
        self._written: dict[ObjectKey, tuple[int, bytes]] = {}

    def remember(self, obj: Mapping[str, Any]) -> None:
        """Keep the answer to a write (create, patch) until the watch caches hold it."""
        meta = obj.get("metadata", {})
        entry = (revision(obj), packed.pack(obj))
        with self._lock:
            self._written[(obj["kind"], meta.get("namespace"), meta["name"])] = entry

    def observe(
        self, kind: str, namespace: str | None, name: str, obj: Mapping[str, Any] | None
    ) -> bool:
        """Tell the overlay what a watch event said (None: deleted); drop what it supersedes.

        True when the event shows the object exactly as our own last write left it.
        """
        key = (kind, namespace, name)
        with self._lock:
            written = self._written.get(key)
            if written is not None and (obj is None or revision(obj) >= written[0]):
                del self._written[key]
                return obj is not None and written[0] >= 0 and revision(obj) == written[0]
        return False

    def current(
        self, kind: str, namespace: str | None, name: str, cached: Mapping[str, Any] | None
    ) -> Mapping[str, Any] | None:
        """Give the newer of the cache's copy and the answer to our last write."""
        with self._lock:
            written = self._written.get((kind, namespace, name))
        if written is not None and written[0] > revision(cached):
            return packed.unpack(written[1])
        return cached

    def __len__(self) -> int:
        with self._lock:
            return len(self._written)
