"""End to end on kind: the chart, the images and the operator on a real cluster.

Runs scripts/kind-up.sh (the same flow as `make kind-up`: cluster from kind-config.yaml, images
built and `kind load`ed, `helm upgrade --install`, examples/canary.yaml applied, `kubectl wait
--for=condition=Ready`, a client pod calling the stable Service), then checks the result on the
cluster. Selected with `pytest -m e2e` (or KUBESERVE_E2E=1); skipped, with the reason, where
docker, a Docker engine or kind is missing. A cluster this module created is deleted at the end
(KUBESERVE_E2E_KEEP=1 keeps it); one that existed before (e.g. made by `make kind-up`) is reused
and kept.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = ROOT / ".tools" / "bin"
CLUSTER = os.environ.get("KIND_CLUSTER_NAME", "kubeserve")
CONTEXT = f"kind-{CLUSTER}"
NAMESPACE = "default"
CANARY = "digits-canary"
GPU_EXAMPLE = ROOT / "examples" / "gpu.yaml"
REQUESTS = 200


def tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidate = TOOLS_BIN / name
    return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None


def skip(reason: str) -> None:
    print(f"e2e skipped: {reason}")
    pytest.skip(reason)


def check_prerequisites(config: pytest.Config) -> None:
    """Skip, saying why, unless docker with an engine, kind, kubectl and helm are here."""
    if tool("docker") is None:
        skip("docker is not installed")
    if tool("kind") is None:
        skip("kind is not installed (https://kind.sigs.k8s.io/docs/user/quick-start/)")
    try:
        engine = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        skip("no Docker engine answers: `docker info` timed out")
    if engine.returncode != 0:
        skip(f"no Docker engine answers: `docker info` failed: {engine.stderr.strip()[:200]}")
    for name in ("kubectl", "helm"):
        if tool(name) is None:
            skip(f"{name} is not installed (scripts/install-test-tools.sh installs it)")
    expr = config.getoption("markexpr") or ""
    selected = "e2e" in expr and "not e2e" not in expr
    if not (selected or os.environ.get("KUBESERVE_E2E") == "1"):
        skip("the kind e2e tests run with `pytest -m e2e` (or KUBESERVE_E2E=1): they take minutes")


def kubectl(*args: str, check: bool = True) -> str:
    argv = [tool("kubectl") or "kubectl", "--context", CONTEXT, *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr}")
    return proc.stdout


def get_json(*args: str) -> Any:
    return json.loads(kubectl("get", *args, "-o", "json"))


def cluster_exists() -> bool:
    proc = subprocess.run(
        [tool("kind") or "kind", "get", "clusters"], capture_output=True, text=True, timeout=60
    )
    return CLUSTER in proc.stdout.split()


def eventually(what: str, probe: Callable[[], Any], timeout: float = 180.0) -> Any:
    """Poll `probe` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(3)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="module")
