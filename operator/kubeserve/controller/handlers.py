"""kopf handlers, thin: find the InferenceService and what the caches hold, call the reconciler.

Why watch the children instead of polling them: a child deleted or edited by hand is put
back within one watch event, and the watch caches are what make a reconcile free of reads.
kopf watches the InferenceServices (an index); the children and their pods are watched by
informers of our own (see `informer`). A slow timer resyncs everything anyway, as a safety
net for missed events.

Every handler is async and quick: kopf runs it at once, without a trip through its thread
pool. Handlers and watch events only note work (see `pending`); the reconciles run on
threads of their own, once every child cache is filled.
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import kopf

import kubeserve
from kubeserve import API_GROUP, API_VERSION, cluster
from kubeserve.builders import meta
from kubeserve.controller import informer, memory, pending, reconcile
from kubeserve.controller.config import OperatorConfig
from kubeserve.controller.metrics import OperatorMetrics

# kopf's own bookkeeping lives under our prefix, not kopf.zalando.org.
KOPF_PREFIX = f"kopf.{API_GROUP}"
PLURAL = kubeserve.PLURAL
MANAGED = {"app.kubernetes.io/managed-by": meta.MANAGED_BY}
# What the informers watch: the kinds of the children, and the pods of the variants.
CHILD_KINDS = [
    cluster.KINDS[key]
    for key in [
        ("apps/v1", "Deployment"),
        ("v1", "Service"),
        ("v1", "ConfigMap"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("policy/v1", "PodDisruptionBudget"),
    ]
]
GATEWAY_KINDS = [cluster.KINDS[("gateway.networking.k8s.io/v1", "HTTPRoute")]]
POD_KIND = cluster.KINDS[("v1", "Pod")]
MANAGED_SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED.items())
RETRY_DELAY = 5.0
SETTLED_STATUS = "settled-status"
LIST_PAGE = informer.PAGE
TRIM_SECONDS = 5.0
logger = logging.getLogger("kubeserve.reconcile")
changes_logger = logging.getLogger("kubeserve.changes")


def _owner_key(namespace: str | None, labels: Mapping[str, str]) -> tuple[str | None, str] | None:
    owner = labels.get(meta.ISVC_LABEL)
    return (namespace, owner) if owner else None


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
    watch_api: cluster.Cluster | None = None,
) -> None:
    """Register every handler of the operator in `registry`.

    `watch_api` lists and watches the children (default: a client of its own, from the
    environment, so long watches do not take the reconciles' connections).
    """
    children = CHILD_KINDS + (GATEWAY_KINDS if config.gateway_api else [])
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
        # An idle worker holds the last body it handled; handlers are quick and level-based
        # (events of one object are coalesced later anyway), so workers need not linger.
        settings.queueing.idle_timeout = 0.1
        # Listed in pages, as kubectl does, rather than one response read and parsed whole.
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
        return {(namespace, name): reconcile.pack(informer.without_managed_fields(dict(body)))}

    # The children and their pods are watched by informers of our own (see `informer`), not
    # by kopf: kopf would hold every listed child until all were indexed.
    informers: list[informer.Informer] = []
    by_kind: dict[cluster.Kind, list[informer.Informer]] = {}

    def on_change(event: str, obj: dict[str, Any]) -> None:
        meta_ = obj.get("metadata") or {}
        owner = _owner_key(meta_.get("namespace"), meta_.get("labels") or {})
        if obj.get("kind") == "Pod":
            if owner is not None:
                work.refresh_status(owner, "pod-event")
            return
        kind, child = obj["kind"], meta_["name"]
        ours = reconciler.observe(
            kind, meta_.get("namespace"), child, None if event == "DELETED" else obj
        )
        if owner is not None and not ours:  # our own write coming back needs nothing
            work.compare(owner, (kind, child), f"{kind.lower()}-event")

    def observed(namespace: str | None, name: str) -> reconcile.Observed:
        seen: dict[reconcile.ChildKey, bytes | dict[str, Any]] = {}
        for kind in children:
            for watch in by_kind.get(kind, []):
                for child, packed in watch.children((namespace, name)):
                    seen[(watch.kind.kind, child)] = packed
        pods = reconcile.pods_by_variant(
            [
                reconcile.unpack(packed)
                for watch in by_kind.get(POD_KIND, [])
                for _, packed in watch.children((namespace, name))
            ]
        )
        return reconcile.Observed(
            children=reconcile.JsonObjects(seen), pods=pods, unmanaged_kinds=unmanaged
        )

    # What kopf's handlers hand over to threads: the InferenceServices' index (the same object
    # for every handler), and a context in which kopf.warn can post Events from any thread.
    captured: dict[str, Any] = {}
    stop = threading.Event()

    def remember(indexes: Mapping[str, Any]) -> None:
        if "indexes" not in captured:
            captured["context"] = contextvars.copy_context()
            # Only the index: the other arguments are that one call's body, patch and logger.
            captured["indexes"] = {"inferenceservices": indexes["inferenceservices"]}

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
            run(
                body,
                functools.partial(observed, namespace, name),
                reason,
                only=only,
                # The write that a settling status was deferred to: no deferring again.
                settle=reason != SETTLED_STATUS,
            )
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

    def defer(namespace: str | None, name: str, delay: float) -> None:
        work.timers.call_later(delay, work.refresh_status, (namespace, name), SETTLED_STATUS)

    reconciler.settle_status(config.status_settle_seconds, defer)

    @kopf.on.startup(id="start_threads", registry=registry)
    def start_threads(**_: Any) -> None:
        api = watch_api or cluster.Cluster.from_environment()
        namespaces: list[str | None] = list(config.namespaces) or [None]
        for kind, namespace in itertools.product([*children, POD_KIND], namespaces):
            watch = informer.Informer(
                api,
                kind,
                namespace,
                labels=MANAGED_SELECTOR,
                owner_label=meta.ISVC_LABEL,
                on_change=on_change,
                transform=(
                    informer.pod_summary if kind == POD_KIND else informer.without_managed_fields
                ),
            )
            informers.append(watch)
            by_kind.setdefault(kind, []).append(watch)
            watch.start()

        def start_work() -> None:
            # A reconcile must see every child there is, or it would create what exists.
            for watch in informers:
                while not watch.synced.wait(30):
                    logger.warning(f"still listing {watch.kind.plural}: reconciles wait")
            work.start()

        threading.Thread(target=start_work, name="kubeserve-start-work", daemon=True).start()
        threading.Thread(target=resync_forever, name="kubeserve-resync", daemon=True).start()
        memory.start_trimming(TRIM_SECONDS, stop)

    @kopf.on.cleanup(id="stop_threads", registry=registry)
    def stop_threads(**_: Any) -> None:
        stop.set()
        work.stop()
        for watch in informers:
            watch.stop()

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
