"""The protocol logic of KServe V1 and Open Inference Protocol V2, free of HTTP.

Each call takes the parsed route parameters and the raw body, validates everything a client
can get wrong, runs the model and returns ``(json_body, version_that_served)``. Inference
calls return that pair directly, or an awaitable of it, so the common path never pays for a
coroutine. Errors are raised as ``errors.ServerError``.

Small requests are answered inline on the event loop: for the digits model a batch of 32
costs tens of microseconds, less than a hand-off to a thread would. A body larger than
``offload_bytes`` is parsed, converted, run and encoded in a pool of ``offload_threads``
worker threads, in steps short enough (``chunked_json``, ``tensors.to_array`` with a chunk)
that the loop gets the GIL back within milliseconds: a 16 MiB request held the loop for
about 2 s, and liveness probes failed behind it. The pool's size bounds how many large
requests are decoded at once, and so the memory they take; the others wait as bytes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, NamedTuple, TypeVar

import numpy as np
import orjson

import kubeserve
from kubeserve.server import (
    batching,
    chunked_json,
    errors,
    feedback,
    images,
    model,
    numeric_json,
    raw_tensors,
    repository,
    row_slices,
    tensors,
    v1_forms,
)

log = logging.getLogger("kubeserve.server")

Reply = tuple[bytes, str]
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
# What ``GET /v2`` and gRPC's ServerMetadata list.
EXTENSIONS = ("binary_tensor_data",)


class Binary(NamedTuple):
    """A V2 reply with binary outputs: a JSON header of ``header_length`` bytes, then their bytes.

    The transport sends it as ``application/octet-stream`` with the
    ``Inference-Header-Content-Length`` header (the binary tensor data extension).
    """

    content: bytes
    version: str
    header_length: int


InferReply = Reply | Binary

# Bodies above this go to the worker pool. Inline, 64 KiB of JSON costs the loop a few
# milliseconds; the thread hand-off costs about 0.1 ms, nothing next to that.
OFFLOAD_BYTES = 64 * 1024
# One thread: the work is bound by the GIL, so a second one adds no throughput, only a third
# thread for the loop to win the GIL from. Two clients sending 16 MiB requests on 2 cores:
# with one worker no liveness probe took over 75 ms; with two, 2-4% took 100-150 ms.
OFFLOAD_THREADS = 1
# Values a worker converts per step (a few milliseconds of GIL each).
SLICE_VALUES = 32 * 1024


def dumps(obj: Any) -> bytes:
    """Serialise a response body; numpy arrays go straight to JSON."""
    return orjson.dumps(obj, option=_NUMPY)


def _load_json(body: bytes) -> dict[str, Any]:
    if not body:
        raise errors.BadRequest("request body is empty; expected a JSON object")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise errors.BadRequest(f"malformed JSON: {exc}") from None
    return _object(payload)


@contextlib.contextmanager
def _large_document(body: bytes, layout: chunked_json.Layout) -> Iterator[dict[str, Any]]:
    """Parse a large body in steps (``chunked_json``); free it in steps when done.

    The tensors' values (where ``layout`` places them) stay text (``numeric_json.Span``)
    until they are converted, whatever their size: no Python object per number. Any other
    field over ``chunked_json.CHUNK`` is refused before it is built.
    """
    try:
        with chunked_json.document(body, layout=layout) as payload:
            yield _object(payload)
    except chunked_json.Malformed as exc:
        raise errors.BadRequest(f"malformed JSON: {exc}") from None
    except chunked_json.Refused as exc:
        raise errors.BadRequest(str(exc)) from None


_TENSOR, _HOLDER, _OTHER = (
    chunked_json.Place.TENSOR,
    chunked_json.Place.HOLDER,
    chunked_json.Place.OTHER,
)


def _v1_layout(path: chunked_json.Path) -> chunked_json.Place:
    """``instances``, ``inputs``, ``inputs[name]``, ``instances[i][name]``: V1 tensors' places.

    The last is a named row's value for an input, which ``v1_forms`` joins into a column.
    """
    if not path:
        return _HOLDER
    if (
        path in (("instances",), ("inputs",))
        or (len(path) == 2 and path[0] == "inputs" and type(path[1]) is str)
        or (len(path) == 3 and path[0] == "instances" and type(path[2]) is str)
    ):
        return _TENSOR
    return _OTHER


def _v2_layout(path: chunked_json.Path) -> chunked_json.Place:
    """``inputs[i].data``: the place of a V2 tensor's values, in ``inputs[i]``, in ``inputs``."""
    if not path or path == ("inputs",) or (len(path) == 2 and path[0] == "inputs"):
        return _HOLDER
    if len(path) == 3 and path[0] == "inputs" and path[2] == "data":
        return _TENSOR
    return _OTHER


