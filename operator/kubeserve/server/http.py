"""The HTTP/1.1 transport: bytes on a socket to data-plane calls, errors to status codes.

Built directly on an asyncio ``Protocol`` with httptools' parser (the one uvicorn uses)
rather than an ASGI framework: at the digits model's few microseconds of compute, routing
layers, middleware and per-request dict-of-scope allocation cost more than the model does
(docs/transport.md has the measurement that kept it). What HTTP/1.1 needs is here:
keep-alive, pipelining (answered in order, batched or not), chunked bodies,
``Expect: 100-continue``, HEAD, a body limit enforced while reading (413 before buffering it
all), and a drain mode that answers each connection's next request with ``connection:
close``.

A client cannot hold the server's memory or descriptors (``client_limits.Limits``): a
connection whose unsent replies pass the transport's high-water mark is not read until they
drain, and is dropped if they stay stuck for ``send_timeout``; a request head must arrive
within ``header_timeout`` and a body at ``body_min_rate`` after ``body_timeout`` (408
otherwise); past ``max_connections`` new connections get 503. One sweep a second checks
every clock, so the request path only stores timestamps.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import io
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import NamedTuple, cast

import httptools

from kubeserve.server import (
    client_limits,
    content_encoding,
    dataplane,
    errors,
    feedback,
    metrics,
    openapi,
)

log = logging.getLogger("kubeserve.server")

_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Payload Too Large",
    414: b"URI Too Long",
    415: b"Unsupported Media Type",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}
JSON = b"application/json"
OCTET_STREAM = b"application/octet-stream"  # a V2 reply with binary tensor data
MAX_HEAD = 64 * 1024  # bytes of request line and headers together
# Replies larger than this are written apart from their head, not copied to join it.
SEPARATE_CONTENT = 64 * 1024
# Bodies larger than this are received into one growing buffer (see ``HttpProtocol.large``).
LARGE_BODY = 256 * 1024
# After SIGTERM an idle keep-alive connection may already carry a request on the wire; it
# gets this long (from the drain's start) to send one, which is answered with
# ``connection: close``, before the server closes it.
DRAIN_IDLE_GRACE = 1.0
# A connection refused with 503 (or rejected with 4xx) is half-closed and read for this
# long before the socket closes: closing with unread bytes sends RST, and the client may
# then never see the answer.
REFUSAL_GRACE = 2.0
# Refused connections in that grace at once; past it they are reset at once, so a flood of
# connections costs at most this many descriptors beyond ``max_connections``.
MAX_REFUSING = 32

Reply = dataplane.Reply
InferReply = dataplane.InferReply


class Request(NamedTuple):
    """A parsed request waiting for its answer."""

    method: bytes
    url: bytes
    body: bytes
    keep_alive: bool
    http10: bool  # an HTTP/1.0 client keeps the connection only if the reply says so
    # The Inference-Header-Content-Length header as sent (binary tensor data), if it was.
    header_length: bytes | None = None


# A route's call: the data plane's answer to the request, now or later.
Thunk = Callable[[Request], InferReply | Awaitable[InferReply]]
# What a request is counted as and answered by: (protocol, operation, model, version, call),
# the labels of its metrics (model and version "" for names this server does not have).
Route = tuple[str, str, str, str, Thunk]


class Refusal(NamedTuple):
    """A request that cannot be read: answered in its turn, then the connection closes."""

    status: int
    message: str
    head: bool


class _MethodNotAllowed(errors.MethodNotAllowed):
    """405 with the methods the route does allow, for the ``Allow`` header."""

    def __init__(self, method: bytes, path: str, allow: bytes) -> None:
        use = allow.partition(b",")[0].decode()
        super().__init__(f"{method.decode(errors='replace')} not allowed on {path}; use {use}")
        self.allow = allow


class App:
    """Routes requests to the data plane and holds what every connection shares."""

    def __init__(
        self,
        plane: dataplane.DataPlane,
        stats: metrics.Metrics,
        *,
        variant: str | None,
        max_body: int,
        limits: client_limits.Limits = client_limits.DEFAULTS,
        metrics_files: metrics.SnapshotFiles | None = None,
    ) -> None:
        self.plane = plane
        self.metrics = stats
        self.metrics_files = metrics_files
        self.variant = variant
        self.max_body = max_body
        self.limits = limits
        self.connections: set[HttpProtocol] = set()
        self.refusing = 0  # connections refused with 503, in their grace
        self.tasks: set[asyncio.Future[None]] = set()
        self.draining = False
        self.name = plane.repo.name
        self._version_headers: dict[str, bytes] = {}
        self._drops = client_limits.DropLog()
        self.date = b""
        self._openapi = dataplane.dumps(openapi.document(self.name))
        self.tick()
        # Routes without parameters, resolved with one dict lookup.
        fixed: dict[str, tuple[str, str, Callable[[], Reply]]] = {
            "/v2/health/ready": ("v2", metrics.HEALTH, plane.ready),
            "/v2/health/live": ("v2", metrics.HEALTH, plane.live),
            "/v2": ("v2", metrics.METADATA, plane.server_metadata),
            "/v1/models": ("v1", metrics.METADATA, plane.v1_models),
            "/": ("v1", metrics.HEALTH, self._root),
            "/metrics": ("metrics", metrics.METRICS, self._metrics),
            "/openapi.json": ("other", metrics.OTHER, self._openapi_doc),
        }
        self._fixed: dict[str, Route] = {
            path: (protocol, operation, "", "", _ignore_body(fn))
            for path, (protocol, operation, fn) in fixed.items()
        }

    def tick(self) -> None:
        """Refresh the cached Date header and enforce every connection's clocks.

        Formatting a date per request is waste; one sweep a second also lets the request
        path merely store timestamps.
        """
        self.date = b"date: " + email.utils.formatdate(usegmt=True).encode() + b"\r\n"
        now = time.monotonic()
        for conn in list(self.connections):
            conn.check(now)
        self.metrics.connections = len(self.connections)
        self._drops.flush(now)

    def dropped(self, reason: client_limits.Drop, message: str) -> None:
        """Count a connection the server closed; warn, unless it was merely idle."""
        self.metrics.drop(reason.value)
        if reason is not client_limits.Drop.IDLE:
            self._drops.note(reason, message, time.monotonic())

    def drain(self, started: float) -> None:
        """Close the connections that owe nothing and have had their chance to send."""
        now = time.monotonic()
        for conn in list(self.connections):
            conn.close_if_done(now, started)

    def abort_all(self) -> None:
        """Reset every connection, whatever it is doing (the drain's deadline)."""
        for conn in list(self.connections):
            conn.abort()
            self.metrics.drop(client_limits.Drop.DRAIN.value)

    def version_headers(self, version: str) -> bytes:
        """Return the served-by headers for ``version``, built once per version."""
        cached = self._version_headers.get(version)
        if cached is None:
            variant = self.variant or version
            cached = (
                b"x-kubeserve-variant: " + _header_safe(variant) + b"\r\n"
                b"x-kubeserve-model-version: " + _header_safe(version) + b"\r\n"
            )
            if len(self._version_headers) < 1024:  # versions are few; bound it anyway
                self._version_headers[version] = cached
        return cached

    def route(self, method: bytes, path: str) -> Route:
        """Map a request to ``(protocol, operation, model, version, call)``; raise NotFound/405."""
        if path.startswith("/v2/models/"):
            return self._route_v2_model(method, path[11:])
        if path.startswith("/v1/models/"):
            return self._route_v1_model(method, path[11:])
        if method == b"CONNECT":
            raise errors.BadRequest("CONNECT is not supported: this server is not a proxy")
        found = self._fixed.get(path.rstrip("/") or "/")
        if found is None:
            raise errors.NotFound(f"no route for {path}")
        _get(method, path)
        return found

    def _root(self) -> Reply:
        return b'{"status":"alive"}', self.plane.repo.default

    def _openapi_doc(self) -> Reply:
        return self._openapi, self.plane.repo.default

    def _metrics(self) -> Reply:
        stats = self.metrics
        stats.connections = len(self.connections)
        if self.metrics_files is not None:
            stats = stats.merged(self.metrics_files.others())
        return stats.render(), self.plane.repo.default

    def _labels(self, name: str, version: str | None) -> tuple[str, str]:
        return self.plane.labels(name, version)

    def _feedback(self, name: str, version: str | None, body: bytes) -> Reply:
        """Check a feedback and count it for the version it names (only feedback pays this)."""
        report, served = self.plane.feedback(name, version, body)
        if report.kind is feedback.Kind.OUTCOME:
            self.metrics.outcome(name, served, report.value == 1.0)
        else:
            self.metrics.value(name, served, report.value)
        reply = {"model": name, "version": served, "recorded": report.kind.value}
        return dataplane.dumps(reply), served

    def _route_v1_model(self, method: bytes, rest: str) -> Route:
        plane = self.plane
        predict = rest.endswith(":predict")
        if predict:
            rest = rest[:-8]
        elif ":" in rest:
            raise errors.NotFound(f"unknown verb in /v1/models/{rest}; only :predict is served")
        name, named, tail = rest.partition("/versions/")
        name = _unquote(name)
        # ".../versions/:predict" names a version, the empty one: it is not the default.
        version = _unquote(tail) if named else None
        if "/" in name or (version is not None and "/" in version):
            raise errors.NotFound(f"no route for /v1/models/{rest}")
        model, ver = self._labels(name, version)
        if predict:
            _post(method, rest)
            return (
                "v1",
                metrics.INFER,
                model,
                ver,
                lambda req: plane.v1_predict(name, version, req.body),
            )
        _get(method, rest)
        return "v1", metrics.METADATA, model, ver, lambda req: plane.v1_model(name, version)

    def _route_v2_model(self, method: bytes, rest: str) -> Route:
        plane = self.plane
        parts = rest.rstrip("/").split("/")
        name = _unquote(parts[0])
        version: str | None = None
        tail = parts[1:]
        if len(tail) >= 2 and tail[0] == "versions":
            version = _unquote(tail[1])
            tail = tail[2:]
        model, ver = self._labels(name, version)
        if not tail:
            _get(method, rest)
            return (
                "v2",
                metrics.METADATA,
                model,
                ver,
                lambda req: plane.model_metadata(name, version),
            )
        if tail == ["infer"]:
            _post(method, rest)
            return (
                "v2",
                metrics.INFER,
                model,
                ver,
                lambda req: plane.v2_infer(name, version, req.body, req.header_length),
            )
        if tail == ["ready"]:
            _get(method, rest)
            return "v2", metrics.METADATA, model, ver, lambda req: plane.model_ready(name, version)
        if tail == ["feedback"]:  # after infer: an inference request never tests for it
            _post(method, rest)
            return (
                "v2",
                metrics.FEEDBACK,
                model,
                ver,
                lambda req: self._feedback(name, version, req.body),
            )
        raise errors.NotFound(f"no route for /v2/models/{rest}")


def _ignore_body(fn: Callable[[], Reply]) -> Thunk:
    return lambda req: fn()


def _content_head(reply: InferReply) -> tuple[bytes, bytes]:
    """Return a reply's content type and the header binary tensor data needs, if any."""
    if isinstance(reply, dataplane.Binary):
        return OCTET_STREAM, b"inference-header-content-length: %d\r\n" % reply.header_length
    return JSON, b""


def _error_reply(exc: Exception) -> tuple[int, bytes, bytes]:
    """Map a failed request to its status, `{"error": ...}` body and extra headers."""
    if isinstance(exc, errors.ServerError):
        extra = b"allow: " + exc.allow + b"\r\n" if isinstance(exc, _MethodNotAllowed) else b""
        return exc.status, dataplane.dumps({"error": str(exc)}), extra
    log.exception("unhandled error")
    return 500, _internal_error(exc), b""


def _internal_error(exc: Exception) -> bytes:
    return dataplane.dumps({"error": f"internal error: {type(exc).__name__}: {exc}"})


def _get(method: bytes, path: str) -> None:
    if method != b"GET" and method != b"HEAD":
        raise _MethodNotAllowed(method, path, b"GET, HEAD")


def _post(method: bytes, path: str) -> None:
    if method != b"POST":
        raise _MethodNotAllowed(method, path, b"POST")


def _unquote(part: str) -> str:
    return urllib.parse.unquote(part) if "%" in part else part


def _header_safe(value: str) -> bytes:
    # A version is a directory name; keep header injection (CR/LF) impossible regardless.
    return value.encode("latin-1", "replace").replace(b"\r", b"").replace(b"\n", b"")


class HttpProtocol(asyncio.Protocol):
    """One client connection: parse requests, answer them in order.

    Requests that arrive while an earlier one is still being answered (a batched reply
    pending, or replies the client has not read) wait in ``queue`` and reading stops, so a
    pipelining client can queue at most what one read delivers.
    """

    def __init__(self, app: App) -> None:
        self.app = app
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        # A large body is written here instead: BytesIO grows one buffer in place and hands
        # it over without a copy, where joining the chunks held them and the join at once.
        self.large: io.BytesIO | None = None
        self.size = 0
        self.head_size = 0
        self.expect_continue = False
        self.header_length: bytes | None = None  # Inference-Header-Content-Length
        self.inflater: content_encoding.Inflater | None = None  # a compressed body's
        self.in_request = False
        self.queue: collections.deque[Request | Refusal] = collections.deque()
        self.busy = False  # an awaited (batched) reply is pending
        self.rejected = False  # the stream cannot be parsed further; bytes are discarded
        self.closed_at = 0.0  # when it stopped writing; the socket may still be closing
        self.refused = False  # refused at connect (over max_connections)
        self.reading = True
        # Clocks (time.monotonic; 0 when not running), checked by the sweep.
        self.last_active = time.monotonic()
        self.head_since = 0.0
        self.body_since = 0.0
        self.stalled_since = 0.0  # unsent replies above the high-water mark

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # create_server gives stream transports; Protocol's signature names their base class.
        self.transport = cast(asyncio.Transport, transport)
        app = self.app
        if len(app.connections) >= app.limits.max_connections:
            self._refuse_connection()
            return
        app.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed_at = self.closed_at or time.monotonic()
        self.queue.clear()
        if self.refused:
            self.app.refusing -= 1
        self.app.connections.discard(self)

    def pause_writing(self) -> None:
        # The client reads slower than it asks: stop reading until its replies drain.
        self.stalled_since = time.monotonic()
        self._pause_reading()

    def resume_writing(self) -> None:
        self.stalled_since = 0.0
        self.last_active = time.monotonic()
        # Not from inside the transport's write callback: answer on the next loop turn.
        asyncio.get_running_loop().call_soon(self._pump)

    def data_received(self, data: bytes) -> None:
        if self.rejected or self.closed_at:
            return
        self.last_active = time.monotonic()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # The request that asked for the switch is answered as plain HTTP with
            # keep-alive off (on_message_complete); what follows it is not HTTP.
            self.rejected = True
        except httptools.HttpParserError as exc:
            if not self.rejected:
                self._refuse(400, f"malformed HTTP request: {exc}")

    # -- httptools callbacks ---------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []
        self.large = None
        self.size = 0
        self.head_size = 0
        self.expect_continue = False
        self.header_length = None
        self.inflater = None
        self.in_request = True
        self.head_since = self.last_active  # the time of the read that brought this byte

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_size += len(url)
        if self.head_size > MAX_HEAD and not self.rejected:
            self._refuse(414, f"request target longer than {MAX_HEAD} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        # llhttp puts no bound on the head; a client streaming headers forever must not
        # grow memory forever.
        self.head_size += len(name) + len(value)
        if self.head_size > MAX_HEAD:
            if not self.rejected:
                self._refuse(431, f"request head larger than {MAX_HEAD} bytes")
            return
        lname = name.lower()
        if lname == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = -1
            if length > self.app.max_body:
                self._refuse(
                    413,
                    f"request body of {length} bytes exceeds the limit of "
                    f"{self.app.max_body} bytes",
                )
        elif lname == b"expect" and value.lower() == b"100-continue":
            self.expect_continue = True
        elif lname == b"inference-header-content-length":
            self.header_length = value  # the data plane checks it against the body
        elif lname == b"content-encoding" and not self.rejected:
            try:
                inflater = content_encoding.inflater(value, self.app.max_body)
                if inflater is not None and self.inflater is not None:
                    raise content_encoding.UnsupportedEncoding(
                        "several content-encoding headers: stacked codings are not supported"
                    )
            except errors.ServerError as exc:
                self._refuse(exc.status, str(exc))
                return
            self.inflater = inflater or self.inflater

    def on_headers_complete(self) -> None:
        self.head_since = 0.0
        self.body_since = self.last_active
        if self.expect_continue and not (self.rejected or self.closed_at) and self.transport:
            # curl waits a second for this before sending bodies over 1 KiB. While earlier
            # replies are pending it reads as theirs, which clients must accept (RFC 9110
            # 15.2).
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self.rejected:
            return
        self.size += len(body)
        if self.size > self.app.max_body:  # chunked bodies announce no length
            self._refuse(413, f"request body exceeds the limit of {self.app.max_body} bytes")
            return
        if self.inflater is not None:
            try:
                body = self.inflater.feed(body)
            except errors.ServerError as exc:
                self._refuse(exc.status, str(exc))
                return
        if self.large is not None:
            self.large.write(body)
        elif self.size > LARGE_BODY:
            self.large = io.BytesIO()
            self.large.writelines(self.body)
            self.large.write(body)
            self.body = []
        else:
            self.body.append(body)

    def on_message_complete(self) -> None:
        if self.rejected:
            return
        if self.inflater is not None:
            try:
                self.inflater.finish()
            except errors.ServerError as exc:
                self._refuse(exc.status, str(exc))
                return
            self.inflater = None  # its window and state go now, not at the next request
        self.in_request = False
        self.body_since = 0.0
        parser = self.parser
        if self.large is not None:
            body = self.large.getvalue()
        else:
            body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        # The request holds the body now; the chunks would keep a second copy until the
        # connection's next request, or for the whole idle timeout.
        self.body = []
        self.large = None
        # After an Upgrade or CONNECT the stream is not HTTP: answer, then close.
        keep_alive = parser.should_keep_alive() and not parser.should_upgrade()
        http10 = keep_alive and parser.get_http_version() == "1.0"
        request = Request(
            parser.get_method(), self.url, body, keep_alive, http10, self.header_length
        )
        if self.busy or self.queue or self.stalled_since:
            self.queue.append(request)
            self._pause_reading()
            return
        try:
            self._handle(request)
        except Exception:  # httptools would swallow it as a parse error; log the real one
            log.exception("error while answering a request")
            self.abort()

    # -- answering -------------------------------------------------------------------

    def _refuse(self, status: int, message: str) -> None:
        """Answer an unreadable request in its turn and close: the stream is lost after it."""
        self.rejected = True
        self.head_since = self.body_since = 0.0
        self.body, self.large = [], None  # what came of the body is never read
        head = bool(self.url) and self.parser.get_method() == b"HEAD"
        refusal = Refusal(status, message, head)
        if self.busy or self.queue or self.stalled_since:
            self.queue.append(refusal)
            self._pause_reading()
            return
        self._send_refusal(refusal)

    def _send_refusal(self, refusal: Refusal) -> None:
        transport = self.transport
        if transport is None or self.closed_at:
            return
        self._stop_writing()
        content = dataplane.dumps({"error": refusal.message})
        status = refusal.status
        transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n%s\r\n%s"
            % (
                status,
                _REASONS.get(status, b"Error"),
                len(content),
                self.app.date,
                b"" if refusal.head else content,
            )
        )
        self.app.metrics.request("", "", "other", metrics.OTHER, status, 0.0)
        # Closing with unread body bytes in the socket makes the kernel send RST, and the
        # client may then never see the answer. Send FIN, keep discarding what arrives,
        # and close after a grace period.
        if transport.can_write_eof():
            transport.write_eof()
            self._resume_reading()
            asyncio.get_running_loop().call_later(REFUSAL_GRACE, transport.close)
        else:
            transport.close()

    def _refuse_connection(self) -> None:
        """Answer 503 at once to a connection over ``max_connections``, then close it."""
        app = self.app
        self.refused = self.rejected = True
        self._stop_writing()
        app.refusing += 1
        limit = app.limits.max_connections
        app.dropped(
            client_limits.Drop.FULL,
            f"refusing connections with 503: {len(app.connections)} are open, the "
            f"--max-connections limit of this worker",
        )
        transport = self.transport
        if transport is None:
            return
        if app.refusing > MAX_REFUSING:
            transport.abort()  # a flood: keep the descriptors for the clients being served
            return
        content = dataplane.dumps({"error": f"server busy: {limit} connections open; retry later"})
        transport.write(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\nretry-after: 1\r\n%s\r\n%s"
            % (len(content), app.date, content)
        )
        transport.write_eof()
        asyncio.get_running_loop().call_later(REFUSAL_GRACE, transport.close)

    def _handle(self, request: Request) -> None:
        app = self.app
        started = time.perf_counter()
        protocol, operation, model, version = "other", metrics.OTHER, "", ""
        extra = b""
        app.metrics.inflight += 1
        try:
            path = request.url.partition(b"?")[0].decode("utf-8", "replace")
            protocol, operation, model, version, call = app.route(request.method, path)
            reply = call(request)
            if not isinstance(reply, tuple):
                # The answer needs the request's method and keep-alive, not its body: a
                # large body is freed once parsed, not when the reply is written.
                request = request._replace(body=b"")
                self._await(reply, request, (protocol, operation, model, version), started)
                return
            status, content, served = 200, reply[0], reply[1]
            ctype, extra = _content_head(reply)
        except Exception as exc:  # never let one request take the connection or process down
            status, content, extra = _error_reply(exc)
            served, ctype = version, JSON
        self._finish(
            request, status, content, served, protocol, operation, model, started, extra, ctype
        )

    def _await(
        self,
        pending: Awaitable[InferReply],
        request: Request,
        labels: tuple[str, str, str, str],
        started: float,
    ) -> None:
        """Answer when ``pending`` is done; ``labels`` are (protocol, operation, model, version)."""
        self.busy = True
        self._pause_reading()  # later requests wait in the queue, in order
        task = asyncio.ensure_future(self._later(pending, request, labels, started))
        # The loop keeps only weak references to tasks; hold it until it finishes.
        self.app.tasks.add(task)
        task.add_done_callback(self.app.tasks.discard)

    async def _later(
        self,
        pending: Awaitable[InferReply],
        request: Request,
        labels: tuple[str, str, str, str],
        started: float,
    ) -> None:
        protocol, operation, model, version = labels
        try:
            reply = await pending
            status, content, served = 200, reply[0], reply[1]
            ctype, extra = _content_head(reply)
        except Exception as exc:  # never let one request take the connection or process down
            status, content, extra = _error_reply(exc)
            served, ctype = version, JSON
        self.busy = False
        self.last_active = time.monotonic()
        self._finish(
            request, status, content, served, protocol, operation, model, started, extra, ctype
        )
        self._pump()

    def _pump(self) -> None:
        """Answer queued requests until one must wait; read again once none is left."""
        while self.queue and not self.busy and not self.stalled_since and not self.closed_at:
            item = self.queue.popleft()
            if isinstance(item, Refusal):
                self._send_refusal(item)
                return
            try:
                self._handle(item)
            except Exception:
                log.exception("error while answering a request")
                self.abort()
                return
        if not (self.queue or self.busy or self.stalled_since or self.closed_at or self.rejected):
            self._resume_reading()

    def _finish(
        self,
        request: Request,
        status: int,
        content: bytes,
        served: str,
        protocol: str,
        operation: str,
        model: str,
        started: float,
        extra: bytes,
        ctype: bytes,
    ) -> None:
        app = self.app
        try:
            if protocol == "metrics" and status == 200:
                ctype = metrics.CONTENT_TYPE.encode()
            if served:
                extra = app.version_headers(served) + extra
            self._write(status, content, ctype, extra, request, keep_alive=not app.draining)
        finally:
            app.metrics.inflight -= 1
            app.metrics.request(
                model,
                served if model else "",
                protocol,
                operation,
                status,
                time.perf_counter() - started,
            )

    def _write(
        self,
        status: int,
        content: bytes,
        ctype: bytes,
        extra: bytes,
        request: Request,
        *,
        keep_alive: bool,
    ) -> None:
        transport = self.transport
        if transport is None or self.closed_at:
            return  # the client left; nothing to answer
        head = b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s%s" % (
            status,
            _REASONS.get(status, b"Error"),
            ctype,
            len(content),
            extra,
            self.app.date,
        )
        if request.method == b"HEAD":
            content = b""  # the length above is the GET's; a HEAD reply never has a body
        closing = not (keep_alive and request.keep_alive)
        if closing:
            self._stop_writing()
            head += b"connection: close\r\n\r\n"
        elif request.http10:
            head += b"connection: keep-alive\r\n\r\n"
        else:
            head += b"\r\n"
        if len(content) > SEPARATE_CONTENT:
            # Joined, a large reply would be held twice (16 MiB echoed: 5.1x the body).
            transport.write(head)
            transport.write(content)
        else:
            transport.write(head + content)  # one send for the usual small reply
        if closing:
            transport.close()

    # -- flow control and clocks -----------------------------------------------------

    def _pause_reading(self) -> None:
        if self.reading and self.transport is not None:
            self.reading = False
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if not self.reading and self.transport is not None:
            self.reading = True
            # Time spent waiting on our replies is not the client's: restart its clocks.
            now = time.monotonic()
            self.last_active = now
            if self.head_since:
                self.head_since = now
            if self.body_since:
                self.body_since = now
            self.transport.resume_reading()

    def check(self, now: float) -> None:
        """Drop the connection if one of its clocks ran out (called once a second)."""
        rules = self.app.limits
        if self.stalled_since:
            if rules.send_timeout and now - self.stalled_since > rules.send_timeout:
                self.abort()  # close() would wait for the replies to drain: forever
                self._dropped(
                    client_limits.Drop.SEND,
                    f"its replies stayed unread for {rules.send_timeout:g}s",
                )
            return
        if self.closed_at:
            # Closing, with a last reply the client does not read: close() would wait.
            if rules.send_timeout and now - self.closed_at > rules.send_timeout + REFUSAL_GRACE:
                self.abort()
                self._dropped(
                    client_limits.Drop.SEND,
                    f"its last reply stayed unread for {rules.send_timeout:g}s",
                )
            return
        if self.busy or self.queue:
            return  # the server owes this client an answer
        if (
            self.head_since
            and rules.header_timeout
            and now - self.head_since > rules.header_timeout
        ):
            self._refuse(408, f"request head not received within {rules.header_timeout:g}s")
            self._dropped(
                client_limits.Drop.HEADER, f"no complete head in {rules.header_timeout:g}s"
            )
            return
        if self.body_since and rules.body_timeout:
            allowed = rules.body_timeout
            rule = f"{rules.body_timeout:g}s"
            if rules.body_min_rate:
                allowed += self.size / rules.body_min_rate
                rule += f" plus 1s per {rules.body_min_rate:g} bytes"
            if now - self.body_since > allowed:
                got = f"{self.size} bytes in {now - self.body_since:.0f}s"
                self._refuse(408, f"request body too slow: {got} (allowed: {rule})")
                self._dropped(client_limits.Drop.BODY, f"request body too slow: {got}")
                return
        if rules.idle_timeout and now - self.last_active > rules.idle_timeout:
            self.close_now()
            self._dropped(client_limits.Drop.IDLE, f"silent for {rules.idle_timeout:g}s")

    def _dropped(self, reason: client_limits.Drop, why: str) -> None:
        peer = self.transport.get_extra_info("peername") if self.transport else None
        self.app.dropped(reason, f"dropped connection from {peer}: {why} ({reason.flag})")

    def close_if_done(self, now: float, drain_started: float) -> None:
        """While draining: close the connection if it owes nothing and its grace is over."""
        if self.closed_at or self.busy or self.queue or self.stalled_since or self.in_request:
            return  # its reply says connection: close; or the sweep's clocks end it
        if now - max(self.last_active, drain_started) >= DRAIN_IDLE_GRACE:
            self.close_now()

    def close_now(self) -> None:
        """Close the connection once what was written is sent."""
        self._stop_writing()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Reset the connection now, dropping unsent replies."""
        self._stop_writing()
        if self.transport is not None:
            self.transport.abort()

    def _stop_writing(self) -> None:
        self.closed_at = self.closed_at or time.monotonic()
        self.queue.clear()


def make_factory(app: App) -> Callable[[], HttpProtocol]:
    """Return the protocol factory ``loop.create_server`` wants."""
    return lambda: HttpProtocol(app)
