"""The gRPC transport: the Open Inference Protocol's ``inference.GRPCInferenceService``.

A ``grpc.aio`` server in the HTTP server's process and event loop, over the same
``dataplane.DataPlane``: the same models, batchers and worker thread for large requests, the
same checks (``dataplane.v2_request``) and the same raw tensor codec (``raw_tensors``) as the
binary REST extension. This module only maps messages to the data plane's wire-neutral
tensors and back, and the data plane's errors to gRPC status codes, as ``http`` does for
HTTP:

=====================================  ======================  ==========================
error                                  HTTP                    gRPC
=====================================  ======================  ==========================
bad request (shape, datatype, values)  400                     INVALID_ARGUMENT
unknown model or version               404                     NOT_FOUND
message over the size limit            413                     RESOURCE_EXHAUSTED
model failed                           500                     INTERNAL
not ready, draining                    503                     UNAVAILABLE
=====================================  ======================  ==========================

Inputs come as ``raw_input_contents`` (one per input, in order; what tritonclient sends) or
as typed ``contents`` (``fp32_contents`` ...; FP16 has none); outputs always go back as
``raw_output_contents``, as Triton answers. Metrics count each call with ``protocol="grpc"``,
the operation of its method (``infer``, ``metadata`` or ``health``, as for REST) and the HTTP
status of its outcome; each answer carries ``x-kubeserve-variant`` and
``x-kubeserve-model-version`` as initial metadata.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import grpc
import grpc.aio
import numpy as np

import kubeserve
from kubeserve.server import dataplane, errors, metrics, model, raw_tensors
from kubeserve.server.grpc_v2 import open_inference_grpc_pb2 as pb

log = logging.getLogger("kubeserve.server")

SERVICE = "inference.GRPCInferenceService"
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
}
# The status a call that ended before its answer is counted with: nginx's code for a client
# that went away (a cancelled call, or one the drain's deadline cut).
_CANCELLED = 499

# Datatype -> the typed ``contents`` field that carries it.
_CONTENTS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

T = TypeVar("T")
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


class BindError(OSError):
    """The gRPC port could not be bound."""


class Service:
    """Answers ``inference.GRPCInferenceService`` calls from one data plane."""

    def __init__(
        self, plane: dataplane.DataPlane, stats: metrics.Metrics, *, variant: str | None
    ) -> None:
        self.plane = plane
        self.metrics = stats
        self.variant = variant

    def handler(self) -> grpc.GenericRpcHandler:
        """Return the generic handler of every method the service descriptor declares."""
        calls: dict[str, Callable[[Any, Context], Awaitable[Any]]] = {
            "ServerLive": self.server_live,
            "ServerReady": self.server_ready,
            "ModelReady": self.model_ready,
            "ServerMetadata": self.server_metadata,
            "ModelMetadata": self.model_metadata,
            "ModelInfer": self.model_infer,
        }
        methods = {}
        for method in pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods:
            request = getattr(pb, method.input_type.name)
            response = getattr(pb, method.output_type.name)
            methods[method.name] = grpc.unary_unary_rpc_method_handler(
                calls[method.name],
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )
        return grpc.method_handlers_generic_handler(SERVICE, methods)

    # -- health and metadata ---------------------------------------------------------

    async def server_live(self, request: pb.ServerLiveRequest, context: Context) -> Any:
        """Live while the process answers, as ``/v2/health/live``."""
        return await self._answer(
            context, metrics.HEALTH, "", None, lambda: (pb.ServerLiveResponse(live=True), "")
        )

    async def server_ready(self, request: pb.ServerReadyRequest, context: Context) -> Any:
        """Ready as ``/v2/health/ready`` is: false (not an error) while loading or draining."""

        def ready() -> tuple[Any, str]:
            try:
                self.plane.ready()
            except errors.NotReady:
                return pb.ServerReadyResponse(ready=False), ""
            return pb.ServerReadyResponse(ready=True), ""

        return await self._answer(context, metrics.HEALTH, "", None, ready)

    async def model_ready(self, request: pb.ModelReadyRequest, context: Context) -> Any:
        """Whether one model version is ready; NOT_FOUND for one this server does not have."""
        version = request.version or None

        def ready() -> tuple[Any, str]:
            try:
                served = self.plane.model_ready(request.name, version)[1]
            except errors.NotReady:
                return pb.ModelReadyResponse(ready=False), ""
            return pb.ModelReadyResponse(ready=True), served

        return await self._answer(context, metrics.METADATA, request.name, version, ready)

    async def server_metadata(self, request: pb.ServerMetadataRequest, context: Context) -> Any:
        """The server's name, version and the protocol extensions it supports."""
        answer = pb.ServerMetadataResponse(
            name="kubeserve", version=kubeserve.__version__, extensions=dataplane.EXTENSIONS
        )
        return await self._answer(context, metrics.METADATA, "", None, lambda: (answer, ""))

    async def model_metadata(self, request: pb.ModelMetadataRequest, context: Context) -> Any:
        """Model metadata, as ``GET /v2/models/{m}[/versions/{v}]`` gives it."""
        version = request.version or None

        def describe() -> tuple[Any, str]:
            body, served = self.plane.metadata(request.name, version)
            answer = pb.ModelMetadataResponse(
                name=body["name"],
                versions=body["versions"],
                platform=body["platform"],
                inputs=[_tensor_metadata(t) for t in body["inputs"]],
                outputs=[_tensor_metadata(t) for t in body["outputs"]],
            )
            return answer, served

        return await self._answer(context, metrics.METADATA, request.name, version, describe)

    # -- inference -------------------------------------------------------------------

    async def model_infer(self, request: pb.ModelInferRequest, context: Context) -> Any:
        """Run the model on the request's tensors, as ``/infer`` does."""
        version = request.model_version or None
        return await self._answer(
            context,
            metrics.INFER,
            request.model_name,
            version,
            lambda: self.plane.infer(
                request.model_name, version, request, request.ByteSize(), _parse, _reply
            ),
        )

    async def _answer(
        self,
        context: Context,
        operation: str,
        name: str,
        version: str | None,
        call: Callable[[], tuple[T, str] | Awaitable[tuple[T, str]]],
    ) -> T:
        """Run ``call``, which returns the answer and the version that served; count it.

        ``operation`` is the call's ``operation`` label (``metrics.INFER`` ...).
        """
        started = time.perf_counter()
        label, label_version = self.plane.labels(name, version) if name else ("", "")
        status, served = 200, label_version
        self.metrics.inflight += 1
        try:
            pending = call()
            answer, served = await pending if inspect.isawaitable(pending) else pending
            if served:
                await context.send_initial_metadata(self._served_by(served))
            return answer
        except errors.ServerError as exc:
            status = exc.status
            if served:
                await context.send_initial_metadata(self._served_by(served))
            await context.abort(_CODES.get(status, grpc.StatusCode.UNKNOWN), str(exc))
        except asyncio.CancelledError:
            status = _CANCELLED
            raise
        except Exception as exc:  # never let one call take the server down
            log.exception("unhandled error in a gRPC call")
            status = 500
            await context.abort(
                grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"
            )
        finally:
            self.metrics.inflight -= 1
            self.metrics.request(
                label,
                served if label else "",
                "grpc",
                operation,
                status,
                time.perf_counter() - started,
            )

    def _served_by(self, version: str) -> tuple[tuple[str, str], ...]:
        return (
            ("x-kubeserve-variant", self.variant or version),
            ("x-kubeserve-model-version", version),
        )


