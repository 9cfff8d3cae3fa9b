"""Hypothesis strategies: valid InferenceService dicts covering every field, and junk."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

LABEL_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"


def dns1035(max_size: int) -> st.SearchStrategy[str]:
    """Draw DNS-1035 labels up to `max_size` characters."""
    first = st.sampled_from("abcdefghijklmnopqrstuvwxyz")
    middle = st.text(alphabet=LABEL_CHARS + "-", max_size=max(0, max_size - 2))
    last = st.text(alphabet=LABEL_CHARS, min_size=1, max_size=1)
    return st.one_of(
        first,
        st.builds(lambda a, b, c: a + b + c, first, middle, last).filter(
            lambda s: len(s) <= max_size
        ),
    )


label_values = st.from_regex(r"\A([A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?)?\Z")
label_keys = st.from_regex(
    r"\A([a-z0-9]{1,8}(\.[a-z0-9]{1,8}){0,2}/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?\Z"
)
quantities_cpu = st.sampled_from(
    [("100m", "200m"), ("1", "2"), ("250m", "1"), (1, 2), ("0.5", "1")]
)
quantities_mem = st.sampled_from(
    [("128Mi", "256Mi"), ("1Gi", "2Gi"), ("512Mi", "1Gi"), ("1e9", "2G")]
)
storage_uris = st.one_of(
    st.builds(lambda p: f"file:///models/{p}", dns1035(20)),
    st.builds(lambda c, p: f"pvc://{c}/{p}", dns1035(30), dns1035(20)),
    st.builds(lambda c: f"pvc://{c}", dns1035(30)),
    st.builds(lambda h, p: f"https://{h}.example.com/{p}/model.onnx", dns1035(20), dns1035(10)),
    st.builds(lambda b, p: f"s3://{b}/{p}", dns1035(20), dns1035(20)),
    st.builds(lambda b, p: f"gs://{b}/{p}", dns1035(20), dns1035(20)),
)
header_names = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9-]{0,30}\Z")


@st.composite
def resources(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cpu, mem = draw(quantities_cpu), draw(quantities_mem)
    if draw(st.booleans()):
        out["requests"] = {"cpu": cpu[0], "memory": mem[0]}
    if draw(st.booleans()):
        out["limits"] = {"memory": mem[1]} | ({"cpu": cpu[1]} if draw(st.booleans()) else {})
    return out


@st.composite
def tolerations(draw: st.DrawFn) -> list[dict[str, Any]]:
    out = []
    for _ in range(draw(st.integers(0, 3))):
        t: dict[str, Any] = {"key": draw(label_keys)}
        if draw(st.booleans()):
            t["operator"] = "Exists"
        else:
            t |= {"operator": "Equal", "value": draw(label_values)}
        effect = draw(st.sampled_from([None, "NoSchedule", "PreferNoSchedule", "NoExecute"]))
        if effect:
            t["effect"] = effect
            if effect == "NoExecute" and draw(st.booleans()):
                t["tolerationSeconds"] = draw(st.integers(0, 3600))
        out.append(t)
    return out


@st.composite
def affinity(draw: st.DrawFn) -> dict[str, Any]:
    expr = {
        "key": draw(label_keys),
        "operator": "In",
        "values": draw(st.lists(label_values, min_size=1, max_size=3)),
    }
    out: dict[str, Any] = {}
    if draw(st.booleans()):
        out["nodeAffinity"] = {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [expr]}]
            }
        }
    if draw(st.booleans()):
        out["podAntiAffinity"] = {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": draw(st.integers(1, 100)),
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {draw(label_keys): draw(label_values)}},
                    },
                }
            ]
        }
    return out


def _split(draw: st.DrawFn, n: int) -> list[int]:
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=n - 1, max_size=n - 1)))
    bounds = [0, *cuts, 100]
    return [bounds[i + 1] - bounds[i] for i in range(n)]


@st.composite
def variant_body(draw: st.DrawFn, name: str, *, live: bool) -> dict[str, Any]:
    v: dict[str, Any] = {
        "name": name,
        "model": {
            "format": draw(st.sampled_from(["onnx", "sklearn"])),
            "storageUri": draw(storage_uris),
        },
    }
    if draw(st.booleans()):
        v["model"]["sha256"] = draw(st.text(alphabet="0123456789abcdef", min_size=64, max_size=64))
    if draw(st.booleans()):
        v["model"]["credentialsSecret"] = draw(dns1035(30))
    res = draw(st.one_of(st.none(), resources()))
    if draw(st.booleans()):
        lo = draw(st.integers(1, 5))
        v["autoscaling"] = {"minReplicas": lo, "maxReplicas": draw(st.integers(lo, 10))}
        if draw(st.booleans()):
            v["autoscaling"]["targetCPUUtilizationPercentage"] = draw(st.integers(1, 300))
        if res is not None:
            res.setdefault("requests", {})["cpu"] = res.get("limits", {}).get("cpu", "100m")
    else:
        v["replicas"] = draw(st.integers(1 if live else 0, 5))
    if res is not None:
        v["resources"] = res
    if draw(st.booleans()):
        key = draw(st.sampled_from(["minAvailable", "maxUnavailable"]))
        v["disruptionBudget"] = {
            key: draw(st.one_of(st.integers(0, 3), st.sampled_from(["50%", "100%", "0%"])))
        }
    if draw(st.booleans()):
        gpu: dict[str, Any] = {"count": draw(st.integers(1, 8))}
        if draw(st.booleans()):
            gpu["product"] = draw(
                st.sampled_from(["NVIDIA-A100-SXM4-40GB", "Tesla-T4", "NVIDIA-H100-80GB-HBM3"])
            )
        if draw(st.booleans()):
            gpu["migProfile"] = draw(
                st.sampled_from(["1g.5gb", "2g.10gb", "3g.20gb", "7g.80gb", "1g.10gb+me"])
            )
        v["gpu"] = gpu
    if draw(st.booleans()):
        v["nodeSelector"] = draw(st.dictionaries(label_keys, label_values, max_size=3)) or {
            "disk": "ssd"
        }
        v["nodeSelector"].pop("nvidia.com/gpu.product", None)
    if draw(st.booleans()):
        v["tolerations"] = draw(tolerations())
    if draw(st.booleans()):
        v["affinity"] = draw(affinity())
    if draw(st.booleans()):
        names = draw(st.lists(st.from_regex(r"\A[A-Z][A-Z0-9_]{0,15}\Z"), max_size=4, unique=True))
        env = []
        for n in names:
            if n.startswith("KUBESERVE_") or n == "HOME":
                continue
            if draw(st.booleans()):
                env.append({"name": n, "value": draw(st.text(max_size=20))})
            else:
                env.append(
                    {"name": n, "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}
                )
        v["env"] = env
    if draw(st.booleans()):
        v["image"] = draw(
            st.sampled_from(
                ["registry.local:5000/kubeserve/server:dev", "kubeserve-server@sha256:" + "a" * 64]
            )
        )
    return v


@st.composite
def router(draw: st.DrawFn) -> dict[str, Any]:
    """Draw the nginx router's settings: any subset of replicas, workers and resources."""
    out: dict[str, Any] = {}
    if draw(st.booleans()):
        out["replicas"] = draw(st.integers(1, 100))
    if draw(st.booleans()):
        out["workers"] = draw(st.integers(1, 32))
    if draw(st.booleans()):
        out["resources"] = draw(resources())
    return out


