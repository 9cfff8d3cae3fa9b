"""The protocol logic of KServe V1 and Open Inference Protocol V2, free of HTTP.

Each call takes the parsed route parameters and the raw body, validates everything a client
can get wrong, runs the model and returns ``(json_body, version_that_served)``. Inference
calls return that pair directly, or an awaitable of it when dynamic batching is on, so the
unbatched path never pays for a coroutine. Errors are raised as ``errors.ServerError``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

import numpy as np
import orjson

import kubeserve
from kubeserve.server import batching, errors, model, repository, tensors

log = logging.getLogger("kubeserve.server")

Reply = tuple[bytes, str]
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_NO_BINARY = "the binary tensor extension is not supported; send JSON data"


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
    if not isinstance(payload, dict):
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


def _v1_array(spec: model.TensorSpec, rows: list[Any], literals: bool) -> np.ndarray:
    if not literals:
        fast = tensors.fast_floats(rows, tensors.DATATYPES[spec.datatype])
        if fast is not None:
            _check_shape(spec, fast)
            return fast
    try:
        raw = np.asarray(rows)
    except ValueError as exc:
        raise errors.BadRequest(f"instances are ragged: {exc}") from None
    array = tensors.convert("instances", spec.datatype, raw, rows, literals=literals)
    _check_shape(spec, array)
    return array


class DataPlane:
    """Answers protocol calls for one repository."""

    def __init__(
        self,
        repo: repository.Repository,
        *,
        batchers: dict[str, batching.Batcher] | None = None,
    ) -> None:
        self.repo = repo
        self.batchers = batchers or {}
        self.draining = False

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

    def _ready_model(self, name: str, version: str | None) -> model.Model:
        m = self.repo.get(name, version)
        if not m.ready:
            raise errors.NotReady(self._not_ready_reason(m.version))
        return m

    def _compute(
        self, m: model.Model, inputs: dict[str, np.ndarray], outputs: list[str]
    ) -> dict[str, np.ndarray] | Awaitable[dict[str, np.ndarray]]:
        batcher = self.batchers.get(m.version)
        if batcher is not None:
            # A batch serves callers that want different outputs: compute them all.
            return batcher.predict(inputs)
        try:
            return m.predict(inputs, outputs)
        except Exception as exc:
            log.exception("model %s version %s failed", m.name, m.version)
            raise errors.ServerError(f"inference failed: {exc}") from None

    async def _await(self, pending: Awaitable[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        try:
            return await pending
        except Exception as exc:
            log.error("batched inference failed: %s", exc)
            raise errors.ServerError(f"inference failed: {exc}") from None

    def v1_predict(self, name: str, version: str | None, body: bytes) -> Reply | Awaitable[Reply]:
        """V1 ``:predict``: ``{"instances": [...]}`` -> ``{"predictions": [...]}``."""
        m = self._ready_model(name, version)
        payload = _load_json(body)
        rows = payload.get("instances", payload.get("inputs"))
        if rows is None:
            raise errors.BadRequest("expected 'instances' (or 'inputs') in the request body")
        if not isinstance(rows, list) or not rows:
            raise errors.BadRequest("'instances' must be a non-empty JSON array")
        inputs = self._v1_inputs(m, rows, tensors.has_literals(body))
        outputs = self._compute(m, inputs, [m.outputs[0].name])
        if isinstance(outputs, dict):
            return self._v1_reply(m, outputs)
        return self._v1_later(m, outputs)

    async def _v1_later(self, m: model.Model, pending: Awaitable[dict[str, np.ndarray]]) -> Reply:
        return self._v1_reply(m, await self._await(pending))

    def _v1_inputs(self, m: model.Model, rows: list[Any], literals: bool) -> dict[str, np.ndarray]:
        if len(m.inputs) == 1:
            spec = m.inputs[0]
            return {spec.name: _v1_array(spec, rows, literals)}
        # Several inputs: each instance is an object keyed by input name.
        if not all(isinstance(r, dict) for r in rows):
            names = ", ".join(s.name for s in m.inputs)
            raise errors.BadRequest(
                f"this model has several inputs ({names}): each instance "
                "must be an object keyed by input name"
            )
        out = {}
        for spec in m.inputs:
            try:
                column = [r[spec.name] for r in rows]
            except KeyError:
                raise errors.BadRequest(f"an instance lacks input '{spec.name}'") from None
            out[spec.name] = _v1_array(spec, column, literals)
        return out

    def _v1_reply(self, m: model.Model, outputs: dict[str, np.ndarray]) -> Reply:
        first = outputs[m.outputs[0].name]
        predictions: Any = first
        if first.dtype.kind in "OSU":  # strings: orjson cannot serialise object arrays
            predictions = tensors.encode("", first)["data"]
        return dumps({"predictions": predictions}), m.version

    def v2_infer(self, name: str, version: str | None, body: bytes) -> Reply | Awaitable[Reply]:
        """V2 ``/infer``: typed tensors in, typed tensors out, ``id`` echoed."""
        m = self._ready_model(name, version)
        payload = _load_json(body)
        request_id = payload.get("id")
        if request_id is not None and not isinstance(request_id, str):
            raise errors.BadRequest("'id' must be a string")
        inputs = self._v2_inputs(m, payload.get("inputs"), tensors.has_literals(body))
        wanted = self._v2_outputs(m, payload.get("outputs"))
        outputs = self._compute(m, inputs, wanted)
        if isinstance(outputs, dict):
            return self._v2_reply(m, outputs, wanted, request_id)
        return self._v2_later(m, outputs, wanted, request_id)

    async def _v2_later(
        self,
        m: model.Model,
        pending: Awaitable[dict[str, np.ndarray]],
        wanted: list[str],
        request_id: str | None,
    ) -> Reply:
        return self._v2_reply(m, await self._await(pending), wanted, request_id)

    def _v2_inputs(self, m: model.Model, raw: Any, literals: bool) -> dict[str, np.ndarray]:
        if not isinstance(raw, list) or not raw:
            raise errors.BadRequest("'inputs' must be a non-empty array of tensors")
        specs = {s.name: s for s in m.inputs}
        out: dict[str, np.ndarray] = {}
        for item in raw:
            if not isinstance(item, dict):
                raise errors.BadRequest(
                    "each input must be an object with name, shape, datatype and data"
                )
            missing = [f for f in ("name", "shape", "datatype", "data") if f not in item]
            if missing:
                raise errors.BadRequest(
                    f"input {item.get('name', '?')!r} lacks " + ", ".join(f"'{f}'" for f in missing)
                )
            name = item["name"]
            spec = specs.get(name)
            if spec is None and len(specs) == 1 and len(raw) == 1 and isinstance(name, str):
                # KServe's servers ignore the name of a lone input and its docs' examples
                # say "input-0"; a one-input model has no ambiguity to guard against.
                spec = m.inputs[0]
                name = spec.name
            if spec is None:
                raise errors.BadRequest(
                    f"unknown input {name!r}; the model's inputs are " + ", ".join(specs)
                )
            if name in out:
                raise errors.BadRequest(f"input '{name}' appears twice")
            params = item.get("parameters")
            if isinstance(params, dict) and params.get("binary_data_size") is not None:
                raise errors.BadRequest(_NO_BINARY)
            datatype = item["datatype"]
            if datatype in tensors.DATATYPES and datatype not in spec.accepted():
                raise errors.BadRequest(
                    f"input '{name}': datatype {datatype} does not match the model's "
                    f"{spec.datatype}"
                )
            array = tensors.decode(name, datatype, item["shape"], item["data"], literals=literals)
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
        if not isinstance(raw, list) or not all(isinstance(o, dict) and "name" in o for o in raw):
            raise errors.BadRequest("'outputs' must be an array of objects with a 'name'")
        wanted = []
        for o in raw:
            if o["name"] not in names:
                raise errors.BadRequest(
                    f"unknown output {o['name']!r}; the model's outputs are " + ", ".join(names)
                )
            params = o.get("parameters")
            if isinstance(params, dict) and params.get("binary_data"):
                raise errors.BadRequest(_NO_BINARY)
            wanted.append(o["name"])
        return wanted

    def _v2_reply(
        self,
        m: model.Model,
        outputs: dict[str, np.ndarray],
        wanted: list[str],
        request_id: str | None,
    ) -> Reply:
        body: dict[str, Any] = {"model_name": m.name, "model_version": m.version}
        if request_id is not None:
            body["id"] = request_id
        body["outputs"] = [tensors.encode(n, np.asarray(outputs[n])) for n in wanted]
        return dumps(body), m.version