def kind_up(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    check_prerequisites(request.config)
    existed = cluster_exists()
    log = tmp_path_factory.mktemp("kind") / "kind-up.log"
    env = {
        **os.environ,
        "KIND_CLUSTER_NAME": CLUSTER,
        "EXAMPLE": "examples/canary.yaml",
        "NAMESPACE": NAMESPACE,
        "REQUESTS": str(REQUESTS),
        "PATH": f"{os.environ.get('PATH', '')}:{TOOLS_BIN}",
    }
    try:
        with log.open("w") as out:
            proc = subprocess.run(
                ["bash", str(ROOT / "scripts" / "kind-up.sh")],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=1800,
            )
        text = log.read_text()
        if proc.returncode != 0:
            pytest.fail(f"scripts/kind-up.sh exited {proc.returncode}:\n{text[-6000:]}")
        lines = [ln for ln in text.splitlines() if ln.startswith("kubeserve-split: ")]
        assert lines, f"kind-up.sh printed no split:\n{text[-3000:]}"
        yield json.loads(lines[-1].split(": ", 1)[1])
    finally:
        kubectl(
            "-n", NAMESPACE, "delete", "-f", str(GPU_EXAMPLE), "--ignore-not-found", check=False
        )
        if not existed and os.environ.get("KUBESERVE_E2E_KEEP") != "1":
            subprocess.run(["bash", str(ROOT / "scripts" / "kind-down.sh")], env=env, check=False)


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for cond in obj.get("status", {}).get("conditions", []):
        if cond["type"] == kind:
            return dict(cond)
    return {}


def test_operator_is_running(kind_up: dict[str, Any]) -> None:
    deployment = get_json("-n", "kubeserve-system", "deployment", "kubeserve")
    assert deployment["status"].get("readyReplicas") == 1
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_everything_runs_under_the_restricted_pod_security_standard(
    kind_up: dict[str, Any],
) -> None:
    """kind-up.sh makes both namespaces enforce `restricted`: admission let every pod in."""
    for ns in ("kubeserve-system", NAMESPACE):
        labels = get_json("namespace", ns)["metadata"]["labels"]
        assert labels.get("pod-security.kubernetes.io/enforce") == "restricted", ns
    pods = get_json("-n", NAMESPACE, "pods", "-l", f"app.kubernetes.io/instance={CANARY}")["items"]
    assert len(pods) >= 5, "v1 (2, its HPA's minimum), v2 (1) and the router (2)"
    assert all(p["status"]["phase"] == "Running" for p in pods), [
        (p["metadata"]["name"], p["status"]["phase"]) for p in pods
    ]


def test_inferenceservice_is_ready_with_its_status(kind_up: dict[str, Any]) -> None:
    isvc = get_json("-n", NAMESPACE, "inferenceservice", CANARY)
    for kind in ("Ready", "VariantsReady", "RoutingReady"):
        assert condition(isvc, kind).get("status") == "True", (kind, isvc.get("status"))
    status = isvc["status"]
    assert status["observedGeneration"] == isvc["metadata"]["generation"]
    assert status["url"] == f"http://{CANARY}.{NAMESPACE}.svc.cluster.local"
    assert status["traffic"] == "v1=90,v2=10"


def test_split_through_the_stable_service_follows_the_weights(kind_up: dict[str, Any]) -> None:
    live = kind_up["live"]
    assert set(live) <= {"v1", "v2"}, live
    assert sum(live.values()) == REQUESTS
    # 10% of 200: mean 20, standard deviation 4.2; these bounds are more than 4 deviations out.
    assert 2 <= live.get("v2", 0) <= 40, live
    assert live.get("v1", 0) >= 160, live


def test_override_header_forces_a_variant(kind_up: dict[str, Any]) -> None:
    assert kind_up["forced"] == {"v2": 20}


def test_cpu_variants_stay_off_the_gpu_node(kind_up: dict[str, Any]) -> None:
    gpu_nodes = {
        n["metadata"]["name"]
        for n in get_json("nodes")["items"]
        if n["metadata"]["labels"].get("nvidia.com/gpu.present") == "true"
    }
    assert len(gpu_nodes) == 1, "kind-config.yaml labels one worker as a GPU node"
    pods = get_json("-n", NAMESPACE, "pods", "-l", f"app.kubernetes.io/instance={CANARY}")["items"]
    assert pods
    for pod in pods:
        assert pod["spec"].get("nodeName") not in gpu_nodes, pod["metadata"]["name"]


def test_gpu_variant_is_steered_to_the_gpu_product_and_reported(kind_up: dict[str, Any]) -> None:
    kubectl("-n", NAMESPACE, "apply", "-f", str(GPU_EXAMPLE))
    name = "digits-gpu"

    def gpu_pod() -> dict[str, Any] | None:
        items = get_json("-n", NAMESPACE, "pods", "-l", f"app.kubernetes.io/instance={name}")[
            "items"
        ]
        for pod in items:
            selector = pod["spec"].get("nodeSelector", {})
            if selector.get("nvidia.com/gpu.product") == "NVIDIA-A100-SXM4-40GB":
                return dict(pod)
        return None

    pod = eventually("the GPU variant's pod", gpu_pod)
    limits = pod["spec"]["containers"][0]["resources"]["limits"]
    assert limits.get("nvidia.com/gpu") in (1, "1")
    # A kind node offers no nvidia.com/gpu: the scheduler leaves the pod Pending, and the
    # operator names the reason on the InferenceService.
    reason = eventually(
        "VariantsReady=False with reason GPUUnavailable",
        lambda: (
            condition(get_json("-n", NAMESPACE, "inferenceservice", name), "VariantsReady").get(
                "reason"
            )
            == "GPUUnavailable"
        ),
    )
    assert reason
    cpu = eventually(
        "the CPU variant of digits-gpu to be ready",
        lambda: get_json("-n", NAMESPACE, "deployment", f"{name}-cpu")["status"].get(
            "readyReplicas"
        ),
    )
    assert cpu == 2
