"""Run the server: bind, load models in the background, serve, and drain on SIGTERM.

HTTP and gRPC (``grpc_server``) are served by one event loop over one data plane. With
``workers > 1`` a small supervisor starts that many worker processes, each with its own
``SO_REUSEPORT`` sockets for both ports (the kernel spreads connections across them) and its
own copy of the model; the supervisor forwards SIGTERM and replaces a worker that dies.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
import os
import pathlib
import resource
import shutil
import signal
import socket
import tempfile
import time
from typing import TYPE_CHECKING

from kubeserve.server import (
    batching,
    client_limits,
    config,
    dataplane,
    errors,
    http,
    metrics,
    repository,
    runtimes,
)

if TYPE_CHECKING:
    import grpc.aio

log = logging.getLogger("kubeserve.server")

# Descriptors kept beyond --max-connections: the listening socket, the event loop's, model
# and library files, logs, metrics snapshots (about 20 on CPU, more with CUDA), and the
# refused connections answered with 503 (http.MAX_REFUSING). Running out would make
# accept() fail, and asyncio then stops accepting for a second at a time, silently.
FD_RESERVE = 100


def setup_logging(level: str) -> None:
    """Log to stderr in one line per event, as container logs want."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s",
    )


def _socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


def fit_connections(max_connections: int) -> int:
    """Return the connection cap the open-file limit allows, raising the soft limit if needed.

    Each connection is a descriptor; the cap must stay below the limit so that excess
    clients get a 503 rather than a stalled accept loop.
    """
    need = max_connections + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return max_connections
    target = need if hard == resource.RLIM_INFINITY else min(hard, need)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    except (ValueError, OSError):
        pass
    if soft >= need:
        return max_connections
    fitted = max(1, soft - FD_RESERVE)
    log.warning(
        "--max-connections %d lowered to %d: the open-file limit is %d (hard limit %s) and %d "
        "descriptors are kept for the rest of the server",
        max_connections,
        fitted,
        soft,
        "unlimited" if hard == resource.RLIM_INFINITY else hard,
        FD_RESERVE,
    )
    return fitted


def run(cfg: config.ServerConfig) -> int:
    """Serve until SIGTERM/SIGINT; return the process exit code."""
    setup_logging(cfg.log_level)
    if cfg.workers > 1:
        return _supervise(cfg)
    return _run_worker(cfg, metrics_dir=None, reuse_port=False)


def _run_worker(cfg: config.ServerConfig, *, metrics_dir: str | None, reuse_port: bool) -> int:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a declared dependency
        pass
    try:
        return asyncio.run(_serve(cfg, metrics_dir=metrics_dir, reuse_port=reuse_port))
    except errors.ModelLoadError as exc:
        log.error("%s", exc)
        return 1
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", cfg.host, cfg.port, exc)
        return 1


def _worker_entry(cfg: config.ServerConfig, metrics_dir: str) -> None:
    setup_logging(cfg.log_level)
    raise SystemExit(_run_worker(cfg, metrics_dir=metrics_dir, reuse_port=True))


async def _serve(cfg: config.ServerConfig, *, metrics_dir: str | None, reuse_port: bool) -> int:
    loop = asyncio.get_running_loop()
    options = runtimes.RuntimeOptions(
        allow_pickle=cfg.allow_pickle,
        device=cfg.device,
        intra_op_threads=cfg.intra_op_threads,
        skops_trusted=cfg.skops_trusted,
    )
    repo = repository.discover(
        name=cfg.model_name,
        model_dir=cfg.model_dir,
        fmt=cfg.model_format,
        variant=cfg.variant,
        options=options,
    )
    stats = metrics.Metrics()
    batchers: dict[str, batching.Batcher] = {}
    if cfg.batch_max_size > 1:
        for version, m in repo.versions.items():
            batchers[version] = batching.Batcher(
                m,
                max_batch_size=cfg.batch_max_size,
                max_wait=cfg.batch_max_wait_ms / 1000.0,
                on_batch=functools.partial(stats.batch, repo.name, version),
            )
    plane = dataplane.DataPlane(repo, batchers=batchers)
    files = metrics.SnapshotFiles(pathlib.Path(metrics_dir)) if metrics_dir else None
    limits = client_limits.Limits(
        max_connections=fit_connections(cfg.max_connections),
        idle_timeout=cfg.idle_timeout,
        header_timeout=cfg.header_timeout,
        body_timeout=cfg.body_timeout,
        body_min_rate=cfg.body_min_rate,
        send_timeout=cfg.send_timeout,
    )
    app = http.App(
        plane,
        stats,
        variant=cfg.variant,
        max_body=cfg.max_body_bytes,
        limits=limits,
        metrics_files=files,
    )

    sock = _socket(cfg.host, cfg.port, reuse_port=reuse_port)
    server = await loop.create_server(http.make_factory(app), sock=sock, backlog=4096)
    try:
        rpc_server = await _start_grpc(cfg, plane, stats, reuse_port=reuse_port)
    except OSError as exc:  # a --grpc-port that cannot be bound; its message names it
        log.error("%s", exc)
        server.close()
        return 1
    log.info(
        "listening on http://%s:%d%s (model %s, versions %s, default %s)",
        cfg.host,
        cfg.port,
        f" and grpc://{cfg.host}:{cfg.grpc_port}" if rpc_server is not None else "",
        repo.name,
        ", ".join(repo.versions),
        repo.default,
    )

    def tick() -> None:
        app.tick()
        if files is not None:
            try:
                files.write(stats)
            except OSError as exc:
                log.warning("cannot write metrics snapshot: %s", exc)
        loop.call_later(1.0, tick)

    loop.call_later(1.0, tick)

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    # Load after listening: liveness answers during a long load and readiness says why not.
    load = loop.run_in_executor(None, repo.load_all)
    load.add_done_callback(lambda _: _loaded(repo, stats))
    await stop.wait()

    log.info("draining: readiness is now false")
    plane.draining = app.draining = True
    if cfg.drain_delay > 0:
        # Keep serving while endpoints controllers notice the failing readiness probe.
        await asyncio.sleep(cfg.drain_delay)
    server.close()
    # gRPC refuses new calls from now on and lets those in flight finish within the same
    # deadline as the HTTP connections, side by side; then it cancels them.
    grpc_stopped = asyncio.ensure_future(rpc_server.stop(cfg.drain_timeout)) if rpc_server else None
    # Each connection's next reply says connection: close; idle ones get a moment to send
    # the request that may be on the wire already (http.DRAIN_IDLE_GRACE). The sweep's
    # clocks keep running, so slow clients are cut off as usual.
    started = time.monotonic()
    deadline = started + cfg.drain_timeout
    while app.connections and time.monotonic() < deadline:
        app.drain(started)
        await asyncio.sleep(0.02)
    if app.connections:
        log.warning(
            "drain timeout: resetting %d connections still reading or answering requests",
            len(app.connections),
        )
        app.abort_all()
        await asyncio.sleep(0)  # let the transports report connection_lost
    if grpc_stopped is not None:
        await grpc_stopped
    for b in batchers.values():
        b.close()
    plane.close()  # its worker thread for large requests
    if files is not None:
        files.mine.unlink(missing_ok=True)
    log.info("stopped")
    return 0