@st.composite
def inference_services(draw: st.DrawFn) -> dict[str, Any]:
    """Draw valid InferenceServices that exercise every field of the spec."""
    name = draw(dns1035(40))
    room = 62 - len(name)
    names = draw(
        st.lists(dns1035(min(room, 20)), min_size=1, max_size=4, unique=True).filter(
            lambda ns: "router" not in ns
        )
    )
    mirror = names[-1] if len(names) > 1 and draw(st.booleans()) else None
    live = [n for n in names if n != mirror]
    weights = dict(zip(live, _split(draw, len(live)), strict=True))
    variants = []
    for n in names:
        v = draw(variant_body(n, live=weights.get(n, 0) > 0 or n == mirror))
        if n in weights and not (len(names) == 1 and draw(st.booleans())):
            v["weight"] = weights[n]
        elif n == mirror and draw(st.booleans()):
            v["weight"] = 0
        variants.append(v)
    routing: dict[str, Any] = {}
    if draw(st.booleans()):
        routing["sticky"] = draw(
            st.one_of(
                st.builds(lambda h: {"header": h}, header_names),
                st.builds(
                    lambda c: {"cookie": c}, st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,20}\Z")
                ),
            )
        )
    if draw(st.booleans()):
        override = draw(header_names)
        if override.lower() != routing.get("sticky", {}).get("header", "").lower():
            routing["overrideHeader"] = override
    if mirror:
        routing["mirror"] = {"variant": mirror, "percent": draw(st.integers(1, 100))}
    if "sticky" not in routing and draw(st.booleans()):
        routing["mode"] = "gateway-api"
        routing["parentRefs"] = [{"name": "gw", "namespace": "infra", "sectionName": "http"}]
    elif draw(st.booleans()):
        routing["router"] = draw(router())
    obj: dict[str, Any] = {
        "apiVersion": "serving.kubeserve.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "namespace": draw(st.sampled_from(["default", "ml-prod", "team-a"])),
        },
        "spec": {"variants": variants},
    }
    if routing:
        obj["spec"]["routing"] = routing
    return obj


def json_documents(*, infinity: bool) -> st.SearchStrategy[Any]:
    """Give arbitrary JSON-like values; `infinity`: floats may be infinite, as YAML's `.inf`."""
    return st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**40), 2**40)
        | st.floats(allow_nan=False, allow_infinity=infinity)
        | st.text(max_size=12),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=12), children, max_size=4)
        ),
        max_leaves=20,
    )


# What a YAML file can hold (infinity included), and what JSON, hence the API, can.
json_values = json_documents(infinity=True)
api_json_values = json_documents(infinity=False)
