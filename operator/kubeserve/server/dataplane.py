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
import concurrent.futures
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import numpy as np
import orjson

import kubeserve
from kubeserve.server import batching, chunked_json, errors, model, repository, tensors, v1_forms

log = logging.getLogger("kubeserve.server")

Reply = tuple[bytes, str]
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_NO_BINARY = "the binary tensor extension is not supported; send JSON data"

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
def _large_document(body: bytes) -> Iterator[dict[str, Any]]:
    """Parse a large body in steps (``chunked_json``); free it in steps when done."""
    try:
        with chunked_json.document(body) as payload:
            yield _object(payload)
    except chunked_json.Malformed as exc:
        raise errors.BadRequest(f"malformed JSON: {exc}") from None


def _object(payload: Any) -> dict[str, Any]:
    if type(payload) is not dict:
        raise errors.BadRequest("request body must be a JSON object")
    return payload


def _check_shape(spec: model.TensorSpec, array: np.ndarray) -> None:
    want = spec.shape
    if array.ndim != len(want) or any(
        w >= 0 and w != g for w, g in zip(want, array.shape, strict=True)
    ):
        raise errors.BadRequest(
            f"input '{spec.name}': shape {list(array.shape)} does not match the model's "
            f"{list(want)} (-1 is any size)"
        )


def _v1_array(
    spec: model.TensorSpec, rows: list[Any], literals: bool, chunk: int = 0
) -> np.ndarray:
    # The row form's conversion of a one-input model's instances, which
    # tests/server/test_server_fast_path.py checks directly.
    return v1_forms.input_array("instances", spec, rows, literals=literals, chunk=chunk)


def _parameters(where: str, container: dict[str, Any]) -> None:
    params = container.get("parameters")
    if params is not None and type(params) is not dict:
        raise errors.BadRequest(
            f"{where}'parameters' must be an object, got {errors.brief(params)}"
        )


@dataclasses.dataclass(slots=True)
class Request:
    """An inference request, validated: the model's inputs, the outputs wanted, its ``id``."""

    inputs: dict[str, np.ndarray]
    outputs: list[str]
    id: str | None = None


@dataclasses.dataclass(slots=True)
class V1Request(Request):
    """A V1 request remembers its form (row or columnar): the answer takes the same."""

    form: v1_forms.Form = v1_forms.Form.ROW


