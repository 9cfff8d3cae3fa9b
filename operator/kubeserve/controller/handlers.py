"""kopf handlers, thin: find the InferenceService and what the caches hold, call the reconciler.

Why watch the children instead of polling them: a child deleted or edited by hand is put
back within one watch event, and the watch caches (kopf indexes) are what make a reconcile
free of reads. A slow timer resyncs everything anyway, as a safety net for missed events.

Every handler is async and quick: kopf runs it at once, without a trip through its thread
pool. Those of InferenceService changes and of child and pod events only note work (see
`pending`); the reconciles they call for run on threads of their own.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import kopf

from kubeserve import API_GROUP, API_VERSION, cluster
from kubeserve.build import meta
from kubeserve.controller import memory, pending, reconcile
from kubeserve.controller.config import OperatorConfig
from kubeserve.controller.metrics import OperatorMetrics

# kopf's own bookkeeping lives under our prefix, not kopf.zalando.org.
KOPF_PREFIX = f"kopf.{API_GROUP}"
PLURAL = "inferenceservices"
MANAGED = {"app.kubernetes.io/managed-by": meta.MANAGED_BY}
CHILD_RESOURCES = [
    ("apps", "v1", "deployments"),
    ("", "v1", "services"),
    ("", "v1", "configmaps"),
    ("autoscaling", "v2", "horizontalpodautoscalers"),
    ("policy", "v1", "poddisruptionbudgets"),
]
GATEWAY_RESOURCES = [("gateway.networking.k8s.io", "v1", "httproutes")]
RETRY_DELAY = 5.0
LIST_PAGE = 200
TRIM_SECONDS = 5.0
logger = logging.getLogger("kubeserve.reconcile")
changes_logger = logging.getLogger("kubeserve.changes")


def _index_name(plural: str) -> str:
    return f"{plural}_by_owner"


def _owner_key(namespace: str | None, labels: Mapping[str, str]) -> tuple[str | None, str] | None:
    owner = labels.get(meta.ISVC_LABEL)
    return (namespace, owner) if owner else None


def _pack(body: Mapping[str, Any]) -> bytes:
    """Keep a cached object packed (managedFields are never read: not kept)."""
    raw = dict(body)
    raw["metadata"] = {k: v for k, v in raw.get("metadata", {}).items() if k != "managedFields"}
    return reconcile.pack(raw)


def _values(index: Any, key: Any) -> list[Any]:
    """The values an index holds for `key`, copied at once.

    kopf changes its indexes on the event loop while reconciles read them on other threads;
    list() copies a store in one step under the GIL, where a Python loop over it could see
    it change size.
    """
    return list(index.get(key, [])) if index is not None else []


def _first(index: Any, key: Any) -> dict[str, Any] | None:
    values = _values(index, key)
    return reconcile.unpack(values[0]) if values else None


def register(
    registry: kopf.OperatorRegistry,
    config: OperatorConfig,
    reconciler: reconcile.Reconciler,
    metrics: OperatorMetrics,
) -> None:
    """Register every handler of the operator in `registry`."""
    children = CHILD_RESOURCES + (GATEWAY_RESOURCES if config.gateway_api else [])
    unmanaged = frozenset() if config.gateway_api else frozenset({"HTTPRoute"})

    @kopf.on.startup(id="configure", registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=KOPF_PREFIX, key="last-handled-configuration"
        )
        settings.persistence.finalizer = f"{KOPF_PREFIX}/finalizer"
        # Only warnings become Kubernetes Events: an Event is a write, and most logs are not news.
        settings.posting.level = logging.WARNING
        # Handlers are async and only note work (see `pending`): kopf's pool has little to do.
        settings.execution.max_workers = 2
        # Watching given namespaces needs no namespace list (and no RBAC to list them).
        settings.scanning.disabled = bool(config.namespaces)
        # No settings.queueing.worker_limit: a worker waiting for the indexes to fill would hold
        # its slot while other objects wait for one to be indexed (a deadlock past the limit).
        # An idle worker holds the last body it handled: after a listing of thousands, workers
        # that linger are the operator's peak memory. Handlers are quick and level-based
        # (events of one object are coalesced later anyway), so workers need not linger.
        settings.queueing.idle_timeout = 0.1
        # Listed in pages, as kubectl does: one response of thousands of children, read and
        # parsed whole, was most of a restart's peak memory (269 MB -> 206 MB at 1,000).
        settings.watching.chunk_size = LIST_PAGE
        settings.watching.server_timeout = 600
        settings.watching.client_timeout = 660

    @kopf.on.login(id="login", registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # The same credentials as `cluster`: the service account in a pod, KUBECONFIG outside.
        return kopf.login_via_client(**kwargs)

    @kopf.index(API_GROUP, API_VERSION, PLURAL, id="inferenceservices", registry=registry)
    async def inferenceservices(
        namespace: str | None, name: str, body: kopf.Body, **_: Any
    ) -> dict[Any, Any]:
        return {(namespace, name): _pack(body)}

    for group, version, plural in children:

        async def index_child(
            namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
        ) -> dict[Any, Any]:
            key = _owner_key(namespace, labels)
            return {key: (body.get("kind"), body["metadata"]["name"], _pack(body))} if key else {}

        kopf.index(
            group, version, plural, labels=MANAGED, id=_index_name(plural), registry=registry
        )(index_child)

    @kopf.index("", "v1", "pods", labels=MANAGED, id="pods_by_owner", registry=registry)
    async def pods_by_owner(
        namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
    ) -> dict[Any, Any]:
        key = _owner_key(namespace, labels)
        if key is None:
            return {}
        # Only what the status needs: pods are many, and the index lives in memory.
        return {
            key: _pack(
                {
                    "metadata": {"name": body["metadata"]["name"], "labels": dict(labels)},
                    "status": dict(body.get("status", {})),
                }
            )
        }

    def observed(
        namespace: str | None, name: str, indexes: Mapping[str, Any]
    ) -> reconcile.Observed:
        seen: dict[reconcile.ChildKey, bytes | dict[str, Any]] = {}
        for _, _, plural in children:
            for kind, child, text in _values(indexes[_index_name(plural)], (namespace, name)):
                seen[(kind, child)] = text
        pods = reconcile.pods_by_variant(
            [reconcile.unpack(t) for t in _values(indexes["pods_by_owner"], (namespace, name))]
        )
        return reconcile.Observed(
            children=reconcile.JsonObjects(seen), pods=pods, unmanaged_kinds=unmanaged
        )

    # What kopf's handlers hand over to threads: the indexes (the same objects for every
    # handler), and a context in which kopf.warn can post Events from any thread.
    captured: dict[str, Any] = {}
    stop = threading.Event()

    def remember(indexes: Mapping[str, Any]) -> None:
        if "indexes" not in captured:
            captured["context"] = contextvars.copy_context()
            captured["indexes"] = indexes

    def warn(body: Mapping[str, Any], reason: str, message: str) -> None:
        context: contextvars.Context | None = captured.get("context")
        post = functools.partial(
            kopf.warn,
            kopf.Body(dict(body)),  # type: ignore[arg-type]
            reason=reason,
            message=message,
        )
        try:
            context.copy().run(post) if context is not None else post()
        except LookupError:  # no handler has run yet: nowhere to post to
            changes_logger.warning(f"event not posted: {reason}: {message}")

    def run(
        body: Mapping[str, Any],
        observe: Callable[[], reconcile.Observed],
        trigger: str,
        only: set[reconcile.ChildKey] | None = None,
        settle: bool = True,
    ) -> reconcile.Outcome:
        with metrics.timed(trigger):
            outcome = reconciler.reconcile(body, observe, only=only, settle=settle)
        metrics.record(outcome)
        if outcome.status_written and (outcome.invalid or outcome.conflicts):
            reason = "InvalidSpec" if outcome.invalid else "NameConflict"
            warn(body, reason, "; ".join(outcome.invalid or outcome.conflicts)[:1024])
        if outcome.created or outcome.patched or outcome.deleted:
            meta = body.get("metadata", {})
            changes_logger.info(
                f"{meta.get('namespace')}/{meta.get('name')} {trigger}: {reconcile.summarise(outcome)}"
            )
        return outcome

    def work_off(owner: Any, only: set[reconcile.ChildKey] | None, reason: str) -> None:
        namespace, name = owner
        indexes = captured.get("indexes")
        body = _first(indexes["inferenceservices"], owner) if indexes else None
        if body is None or indexes is None:
            return  # gone (or not seen yet): garbage collection deals with its children
        try:
            run(body, functools.partial(observed, namespace, name, indexes), reason, only=only)
        except cluster.ApiError as exc:
            if exc.retriable:
                logger.warning(
                    f"{namespace}/{name}: the API refused a call, retrying in {RETRY_DELAY}s: {exc}"
                )
                raise pending.Retry from exc
            logger.error(f"{namespace}/{name}: the API refused a call: {exc}")

    work = pending.PendingWork(work_off, threads=config.workers, retry_delay=RETRY_DELAY)

    # create, update and resume only note the work: the reconcile reads the InferenceService
    # from the index, which kopf fills before it calls any handler, so it sees this change.
    @kopf.on.resume(API_GROUP, API_VERSION, PLURAL, id="reconcile", registry=registry)
    @kopf.on.create(API_GROUP, API_VERSION, PLURAL, id="reconcile", registry=registry)
    @kopf.on.update(API_GROUP, API_VERSION, PLURAL, id="reconcile", registry=registry)
    async def reconcile_inferenceservice(
        namespace: str | None, name: str, reason: str | None = None, **indexes: Any
    ) -> None:
        remember(indexes)
        work.reconcile((namespace, name), reason or "resume")

    # kopf's timers would put a finalizer on every InferenceService, and a finalizer outlives
    # an uninstalled operator: deletions would hang. This thread resyncs from the caches.
    def resync_forever() -> None:
        while not stop.wait(config.resync_seconds):
            indexes = captured.get("indexes")
            if indexes is not None:
                for owner in list(indexes["inferenceservices"]):
                    work.reconcile(owner, "resync")

    def settled_status(namespace: str | None, name: str) -> None:
        indexes = captured.get("indexes")
        body = _first(indexes["inferenceservices"], (namespace, name)) if indexes else None
        if body is None or indexes is None:
            return
        try:
            run(
                body,
                functools.partial(observed, namespace, name, indexes),
                "settled-status",
                only=set(),
                settle=False,
            )
        except Exception as exc:  # the resync writes it later
            logger.warning(f"status of {namespace}/{name} not written: {exc}")

    def defer(namespace: str | None, name: str, delay: float) -> None:
        timer = threading.Timer(delay, settled_status, args=(namespace, name))
        timer.daemon = True
        timer.start()

    reconciler.settle_status(config.status_settle_seconds, defer)

    @kopf.on.startup(id="start_threads", registry=registry)
    def start_threads(**_: Any) -> None:
        work.start()
        threading.Thread(target=resync_forever, name="kubeserve-resync", daemon=True).start()
        memory.start_trimming(TRIM_SECONDS, stop)

    @kopf.on.cleanup(id="stop_threads", registry=registry)
    def stop_threads(**_: Any) -> None:
        stop.set()
        work.stop()

    # Async: it only updates in-memory state, so it needs no trip through the thread pool.
    @kopf.on.event(API_GROUP, API_VERSION, PLURAL, id="inferenceservice_seen", registry=registry)
    async def inferenceservice_seen(
        type: str | None,
        body: kopf.Body,
        namespace: str | None,
        name: str,
        uid: str | None,
        **_: Any,
    ) -> None:
        reconciler.observe(
            body.get("kind", "InferenceService"),
            namespace,
            name,
            None if type == "DELETED" else body,
        )
        if type == "DELETED":
            reconciler.forget(namespace, name, uid)

    async def child_changed(
        type: str | None,
        body: kopf.Body,
        namespace: str | None,
        labels: kopf.Labels,
        **indexes: Any,
    ) -> None:
        remember(indexes)
        kind, child = body["kind"], body["metadata"]["name"]
        ours = reconciler.observe(kind, namespace, child, None if type == "DELETED" else body)
        key = _owner_key(namespace, labels)
        # Our own write coming back needs nothing. Objects found by the initial listing are
        # compared by their owner's resume, which kopf runs once every index is filled.
        if key is None or ours or type is None:
            return
        work.compare(key, (kind, child), f"{kind.lower()}-event")

    for group, version, plural in children:
        kopf.on.event(
            group, version, plural, labels=MANAGED, id=f"{plural}_changed", registry=registry
        )(child_changed)

    @kopf.on.event("", "v1", "pods", labels=MANAGED, id="pod_changed", registry=registry)
    async def pod_changed(
        type: str | None, namespace: str | None, labels: kopf.Labels, **indexes: Any
    ) -> None:
        remember(indexes)
        key = _owner_key(namespace, labels)
        if key is not None and type is not None:
            work.refresh_status(key, "pod-event")