async def _start_grpc(
    cfg: config.ServerConfig,
    plane: dataplane.DataPlane,
    stats: metrics.Metrics,
    *,
    reuse_port: bool,
) -> grpc.aio.Server | None:
    """Serve gRPC on ``cfg.grpc_port`` unless it is 0; None when it is off or skipped.

    A port that was asked for must bind (BindError otherwise); the default one, held by
    another process (a second server on a laptop), is skipped with a warning.
    """
    if not cfg.grpc_port:
        return None
    # grpcio is loaded only by servers that serve gRPC.
    from kubeserve.server import grpc_server

    service = grpc_server.Service(plane, stats, variant=cfg.variant)
    try:
        return await grpc_server.start(
            service,
            host=cfg.host,
            port=cfg.grpc_port,
            max_message=cfg.max_body_bytes,
            reuse_port=reuse_port,
        )
    except grpc_server.BindError as exc:
        if cfg.grpc_port_required:
            raise
        log.warning("%s; serving HTTP only (--grpc-port picks another port, 0 turns it off)", exc)
        return None


def _loaded(repo: repository.Repository, stats: metrics.Metrics) -> None:
    for version, m in repo.versions.items():
        stats.model_ready[(repo.name, version)] = 1.0 if m.ready else 0.0
        if m.ready:
            stats.load_seconds[(repo.name, version)] = m.load_seconds


def _supervise(cfg: config.ServerConfig) -> int:
    try:
        # Fail fast on a wrong directory or format, before starting workers that would
        # each fail the same way.
        repository.discover(
            name=cfg.model_name,
            model_dir=cfg.model_dir,
            fmt=cfg.model_format,
            variant=cfg.variant,
            options=runtimes.RuntimeOptions(),
        )
    except errors.ModelLoadError as exc:
        log.error("%s", exc)
        return 1
    ctx = multiprocessing.get_context("spawn")
    metrics_dir = tempfile.mkdtemp(prefix="kubeserve-metrics-")
    stopping = False

    def start() -> multiprocessing.process.BaseProcess:
        proc = ctx.Process(target=_worker_entry, args=(cfg, metrics_dir), daemon=False)
        proc.start()
        return proc

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    workers = [start() for _ in range(cfg.workers)]
    log.info("supervising %d workers on port %d", cfg.workers, cfg.port)
    failures: list[float] = []
    try:
        while not stopping:
            time.sleep(0.2)
            for i, proc in enumerate(workers):
                if proc.is_alive() or stopping:
                    continue
                log.error("worker %s exited with %s; starting a new one", proc.pid, proc.exitcode)
                failures = [t for t in failures if time.monotonic() - t < 60] + [time.monotonic()]
                if len(failures) > 5 * cfg.workers:
                    log.error("workers keep failing; giving up")
                    stopping = True
                    break
                workers[i] = start()
        for proc in workers:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + cfg.drain_delay + cfg.drain_timeout + 5
        for proc in workers:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    bad = [p.exitcode for p in workers if p.exitcode not in (0, None)]
    return 1 if bad and len(failures) > 5 * cfg.workers else 0