Parse = Callable[[model.Model, bytes, bool], Request]
Answer = Callable[[model.Model, dict[str, np.ndarray], Request], Reply]


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
        body = {"name": "kubeserve", "version": kubeserve.__version__, "extensions": []}
        return dumps(body), self.repo.default

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
        m = self.repo.get(name, version)
        if not m.ready:
            raise errors.NotReady(self._not_ready_reason(m.version))
        body = m.metadata()
        if version is None:
            body["versions"] = sorted(self.repo.versions, key=repository.version_key)
        return dumps(body), m.version

    def model_ready(self, name: str, version: str | None) -> Reply:
        """V2 model readiness: 200 when ready, 503 (with the reason) when not."""
        m = self.repo.get(name, version)
        if not m.ready or self.draining:
            if self.draining:
                raise errors.NotReady("server is shutting down")
            raise errors.NotReady(self._not_ready_reason(m.version))
        return dumps({"name": m.name, "ready": True}), m.version

    # -- inference -------------------------------------------------------------------

    def v1_predict(self, name: str, version: str | None, body: bytes) -> Reply | Awaitable[Reply]:
        """V1 ``:predict``: ``{"instances": [...]}`` -> ``{"predictions": [...]}``."""
        return self._infer(name, version, body, self._v1_request, self._v1_reply)

    def v2_infer(self, name: str, version: str | None, body: bytes) -> Reply | Awaitable[Reply]:
        """V2 ``/infer``: typed tensors in, typed tensors out, ``id`` echoed."""
        return self._infer(name, version, body, self._v2_request, self._v2_reply)

    def _infer(
        self, name: str, version: str | None, body: bytes, parse: Parse, answer: Answer
    ) -> Reply | Awaitable[Reply]:
        m = self._ready_model(name, version)
        if len(body) > self.offload_bytes:
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
        answer: Answer,
    ) -> Reply:
        return answer(m, await self._await(pending), request)

    async def _offloaded(self, m: model.Model, body: bytes, parse: Parse, answer: Answer) -> Reply:
        """Answer a large request in the worker pool, leaving the event loop free."""
        loop = asyncio.get_running_loop()
        workers = self._workers()
        batcher = self.batchers.get(m.version)
        if batcher is None:
            return await loop.run_in_executor(workers, self._answer_all, m, body, parse, answer)
        request = await loop.run_in_executor(workers, parse, m, body, True)
        outputs = await self._await(batcher.predict(request.inputs))
        return await loop.run_in_executor(workers, answer, m, outputs, request)

    def _answer_all(self, m: model.Model, body: bytes, parse: Parse, answer: Answer) -> Reply:
        request = parse(m, body, True)
        return answer(m, self._predict(m, request), request)

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
            return m.predict(request.inputs, request.outputs)
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
        with _large_document(body) as payload:
            return self._v1_fields(m, payload, literals, binary, SLICE_VALUES)

    def _v1_fields(
        self, m: model.Model, payload: dict[str, Any], literals: bool, binary: bool, chunk: int
    ) -> Request:
        inputs, form = v1_forms.parse(m, payload, literals=literals, binary=binary, chunk=chunk)
        return V1Request(inputs, v1_forms.answer_outputs(m), form=form)

    def _v1_reply(self, m: model.Model, outputs: dict[str, np.ndarray], request: Request) -> Reply:
        assert isinstance(request, V1Request)  # V1 replies answer V1 requests
        instances = next(iter(request.inputs.values())).shape[0]
        body = v1_forms.answer(outputs, request.outputs, request.form, instances)
        return dumps(body), m.version

    # -- V2 --------------------------------------------------------------------------

    def _v2_request(self, m: model.Model, body: bytes, large: bool) -> Request:
        if not large:
            return self._v2_fields(m, _load_json(body), tensors.has_literals(body), 0)
        with _large_document(body) as payload:
            return self._v2_fields(m, payload, tensors.has_literals(body), SLICE_VALUES)

    def _v2_fields(
        self, m: model.Model, payload: dict[str, Any], literals: bool, chunk: int
    ) -> Request:
        request_id = payload.get("id")
        if request_id is not None and type(request_id) is not str:
            raise errors.BadRequest(f"'id' must be a string, got {errors.brief(request_id)}")
        _parameters("", payload)
        inputs = self._v2_inputs(m, payload.get("inputs"), literals, chunk)
        return Request(inputs, self._v2_outputs(m, payload.get("outputs")), request_id)

    def _v2_inputs(
        self, m: model.Model, raw: Any, literals: bool, chunk: int
    ) -> dict[str, np.ndarray]:
        if type(raw) is not list or not raw:
            raise errors.BadRequest("'inputs' must be a non-empty array of tensors")
        specs = {s.name: s for s in m.inputs}
        out: dict[str, np.ndarray] = {}
        for item in raw:
            if type(item) is not dict:
                raise errors.BadRequest(
                    "each input must be an object with name, shape, datatype and data"
                )
            missing = [f for f in ("name", "shape", "datatype", "data") if f not in item]
            if missing:
                raise errors.BadRequest(
                    f"input {errors.brief(item.get('name', '?'))} lacks "
                    + ", ".join(f"'{f}'" for f in missing)
                )
            name = item["name"]
            if type(name) is not str:
                raise errors.BadRequest(
                    f"an input's 'name' must be a string, got {errors.brief(name)}"
                )
            spec = specs.get(name)
            if spec is None and len(specs) == 1 and len(raw) == 1:
                # KServe's servers ignore the name of a lone input and its docs' examples
                # say "input-0"; a one-input model has no ambiguity to guard against.
                spec = m.inputs[0]
                name = spec.name
            if spec is None:
                raise errors.BadRequest(
                    f"unknown input {errors.brief(name)}; the model's inputs are "
                    + ", ".join(specs)
                )
            if name in out:
                raise errors.BadRequest(f"input '{name}' appears twice")
            _parameters(f"input '{name}': ", item)
            params = item.get("parameters")
            if params is not None and params.get("binary_data_size") is not None:
                raise errors.BadRequest(_NO_BINARY)
            datatype = item["datatype"]
            if type(datatype) is not str:
                raise errors.BadRequest(
                    f"input '{name}': 'datatype' must be a string, got {errors.brief(datatype)}"
                )
            if datatype in tensors.DATATYPES and datatype not in spec.accepted():
                raise errors.BadRequest(
                    f"input '{name}': datatype {datatype} does not match the model's "
                    f"{spec.datatype}"
                )
            array = tensors.decode(
                name,
                datatype,
                item["shape"],
                item["data"],
                literals=literals,
                chunk=chunk,
                consume=chunk > 0,  # a large request's document is freed after this anyway
            )
            _check_shape(spec, array)
            out[name] = array
        absent = [n for n in specs if n not in out]
        if absent:
            raise errors.BadRequest("missing inputs: " + ", ".join(absent))
        rows = {a.shape[0] for a in out.values() if a.ndim}
        if len(rows) > 1:
            raise errors.BadRequest(f"inputs disagree on the batch size: {sorted(rows)}")
        return out

    def _v2_outputs(self, m: model.Model, raw: Any) -> list[str]:
        names = [s.name for s in m.outputs]
        if raw is None:
            return names
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
            if o["name"] not in names:
                raise errors.BadRequest(
                    f"unknown output {errors.brief(o['name'])}; the model's outputs are "
                    + ", ".join(names)
                )
            _parameters(f"output '{o['name']}': ", o)
            params = o.get("parameters")
            if params is not None and params.get("binary_data"):
                raise errors.BadRequest(_NO_BINARY)
            wanted.append(o["name"])
        return wanted

    def _v2_reply(self, m: model.Model, outputs: dict[str, np.ndarray], request: Request) -> Reply:
        body: dict[str, Any] = {"model_name": m.name, "model_version": m.version}
        if request.id is not None:
            body["id"] = request.id
        body["outputs"] = [tensors.encode(n, np.asarray(outputs[n])) for n in request.outputs]
        return dumps(body), m.version
