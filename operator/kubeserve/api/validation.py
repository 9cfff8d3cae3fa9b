"""Parse and validate an InferenceService, reporting every problem with its field path.

Pydantic checks shapes and single fields; the rules here span fields. Each rule that the API
server can enforce itself is also a CEL rule in the CRD (see `crd`); this module is what the
operator and `kubeserve validate` rely on when the CRD was bypassed or is older. When some
fields have the wrong type, the rules still run on what parsed (see `salvage`), so one run
reports every problem.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pydantic

from kubeserve.api import core, durations, names, patterns, quantity, salvage, spec
from kubeserve.api.errors import FieldError, SpecError, extend_path, from_pydantic, join_path

RESERVED_ENV_PREFIX = "KUBESERVE_"
# Set by the builders so that libraries caching under $HOME find a writable directory.
RESERVED_ENV_NAMES = frozenset({"HOME"})
GPU_RESOURCE_PREFIX = "nvidia.com/"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
_DNS1123_LABEL_RE = re.compile(patterns.DNS1123_LABEL)
_DNS1123_SUBDOMAIN_RE = re.compile(patterns.DNS1123_SUBDOMAIN)


def parse(obj: Any) -> spec.InferenceService:
    """Parse a decoded YAML/JSON object into an InferenceService, or raise SpecError."""
    if not isinstance(obj, dict):
        raise SpecError([FieldError("(document)", f"must be a mapping, not {_kind_of(obj)}")])
    try:
        isvc = spec.InferenceService.model_validate(obj)
    except pydantic.ValidationError as exc:
        errors = from_pydantic(exc, model=spec.InferenceService)
        salvaged = salvage.salvage(obj)
        if salvaged is not None:
            errors += check(*salvaged)
        raise SpecError(sorted(set(errors))) from None
    errors = sorted(set(check(isvc)))
    if errors:
        raise SpecError(errors)
    return isvc


def validate(obj: Any) -> list[FieldError]:
    """List every problem in a decoded object; an empty list means it is valid."""
    try:
        parse(obj)
    except SpecError as exc:
        return list(exc.errors)
    return []


def check(
    isvc: spec.InferenceService, dropped: salvage.Dropped = salvage.NOTHING
) -> Iterator[FieldError]:
    """Yield the cross-field problems of an InferenceService whose shape is already valid.

    `dropped` says which wrong-typed fields were left out of `isvc`: a rule that would read
    one is skipped rather than report a problem the dropped value may not have.
    """
    if not dropped.touches("metadata.name"):
        yield from _check_name(isvc.metadata)
    yield from _check_variants(isvc, dropped)
    yield from _check_routing(isvc.spec, dropped)
    yield from _check_experiment(isvc.spec, dropped)
    yield from _check_rollout(isvc.spec, dropped)


def _kind_of(obj: Any) -> str:
    return {list: "a list", str: "a string", type(None): "empty"}.get(type(obj), type(obj).__name__)


def _check_name(meta: spec.ObjectMeta) -> Iterator[FieldError]:
    # The real limit, said once: not the 63 of a DNS label first, then 56 once that is met.
    if len(meta.name) > names.MAX_SERVICE_NAME:
        yield FieldError(
            "metadata.name",
            f"must be at most {names.MAX_SERVICE_NAME} characters (has {len(meta.name)}): the "
            f"router's objects are named '<name>-{names.ROUTER_SUFFIX}'",
        )
    problem = names.dns1035_form_problem(meta.name)
    if problem:
        yield FieldError("metadata.name", f"{problem} (it names the Service of the endpoint)")
    if meta.namespace is not None and not _DNS1123_LABEL_RE.match(meta.namespace):
        yield FieldError("metadata.namespace", f"{meta.namespace!r} is not a valid namespace name")


def _check_variants(isvc: spec.InferenceService, dropped: salvage.Dropped) -> Iterator[FieldError]:
    variants = isvc.spec.variants
    seen: dict[str, int] = {}
    mirror = isvc.spec.routing.mirror.variant if isvc.spec.routing.mirror else None
    weights_known = not dropped.touches(
        "spec.variants.*.name", "spec.variants.*.weight", "spec.routing.mirror.variant"
    )
    for parsed_index, variant in enumerate(variants):
        i = dropped.position(("spec", "variants"), parsed_index)
        path = join_path("spec", "variants", i)
        if variant.name in seen:
            yield FieldError(
                f"{path}.name",
                f"duplicate variant name {variant.name!r} (also spec.variants[{seen[variant.name]}].name)",
            )
        seen.setdefault(variant.name, i)
        if variant.name in names.RESERVED_VARIANT_NAMES:
            yield FieldError(
                f"{path}.name", f"{variant.name!r} is reserved for the router's objects"
            )
        combined = len(names.variant_object_name(isvc.metadata.name, variant.name))
        # A short variant name is too long only beside a metadata.name over its own limit,
        # which is reported there: once, not again for every variant.
        if (
            combined > names.MAX_LABEL
            and len(variant.name) > names.FITS_BESIDE_ANY_NAME
            and not dropped.touches("metadata.name")
        ):
            yield FieldError(
                f"{path}.name",
                f"'<metadata.name>-<variant>' must be at most {names.MAX_LABEL} characters "
                f"(has {combined}): it names the variant's Deployment and Service",
            )
        live = None
        if weights_known:
            live = isvc.spec.live_weights()[variant.name] > 0 or variant.name == mirror
        yield from _check_variant(variant, path, live=live, dropped=dropped, index=i)
    if weights_known:
        yield from _check_weights(isvc.spec, dropped)


def _check_weights(s: spec.InferenceServiceSpec, dropped: salvage.Dropped) -> Iterator[FieldError]:
    weights = s.live_weights()
    mirror = s.routing.mirror.variant if s.routing.mirror else None
    live = [
        (dropped.position(("spec", "variants"), i), v)
        for i, v in enumerate(s.variants)
        if v.name != mirror
    ]
    total = sum(weights[v.name] for _, v in live)
    if live and total != 100:
        split = ", ".join(f"{v.name}={weights[v.name]}" for _, v in live)
        last = live[-1][0]
        yield FieldError(
            f"spec.variants[{last}].weight",
            f"weights of live variants sum to {total}, must be 100 ({split})",
        )


def _check_variant(
    v: spec.Variant, path: str, *, live: bool | None, dropped: salvage.Dropped, index: int
) -> Iterator[FieldError]:
    """Check one variant; `live` is None when a dropped weight leaves it unknown."""
    yield from _check_storage_uri(v.model.storage_uri, f"{path}.model.storageUri")
    if v.replicas is not None and v.autoscaling is not None:
        yield FieldError(f"{path}.autoscaling", "set replicas or autoscaling, not both")
    if live and v.replicas == 0:
        yield FieldError(
            f"{path}.replicas", "a variant that takes traffic needs at least 1 replica"
        )
    if v.autoscaling and v.autoscaling.max_replicas < v.autoscaling.min_replicas:
        yield FieldError(
            f"{path}.autoscaling.maxReplicas",
            f"must be at least minReplicas ({v.autoscaling.min_replicas}), is {v.autoscaling.max_replicas}",
        )
    cpu_request_known = not dropped.touches("spec.variants.*.resources.requests")
    yield from _check_resources(v, f"{path}.resources", cpu_request_known=cpu_request_known)
    if v.gpu and v.gpu.product and v.node_selector:
        chosen = v.node_selector.get(GPU_PRODUCT_LABEL)
        if chosen is not None and chosen != v.gpu.product:
            yield FieldError(
                f"{path}.nodeSelector",
                f"{GPU_PRODUCT_LABEL}={chosen!r} contradicts gpu.product {v.gpu.product!r}",
            )
    seen_env: set[str] = set()
    for parsed_index, env in enumerate(v.env or []):
        j = dropped.position(("spec", "variants", index, "env"), parsed_index)
        if env.name.startswith(RESERVED_ENV_PREFIX) or env.name in RESERVED_ENV_NAMES:
            yield FieldError(
                f"{path}.env[{j}].name",
                f"{env.name!r} is set by kubeserve (reserved: {RESERVED_ENV_PREFIX}*, "
                + ", ".join(sorted(RESERVED_ENV_NAMES))
                + ")",
            )
        if env.name in seen_env:
            yield FieldError(
                f"{path}.env[{j}].name", f"duplicate environment variable {env.name!r}"
            )
        seen_env.add(env.name)


def _check_resources(
    v: spec.Variant, path: str, *, cpu_request_known: bool
) -> Iterator[FieldError]:
    res = v.resources or core.ResourceRequirements()
    requests, limits = res.requests or {}, res.limits or {}
    for section, values in (("requests", requests), ("limits", limits)):
        for name in values:
            if name.startswith(GPU_RESOURCE_PREFIX):
                yield FieldError(
                    f"{path}.{section}",
                    f"{name}: use the variant's gpu field instead, so that pods are also "
                    "scheduled onto GPU nodes",
                )
    yield from _check_requests_within_limits(res, path)
    if v.autoscaling and v.resources is not None and "cpu" not in requests and cpu_request_known:
        yield FieldError(
            extend_path(path, "requests", "cpu"),
            "autoscaling on CPU utilization needs a cpu request to measure against",
        )


def _check_requests_within_limits(
    res: core.ResourceRequirements, path: str
) -> Iterator[FieldError]:
    requests, limits = res.requests or {}, res.limits or {}
    for name in sorted(set(requests) & set(limits)):
        if quantity.parse_quantity(requests[name]) > quantity.parse_quantity(limits[name]):
            yield FieldError(
                extend_path(path, "requests", name),
                f"request {requests[name]} is more than the limit {limits[name]}",
            )


def _check_storage_uri(uri: str, path: str) -> Iterator[FieldError]:
    scheme, sep, _ = uri.partition("://")
    if not sep or scheme not in spec.STORAGE_SCHEMES:
        shown = scheme if sep else uri
        yield FieldError(
            path,
            f"unsupported storage URI {shown!r}: use one of "
            + ", ".join(f"{s}://" for s in spec.STORAGE_SCHEMES),
        )
        return
    if any(c.isspace() for c in uri):
        yield FieldError(path, "must not contain whitespace")
        return
    parsed = urllib.parse.urlsplit(uri)
    if scheme == "file":
        if parsed.netloc or not parsed.path.startswith("/") or parsed.path == "/":
            yield FieldError(path, "file URIs need an absolute path, e.g. file:///models/digits/v1")
    elif scheme == "pvc":
        if not _DNS1123_SUBDOMAIN_RE.match(parsed.netloc) or len(parsed.netloc) > 253:
            yield FieldError(
                path, "pvc URIs are pvc://<claim-name>/<path>, with a valid claim name"
            )
        elif ".." in parsed.path.split("/"):
            yield FieldError(path, "the path of a pvc URI must not contain '..'")
    elif not parsed.netloc:
        what = "a host" if scheme in {"http", "https"} else "a bucket"
        yield FieldError(
            path,
            f"{scheme} URIs need {what}, e.g. {scheme}://{'example.com' if what == 'a host' else 'bucket'}/models/v1",
        )


def _check_routing(s: spec.InferenceServiceSpec, dropped: salvage.Dropped) -> Iterator[FieldError]:
    r = s.routing
    known = {v.name for v in s.variants}
    mode_known = not dropped.touches("spec.routing.mode")
    if r.mirror and not dropped.touches("spec.variants.*.name", "spec.variants.*.weight"):
        if r.mirror.variant not in known:
            yield FieldError(
                "spec.routing.mirror.variant",
                f"{r.mirror.variant!r} is not a variant (variants: {', '.join(sorted(known))})",
            )
        else:
            weight = s.live_weights()[r.mirror.variant]
            if weight and len(s.variants) > 1:
                yield FieldError(
                    "spec.routing.mirror.variant",
                    f"{r.mirror.variant!r} has weight {weight}: the mirror (shadow) variant gets "
                    "copies of requests, not live traffic; set its weight to 0",
                )
            elif len(s.variants) == 1:
                yield FieldError("spec.routing.mirror.variant", "cannot mirror to the only variant")
    if (
        r.mode == "gateway-api"
        and not r.parent_refs
        and not dropped.touches("spec.routing.parentRefs")
    ):
        yield FieldError(
            "spec.routing.parentRefs",
            "routing mode gateway-api needs at least one Gateway in parentRefs",
        )
    if r.mode == "gateway-api" and r.sticky:
        yield FieldError(
            "spec.routing.sticky",
            "not supported in routing mode gateway-api: the standard channel of Gateway API "
            "v1.6.1 has no session persistence (use mode nginx for sticky users)",
        )
    if r.mode != "gateway-api" and r.parent_refs and mode_known:
        yield FieldError("spec.routing.parentRefs", "only used with routing mode gateway-api")
    if r.router is not None:
        if r.mode != "nginx" and mode_known:
            # Refused rather than ignored: a user who sized a router would otherwise believe
            # one runs, while the Gateway's own data plane serves the traffic.
            yield FieldError(
                "spec.routing.router",
                f"only used with routing mode nginx (mode {r.mode} has no kubeserve router: "
                "the Gateway's controller runs the data plane)",
            )
        if r.router.resources is not None:
            yield from _check_requests_within_limits(
                r.router.resources, "spec.routing.router.resources"
            )
    if (
        r.sticky
        and r.sticky.header
        and r.override_header
        and r.sticky.header.lower() == r.override_header.lower()
    ):
        yield FieldError("spec.routing.overrideHeader", "must differ from sticky.header")


# The server's largest finite latency bucket: a slower threshold could not be counted.
MAX_SLOW_THRESHOLD_SECONDS = 10.0
EXPERIMENT_INTERVAL_SECONDS = (5.0, 3600.0)


def _check_experiment(
    s: spec.InferenceServiceSpec, dropped: salvage.Dropped
) -> Iterator[FieldError]:
    e = s.experiment
    if e is None:
        return
    if not dropped.touches("spec.variants.*.name", "spec.variants.*.weight"):
        live = {name for name, weight in s.live_weights().items() if weight > 0}
        known = {v.name for v in s.variants}
        if e.control not in known:
            yield FieldError(
                "spec.experiment.control",
                f"{e.control!r} is not a variant (variants: {', '.join(sorted(known))})",
            )
        elif e.control not in live:
            yield FieldError(
                "spec.experiment.control",
                f"{e.control!r} has weight 0: the control must be a live variant",
            )
        elif len(live) < 2:
            yield FieldError(
                "spec.experiment",
                "needs at least two live variants (weight above 0) to compare; "
                f"only {e.control!r} is live",
            )
    if e.metrics is not None:
        seen: set[str] = set()
        for i, metric in enumerate(e.metrics):
            if metric in seen:
                yield FieldError(f"spec.experiment.metrics[{i}]", f"duplicate metric {metric!r}")
            seen.add(metric)
    yield from _check_timing("spec.experiment", e.slow_threshold, e.interval)


def _check_rollout(s: spec.InferenceServiceSpec, dropped: salvage.Dropped) -> Iterator[FieldError]:
    r = s.rollout
    if r is None:
        return
    if not dropped.touches("spec.variants.*.name"):
        known = {v.name for v in s.variants}
        listing = ", ".join(sorted(known))
        if r.candidate not in known:
            yield FieldError(
                "spec.rollout.candidate", f"{r.candidate!r} is not a variant (variants: {listing})"
            )
        if r.baseline is not None and r.baseline not in known:
            yield FieldError(
                "spec.rollout.baseline", f"{r.baseline!r} is not a variant (variants: {listing})"
            )
        if r.baseline == r.candidate:
            yield FieldError("spec.rollout.baseline", "must differ from the candidate")
        if len(known) < 2:
            yield FieldError("spec.rollout", "needs a second variant to move traffic from")
    if s.routing.mirror and s.routing.mirror.variant == r.candidate:
        yield FieldError(
            "spec.rollout.candidate",
            f"{r.candidate!r} is the mirror (shadow) variant: it gets copies, not live traffic",
        )
    for i, step in enumerate(r.steps):
        if not 1 <= step <= 100:
            yield FieldError(f"spec.rollout.steps[{i}]", f"{step} is not a weight from 1 to 100")
        elif i and step <= r.steps[i - 1]:
            yield FieldError(
                f"spec.rollout.steps[{i}]",
                f"steps must increase: {step} follows {r.steps[i - 1]}",
            )
    seen: set[str] = set()
    for i, gate in enumerate(r.gates or []):
        if gate.metric in seen:
            yield FieldError(f"spec.rollout.gates[{i}].metric", f"duplicate gate {gate.metric!r}")
        seen.add(gate.metric)
        if gate.metric in {"errorRate", "slowRate", "outcome"}:
            for field, value in (("maxIncrease", gate.max_increase), ("max", gate.max)):
                if value is not None and value > 1:
                    yield FieldError(
                        f"spec.rollout.gates[{i}].{field}",
                        f"{value:g} is not a rate: {gate.metric} is a fraction from 0 to 1 "
                        "(0.01 = 1 percentage point)",
                    )
    yield from _check_timing("spec.rollout", r.slow_threshold, r.interval)
    if durations.parse_duration(r.min_step_duration) > 24 * 3600:
        yield FieldError("spec.rollout.minStepDuration", "must be at most 24h")


def _check_timing(path: str, slow_threshold: str, interval: str) -> Iterator[FieldError]:
    """Check the slow threshold and the collection interval an experiment or rollout shares."""
    if not 0 < durations.parse_duration(slow_threshold) <= MAX_SLOW_THRESHOLD_SECONDS:
        yield FieldError(
            f"{path}.slowThreshold",
            f"must be above 0 and at most {MAX_SLOW_THRESHOLD_SECONDS:g}s (the server's "
            "largest latency bucket)",
        )
    low, high = EXPERIMENT_INTERVAL_SECONDS
    if not low <= durations.parse_duration(interval) <= high:
        yield FieldError(
            f"{path}.interval",
            f"must be from {durations.format_duration(low)} to {durations.format_duration(high)}",
        )
