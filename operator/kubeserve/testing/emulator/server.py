"""The emulator's HTTP side: kmock's Kubernetes scaffold (discovery, routing, Status errors)
serving an indexed `Store`, with watches, request counters and fault injection.

Fault injection plays an API server under strain, seeded so a failing test can be replayed:
errors (409, 429 with Retry-After, 500), slow answers, answers that never come (a client's
timeout), watch streams cut in the middle of an event, and resumed watches refused with
410 Gone. `injected` counts what was done, for the tests' figures."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import json
import random
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp.web
import attrs
import kmock
import orjson

from kubeserve.testing.emulator import managed_fields, patches
from kubeserve.testing.emulator.store import ApiError, ResourceType, Store

T = TypeVar("T")

# What kubeserve, kopf and the tests use; the discovery documents list exactly these.
RESOURCE_TYPES = [
    ResourceType(
        "",
        "v1",
        "namespaces",
        "Namespace",
        namespaced=False,
        status_subresource=True,
        generation=False,
    ),
    ResourceType("", "v1", "services", "Service", status_subresource=True, generation=False),
    ResourceType("", "v1", "configmaps", "ConfigMap", generation=False),
    ResourceType("", "v1", "pods", "Pod", status_subresource=True, generation=False),
    ResourceType("", "v1", "events", "Event", generation=False),
    ResourceType("apps", "v1", "deployments", "Deployment", status_subresource=True),
    ResourceType(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        status_subresource=True,
    ),
    ResourceType(
        "policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", status_subresource=True
    ),
    ResourceType(
        "gateway.networking.k8s.io",
        "v1",
        "httproutes",
        "HTTPRoute",
        status_subresource=True,
        custom=True,
    ),
    ResourceType(
        "gateway.networking.k8s.io",
        "v1",
        "grpcroutes",
        "GRPCRoute",
        status_subresource=True,
        custom=True,
    ),
    ResourceType(
        "serving.kubeserve.dev",
        "v1alpha1",
        "inferenceservices",
        "InferenceService",
        status_subresource=True,
        custom=True,
    ),
]
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]
WRITE_VERBS = frozenset({"create", "patch", "update", "delete"})
# How long the rest of a paginated list is kept for its continue token (the API server's
# tokens last until etcd compacts the revision, five minutes by default).
CONTINUE_SECONDS = 300.0
WATCH_POLL_SECONDS = 1.0
# Bodies are kept as sent: a thousand writes of children cost some ten megabytes.
JOURNAL_SIZE = 1000


@dataclasses.dataclass
class Fault:
    """What to do to a share of the matching requests instead of answering them plainly.

    Shares add up: one draw per request picks at most one fault, so four faults of 5% each
    spoil 20% of the calls they match.

    - `status`: answer with this error Status, saying `Retry-After: retry_after` when set:
      seconds (an int, also put in the Status's details as kube-apiserver does), or a string
      sent as it is (an HTTP-date, or garbage, for the clients' parsers).
    - `delay`: answer this late (the error, or else the real answer).
    - `hang`: never answer: hold the request `delay` seconds, then close the connection, which
      is what a client sees when its timeout runs out first. With `applied`, a write is
      carried out before its answer is lost, so the client cannot tell whether it was.
    - `methods`, `plurals` and `clients` (who sends it, as the write journal names them;
      None: anyone) choose the requests. Watches have faults of their own (`WatchFault`).
    """

    share: float
    status: int | None = None
    delay: float = 0.0
    retry_after: int | str | None = None
    hang: bool = False
    applied: bool = False
    methods: frozenset[str] = frozenset({"POST", "PATCH", "PUT", "DELETE"})
    plurals: frozenset[str] | None = None
    clients: frozenset[str] | None = None

    def matches(self, request: kmock.Request) -> bool:
        """Tell whether this fault may fall on `request` (a call, not a watch)."""
        return (
            request.method is not None
            and request.method.value in self.methods
            and (self.plurals is None or _plural(request) in self.plurals)
            and (self.clients is None or _manager(request) in self.clients)
        )

    @property
    def label(self) -> str:
        """Name it in `ApiServerEmulator.injected`: "500", "429", "timeout", "slow"."""
        return "timeout" if self.hang else str(self.status) if self.status else "slow"


@dataclasses.dataclass
class WatchFault:
    """Cut matching watch streams mid-way, and refuse a share of resumed watches with 410 Gone.

    Each stream is cut after a time drawn from `cut_after` (seconds), in the middle of an
    event's line, as a dropped connection leaves it. A watch that resumes from a
    resourceVersion is answered 410 Gone (the version was compacted) with probability `gone`:
    the client must list again.
    """

    cut_after: tuple[float, float] | None = (0.5, 2.0)
    gone: float = 0.0
    plurals: frozenset[str] | None = None
    clients: frozenset[str] | None = None

    def matches(self, request: kmock.Request) -> bool:
        """Tell whether this fault may fall on the watch `request`."""
        return (self.plurals is None or _plural(request) in self.plurals) and (
            self.clients is None or _manager(request) in self.clients
        )


@dataclasses.dataclass(frozen=True)
class Write:
    """One write request as it came: what a test shows when it counts writes it did not expect."""

    seq: int  # how many writes came before this one
    verb: str
    plural: str
    namespace: str | None
    name: str | None
    subresource: str | None
    manager: str
    body: bytes  # as sent
    at: float = 0.0  # when it came (time.monotonic()): how long a client waited to try again


@attrs.define(kw_only=True)
class ApiServerEmulator(kmock.KubernetesScaffold):
    """A stateful Kubernetes API server for tests: the scaffold's discovery over our store."""

    store: Store = attrs.field(factory=lambda: Store(RESOURCE_TYPES))
    counts: collections.Counter[tuple[str, str]] = attrs.field(factory=collections.Counter)
    # The latest write requests, oldest first (reads are only counted).
    journal: collections.deque[Write] = attrs.field(
        factory=lambda: collections.deque(maxlen=JOURNAL_SIZE)
    )
    writes: int = 0
    faults: list[Fault] = attrs.field(factory=list)
    watch_faults: list[WatchFault] = attrs.field(factory=list)
    # What fault injection did: Fault.label, "watch-cut", "watch-gone" -> how many times;
    # and the calls (not watches) each client made, for the share that failed.
    injected: collections.Counter[str] = attrs.field(factory=collections.Counter)
    calls_by_client: collections.Counter[str] = attrs.field(factory=collections.Counter)
    seed: int = 0
    _random: random.Random = attrs.field(init=False)
    # continue token -> (list revision, items not served yet, when the token expires)
    _continues: dict[str, tuple[int, list[dict[str, Any]], float]] = attrs.field(factory=dict)

    def written(self) -> list[Write]:
        """The journal as it is now, safe to read from another thread than the emulator's.

        The emulator's loop appends while a copy is made; a copy it raced is made again.
        """
        while True:
            try:
                return list(self.journal)
            except RuntimeError:  # "deque mutated during iteration"
                continue

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._random = random.Random(self.seed)
        for rtype in self.store.types.values():
            self.resources[
                kmock.resource(group=rtype.group, version=rtype.version, plural=rtype.plural)
            ] = kmock.ResourceInfo(
                kind=rtype.kind,
                singular=rtype.kind.lower(),
                namespaced=rtype.namespaced,
                verbs=set(VERBS),
                subresources={"status"} if rtype.status_subresource else set(),
            )
        for namespace in ("default", "kube-system"):
            self.store.create(("", "v1", "namespaces"), None, {"metadata": {"name": namespace}})

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock's own routing matches each payload against every request served so far, which
        # grows without bound; requests are dispatched here by verb instead, in constant time.
        verb = ""
        try:
            request = await _parse_request(raw_request)
            verb = _verb(request)
            plural = request.resource.plural or "-" if request.resource else "-"
            self.counts[(verb, plural)] += 1
            if verb in WRITE_VERBS:
                self.journal.append(
                    Write(
                        self.writes,
                        verb,
                        plural,
                        request.namespace,
                        request.name,
                        request.subresource,
                        _manager(request),
                        request.body or b"",
                        time.monotonic(),
                    )
                )
                self.writes += 1
            if request.action == kmock.action.WATCH:
                watch_fault = self._watch_fault(request)
                gone = watch_fault is not None and self._random.random() < watch_fault.gone
                return await self._stream(
                    raw_request, request, self._serve_watch(request, gone=gone)
                )
            self.calls_by_client[_manager(request)] += 1
            fault = self._draw_fault(request)
            if fault is not None:
                spoiled = await self._inject(raw_request, request, fault)
                if spoiled is not None:
                    return spoiled
            body = orjson.dumps(await self._dispatch(raw_request.path, request))
            return aiohttp.web.Response(
                body=body, status=_success_status(request), content_type="application/json"
            )
        except ApiError as exc:
            return _status_response(exc.status, exc.reason, exc.message)
        except patches.PatchError as exc:
            return _status_response(
                exc.status, "Invalid" if exc.status == 422 else "BadRequest", str(exc)
            )
        except kmock.KubernetesError as exc:
            return _status_response(exc.status, exc.reason or "NotFound", exc.message or "")
        finally:
            if verb in WRITE_VERBS:
                # The garbage collector works apart from the writes, a moment after them.
                asyncio.get_running_loop().call_soon(self.store.collect_garbage)

    async def _dispatch(self, path: str, request: kmock.Request) -> Any:
        resource = request.resource
        if resource is None or resource.plural is None:
            return await self._discovery(path.rstrip("/") or "/", request)
        handlers = {
            kmock.action.LIST: self._serve_list,
            kmock.action.FETCH: self._serve_fetch,
            kmock.action.CREATE: self._serve_create,
            kmock.action.UPDATE: self._serve_patch,
            kmock.action.DELETE: self._serve_delete,
        }
        if request.action in handlers:
            return await handlers[request.action](request)
        if request.method == kmock.method.PUT and request.name:
            return await self._serve_replace(request)
        raise ApiError(405, "MethodNotAllowed", f"{request.method} is not allowed here")

    async def _discovery(self, path: str, request: kmock.Request) -> Any:
        fixed = {
            "/": self._serve_root,
            "/version": self._serve_server_version,
            "/api": self._serve_api,
            "/apis": self._serve_apis,
        }
        if path in fixed:
            return await fixed[path](request)
        if request.resource is not None and request.resource.version:
            document = await self._serve_version(request)
            if not request.resource.group and isinstance(document, dict):
                document["groupVersion"] = request.resource.version  # the core group has no prefix
            return document
        if request.resource is not None and request.resource.group:
            return await self._serve_group(request)
        raise ApiError(
            404, "NotFound", f"the server could not find the requested resource ({path})"
        )

    async def _stream(
        self, raw: aiohttp.web.BaseRequest, request: kmock.Request, events: AsyncIterator[Any]
    ) -> aiohttp.web.StreamResponse:
        """Send `events` as a watch stream, until a watch fault (even one added later) cuts it."""
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(raw)
        loop = asyncio.get_running_loop()
        cut_at: float | None = None
        # The next event is awaited in a task of its own: waiting on it with a timeout, to look
        # for watch faults, must not cancel (and so end) the generator.
        upcoming = asyncio.ensure_future(anext(events))
        try:
            while True:
                if cut_at is None and (fault := self._watch_fault(request)) is not None:
                    cut_at = self._cut_at(fault)
                if cut_at is not None and loop.time() >= cut_at:
                    self.injected["watch-cut"] += 1
                    await response.write(b'{"type":"MODIFIED","object":{"kind":')
                    if raw.transport is not None:
                        raw.transport.close()
                    return response
                wait = WATCH_POLL_SECONDS if cut_at is None else max(cut_at - loop.time(), 0.0)
                done, _ = await asyncio.wait({upcoming}, timeout=min(wait, WATCH_POLL_SECONDS))
                if not done:
                    continue
                try:
                    event = upcoming.result()
                except StopAsyncIteration:
                    break
                await response.write(orjson.dumps(event) + b"\n")
                upcoming = asyncio.ensure_future(anext(events))
        except (ConnectionResetError, ConnectionError):
            return response
        finally:
            upcoming.cancel()
        await response.write_eof()
        return response

    # Fault injection

    def _draw_fault(self, request: kmock.Request) -> Fault | None:
        """Pick the fault that falls on a call, if any: one draw against the shares' sum."""
        if request.resource is None:
            return None
        matching = [fault for fault in self.faults if fault.matches(request)]
        if not matching:
            return None
        draw = self._random.random()
        for fault in matching:
            if draw < fault.share:
                return fault
            draw -= fault.share
        return None

    async def _inject(
        self, raw: aiohttp.web.BaseRequest, request: kmock.Request, fault: Fault
    ) -> aiohttp.web.StreamResponse | None:
        """Do what `fault` says; give the answer that replaces the real one (None: answer)."""
        if fault.hang:
            if fault.applied and request.method != kmock.method.GET:
                # Refused or not, the client hears nothing either way.
                with contextlib.suppress(ApiError, patches.PatchError, kmock.KubernetesError):
                    await self._dispatch(raw.path, request)
            await asyncio.sleep(fault.delay)
            self.injected[fault.label] += 1
            if raw.transport is not None:
                raw.transport.close()
            return aiohttp.web.Response(status=504)  # never sent: the connection is gone
        if fault.delay:
            await asyncio.sleep(fault.delay)
        self.injected[fault.label] += 1
        if not fault.status:
            return None
        reason = {
            409: "Conflict",
            500: "InternalError",
            503: "ServiceUnavailable",
            429: "TooManyRequests",
        }
        return _status_response(
            fault.status,
            reason.get(fault.status, "InternalError"),
            "injected by the test",
            retry_after=fault.retry_after,
        )

    def _watch_fault(self, request: kmock.Request) -> WatchFault | None:
        return next((fault for fault in self.watch_faults if fault.matches(request)), None)

    def _cut_at(self, fault: WatchFault) -> float | None:
        if fault.cut_after is None:
            return None
        return asyncio.get_running_loop().time() + self._random.uniform(*fault.cut_after)

    # Serving

    async def _serve_list(self, request: kmock.Request) -> dict[str, Any]:
        """A list, in pages of `limit` when asked, all pages from one snapshot (one revision)."""
        key = _key(request)
        limit = _limit(request.params.get("limit"))
        token = request.params.get("continue")
        now = time.monotonic()
        for stale in [t for t, (_, _, until) in self._continues.items() if until < now]:
            del self._continues[stale]
        if token:
            if token not in self._continues:
                raise ApiError(
                    410, "Expired", "the provided continue parameter is too old, list again"
                )
            revision, items, _ = self._continues[token]  # reusable, as the API server's are
        else:
            revision = self.store.revision
            items = sorted(
                self.store.list(
                    key,
                    request.namespace,
                    labels=request.params.get("labelSelector"),
                    fields=request.params.get("fieldSelector"),
                ),
                key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]),
            )
        metadata: dict[str, Any] = {"resourceVersion": str(revision)}
        if limit and len(items) > limit:
            items, rest = items[:limit], items[limit:]
            token = uuid.uuid4().hex
            self._continues[token] = (revision, rest, now + CONTINUE_SECONDS)
            metadata["continue"] = token
            metadata["remainingItemCount"] = len(rest)
        kind = self.store.rtype(key).kind
        return {
            "apiVersion": self.store.rtype(key).api_version,
            "kind": f"{kind}List",
            "metadata": metadata,
            "items": items,
        }

    async def _serve_fetch(self, request: kmock.Request) -> dict[str, Any]:
        return self.store.get(_key(request), request.namespace, request.name or "")

    async def _serve_create(self, request: kmock.Request) -> dict[str, Any]:
        return self.store.create(
            _key(request), request.namespace, request.data, manager=_manager(request)
        )

    async def _serve_patch(self, request: kmock.Request) -> dict[str, Any]:
        content_type = request.headers.get("Content-Type", "application/merge-patch+json")
        return self.store.patch(
            _key(request),
            request.namespace,
            request.name or "",
            request.data,
            content_type=content_type,
            subresource=request.subresource,
            manager=_manager(request),
        )

    async def _serve_replace(self, request: kmock.Request) -> dict[str, Any]:
        return self.store.replace(
            _key(request),
            request.namespace,
            request.name or "",
            request.data,
            subresource=request.subresource,
            manager=_manager(request),
        )

    async def _serve_delete(self, request: kmock.Request) -> dict[str, Any]:
        options = request.data if isinstance(request.data, dict) else {}
        if "propagationPolicy" in request.params:
            options = options | {"propagationPolicy": request.params["propagationPolicy"]}
        return self.store.delete(
            _key(request), request.namespace, request.name or "", options=options
        )

    async def _serve_watch(
        self, request: kmock.Request, *, gone: bool = False
    ) -> AsyncIterator[Any]:
        """Stream events; `gone`: answer a resumed watch 410 Gone, as after a compaction."""
        key = _key(request)
        self.store.rtype(key)
        labels = patches.label_selector(request.params.get("labelSelector"))
        field_selector = request.params.get("fieldSelector") or ""
        if request.name:
            field_selector = ",".join(
                filter(None, [field_selector, f"metadata.name={request.name}"])
            )
        fields = patches.field_selector(field_selector)
        timeout = float(request.params.get("timeoutSeconds") or 0) or None

        def matches(event: dict[str, Any]) -> bool:
            obj = event["object"]
            meta = obj["metadata"]
            if request.namespace is not None and meta.get("namespace") != request.namespace:
                return False
            return labels(meta.get("labels") or {}) and fields(obj)

        queue: asyncio.Queue[tuple[Any, dict[str, Any]]] = asyncio.Queue()

        def listener(event_key: Any, event: dict[str, Any]) -> None:
            if event_key == key:
                queue.put_nowait((event_key, event))

        # Registering and reading the backlog happen with no await between them: the store is
        # only changed on this loop, so no event can fall between the two or come twice.
        self.store.listeners.append(listener)
        try:
            since = request.params.get("resourceVersion")
            if since and since != "0":
                backlog = self.store.events_since(key, int(since))
                if gone:
                    self.injected["watch-gone"] += 1
                if backlog is None or gone:
                    yield {
                        "type": "ERROR",
                        "object": {
                            "kind": "Status",
                            "apiVersion": "v1",
                            "status": "Failure",
                            "code": 410,
                            "reason": "Expired",
                            "message": f"too old resource version: {since}",
                        },
                    }
                    return
            else:
                backlog = [
                    {"type": "ADDED", "object": obj}
                    for obj in self.store.list(key, request.namespace)
                ]
            for event in backlog:
                if matches(event):
                    yield event
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout if timeout else None
            while deadline is None or loop.time() < deadline:
                wait = (
                    WATCH_POLL_SECONDS
                    if deadline is None
                    else min(WATCH_POLL_SECONDS, deadline - loop.time())
                )
                try:
                    _, event = await asyncio.wait_for(queue.get(), timeout=max(wait, 0.0))
                except TimeoutError:
                    transport = (
                        request._raw_request.transport if request._raw_request is not None else None
                    )
                    if transport is None or transport.is_closing():
                        return
                    continue
                if matches(event):
                    yield event
        finally:
            self.store.listeners.remove(listener)


