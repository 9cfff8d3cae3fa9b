"""The local run's InferenceService file: notice an edit and say what it means for the run.

`kubeserve up -f FILE` stands in for the API server: editing FILE is `kubectl apply` (or the
GitOps commit). A valid edit of the spec is a new generation, applied live; an edit of the
annotations or labels only keeps the generation (as the API server does), so a manual
rollout command (`serving.kubeserve.dev/rollout`) can be given by editing them. What the
local run cannot apply live — variants added or removed, a variant's model, image or
environment changed, the resource renamed — needs its servers started again, so the run says
so and keeps serving what it has; so does an invalid file, with every problem.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from kubeserve import manifests
from kubeserve.api import spec, validation
from kubeserve.api.errors import SpecError


@dataclasses.dataclass(frozen=True)
class Invalid:
    """The file cannot be read or is no valid InferenceService: each problem, as validate says it."""

    problems: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class NeedsRestart:
    """A valid change that new server processes must apply: what it is."""

    reasons: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Unchanged:
    """Nothing the run reads changed (a comment, the file's layout, a status block)."""


@dataclasses.dataclass(frozen=True)
class Relabelled:
    """Only the annotations or labels changed: the same generation, with the new metadata."""

    isvc: spec.InferenceService


@dataclasses.dataclass(frozen=True)
class NewGeneration:
    """The spec changed and the run can apply it live: the next generation."""

    isvc: spec.InferenceService


Edit = Invalid | NeedsRestart | Unchanged | Relabelled | NewGeneration


def with_generation(isvc: spec.InferenceService, generation: int) -> spec.InferenceService:
    """Give the InferenceService with metadata.generation set, as the API server keeps it."""
    metadata = isvc.metadata.model_copy(update={"generation": generation})
    return isvc.model_copy(update={"metadata": metadata})


def _server_side(variant: spec.Variant) -> dict[str, object]:
    """Give what a variant's server process is started from: everything but its weight."""
    return {k: v for k, v in variant.to_wire().items() if k != "weight"}


def restart_reasons(current: spec.InferenceService, new: spec.InferenceService) -> list[str]:
    """Say what in `new` only new server processes could apply; empty when the run can."""
    reasons: list[str] = []
    if (new.metadata.name, new.metadata.namespace) != (
        current.metadata.name,
        current.metadata.namespace,
    ):
        reasons.append(f"the resource is renamed ({current.metadata.name} → {new.metadata.name})")
    old = {v.name: v for v in current.spec.variants}
    now = {v.name: v for v in new.spec.variants}
    added, removed = sorted(now.keys() - old.keys()), sorted(old.keys() - now.keys())
    if added:
        reasons.append(f"variants added: {', '.join(added)}")
    if removed:
        reasons.append(f"variants removed: {', '.join(removed)}")
    for name in old.keys() & now.keys():
        if _server_side(old[name]) != _server_side(now[name]):
            what = "model" if old[name].model != now[name].model else "server settings"
            reasons.append(f"variant {name}'s {what} changed")
    return sorted(reasons)


def classify(current: spec.InferenceService, text: str, *, source: str) -> Edit:
    """Say what the file's new text means for a run serving `current`."""
    try:
        docs = manifests.parse_documents(text, source=source)
    except manifests.InputError as exc:
        return Invalid((str(exc),))
    if not docs:
        return Invalid((f"{source}: no InferenceService in it",))
    try:
        new = validation.parse(docs[0])
    except SpecError as exc:
        return Invalid(tuple(str(e) for e in exc.errors))
    reasons = restart_reasons(current, new)
    if reasons:
        return NeedsRestart(tuple(reasons))
    generation = current.metadata.generation or 1
    if new.spec != current.spec:
        return NewGeneration(with_generation(new, generation + 1))
    kept = with_generation(new, generation)
    if (new.metadata.annotations or {}, new.metadata.labels or {}) != (
        current.metadata.annotations or {},
        current.metadata.labels or {},
    ):
        return Relabelled(kept)
    return Unchanged()


class Watched:
    """A file read again whenever its size, modification time or inode changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen = self._signature()

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None  # mid-rename, or removed: wait for it to come back
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def poll(self, current: spec.InferenceService) -> Edit | None:
        """Say what the file means for a run serving `current` when it changed since; else None."""
        signature = self._signature()
        if signature is None or signature == self._seen:
            return None
        self._seen = signature
        try:
            text = manifests.read_text(str(self.path))
        except manifests.InputError as exc:
            return Invalid((str(exc),))
        return classify(current, text, source=str(self.path))