def _object(payload: Any) -> dict[str, Any]:
    if type(payload) is not dict:
        raise errors.BadRequest("request body must be a JSON object")
    return payload


def _check_shape(spec: model.TensorSpec, shape: tuple[int, ...]) -> None:
    if not spec.fits(shape):
        raise errors.BadRequest(
            f"input '{spec.name}': shape {list(shape)} does not match the model's "
            f"{list(spec.shape)} (-1 is any size)"
        )


def _parameters(where: str, container: dict[str, Any]) -> None:
    params = container.get("parameters")
    if params is not None and type(params) is not dict:
        raise errors.BadRequest(
            f"{where}'parameters' must be an object, got {errors.brief(params)}"
        )


@dataclasses.dataclass(slots=True)
class Request:
    """An inference request, validated: the model's inputs, the outputs wanted, its ``id``.

    ``binary`` names the outputs to answer as raw bytes (the binary tensor data extension).
    """

    inputs: dict[str, np.ndarray]
    outputs: list[str]
    id: str | None = None
    binary: frozenset[str] = frozenset()


@dataclasses.dataclass(slots=True)
class V1Request(Request):
    """A V1 request remembers its form (row or columnar): the answer takes the same."""

    form: v1_forms.Form = v1_forms.Form.ROW
    instances: int = 0  # rows: what the answer's row form has one object per


Parse = Callable[[model.Model, bytes, bool], Request]
Answer = Callable[[model.Model, dict[str, np.ndarray], Request], Reply]
# The same for any wire form: a body of type B in, a reply of type T out.
B = TypeVar("B")
T = TypeVar("T")