def _key(request: kmock.Request) -> tuple[str, str, str]:
    resource = request.resource
    if resource is None or resource.plural is None:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    return (resource.group or "", resource.version or "", resource.plural)


def _manager(request: kmock.Request) -> str:
    """Name who writes: the `fieldManager` parameter, else the client's User-Agent."""
    return managed_fields.manager_of(
        request.params.get("fieldManager"), request.headers.get("User-Agent", "")
    )


_VERBS = {
    kmock.action.LIST: "list",
    kmock.action.WATCH: "watch",
    kmock.action.FETCH: "get",
    kmock.action.CREATE: "create",
    kmock.action.UPDATE: "patch",
    kmock.action.DELETE: "delete",
}


def _limit(raw: str | None) -> int:
    """The `limit` parameter of a list: 0 (all) when absent; a bad value is a 400."""
    if not raw:
        return 0
    try:
        limit = int(raw)
    except ValueError:
        raise ApiError(400, "BadRequest", f"limit: invalid value {raw!r}") from None
    if limit < 0:
        raise ApiError(400, "BadRequest", f"limit: must not be negative, got {limit}")
    return limit


def _verb(request: kmock.Request) -> str:
    """Name the request as RBAC and audit logs do."""
    if request.action in _VERBS:
        return _VERBS[request.action]
    return "update" if request.method == kmock.method.PUT else "get"


