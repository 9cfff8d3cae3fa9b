"""The HTTP/1.1 transport: bytes on a socket to data-plane calls, errors to status codes.

Built directly on an asyncio ``Protocol`` with httptools' parser (the one uvicorn uses)
rather than an ASGI framework: at the digits model's few microseconds of compute, routing
layers, middleware and per-request dict-of-scope allocation cost more than the model does.
What HTTP/1.1 needs is here: keep-alive, pipelining (answered in order), chunked bodies,
``Expect: 100-continue``, a body limit enforced while reading (413 before buffering it all),
and a drain mode that closes connections after their current response.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable
from typing import cast

import httptools

from kubeserve.server import dataplane, errors, metrics, openapi

log = logging.getLogger("kubeserve.server")

_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    413: b"Payload Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}
JSON = b"application/json"
MAX_HEAD = 64 * 1024  # bytes of request line and headers together

Reply = dataplane.Reply
Thunk = Callable[[bytes], Reply | Awaitable[Reply]]


class App:
    """Routes requests to the data plane and holds what every connection shares."""

    def __init__(
        self,
        plane: dataplane.DataPlane,
        stats: metrics.Metrics,
        *,
        variant: str | None,
        max_body: int,
        idle_timeout: float = 60.0,
        metrics_files: metrics.SnapshotFiles | None = None,
    ) -> None:
        self.plane = plane
        self.metrics = stats
        self.metrics_files = metrics_files
        self.variant = variant
        self.max_body = max_body
        self.idle_timeout = idle_timeout
        self.connections: set[HttpProtocol] = set()
        self.tasks: set[asyncio.Future[None]] = set()
        self.draining = False
        self.name = plane.repo.name
        self._version_headers: dict[str, bytes] = {}
        self.date = b""
        self._openapi = dataplane.dumps(openapi.document(self.name))
        self.tick()
        # Routes without parameters, resolved with one dict lookup.
        fixed: dict[str, tuple[str, Callable[[], Reply]]] = {
            "/v2/health/ready": ("v2", plane.ready),
            "/v2/health/live": ("v2", plane.live),
            "/v2": ("v2", plane.server_metadata),
            "/v1/models": ("v1", plane.v1_models),
            "/": ("v1", self._root),
            "/metrics": ("metrics", self._metrics),
            "/openapi.json": ("other", self._openapi_doc),
        }
        self._fixed: dict[str, tuple[str, str, str, Thunk]] = {
            path: (protocol, "", "", _ignore_body(fn)) for path, (protocol, fn) in fixed.items()
        }

    def tick(self) -> None:
        """Refresh the cached Date header and close connections idle for too long.

        Formatting a date per request is waste; one sweep a second also bounds how long a
        silent or trickling client (slowloris) can hold a connection.
        """
        self.date = b"date: " + email.utils.formatdate(usegmt=True).encode() + b"\r\n"
        if self.idle_timeout > 0:
            limit = time.monotonic() - self.idle_timeout
            for conn in [c for c in self.connections if c.last_active < limit and not c.busy]:
                conn.close_now()

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

    def route(self, method: bytes, path: str) -> tuple[str, str, str, Thunk]:
        """Map a request to ``(protocol, model, version, call)`` or raise NotFound/405."""
        if path.startswith("/v2/models/"):
            return self._route_v2_model(method, path[11:])
        if path.startswith("/v1/models/"):
            return self._route_v1_model(method, path[11:])
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
        if self.metrics_files is not None:
            stats = stats.merged(self.metrics_files.others())
        return stats.render(), self.plane.repo.default

    def _labels(self, name: str, version: str | None) -> tuple[str, str]:
        # Only label with names that exist: hostile paths must not grow the series count.
        repo = self.plane.repo
        if name != repo.name:
            return "", ""
        v = repo.default if version is None else version
        return name, v if v in repo.versions else ""

    def _route_v1_model(self, method: bytes, rest: str) -> tuple[str, str, str, Thunk]:
        plane = self.plane
        predict = rest.endswith(":predict")
        if predict:
            rest = rest[:-8]
        elif ":" in rest:
            raise errors.NotFound(f"unknown verb in /v1/models/{rest}; only :predict is served")
        name, _, tail = rest.partition("/versions/")
        name = _unquote(name)
        version = _unquote(tail) if tail else None
        if "/" in name or (version is not None and "/" in version):
            raise errors.NotFound(f"no route for /v1/models/{rest}")
        model, ver = self._labels(name, version)
        if predict:
            _post(method, rest)
            return "v1", model, ver, lambda body: plane.v1_predict(name, version, body)
        _get(method, rest)
        return "v1", model, ver, lambda body: plane.v1_model(name, version)

    def _route_v2_model(self, method: bytes, rest: str) -> tuple[str, str, str, Thunk]:
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
            return "v2", model, ver, lambda body: plane.model_metadata(name, version)
        if tail == ["infer"]:
            _post(method, rest)
            return "v2", model, ver, lambda body: plane.v2_infer(name, version, body)
        if tail == ["ready"]:
            _get(method, rest)
            return "v2", model, ver, lambda body: plane.model_ready(name, version)
        raise errors.NotFound(f"no route for /v2/models/{rest}")


def _ignore_body(fn: Callable[[], Reply]) -> Thunk:
    return lambda body: fn()


def _error_reply(exc: Exception) -> tuple[int, bytes]:
    """Map a failed request to its status and `{"error": ...}` body."""
    if isinstance(exc, errors.ServerError):
        return exc.status, dataplane.dumps({"error": str(exc)})
    log.exception("unhandled error")
    return 500, _internal_error(exc)


def _internal_error(exc: Exception) -> bytes:
    return dataplane.dumps({"error": f"internal error: {type(exc).__name__}: {exc}"})


def _get(method: bytes, path: str) -> None:
    if method != b"GET":
        raise errors.MethodNotAllowed(f"{method.decode()} not allowed on {path}; use GET")


def _post(method: bytes, path: str) -> None:
    if method != b"POST":
        raise errors.MethodNotAllowed(f"{method.decode()} not allowed on {path}; use POST")


def _unquote(part: str) -> str:
    return urllib.parse.unquote(part) if "%" in part else part


def _header_safe(value: str) -> bytes:
    # A version is a directory name; keep header injection (CR/LF) impossible regardless.
    return value.encode("latin-1", "replace").replace(b"\r", b"").replace(b"\n", b"")


class HttpProtocol(asyncio.Protocol):
    """One client connection: parse requests, answer them in order."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.size = 0
        self.rejected = False
        self.busy = False  # an awaited (batched) reply is pending
        self.queue: deque[tuple[bytes, bytes, bytes, bool]] = deque()
        self.in_request = False
        self.expect_continue = False
        self.head_size = 0
        self.last_active = time.monotonic()

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # create_server gives stream transports; Protocol's signature names their base class.
        self.transport = cast(asyncio.Transport, transport)
        self.app.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.app.connections.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.rejected:
            return
        self.last_active = time.monotonic()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            if not self.rejected:
                self._fail(400, f"malformed HTTP request: {exc}")

    # -- httptools callbacks ---------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []
        self.size = 0
        self.head_size = 0
        self.expect_continue = False
        self.in_request = True

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_size += len(url)
        if self.head_size > MAX_HEAD and not self.rejected:
            self._fail(414, f"request target longer than {MAX_HEAD} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        # llhttp puts no bound on the head; a client streaming headers forever must not
        # grow memory forever.
        self.head_size += len(name) + len(value)
        if self.head_size > MAX_HEAD:
            if not self.rejected:
                self._fail(431, f"request head larger than {MAX_HEAD} bytes")
            return
        lname = name.lower()
        if lname == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = -1
            if length > self.app.max_body:
                self._fail(
                    413,
                    f"request body of {length} bytes exceeds the limit of "
                    f"{self.app.max_body} bytes",
                )
        elif lname == b"expect" and value.lower() == b"100-continue":
            self.expect_continue = True

    def on_headers_complete(self) -> None:
        if self.expect_continue and not self.rejected and self.transport is not None:
            # curl waits a second for this before sending bodies over 1 KiB.
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self.rejected:
            return
        self.size += len(body)
        if self.size > self.app.max_body:  # chunked bodies announce no length
            self._fail(413, f"request body exceeds the limit of {self.app.max_body} bytes")
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.rejected:
            return
        self.in_request = False
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        request = (self.parser.get_method(), self.url, body, self.parser.should_keep_alive())
        if self.busy:
            self.queue.append(request)
            return
        try:
            self._handle(*request)
        except Exception:  # httptools would swallow it as a parse error; log the real one
            log.exception("error while answering a request")
            if self.transport is not None:
                self.transport.close()
                self.transport = None

    # -- answering -------------------------------------------------------------------

    def _fail(self, status: int, message: str) -> None:
        """Answer an unreadable request and close: the stream cannot be trusted after it."""
        self.rejected = True
        transport = self.transport
        if transport is None:
            return
        content = dataplane.dumps({"error": message})
        transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n%s\r\n%s"
            % (status, _REASONS.get(status, b"Error"), len(content), self.app.date, content)
        )
        self.app.metrics.request("", "", "other", status, 0.0)
        # Closing with unread body bytes in the socket makes the kernel send RST, and the
        # client may then never see the 413. Send FIN, keep discarding what arrives, and
        # close after a grace period.
        if transport.can_write_eof():
            transport.write_eof()
            asyncio.get_running_loop().call_later(2.0, transport.close)
        else:
            transport.close()

    def _handle(self, method: bytes, url: bytes, body: bytes, keep_alive: bool) -> None:
        app = self.app
        started = time.perf_counter()
        protocol, model, version = "other", "", ""
        app.metrics.inflight += 1
        try:
            path = url.partition(b"?")[0].decode("utf-8", "replace")
            protocol, model, version, call = app.route(method, path)
            reply = call(body)
            if not isinstance(reply, tuple):
                self._await(reply, protocol, model, version, keep_alive, started)
                return
            status, content, served = 200, reply[0], reply[1]
        except Exception as exc:  # never let one request take the connection or process down
            status, content = _error_reply(exc)
            served = version
        self._finish(status, content, served, protocol, model, keep_alive, started)

    def _await(
        self,
        pending: Awaitable[Reply],
        protocol: str,
        model: str,
        version: str,
        keep_alive: bool,
        started: float,
    ) -> None:
        self.busy = True
        if self.transport is not None:
            self.transport.pause_reading()  # bound what a pipelining client can queue
        task = asyncio.ensure_future(
            self._later(pending, protocol, model, version, keep_alive, started)
        )
        # The loop keeps only weak references to tasks; hold it until it finishes.
        self.app.tasks.add(task)
        task.add_done_callback(self.app.tasks.discard)

    async def _later(
        self,
        pending: Awaitable[Reply],
        protocol: str,
        model: str,
        version: str,
        keep_alive: bool,
        started: float,
    ) -> None:
        try:
            content, served = await pending
            status = 200
        except Exception as exc:  # never let one request take the connection or process down
            status, content = _error_reply(exc)
            served = version
        self.busy = False
        self._finish(status, content, served, protocol, model, keep_alive, started)
        while self.queue and not self.busy and self.transport is not None:
            self._handle(*self.queue.popleft())
        if not self.busy and self.transport is not None:
            self.transport.resume_reading()

    def _finish(
        self,
        status: int,
        content: bytes,
        served: str,
        protocol: str,
        model: str,
        keep_alive: bool,
        started: float,
    ) -> None:
        app = self.app
        keep = keep_alive and not app.draining
        ctype = metrics.CONTENT_TYPE.encode() if protocol == "metrics" and status == 200 else JSON
        self._write(
            status, content, ctype, app.version_headers(served) if served else b"", keep_alive=keep
        )
        app.metrics.inflight -= 1
        app.metrics.request(
            model, served if model else "", protocol, status, time.perf_counter() - started
        )

    def _write(
        self, status: int, content: bytes, ctype: bytes, extra: bytes, *, keep_alive: bool
    ) -> None:
        transport = self.transport
        if transport is None:
            return  # the client left; nothing to answer
        head = b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s%s" % (
            status,
            _REASONS.get(status, b"Error"),
            ctype,
            len(content),
            extra,
            self.app.date,
        )
        if not keep_alive:
            transport.write(head + b"connection: close\r\n\r\n" + content)
            transport.close()
            self.transport = None
        else:
            transport.write(head + b"\r\n" + content)

    def close_now(self) -> None:
        """Close the connection whatever it is doing."""
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def close_if_idle(self) -> bool:
        """Close the connection unless a request is being read or answered."""
        if self.transport is not None and not self.busy and not self.in_request:
            self.transport.close()
            self.transport = None
            return True
        return self.transport is None


def make_factory(app: App) -> Callable[[], HttpProtocol]:
    """Return the protocol factory ``loop.create_server`` wants."""
    return lambda: HttpProtocol(app)
