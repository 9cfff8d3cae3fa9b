"""The ``serve`` and ``fetch`` commands; ``kubeserve serve|fetch`` delegates here.

Every ``serve`` flag has a ``KUBESERVE_*`` environment variable, because the operator
configures containers through the environment. Errors are one line on stderr and a
non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

from kubeserve.server import config

# What add_subparsers returns: argparse leaves the class undocumented, and generic only in
# typeshed (a string, so it is never subscripted at run time).
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _env(name: str, default: Any, convert: Callable[[str], Any] = str) -> Any:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return convert(raw)
    except ValueError:
        raise SystemExit(f"kubeserve: error: {name}={raw!r} is not valid") from None


def _bool(raw: str) -> bool:
    if raw.strip().lower() in _TRUE:
        return True
    if raw.strip().lower() in _FALSE:
        return False
    raise ValueError(raw)


def _formats(raw: str) -> str:
    if raw not in ("onnx", "sklearn"):
        raise ValueError(raw)
    return raw


def _serve_parser(sub: Subcommands) -> None:
    p = sub.add_parser(
        "serve",
        help="serve one model (all versions under --model-dir) over KServe V1 and V2 (REST, gRPC)",
        description="Serve <model-dir>/<version>/model.{onnx,skops} over HTTP and gRPC. Every flag "
        "also reads the KUBESERVE_* variable named in its help.",
    )
    p.add_argument(
        "--model-name",
        default=_env("KUBESERVE_MODEL_NAME", None),
        help="name in URLs (KUBESERVE_MODEL_NAME; default: the directory's name)",
    )
    p.add_argument(
        "--model-dir",
        type=pathlib.Path,
        default=_env("KUBESERVE_MODEL_DIR", pathlib.Path("/mnt/models"), pathlib.Path),
        help="directory of version sub-directories (KUBESERVE_MODEL_DIR, default /mnt/models)",
    )
    p.add_argument(
        "--format",
        dest="model_format",
        choices=("onnx", "sklearn"),
        default=_env("KUBESERVE_MODEL_FORMAT", None, _formats),
        help="model format (KUBESERVE_MODEL_FORMAT; default: from the file extension)",
    )
    p.add_argument(
        "--host",
        default=_env("KUBESERVE_HOST", "0.0.0.0"),
        help="address to bind (KUBESERVE_HOST, default 0.0.0.0)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=_env("KUBESERVE_PORT", 8080, int),
        help="port (KUBESERVE_PORT, default 8080)",
    )
    p.add_argument(
        "--grpc-port",
        type=int,
        default=_env("KUBESERVE_GRPC_PORT", None, int),
        help=f"gRPC port (inference.GRPCInferenceService); 0 turns gRPC off. The default "
        f"{config.DEFAULT_GRPC_PORT} is skipped with a warning when another process holds it; a port "
        f"named here must be free (KUBESERVE_GRPC_PORT, default {config.DEFAULT_GRPC_PORT})",
    )
    p.add_argument(
        "--variant",
        default=_env("KUBESERVE_VARIANT", None),
        help="value of the x-kubeserve-variant header and the default version "
        "(KUBESERVE_VARIANT; default: the version that served)",
    )
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=_env("KUBESERVE_MAX_BODY_BYTES", 16 * 1024 * 1024, int),
        help="larger request bodies get 413 (KUBESERVE_MAX_BODY_BYTES, default 16 MiB)",
    )
    p.add_argument(
        "--batch-max-size",
        type=int,
        default=_env("KUBESERVE_BATCH_MAX_SIZE", 0, int),
        help="dynamic batching: most rows per model call; 0 or 1 is off "
        "(KUBESERVE_BATCH_MAX_SIZE, default 0)",
    )
    p.add_argument(
        "--batch-max-wait-ms",
        type=float,
        default=_env("KUBESERVE_BATCH_MAX_WAIT_MS", 2.0, float),
        help="dynamic batching: longest a request waits for others; 0 never waits "
        "on purpose (batches form while the model is busy) "
        "(KUBESERVE_BATCH_MAX_WAIT_MS, default 2)",
    )
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        default=_env("KUBESERVE_ALLOW_PICKLE", False, _bool),
        help="allow loading .joblib/.pkl files, which RUNS CODE from the file; "
        "only for model files you trust (KUBESERVE_ALLOW_PICKLE)",
    )
    p.add_argument(
        "--skops-trust",
        action="append",
        metavar="TYPE",
        default=list(
            _env(
                "KUBESERVE_SKOPS_TRUSTED",
                (),
                lambda s: tuple(t.strip() for t in s.split(",") if t.strip()),
            )
        ),
        help="trust this type in .skops files beyond skops' defaults; repeatable "
        "(KUBESERVE_SKOPS_TRUSTED, comma-separated)",
    )
    p.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default=_env("KUBESERVE_DEVICE", "auto"),
        help="ONNX execution device; auto uses CUDA when onnxruntime offers it "
        "(KUBESERVE_DEVICE, default auto)",
    )
    p.add_argument(
        "--intra-op-threads",
        type=int,
        default=_env("KUBESERVE_INTRA_OP_THREADS", 1, int),
        help="threads per model call (ONNX Runtime intra-op, BLAS for sklearn); "
        "0 lets the library choose (KUBESERVE_INTRA_OP_THREADS, default 1)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=_env("KUBESERVE_WORKERS", 1, int),
        help="worker processes sharing the port (KUBESERVE_WORKERS, default 1)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=_env("KUBESERVE_MAX_CONNECTIONS", 900, int),
        help="open connections per worker; more get 503 and a warning. With 100 descriptors "
        "kept for the rest, the default fits the usual limit of 1024 open files "
        "(KUBESERVE_MAX_CONNECTIONS, default 900)",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=_env("KUBESERVE_IDLE_TIMEOUT", 60.0, float),
        help="close connections silent for this many seconds, also mid-request; "
        "0 never (KUBESERVE_IDLE_TIMEOUT, default 60)",
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        default=_env("KUBESERVE_HEADER_TIMEOUT", 10.0, float),
        help="a request's line and headers must arrive within this many seconds of its "
        "first byte, else 408; 0 never (KUBESERVE_HEADER_TIMEOUT, default 10)",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=_env("KUBESERVE_BODY_TIMEOUT", 10.0, float),
        help="seconds a request body may take, plus one per --body-min-rate bytes received, "
        "else 408; 0 never (KUBESERVE_BODY_TIMEOUT, default 10)",
    )
    p.add_argument(
        "--body-min-rate",
        type=float,
        default=_env("KUBESERVE_BODY_MIN_RATE", 16384.0, float),
        help="bytes per second a body must average after --body-timeout; 0 makes "
        "--body-timeout a plain deadline (KUBESERVE_BODY_MIN_RATE, default 16384)",
    )
    p.add_argument(
        "--send-timeout",
        type=float,
        default=_env("KUBESERVE_SEND_TIMEOUT", 30.0, float),
        help="drop a connection whose unsent replies stay above 64 KiB this many seconds "
        "(it is not read meanwhile); 0 never (KUBESERVE_SEND_TIMEOUT, default 30)",
    )
    p.add_argument(
        "--drain-delay",
        type=float,
        default=_env("KUBESERVE_DRAIN_DELAY", 0.0, float),
        help="seconds to keep serving after SIGTERM with readiness false "
        "(KUBESERVE_DRAIN_DELAY, default 0)",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=_env("KUBESERVE_DRAIN_TIMEOUT", 20.0, float),
        help="most seconds to wait for in-flight requests after SIGTERM (and after "
        "--drain-delay); then every connection is closed (KUBESERVE_DRAIN_TIMEOUT, default 20)",
    )
    p.add_argument(
        "--log-level",
        default=_env("KUBESERVE_LOG_LEVEL", "INFO"),
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="log level (KUBESERVE_LOG_LEVEL, default INFO)",
    )


def _fetch_parser(sub: Subcommands) -> None:
    p = sub.add_parser(
        "fetch",
        help="download a model directory or file to a local directory, atomically",
        description="Fetch <storage-uri> (file://, http(s)://, s3://, gs://, ... or a local "
        "path) into <dir>. The directory appears complete or not at all.",
    )
    p.add_argument(
        "storage_uri",
        help="where the model is: a local path, file:///path, http(s)://host/path (one file; "
        ".tar.gz, .tgz and .zip are unpacked), s3://bucket/path or gs://bucket/path",
    )
    p.add_argument(
        "dest",
        type=pathlib.Path,
        help="the directory to create, holding the model (<dir>); if it exists it counts as "
        "fetched already, unless --force",
    )
    from kubeserve.server import fetch  # its defaults; light: the standard library only

    p.add_argument("--sha256", help="expected SHA-256 (hex) of the fetched file")
    p.add_argument("--force", action="store_true", help="replace <dir> when it already exists")
    p.add_argument(
        "--timeout",
        type=float,
        default=fetch.DEFAULT_TIMEOUT,
        help=f"most seconds one network read may wait (default {fetch.DEFAULT_TIMEOUT:g})",
    )
    p.add_argument(
        "--deadline",
        type=float,
        default=fetch.DEFAULT_DEADLINE,
        help="most seconds the whole fetch may take, download and unpacking "
        f"(default {fetch.DEFAULT_DEADLINE:g})",
    )
    p.add_argument(
        "--max-bytes",
        type=int,
        default=fetch.DEFAULT_MAX_BYTES,
        help="most bytes the download may write, and separately the most an archive may "
        f"unpack to; counted while writing (default {fetch.DEFAULT_MAX_BYTES}, 10Gi)",
    )


def _serve(args: argparse.Namespace) -> int:
    from kubeserve.server import serve

    problems = []
    if args.port < 0 or args.port > 65535:
        problems.append(f"--port {args.port} is not a port number")
    grpc_port = config.DEFAULT_GRPC_PORT if args.grpc_port is None else args.grpc_port
    if grpc_port < 0 or grpc_port > 65535:
        problems.append(f"--grpc-port {grpc_port} is not a port number")
    elif grpc_port and grpc_port == args.port:
        problems.append(f"--grpc-port {grpc_port} is the HTTP --port too; give gRPC its own")
    if args.max_body_bytes <= 0:
        problems.append("--max-body-bytes must be positive")
    if args.workers < 1:
        problems.append("--workers must be at least 1")
    if args.batch_max_size < 0 or args.batch_max_wait_ms < 0:
        problems.append("batching sizes and waits must not be negative")
    if args.max_connections < 1:
        problems.append("--max-connections must be at least 1")
    timeouts = [
        "idle_timeout",
        "header_timeout",
        "body_timeout",
        "body_min_rate",
        "send_timeout",
        "drain_delay",
        "drain_timeout",
    ]
    negative = ["--" + t.replace("_", "-") for t in timeouts if getattr(args, t) < 0]
    if negative:
        problems.append(", ".join(negative) + " must not be negative")
    if problems:
        print("kubeserve serve: error: " + "; ".join(problems), file=sys.stderr)
        return 2
    cfg = config.ServerConfig(
        model_name=args.model_name or args.model_dir.resolve().name,
        model_dir=args.model_dir,
        model_format=args.model_format,
        host=args.host,
        port=args.port,
        grpc_port=grpc_port,
        grpc_port_required=args.grpc_port is not None,
        variant=args.variant or None,
        max_body_bytes=args.max_body_bytes,
        batch_max_size=args.batch_max_size,
        batch_max_wait_ms=args.batch_max_wait_ms,
        allow_pickle=args.allow_pickle,
        skops_trusted=tuple(args.skops_trust),
        device=args.device,
        intra_op_threads=args.intra_op_threads,
        workers=args.workers,
        max_connections=args.max_connections,
        idle_timeout=args.idle_timeout,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        body_min_rate=args.body_min_rate,
        send_timeout=args.send_timeout,
        drain_delay=args.drain_delay,
        drain_timeout=args.drain_timeout,
        log_level=args.log_level,
    )
    return serve.run(cfg)


def _fetch(args: argparse.Namespace) -> int:
    from kubeserve.server import fetch

    return fetch.run(
        args.storage_uri,
        args.dest,
        sha256=args.sha256,
        force=args.force,
        timeout=args.timeout,
        max_bytes=args.max_bytes,
        deadline=args.deadline,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``serve`` or ``fetch`` with ``argv`` (without the program name)."""
    parser = argparse.ArgumentParser(prog="kubeserve", description="kubeserve inference server")
    sub = parser.add_subparsers(dest="command", required=True)
    try:
        _serve_parser(sub)
        _fetch_parser(sub)
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            return 2
        return int(exc.code or 0)
    if args.command == "serve":
        return _serve(args)
    return _fetch(args)