def _tensor_metadata(spec: dict[str, Any]) -> Any:
    return pb.ModelMetadataResponse.TensorMetadata(
        name=spec["name"], datatype=spec["datatype"], shape=spec["shape"]
    )


# -- messages <-> the data plane's tensors ---------------------------------------------


def _parse(m: model.Model, request: pb.ModelInferRequest, large: bool) -> dataplane.Request:
    """Check a ModelInferRequest against the model (``dataplane.v2_request``)."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise errors.BadRequest(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; "
            "send one per input, in the order of the inputs"
        )
    inputs = []
    for i, tensor in enumerate(request.inputs):
        if raw:
            if tensor.HasField("contents") and tensor.contents.ListFields():
                raise errors.BadRequest(
                    f"input {errors.brief(tensor.name)}: both contents and raw_input_contents; "
                    "a request uses one or the other for all its inputs"
                )
            values: Any = raw[i]
        else:
            values = _contents(tensor, image=tensor.name in m.images)
        inputs.append(dataplane.TensorIn(tensor.name, tensor.datatype, list(tensor.shape), values))
    outputs = [dataplane.TensorOut(o.name) for o in request.outputs] or None
    return dataplane.v2_request(
        m,
        inputs,
        outputs,
        request.id or None,
        chunk=dataplane.SLICE_VALUES if large else 0,
    )


def _contents(tensor: pb.ModelInferRequest.InferInputTensor, *, image: bool = False) -> list[Any]:
    """Return a tensor's typed contents as the list of values JSON ``data`` would be.

    BYTES for an input the model declares an image stay bytes: they are encoded pictures.
    """
    where = f"input {errors.brief(tensor.name)}"
    field = _CONTENTS.get(tensor.datatype)
    given = [f.name for f, _ in tensor.contents.ListFields()]
    if tensor.datatype == "FP16":
        raise errors.BadRequest(f"{where}: FP16 values have no contents field; send them raw")
    if field is None:
        return []  # the data plane names the unknown datatype
    others = [g for g in given if g != field]
    if others:
        raise errors.BadRequest(
            f"{where}: datatype {tensor.datatype} takes its values in contents.{field}, "
            f"not {', '.join(others)}"
        )
    values = list(getattr(tensor.contents, field))
    if field == "bytes_contents" and not image:
        try:
            # The models take text, as from JSON ``data``.
            values = [v.decode("utf-8") for v in values]
        except UnicodeDecodeError:
            raise errors.BadRequest(f"{where}: BYTES contents must be UTF-8 text") from None
    return values


def _reply(
    m: model.Model, outputs: dict[str, np.ndarray], request: dataplane.Request
) -> tuple[pb.ModelInferResponse, str]:
    """Encode the outputs as ``raw_output_contents``."""
    answer = pb.ModelInferResponse(model_name=m.name, model_version=m.version, id=request.id or "")
    for name in request.outputs:
        array = np.asarray(outputs[name])
        datatype, raw = raw_tensors.encode(array)
        answer.outputs.add(name=name, datatype=datatype, shape=array.shape)
        answer.raw_output_contents.append(bytes(raw))
    return answer, m.version


# -- the server ------------------------------------------------------------------------


async def start(
    service: Service,
    *,
    host: str,
    port: int,
    max_message: int,
    reuse_port: bool,
) -> grpc.aio.Server:
    """Bind ``host:port`` and serve ``service`` on the running event loop; raise BindError.

    ``max_message`` bounds a request message as ``--max-body-bytes`` bounds an HTTP body;
    larger ones are refused by grpcio with RESOURCE_EXHAUSTED before they reach the data
    plane. ``reuse_port`` lets the workers of ``--workers`` share the port (SO_REUSEPORT);
    without it a port that another process holds is an error, not a silent share.
    """
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message),
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ]
    )
    server.add_generic_rpc_handlers((service.handler(),))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpcio raises where it used to return 0
        await server.stop(None)
        raise BindError(f"cannot listen for gRPC on {address}: {exc}") from None
    if not bound:
        await server.stop(None)
        raise BindError(f"cannot listen for gRPC on {address}")
    await server.start()
    return server
