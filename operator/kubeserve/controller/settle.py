"""Status writes that follow one another closely, put off and written once.

Three Deployments becoming available one after the other would otherwise be three status
writes, and three events for every watcher of the InferenceService. A status change within
the settle window of the last write is put off: the first one asks for a settled status
refresh at the window's end (`work.RefreshStatus(settled=True)`), which computes the status
from the caches of that moment and writes it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

Owner = tuple[str | None, str]  # namespace, InferenceService name
# defer(owner, delay): refresh that owner's status, settled, after `delay` seconds.
Defer = Callable[[Owner, float], None]


class StatusSettling:
    """When each InferenceService's status was last written, and which writes are put off."""

    def __init__(
        self,
        seconds: float = 0.0,
        defer: Defer | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._seconds = seconds
        self._defer = defer
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[Owner, float] = {}
        self._deferred: set[Owner] = set()

    def put_off(self, owner: Owner) -> bool:
        """Tell whether a status change of `owner` must wait; True when it is put off.

        Only the first change put off in a window asks for the settled refresh.
        """
        if self._defer is None or self._seconds <= 0:
            return False
        with self._lock:
            since = self._clock() - self._last.get(owner, -self._seconds)
            if since >= self._seconds:
                return False
            first = owner not in self._deferred
            self._deferred.add(owner)
        if first:
            self._defer(owner, self._seconds - since)
        return True

    def written(self, owner: Owner) -> None:
        """Note that `owner`'s status was just written: the window starts again."""
        with self._lock:
            self._last[owner] = self._clock()
            self._deferred.discard(owner)

    def forget(self, owner: Owner) -> None:
        """Drop what is kept for a deleted InferenceService."""
        with self._lock:
            self._last.pop(owner, None)
            self._deferred.discard(owner)
