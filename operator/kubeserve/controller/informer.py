"""Watch caches of the children: list a page at a time, then watch; kept packed, by owner.

Why not kopf indexes: kopf runs no handler until every index is filled, so at a restart every
listed child waits, parsed, in a worker of its own; 8,000 children were the operator's peak
memory. Here a page of a list is packed as it arrives and dropped, and the reconciles wait for
`synced` instead (the client-go informer's contract: act only on a complete cache).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubeserve import cluster
from kubeserve.builders import meta
from kubeserve.controller import packed, pending

logger = logging.getLogger(__name__)

Owner = tuple[str | None, str]  # namespace, InferenceService name
# (event type, the object) for every change after the first listing; DELETED for an object
# a relist no longer finds.
OnChange = Callable[[str, dict[str, Any]], None]
Transform = Callable[[dict[str, Any]], dict[str, Any]]
PAGE = 200
WATCH_SECONDS = 300
BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)
# A watch that ends sooner than this counts as a failure: a proxy closing streams at once
# would otherwise have us reconnect in a tight loop.
SHORTEST_WATCH = 1.0


def owner_of(obj: Mapping[str, Any]) -> Owner | None:
    """Give the InferenceService an object belongs to, by its owner label (None: no label)."""
    metadata = obj.get("metadata") or {}
    owner = (metadata.get("labels") or {}).get(meta.ISVC_LABEL)
    return (metadata.get("namespace"), owner) if owner else None


def without_managed_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """What the caches keep of an object: everything but managedFields, which are never read."""
    metadata = obj.get("metadata") or {}
    if "managedFields" in metadata:
        obj = {**obj, "metadata": {k: v for k, v in metadata.items() if k != "managedFields"}}
    return obj


# What the status and the experiments' collection read of a pod's status.
_POD_STATUS = (
    "phase",
    "conditions",
    "containerStatuses",
    "initContainerStatuses",
    "podIP",
    "startTime",
)


def pod_summary(obj: dict[str, Any]) -> dict[str, Any]:
    """What the status and the experiments read of a pod: pods are many, the cache is memory.

    `port`: the server's port (the container port named http), where experiments read
    /metrics; absent when no container names one.
    """
    metadata = obj.get("metadata") or {}
    status = obj.get("status") or {}
    summary: dict[str, Any] = {
        "metadata": {
            k: metadata[k] for k in ("name", "namespace", "uid", "labels") if k in metadata
        },
        "status": {k: status[k] for k in _POD_STATUS if k in status},
    }
    for container in (obj.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == "http" and port.get("containerPort"):
                summary["port"] = port["containerPort"]
                return summary
    return summary


class Informer:
    """The objects of one kind (in one namespace, or all) that carry the owner label."""

    def __init__(
        self,
        api: cluster.Cluster,
        kind: cluster.Kind,
        namespace: str | None,
        *,
        labels: str,
        on_change: OnChange,
        transform: Transform = without_managed_fields,
    ) -> None:
        self.kind = kind
        self.synced = threading.Event()
        self._api = api
        self._namespace = namespace
        self._labels = labels
        self._on_change = on_change
        self._transform = transform
        self._stop = threading.Event()
        self._lock = threading.Lock()
        # The last resourceVersion seen, kept across watches: a broken watch resumes from it.
        self._revision: str | None = None
        # owner -> name -> packed object; name -> (owner, resourceVersion) to find moves.
        self._by_owner: dict[Owner, dict[str, bytes]] = {}
        self._where: dict[tuple[str | None, str], tuple[Owner | None, str]] = {}

    def children(self, owner: Owner) -> list[tuple[str, bytes]]:
        """(name, packed object) of the objects `owner` has, copied under the lock."""
        with self._lock:
            return list(self._by_owner.get(owner, {}).items())

    def start(self) -> None:
        """List and watch on a daemon thread until `stop`."""
        name = f"kubeserve-watch-{self.kind.plural}-{self._namespace or 'all'}"
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def stop(self) -> None:
        """Stop after the current watch ends (within its timeout: the thread is a daemon)."""
        self._stop.set()

    # Keeping the cache

    def _put(self, obj: dict[str, Any]) -> None:
        metadata = obj["metadata"]
        key = (metadata.get("namespace"), metadata["name"])
        owner = owner_of(obj)
        data = packed.pack(self._transform(obj))
        with self._lock:
            before = self._drop_locked(key)
            self._where[key] = (owner, str(metadata.get("resourceVersion", "")))
            if owner is not None:
                self._by_owner.setdefault(owner, {})[metadata["name"]] = data
        if before is not None and before != owner:
            # Relabelled away from its owner: for that owner, the child is gone.
            self._gone(key, before)

    def _drop_locked(self, key: tuple[str | None, str]) -> Owner | None:
        previous = self._where.pop(key, None)
        if previous is not None and previous[0] is not None:
            names = self._by_owner.get(previous[0], {})
            names.pop(key[1], None)
            if not names:
                self._by_owner.pop(previous[0], None)
        return previous[0] if previous is not None else None

    def _gone(self, key: tuple[str | None, str], owner: Owner | None) -> None:
        """Tell that an object left `owner`'s cache without an event of its own saying so."""
        namespace, name = key
        labels = {meta.ISVC_LABEL: owner[1]} if owner else {}
        self._on_change(
            "DELETED",
            {
                "apiVersion": self.kind.api_version,
                "kind": self.kind.kind,
                "metadata": {"name": name, "namespace": namespace, "labels": labels},
            },
        )

    def _forget_all(self) -> None:
        with self._lock:
            gone = [(key, owner) for key, (owner, _) in self._where.items()]
            self._where.clear()
            self._by_owner.clear()
        for key, owner in gone:
            self._gone(key, owner)

    def _relist(self) -> str:
        """Fill the cache from a paginated list; tell what changed since the last one."""
        first = not self.synced.is_set()
        seen: set[tuple[str | None, str]] = set()
        token: str | None = None
        revision = ""
        while True:
            items, revision, token = self._api.list_page(
                self.kind, self._namespace, labels=self._labels, limit=PAGE, token=token
            )
            for obj in items:
                metadata = obj["metadata"]
                key = (metadata.get("namespace"), metadata["name"])
                seen.add(key)
                with self._lock:
                    known = self._where.get(key)
                changed = known is None or known[1] != str(metadata.get("resourceVersion", ""))
                self._put(obj)
                if changed and not first:
                    self._on_change("MODIFIED" if known else "ADDED", obj)
            if not token:
                break
        with self._lock:
            gone = [(key, owner) for key, (owner, _) in self._where.items() if key not in seen]
            for key, _ in gone:
                self._drop_locked(key)
        for key, owner in gone:
            self._gone(key, owner)
        return revision

    def _watch(self, revision: str) -> None:
        for event in self._api.watch(
            self.kind,
            self._namespace,
            resource_version=revision,
            labels=self._labels,
            timeout_seconds=WATCH_SECONDS,
        ):
            obj = event.get("object") or {}
            obj.setdefault("kind", self.kind.kind)
            obj.setdefault("apiVersion", self.kind.api_version)
            revision = str((obj.get("metadata") or {}).get("resourceVersion") or revision)
            self._revision = revision
            kind = event.get("type")
            if kind == "BOOKMARK":
                continue
            if kind == "DELETED":
                metadata = obj["metadata"]
                with self._lock:
                    self._drop_locked((metadata.get("namespace"), metadata["name"]))
            else:
                self._put(obj)
            self._on_change(str(kind), obj)
            if self._stop.is_set():
                break

    def _run(self) -> None:
        failures = 0  # in a row, since the last watch that worked
        relisted = False  # listed again at once after a 410, since the last watch that worked
        while not self._stop.is_set():
            started = time.monotonic()
            status = 0
            retry_after: float | None = None
            try:
                if self._revision is None:
                    self._revision = self._relist()
                    self.synced.set()
                self._watch(self._revision)
                if time.monotonic() - started >= SHORTEST_WATCH:
                    failures, relisted = 0, False
                    continue
                error = "the watch ended at once"
            except cluster.ApiError as exc:
                if time.monotonic() - started >= SHORTEST_WATCH:
                    # It worked before it broke (a connection cut): this failure is a first
                    # one, not the next of a series that must wait ever longer.
                    failures, relisted = 0, False
                error, status, retry_after = str(exc), exc.status, exc.retry_after
                if status == 410:  # too old to resume from: list again
                    self._revision = None
                if status == 404:
                    # The cluster does not serve this kind (a CRD not installed, or removed):
                    # there are none, which must not hold up the reconciles of the rest.
                    self._revision = None
                    self._forget_all()
                    self.synced.set()
            except Exception as exc:  # a bug must not end the watch for good
                logger.exception(f"watching {self.kind.plural} failed; listing again")
                error = repr(exc)
                self._revision = None
            if status == 410 and not relisted:
                relisted = True
                continue  # routine: the version was compacted; list again at once
            # A throttled API says when: not sooner, within reason.
            delay = pending.honoured(BACKOFF[min(failures, len(BACKOFF) - 1)], retry_after)
            failures += 1
            # Refused outright, the operator cannot work: say it louder than a hiccup.
            log = logger.error if status in (401, 403) else logger.warning
            log(f"watching {self.kind.plural}: {error}; again in {delay}s")
            self._stop.wait(delay)