def _success_status(request: kmock.Request) -> int:
    """Give the status of a call served without error: 201 for a create, else 200.

    As kube-apiserver: its create handler answers `http.StatusCreated`
    (k8s.io/apiserver pkg/endpoints/handlers/create.go, createHandler), the others 200.
    """
    served = request.resource is not None and request.resource.plural is not None
    return 201 if served and request.action == kmock.action.CREATE else 200


def _plural(request: kmock.Request) -> str | None:
    return request.resource.plural if request.resource is not None else None


def _status_response(
    status: int, reason: str, message: str, *, retry_after: int | str | None = None
) -> aiohttp.web.Response:
    body = {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "code": status,
        "reason": reason,
        "message": message,
    }
    headers: dict[str, str] = {}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
        if isinstance(retry_after, int):
            body["details"] = {"retryAfterSeconds": retry_after}
    return aiohttp.web.json_response(body, status=status, headers=headers)


def _split_path(
    path: str,
) -> tuple[str | None, str | None, str | None, str | None, str | None, str | None]:
    """Split an API path into group, version, plural, namespace, name, subresource."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, version, rest = parts[1], parts[2], parts[3:]
    elif parts[:1] == ["apis"] and len(parts) == 2:
        return parts[1], None, None, None, None, None
    else:
        return None, None, None, None, None, None
    namespace = None
    # `namespaces/<ns>/<plural>...` scopes a resource; `namespaces[/<name>]` is the resource itself.
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    plural = rest[0] if rest else None
    name = rest[1] if len(rest) > 1 else None
    subresource = "/".join(rest[2:]) or None
    return group, version, plural, namespace, name, subresource


async def _parse_request(raw: aiohttp.web.BaseRequest) -> kmock.Request:
    body = await raw.read()
    text = body.decode("utf-8", errors="replace")
    try:
        data = json.loads(text) if text else None
    except ValueError as exc:
        raise ApiError(400, "BadRequest", f"the body is not JSON: {exc}") from None
    group, version, plural, namespace, name, subresource = _split_path(raw.path)
    method = kmock.method(raw.method)
    params = dict(raw.query)
    action: kmock.action | None = None
    if plural is not None:
        if method == kmock.method.GET:
            action = (
                kmock.action.WATCH
                if params.get("watch") in {"true", "1"}
                else (kmock.action.FETCH if name else kmock.action.LIST)
            )
        elif method == kmock.method.POST and name is None:
            action = kmock.action.CREATE
        elif method == kmock.method.PATCH and name:
            action = kmock.action.UPDATE
        elif method == kmock.method.DELETE and name:
            action = kmock.action.DELETE
    resource = (
        kmock.resource(group=group, version=version, plural=plural) if group is not None else None
    )
    return kmock.Request(
        raw_request=raw,
        url=raw.url,
        method=raw.method,
        params=params,
        headers=dict(raw.headers),
        cookies=dict(raw.cookies),
        data=data,
        body=body,
        text=text,
        action=action,
        resource=resource,
        namespace=namespace,
        name=name,
        subresource=subresource,
    )


class EmulatorThread:
    """Run an ApiServerEmulator on 127.0.0.1 in a thread of its own, with its own event loop."""

    def __init__(self, *, seed: int = 0) -> None:
        self.emulator = ApiServerEmulator(seed=seed)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="kube-emulator", daemon=True)
        self.url = ""

    def __enter__(self) -> EmulatorThread:
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise RuntimeError("the emulator did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with self.emulator, kmock.Server(self.emulator) as server:
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def call(self, fn: Callable[[Store], T]) -> T:
        """Run `fn(store)` on the emulator's loop (the store is not thread-safe) and return it."""

        async def run() -> T:
            return fn(self.emulator.store)

        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(run(), self._loop)
        return future.result(timeout=30)

    def write_kubeconfig(self, path: Path, *, namespace: str = "default") -> Path:
        """Write a kubeconfig that points clients at this emulator."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "emulated"}}],
            "contexts": [
                {
                    "name": "emulator",
                    "context": {"cluster": "emulator", "user": "tester", "namespace": namespace},
                }
            ],
            "current-context": "emulator",
        }
        path.write_text(json.dumps(config))
        return path
