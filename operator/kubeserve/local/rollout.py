"""The local run's rollout: the candidate's readiness, the live split in status, the run's lines.

`LocalStatus` takes the operator's own look (`kubeserve.rollout.look`) once per interval; this
module holds what the local run adds around it. The candidate is ready when its server
answers /v2/health/ready (what the pod's readiness probe asks); when it is not, the rollout's
Hold gives the server's own reason. The status shows the LIVE
split, never the spec's destination: status.variants[*].weight and status.traffic follow
the split the router carries. `--start-weights` gives the run a split before its first
generation, so that a rollout can be tried without editing the file.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from kubeserve.api import spec
from kubeserve.builders import endpoint
from kubeserve.rollout import decide, steps

READY_TIMEOUT = 2.0


def not_ready(port: int) -> str | None:
    """Give why the server on the loopback `port` is not ready (its own words); None: it is."""
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/v2/health/ready", timeout=READY_TIMEOUT
        ) as response:
            return None if response.status == 200 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        body = exc.read(4096).decode("utf-8", "replace")
        try:
            said = json.loads(body).get("error")
        except (ValueError, AttributeError):
            said = None
        return str(said or f"HTTP {exc.code}")
    except (urllib.error.URLError, OSError) as exc:
        return str(getattr(exc, "reason", exc))


def event_line(reason: str, message: str) -> str:
    """Give the run's line for a rollout Event; Warnings say so, as `kubectl get events` does."""
    kind = "Warning " if reason in decide.WARNING_REASONS else ""
    return f"rollout: {kind}{reason}: {message}"


def split_text(weights: Mapping[str, int]) -> str:
    """Write a split as the traffic column does, e.g. `v1=95,v2=5`."""
    return ",".join(f"{name}={weight}" for name, weight in weights.items())


def with_live_split(
    status: Mapping[str, Any], isvc: spec.InferenceService, live: Mapping[str, int]
) -> dict[str, Any]:
    """Give `status` with each variant's weight and the traffic summary at the live split."""
    out = dict(status)
    variants = out.get("variants")
    if isinstance(variants, Mapping):
        out["variants"] = {
            name: {**entry, "weight": live.get(name, 0)} if isinstance(entry, Mapping) else entry
            for name, entry in variants.items()
        }
    out["traffic"] = endpoint.traffic_summary(steps.live_spec(isvc, live))
    return out


def parse_weights(text: str) -> dict[str, int]:
    """Read `v1=100,v2=0` (argparse type of --start-weights)."""
    weights: dict[str, int] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or not name or not value.strip().isdigit() or name in weights:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a split such as v1=100,v2=0 (each variant once, whole percents)"
            )
        weights[name] = int(value)
    return weights


def start_split(isvc: spec.InferenceService, weights: Mapping[str, int]) -> dict[str, int]:
    """Give the split the run starts from, every variant in the spec's order; ValueError if wrong.

    Variants left out get 0. It needs spec.rollout (it is the split a rollout walks from) and
    must sum to 100 over the spec's variants.
    """
    if isvc.spec.rollout is None:
        raise ValueError(
            "--start-weights is the split a rollout starts from, and the file has no spec.rollout"
        )
    names = [v.name for v in isvc.spec.variants]
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ValueError(
            f"--start-weights names {', '.join(unknown)}, not a variant ({', '.join(names)})"
        )
    split = {name: weights.get(name, 0) for name in names}
    if sum(split.values()) != steps.TOTAL:
        raise ValueError(f"--start-weights must sum to 100, not {sum(split.values())}")
    return split
