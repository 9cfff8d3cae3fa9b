"""kopf handlers, thin: find the InferenceService and what the caches hold, call the reconciler.

Why watch the children instead of polling them: a child deleted or edited by hand is put
back within one watch event, and the watch caches (kopf indexes) are what make a reconcile
free of reads. A slow timer resyncs everything anyway, as a safety net for missed events.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import kopf

from kubeserve import API_GROUP, API_VERSION, cluster
from kubeserve.build import meta
from kubeserve.controller import memory, reconcile
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
TRIM_SECONDS = 5.0
resync_logger = logging.getLogger("kubeserve.resync")
changes_logger = logging.getLogger("kubeserve.changes")


def _index_name(plural: str) -> str:
    return f"{plural}_by_owner"


def _owner_key(namespace: str | None, labels: Mapping[str, str]) -> tuple[str | None, str] | None:
    owner = labels.get(meta.ISVC_LABEL)
    return (namespace, owner) if owner else None


def _pack(body: Mapping[str, Any]) -> str:
    """Keep a cached object as compact JSON (managedFields are never read: not kept)."""
    raw = dict(body)
    raw["metadata"] = {k: v for k, v in raw.get("metadata", {}).items() if k != "managedFields"}
    return reconcile.pack(raw)


def _first(index: Any, key: Any) -> dict[str, Any] | None:
    for value in index.get(key, []) if index is not None else []:
        unpacked: dict[str, Any] = json.loads(value)
        return unpacked
    return None


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
        settings.execution.max_workers = config.workers
        # Watching given namespaces needs no namespace list (and no RBAC to list them).
        settings.scanning.disabled = bool(config.namespaces)
        # No settings.queueing.worker_limit: a worker waiting for the indexes to fill would hold
        # its slot while other objects wait for one to be indexed (a deadlock past the limit).
        # Idle workers exit soon instead, so a burst's memory is given back sooner.
        settings.queueing.idle_timeout = 1.0
        settings.watching.server_timeout = 600
        settings.watching.client_timeout = 660

    @kopf.on.login(id="login", registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # The same credentials as `cluster`: the service account in a pod, KUBECONFIG outside.
        return kopf.login_via_client(**kwargs)

    @kopf.index(API_GROUP, API_VERSION, PLURAL, id="inferenceservices", registry=registry)
    def inferenceservices(
        namespace: str | None, name: str, body: kopf.Body, **_: Any
    ) -> dict[Any, Any]:
        return {(namespace, name): _pack(body)}

    for group, version, plural in children:

        def index_child(
            namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
        ) -> dict[Any, Any]:
            key = _owner_key(namespace, labels)
            return {key: (body.get("kind"), body["metadata"]["name"], _pack(body))} if key else {}

        kopf.index(
            group, version, plural, labels=MANAGED, id=_index_name(plural), registry=registry
        )(index_child)

    @kopf.index("", "v1", "pods", labels=MANAGED, id="pods_by_owner", registry=registry)
    def pods_by_owner(
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
        seen: dict[reconcile.ChildKey, str | dict[str, Any]] = {}
        for _, _, plural in children:
            for kind, child, text in indexes[_index_name(plural)].get((namespace, name), []):
                seen[(kind, child)] = text
        pods = reconcile.pods_by_variant(
            [json.loads(t) for t in indexes["pods_by_owner"].get((namespace, name), [])]
        )
        return reconcile.Observed(
            children=reconcile.JsonObjects(seen), pods=pods, unmanaged_kinds=unmanaged
        )

    def run(
        body: Mapping[str, Any],
        observe: Callable[[], reconcile.Observed],
        trigger: str,
        logger: Any,
        only: set[reconcile.ChildKey] | None = None,
        settle: bool = True,
    ) -> reconcile.Outcome:
        with metrics.timed(trigger):
            try:
                outcome = reconciler.reconcile(body, observe, only=only, settle=settle)
            except cluster.ApiError as exc:
                if exc.retriable:
                    raise kopf.TemporaryError(
                        f"the API refused a call, will retry: {exc}", delay=RETRY_DELAY
                    ) from exc
                raise kopf.PermanentError(f"the API refused a call: {exc}") from exc
        metrics.record(outcome)
        if outcome.status_written and (outcome.invalid or outcome.conflicts):
            reason = "InvalidSpec" if outcome.invalid else "NameConflict"
            kopf.warn(
                kopf.Body(dict(body)),  # type: ignore[arg-type]
                reason=reason,
                message="; ".join(outcome.invalid or outcome.conflicts)[:1024],
            )
        if outcome.created or outcome.patched or outcome.deleted:
            meta = body.get("metadata", {})
            changes_logger.info(
                f"{meta.get('namespace')}/{meta.get('name')} {trigger}: {reconcile.summarise(outcome)}"
            )
        return outcome

    @kopf.on.resume(API_GROUP, API_VERSION, PLURAL, id="reconcile", registry=registry)
    @kopf.on.create(API_GROUP, API_VERSION, PLURAL, id="reconcile", registry=registry)
    @kopf.on.update(API_GROUP, API_VERSION, PLURAL, id="reconcile", registry=registry)
    def reconcile_inferenceservice(
        body: kopf.Body,
        namespace: str | None,
        name: str,
        logger: Any,
        reason: str | None = None,
        **indexes: Any,
    ) -> None:
        remember(indexes)
        run(dict(body), lambda: observed(namespace, name, indexes), reason or "resume", logger)

    # kopf's timers would put a finalizer on every InferenceService, and a finalizer outlives
    # an uninstalled operator: deletions would hang. This thread resyncs from the caches.
    captured: dict[str, Any] = {}
    stop = threading.Event()

    def remember(indexes: Mapping[str, Any]) -> None:
        captured.setdefault("indexes", indexes)

    def resync_forever() -> None:
        while not stop.wait(config.resync_seconds):
            indexes = captured.get("indexes")
            if indexes is None:
                continue
            for (namespace, name), bodies in list(indexes["inferenceservices"].items()):
                for text in list(bodies):
                    try:
                        run(
                            json.loads(text),
                            functools.partial(observed, namespace, name, indexes),
                            "resync",
                            resync_logger,
                        )
                    except Exception as exc:  # one failing resource must not stop the others
                        resync_logger.warning(f"resync of {namespace}/{name} failed: {exc}")

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
                resync_logger,
                only=set(),
                settle=False,
            )
        except Exception as exc:  # the resync writes it later
            resync_logger.warning(f"status of {namespace}/{name} not written: {exc}")

    def defer(namespace: str | None, name: str, delay: float) -> None:
        timer = threading.Timer(delay, settled_status, args=(namespace, name))
        timer.daemon = True
        timer.start()

    reconciler.settle_status(config.status_settle_seconds, defer)

    @kopf.on.startup(id="start_resync", registry=registry)
    def start_resync(**_: Any) -> None:
        threading.Thread(target=resync_forever, name="kubeserve-resync", daemon=True).start()
        memory.start_trimming(TRIM_SECONDS, stop)

    @kopf.on.cleanup(id="stop_resync", registry=registry)
    def stop_resync(**_: Any) -> None:
        stop.set()

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
            None if type == "DELETED" else dict(body),
        )
        if type == "DELETED":
            reconciler.forget(namespace, name, uid)

    def child_changed(
        type: str | None,
        body: kopf.Body,
        namespace: str | None,
        labels: kopf.Labels,
        logger: Any,
        **indexes: Any,
    ) -> None:
        remember(indexes)
        key = _owner_key(namespace, labels)
        owner = _first(indexes["inferenceservices"], key) if key else None
        if owner is None or key is None:
            return  # no owner (yet, or any more): garbage collection deals with orphans
        kind, child = body["kind"], body["metadata"]["name"]
        event_body = None if type == "DELETED" else dict(body)
        reconciler.observe(kind, namespace, child, event_body)

        def observe() -> reconcile.Observed:
            # The event is newer than the index may be: it wins for this one child.
            obs = observed(namespace, key[1], indexes)
            obs.children.pop((kind, child), None)
            if event_body is not None:
                obs.children[(kind, child)] = event_body
            return obs

        try:
            run(owner, observe, f"{kind.lower()}-event", logger, only={(kind, child)})
        except (kopf.TemporaryError, kopf.PermanentError) as exc:
            # Event handlers are not retried; the InferenceService's own handlers and the resync are.
            logger.warning(f"could not repair {kind} {child}: {exc}")

    for group, version, plural in children:
        kopf.on.event(
            group, version, plural, labels=MANAGED, id=f"{plural}_changed", registry=registry
        )(child_changed)

    @kopf.on.event("", "v1", "pods", labels=MANAGED, id="pod_changed", registry=registry)
    def pod_changed(
        namespace: str | None, labels: kopf.Labels, logger: Any, **indexes: Any
    ) -> None:
        key = _owner_key(namespace, labels)
        owner = _first(indexes["inferenceservices"], key) if key else None
        if owner is None or key is None:
            return
        try:
            run(
                owner, lambda: observed(namespace, key[1], indexes), "pod-event", logger, only=set()
            )
        except (kopf.TemporaryError, kopf.PermanentError) as exc:
            logger.warning(f"could not update the status of {key[1]}: {exc}")
