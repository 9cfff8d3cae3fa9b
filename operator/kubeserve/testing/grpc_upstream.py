"""A stand-in gRPC model server for routing tests: each port answers as one variant.

Run as `python grpc_upstream.py NAME[:MODE] ...`; it binds one loopback port per name, prints
`{"name": port, ...}` as one JSON line, and serves until killed. It speaks HTTP/2 cleartext
(h2c with prior knowledge, as a model server's gRPC port does) through grpcio's generic
handlers with bytes in and out, so no generated stubs are needed.

`/inference.GRPCInferenceService/ModelInfer` answers, in MODE `echo` (the default), with a
JSON body `{"variant": NAME, "metadata": {key: value}}` (the request metadata it received),
the initial metadata `x-kubeserve-variant: upstream-NAME` (the router must replace it with
its own choice) and the trailing metadata `x-stand-in: NAME`. MODE `not-found` answers every
call NOT_FOUND with no message body: a trailers-only response, as a model server gives for a
version it does not have. `/kubeserve.StandIn/Counts` on any port gives how many calls each
variant saw and how many of them were mirror copies (`NAME/mirror`), as JSON.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from concurrent import futures
from typing import Any

import grpc

SERVICE = "inference.GRPCInferenceService"
INFER = f"/{SERVICE}/ModelInfer"
COUNTS_SERVICE = "kubeserve.StandIn"
COUNTS = f"/{COUNTS_SERVICE}/Counts"
# The header the router sets on a mirror copy (the HTTP stand-in counts the same one).
MIRROR_HEADER = "x-kubeserve-mirror"

_counts: Counter[str] = Counter()
_lock = threading.Lock()


def _infer(name: str, mode: str) -> Any:
    def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
        received = {
            key: value if isinstance(value, str) else value.decode("latin-1")
            for key, value in context.invocation_metadata()
        }
        with _lock:
            mirrored = received.get(MIRROR_HEADER) == "1"
            _counts[f"{name}{'/mirror' if mirrored else ''}"] += 1
        if mode == "hang":
            # Until the caller gives up (the router's mirror timeout), never answering.
            while context.is_active():
                time.sleep(0.05)
            return b""
        if mode == "not-found":
            context.abort(grpc.StatusCode.NOT_FOUND, f"{name} has no such version")
        context.send_initial_metadata((("x-kubeserve-variant", f"upstream-{name}"),))
        context.set_trailing_metadata((("x-stand-in", name),))
        return json.dumps({"variant": name, "metadata": received}).encode()

    return handle


def _counts_handler(request: bytes, context: grpc.ServicerContext) -> bytes:
    with _lock:
        return json.dumps(dict(_counts)).encode()


def main(specs: list[str]) -> None:
    ports = {}
    servers = []
    for item in specs:
        name, _, mode = item.partition(":")
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    SERVICE,
                    {
                        "ModelInfer": grpc.unary_unary_rpc_method_handler(
                            _infer(name, mode or "echo")
                        )
                    },
                ),
                grpc.method_handlers_generic_handler(
                    COUNTS_SERVICE, {"Counts": grpc.unary_unary_rpc_method_handler(_counts_handler)}
                ),
            )
        )
        ports[name] = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
    print(json.dumps(ports), flush=True)
    for server in servers:
        server.wait_for_termination()


if __name__ == "__main__":
    main(sys.argv[1:])