class DataPlane:
    """Answers protocol calls for one repository."""

    def __init__(
        self,
        repo: repository.Repository,
        *,
        batchers: dict[str, batching.Batcher] | None = None,
        offload_bytes: int = OFFLOAD_BYTES,
        offload_threads: int = OFFLOAD_THREADS,
    ) -> None:
        self.repo = repo
        self.batchers = batchers or {}
        self.draining = False
        self.offload_bytes = offload_bytes
        self.offload_threads = offload_threads
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    # -- health and metadata ---------------------------------------------------------

    def live(self) -> Reply:
        """The process answers: liveness is true even while loading or draining."""
        return b'{"live":true}', self.repo.default

    def ready(self) -> Reply:
        """Ready when every version loaded and the server is not draining."""
        if self.draining:
            raise errors.NotReady("server is shutting down")
        if not self.repo.ready():
            raise errors.NotReady(self._not_ready_reason())
        return b'{"ready":true}', self.repo.default

    def _not_ready_reason(self, version: str | None = None) -> str:
        failed = {v: e for v, e in self.repo.errors.items() if version in (None, v)}
        if failed:
            return "model failed to load: " + "; ".join(f"{v}: {e}" for v, e in failed.items())
        return "model is loading"

    def server_metadata(self) -> Reply:
        """V2 ``GET /v2``."""
        body = {
            "name": "kubeserve",
            "version": kubeserve.__version__,
            "extensions": list(EXTENSIONS),
        }
        return dumps(body), self.repo.default

    def labels(self, name: str, version: str | None) -> tuple[str, str]:
        """Return the model and version labels of a request's metrics.

        Only names that exist: hostile names must not grow the series count.
        """
        repo = self.repo
        if name != repo.name:
            return "", ""
        v = repo.default if version is None else version
        return name, v if v in repo.versions else ""

    def v1_models(self) -> Reply:
        """V1 ``GET /v1/models``: the names this server serves."""
        return dumps({"models": [self.repo.name]}), self.repo.default

    def v1_model(self, name: str, version: str | None) -> Reply:
        """V1 ``GET /v1/models/{m}``: readiness, 503 while not ready."""
        m = self.repo.get(name, version)
        if not m.ready:
            raise errors.NotReady(self._not_ready_reason(m.version))
        return dumps({"name": m.name, "ready": True}), m.version

    def model_metadata(self, name: str, version: str | None) -> Reply:
        """V2 model metadata; a model that is not loaded has no tensor description yet."""
        body, served = self.metadata(name, version)
        return dumps(body), served

    def metadata(self, name: str, version: str | None) -> tuple[dict[str, Any], str]:
        """Return V2 model metadata as data, and the version it describes (REST and gRPC)."""
        m = self.repo.get(name, version)
        if not m.ready:
            raise errors.NotReady(self._not_ready_reason(m.version))
        body = m.metadata()
        if version is None:
            body["versions"] = sorted(self.repo.versions, key=repository.version_key)
        return body, m.version

    def model_ready(self, name: str, version: str | None) -> Reply:
        """V2 model readiness: 200 when ready, 503 (with the reason) when not."""
        m = self.repo.get(name, version)
        if not m.ready or self.draining:
            if self.draining:
                raise errors.NotReady("server is shutting down")
            raise errors.NotReady(self._not_ready_reason(m.version))
        return dumps({"name": m.name, "ready": True}), m.version

    # -- feedback --------------------------------------------------------------------

    def feedback(
        self, name: str, version: str | None, body: bytes
    ) -> tuple[feedback.Feedback, str]:
        """V2 ``/feedback``: check a client's outcome or value; return it and the version.

        A known model version takes feedback whether or not it is ready: the feedback is
        about a request it served before (it may be reloading, or draining, now).
        """
        m = self.repo.get(name, version)
        return feedback.parse(body), m.version

    # -- inference -------------------------------------------------------------------

    def v1_predict(self, name: str, version: str | None, body: bytes) -> Reply | Awaitable[Reply]:
        """V1 ``:predict``: ``{"instances": [...]}`` -> ``{"predictions": [...]}``."""
        return self._infer(name, version, body, self._v1_request, self._v1_reply)

    def v2_infer(
        self,
        name: str,
        version: str | None,
        body: bytes,
        header_length: bytes | None = None,
    ) -> InferReply | Awaitable[InferReply]:
        """V2 ``/infer``: typed tensors in, typed tensors out, ``id`` echoed.

        ``header_length`` is the ``Inference-Header-Content-Length`` header as sent, when it
        was: the body is then a JSON header of that many bytes and binary tensor data.
        """

        def parse(m: model.Model, data: bytes, large: bool) -> Request:
            return self._v2_request(m, data, large, header_length)

        return self.infer(name, version, body, len(body), parse, self._v2_reply)

    def _infer(
        self, name: str, version: str | None, body: bytes, parse: Parse, answer: Answer
    ) -> Reply | Awaitable[Reply]:
        return self.infer(name, version, body, len(body), parse, answer)

    def infer(
        self,
        name: str,
        version: str | None,
        body: B,
        size: int,
        parse: Callable[[model.Model, B, bool], Request],
        answer: Callable[[model.Model, dict[str, np.ndarray], Request], T],
    ) -> T | Awaitable[T]:
        """Validate, run and answer one request, whatever its wire form (JSON, binary, gRPC).

        ``parse(model, body, large)`` turns ``body`` into a checked ``Request``; ``answer``
        encodes the outputs. Both run in the worker pool when ``size`` (the body's bytes) is
        over ``offload_bytes`` or the model takes images, with ``large`` True (parse in
        steps); else inline.
        """
        m = self._ready_model(name, version)
        # A model that takes images is sent files to decode (2 ms for a small JPEG, 20 ms
        # and more for a photo), whatever the body's size: the loop should not pay for that.
        if size > self.offload_bytes or m.images:
            return self._offloaded(m, body, parse, answer)
        request = parse(m, body, False)
        batcher = self.batchers.get(m.version)
        if batcher is None:
            return answer(m, self._predict(m, request), request)
        return self._batched(m, batcher.predict(request.inputs), request, answer)

    async def _batched(
        self,
        m: model.Model,
        pending: Awaitable[dict[str, np.ndarray]],
        request: Request,
        answer: Callable[[model.Model, dict[str, np.ndarray], Request], T],
    ) -> T:
        return answer(m, await self._await(pending), request)

    async def _offloaded(
        self,
        m: model.Model,
        body: B,
        parse: Callable[[model.Model, B, bool], Request],
        answer: Callable[[model.Model, dict[str, np.ndarray], Request], T],
    ) -> T:
        """Answer a large request in the worker pool, leaving the event loop free.

        The body goes to the parse in a box that the parse empties: once its arrays are
        built nothing holds it, so it is freed before the model runs (a 16 MiB body is
        16 MiB less at the model's peak).
        """
        loop = asyncio.get_running_loop()
        workers = self._workers()
        batcher = self.batchers.get(m.version)
        box = [body]
        del body
        if batcher is None:
            return await loop.run_in_executor(workers, self._answer_all, m, box, parse, answer)
        request = await loop.run_in_executor(workers, _parse_boxed, m, box, parse)
        outputs = await self._await(batcher.predict(request.inputs))
        request.inputs.clear()  # as in _answer_all
        return await loop.run_in_executor(workers, answer, m, outputs, request)

    def _answer_all(
        self,
        m: model.Model,
        box: list[B],
        parse: Callable[[model.Model, B, bool], Request],
        answer: Callable[[model.Model, dict[str, np.ndarray], Request], T],
    ) -> T:
        request = _parse_boxed(m, box, parse)
        outputs = self._predict(m, request)
        # The reply is encoded next; a large request's input arrays (FP64 from one-digit
        # numbers: 4x the body) need not be held beside it.
        request.inputs.clear()
        return answer(m, outputs, request)

    def _workers(self) -> concurrent.futures.ThreadPoolExecutor:
        # Made on the first large request: most servers never see one.
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.offload_threads, thread_name_prefix="large-request"
            )
        return self._pool

    def close(self) -> None:
        """Let the worker pool's threads finish their requests and end."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def _ready_model(self, name: str, version: str | None) -> model.Model:
        m = self.repo.get(name, version)
        if not m.ready:
            raise errors.NotReady(self._not_ready_reason(m.version))
        return m

    def _predict(self, m: model.Model, request: Request) -> dict[str, np.ndarray]:
        try:
            return row_slices.predict(m, request.inputs, request.outputs)
        except errors.ServerError:
            raise  # a runtime's BadRequest: the model refused these values
        except Exception as exc:
            log.exception("model %s version %s failed", m.name, m.version)
            raise errors.ServerError(f"inference failed: {exc}") from None

    async def _await(self, pending: Awaitable[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        try:
            return await pending
        except errors.ServerError:
            raise
        except Exception as exc:
            log.error("batched inference failed: %s", exc)
            raise errors.ServerError(f"inference failed: {exc}") from None

    # -- V1 --------------------------------------------------------------------------

    def _v1_request(self, m: model.Model, body: bytes, large: bool) -> Request:
        literals = tensors.has_literals(body)
        if not large:
            return self._v1_fields(m, _load_json(body), literals, False, 0)
        # Converted in slices, its values are let go of as they go: b64 ones must be found first.
        binary = v1_forms.may_hold_binary(body)
        with _large_document(body, _v1_layout) as payload:
            return self._v1_fields(m, payload, literals, binary, SLICE_VALUES)

    def _v1_fields(
        self, m: model.Model, payload: dict[str, Any], literals: bool, binary: bool, chunk: int
    ) -> Request:
        inputs, form = v1_forms.parse(m, payload, literals=literals, binary=binary, chunk=chunk)
        instances = next(iter(inputs.values())).shape[0]
        return V1Request(inputs, v1_forms.answer_outputs(m), form=form, instances=instances)

    def _v1_reply(self, m: model.Model, outputs: dict[str, np.ndarray], request: Request) -> Reply:
        assert isinstance(request, V1Request)  # V1 replies answer V1 requests
        body = v1_forms.answer(outputs, request.outputs, request.form, request.instances)
        return dumps(body), m.version

    # -- V2 --------------------------------------------------------------------------

    def _v2_request(
        self, m: model.Model, body: bytes, large: bool, header_length: bytes | None
    ) -> Request:
        text, binary = _split_binary(body, header_length)
        literals = tensors.has_literals(text)
        if not large:
            return self._v2_fields(m, _load_json(text), literals, 0, binary)
        with _large_document(text, _v2_layout) as payload:
            return self._v2_fields(m, payload, literals, SLICE_VALUES, binary)

    def _v2_fields(
        self,
        m: model.Model,
        payload: dict[str, Any],
        literals: bool,
        chunk: int,
        binary: memoryview,
    ) -> Request:
        request_id = payload.get("id")
        if request_id is not None and type(request_id) is not str:
            raise errors.BadRequest(f"'id' must be a string, got {errors.brief(request_id)}")
        _parameters("", payload)
        every_output = _flag("parameters: ", payload.get("parameters"), "binary_data_output")
        return v2_request(
            m,
            _json_inputs(payload.get("inputs"), binary),
            _json_outputs(payload.get("outputs")),
            request_id,
            binary_outputs=bool(every_output),
            literals=literals,
            chunk=chunk,
        )

    def _v2_reply(
        self, m: model.Model, outputs: dict[str, np.ndarray], request: Request
    ) -> InferReply:
        body: dict[str, Any] = {"model_name": m.name, "model_version": m.version}
        if request.id is not None:
            body["id"] = request.id
        described: list[dict[str, Any]] = []
        tails: list[raw_tensors.Buffer] = []
        for name in request.outputs:
            array = np.asarray(outputs[name])
            if name not in request.binary:
                described.append(tensors.encode(name, array))
                continue
            datatype, raw = raw_tensors.encode(array)
            described.append(
                {
                    "name": name,
                    "datatype": datatype,
                    "shape": list(array.shape),
                    "parameters": {"binary_data_size": len(raw)},
                }
            )
            tails.append(raw)
        body["outputs"] = described
        header = dumps(body)
        if not tails:
            return header, m.version
        return Binary(b"".join([header, *tails]), m.version, len(header))


# -- V2, whatever the wire form --------------------------------------------------------
#
# JSON, binary REST and gRPC requests each become a list of ``TensorIn`` (and of
# ``TensorOut``), and ``v2_request`` checks them against the model the same way.


@dataclasses.dataclass(frozen=True, slots=True)
class TensorIn:
    """One input tensor as a client sent it, nothing checked yet.

    ``values`` is either a JSON-like array, flat or nested (JSON ``data``, or gRPC's typed
    contents as a list), or the raw little-endian bytes of ``raw_tensors`` (binary REST,
    gRPC's ``raw_input_contents``).
    """

    name: Any
    datatype: Any
    shape: Any
    values: Any


@dataclasses.dataclass(frozen=True, slots=True)
class TensorOut:
    """An output a client asked for; ``binary`` None leaves it to the request's default."""

    name: str
    binary: bool | None = None


def v2_request(
    m: model.Model,
    inputs: list[TensorIn],
    outputs: list[TensorOut] | None,
    request_id: str | None,
    *,
    binary_outputs: bool = False,
    literals: bool = True,
    chunk: int = 0,
) -> Request:
    """Check a V2 request against the model and build its arrays, or raise BadRequest.

    ``outputs`` None asks for every output; ``binary_outputs`` is the default of the
    outputs' ``binary``. ``literals`` and ``chunk`` are ``tensors.decode``'s, for JSON values.
    """
    arrays = _v2_arrays(m, inputs, literals, chunk)
    names = [s.name for s in m.outputs]
    if outputs is None:
        return Request(arrays, names, request_id, frozenset(names if binary_outputs else ()))
    for o in outputs:
        if o.name not in names:
            raise errors.BadRequest(
                f"unknown output {errors.brief(o.name)}; the model's outputs are "
                + ", ".join(names)
            )
    binary = frozenset(
        o.name for o in outputs if (binary_outputs if o.binary is None else o.binary)
    )
    return Request(arrays, [o.name for o in outputs], request_id, binary)


def _v2_arrays(
    m: model.Model, inputs: list[TensorIn], literals: bool, chunk: int
) -> dict[str, np.ndarray]:
    if not inputs:
        raise errors.BadRequest("'inputs' must hold at least one tensor")
    specs = {s.name: s for s in m.inputs}
    out: dict[str, np.ndarray] = {}
    for tensor in inputs:
        name = tensor.name
        if type(name) is not str:
            raise errors.BadRequest(f"an input's 'name' must be a string, got {errors.brief(name)}")
        spec = specs.get(name)
        if spec is None and len(specs) == 1 and len(inputs) == 1:
            # KServe's servers ignore the name of a lone input and its docs' examples
            # say "input-0"; a one-input model has no ambiguity to guard against.
            spec = m.inputs[0]
            name = spec.name
        if spec is None:
            raise errors.BadRequest(
                f"unknown input {errors.brief(name)}; the model's inputs are " + ", ".join(specs)
            )
        if name in out:
            raise errors.BadRequest(f"input '{name}' appears twice")
        datatype = tensor.datatype
        if type(datatype) is not str:
            raise errors.BadRequest(
                f"input '{name}': 'datatype' must be a string, got {errors.brief(datatype)}"
            )
        image = m.images.get(name)
        if image is not None and datatype == "BYTES":
            array = _image_array(name, image, tensor)
            _check_shape(spec, array.shape)
            out[name] = array
            continue
        if datatype in tensors.DATATYPES and datatype not in spec.accepted():
            also = " (or BYTES: encoded images)" if image is not None else ""
            raise errors.BadRequest(
                f"input '{name}': datatype {datatype} does not match the model's "
                f"{spec.datatype}{also}"
            )
        # Values still in the body are refused a shape the model cannot take before their
        # array is made (FP64 from one-digit numbers is 4x the body).
        fits = (
            functools.partial(_check_shape, spec)
            if isinstance(tensor.values, numeric_json.Span)
            else None
        )
        array = _input_array(name, datatype, tensor, literals, chunk, fits)
        _check_shape(spec, array.shape)
        out[name] = array
    absent = [n for n in specs if n not in out]
    if absent:
        raise errors.BadRequest("missing inputs: " + ", ".join(absent))
    rows = {a.shape[0] for a in out.values() if a.ndim}
    if len(rows) > 1:
        raise errors.BadRequest(f"inputs disagree on the batch size: {sorted(rows)}")
    return out


def _input_array(
    name: str,
    datatype: str,
    tensor: TensorIn,
    literals: bool,
    chunk: int,
    fits: Callable[[tuple[int, ...]], None] | None,
) -> np.ndarray:
    values = tensor.values
    if isinstance(values, bytes | bytearray | memoryview):
        tensors.check_datatype(name, datatype)
        dims = tensors.check_shape(name, tensor.shape)
        return raw_tensors.decode(f"input '{name}'", datatype, dims, values)
    return tensors.decode(
        name,
        datatype,
        tensor.shape,
        values,
        literals=literals,
        chunk=chunk,
        consume=chunk > 0,  # a large request's document is freed after this anyway
        fits=fits,
    )


def _image_array(name: str, image: images.ImageInput, tensor: TensorIn) -> np.ndarray:
    """Decode a ``BYTES`` tensor of shape ``[N]`` whose elements are encoded images.

    Raw elements (binary REST, gRPC ``raw_input_contents``) and gRPC ``bytes_contents``
    are the files' bytes; JSON strings cannot hold bytes, so there they are base64.
    """
    where = f"input '{name}'"
    dims = tensors.check_shape(name, tensor.shape)
    if len(dims) != 1:
        raise errors.BadRequest(
            f"{where}: encoded images are a BYTES tensor of shape [N], one file per row; "
            f"got shape {list(dims)}"
        )
    values = tensor.values
    if isinstance(values, bytes | bytearray | memoryview):
        files = raw_tensors.byte_elements(where, dims, values)
    else:
        if isinstance(values, numeric_json.Span):  # numbers: refused with their values shown
            values = chunked_json.materialize(values)
        files = _image_files(where, values, dims[0])
    try:
        return images.decode_batch(files, image)
    except images.ImageError as exc:
        raise images.ImageError(f"{where}: {exc}") from None


def _image_files(where: str, values: Any, count: int) -> list[bytes]:
    if type(values) is not list:
        raise errors.BadRequest(f"{where}: 'data' must be an array, got {errors.brief(values)}")
    if len(values) != count:
        raise errors.BadRequest(
            f"{where}: shape [{count}] needs {count} images, got {len(values)} values"
        )
    files = []
    for i, value in enumerate(values):
        if type(value) is bytes:  # gRPC bytes_contents
            files.append(value)
        elif type(value) is str:
            try:
                files.append(base64.b64decode(value, validate=True))
            except (binascii.Error, ValueError):  # ValueError: a non-ASCII character
                raise errors.BadRequest(
                    f"{where}: element {i} is not base64; in JSON an image's bytes are "
                    "sent base64-encoded"
                ) from None
        else:
            raise errors.BadRequest(
                f"{where}: element {i} must be a base64 string of an image file, got "
                f"{errors.brief(value)}"
            )
    return files


# -- V2 over JSON, with or without binary tensor data ---------------------------------

_NO_BYTES = memoryview(b"")
HEADER_LENGTH = "Inference-Header-Content-Length"


def _parse_boxed(
    m: model.Model, box: list[B], parse: Callable[[model.Model, B, bool], Request]
) -> Request:
    """Parse the large body in ``box``, taking it out: the caller keeps no reference."""
    return parse(m, box.pop(), True)


def _split_binary(body: bytes, header_length: bytes | None) -> tuple[bytes, memoryview]:
    """Split a body into its JSON text and the binary tensor data after it (a view)."""
    if header_length is None:
        return body, _NO_BYTES
    text = header_length.strip()
    shown = errors.brief(header_length.decode("latin-1"))
    if not text.isdigit():  # ASCII digits only: no sign, no spaces inside
        raise errors.BadRequest(f"{HEADER_LENGTH} must be a non-negative integer, got {shown}")
    # More digits than any body can have would only cost int() time (and past 4300, fail).
    if len(text) > 20 or int(text) > len(body):
        raise errors.BadRequest(
            f"{HEADER_LENGTH} {shown} is larger than the body ({len(body)} bytes)"
        )
    length = int(text)
    if length == len(body):
        return body, _NO_BYTES
    view = memoryview(body)
    return bytes(view[:length]), view[length:]


def _json_inputs(raw: Any, binary: memoryview) -> list[TensorIn]:
    """Return a JSON request's inputs; those with ``binary_data_size`` take their bytes in turn."""
    if type(raw) is not list or not raw:
        raise errors.BadRequest("'inputs' must be a non-empty array of tensors")
    out: list[TensorIn] = []
    at = 0
    for item in raw:
        if type(item) is not dict:
            raise errors.BadRequest(
                "each input must be an object with name, shape, datatype and data"
            )
        where = f"input {errors.brief(item.get('name', '?'))}"
        _parameters(f"{where}: ", item)
        size = _binary_size(where, item.get("parameters"))
        fields = ("name", "shape", "datatype") if size is not None else _INPUT_FIELDS
        missing = [f for f in fields if f not in item]
        if missing:
            raise errors.BadRequest(f"{where} lacks " + ", ".join(f"'{f}'" for f in missing))
        if size is None:
            values = item["data"]
        else:
            if "data" in item:
                raise errors.BadRequest(
                    f"{where}: has both 'data' and binary_data_size; send its values once"
                )
            left = len(binary) - at
            if size > left:
                hint = "" if binary else f" (no {HEADER_LENGTH} header, or it covers the body)"
                raise errors.BadRequest(
                    f"{where}: binary_data_size {size} goes past the end of the body: "
                    f"{left} bytes of binary data are left for it{hint}"
                )
            values = binary[at : at + size]
            at += size
        out.append(TensorIn(item["name"], item["datatype"], item["shape"], values))
    if at != len(binary):
        raise errors.BadRequest(
            f"{len(binary) - at} bytes of binary data follow the JSON that no input's "
            "binary_data_size claims"
        )
    return out


_INPUT_FIELDS = ("name", "shape", "datatype", "data")


def _json_outputs(raw: Any) -> list[TensorOut] | None:
    if raw is None:
        return None
    if (
        type(raw) is not list
        or not raw
        or not all(type(o) is dict and type(o.get("name")) is str for o in raw)
    ):
        raise errors.BadRequest(
            "'outputs' must be a non-empty array of objects with a string 'name' "
            "(leave it out for every output)"
        )
    wanted = []
    for o in raw:
        where = f"output {errors.brief(o['name'])}: "
        _parameters(where, o)
        wanted.append(TensorOut(o["name"], _flag(where, o.get("parameters"), "binary_data")))
    return wanted


def _binary_size(where: str, params: dict[str, Any] | None) -> int | None:
    size = None if params is None else params.get("binary_data_size")
    if size is not None and (type(size) is not int or size < 0):
        raise errors.BadRequest(
            f"{where}: binary_data_size must be a non-negative integer, got {errors.brief(size)}"
        )
    return size


def _flag(where: str, params: dict[str, Any] | None, key: str) -> bool | None:
    value = None if params is None else params.get(key)
    if value is not None and type(value) is not bool:
        raise errors.BadRequest(f"{where}'{key}' must be true or false, got {errors.brief(value)}")
    return value
