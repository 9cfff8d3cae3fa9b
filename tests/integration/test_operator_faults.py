"""The real operator under faults: a strained API, cut watches, SIGKILLs, and any spec at all.

Each fault scenario plays a burst of creates, updates and deletes while the faults fall, then
waits until the operator has converged: every InferenceService has exactly its desired
children, each controlled by it alone, no child is left without a live owner, and every
status says Ready for the latest generation. A reconcile under way when its InferenceService
is deleted may still create children for it; the emulator's garbage collector deletes them,
as kube-controller-manager's does, and the scenario counts them. The operator must stay up throughout (but when
killed) and log no bug. Generated InferenceServices, valid or not, must each end Ready or
refused as InvalidSpec.

Randomness is seeded (KUBESERVE_FAULT_SEED, printed); `-s` prints each scenario's figures,
which docs/reliability.md records.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import itertools
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from kubeserve.api import validation
from kubeserve.api.errors import SpecError
from kubeserve.builders import meta
from kubeserve.controller import merge_patch
from kubeserve.testing import operator_process
from kubeserve.testing.emulator import EmulatorThread
from kubeserve.testing.emulator.server import Fault, WatchFault
from kubeserve.testing.emulator.store import Event, ResourceKey, Store
from kubeserve.testing.kube_client import ISVC, Kube, wait_for
from kubeserve.testing.operator_process import OperatorProcess
from support import specs, strategies
from support.isvcs import CHILD_RESOURCES, desired_children
from support.settling import play_controllers

SEED = int(os.environ.get("KUBESERVE_FAULT_SEED", "1511"))
RESYNC_SECONDS = 2.0
CONVERGE_SECONDS = 60.0
CLIENTS = operator_process.CLIENTS
ALL_METHODS = frozenset({"GET", "POST", "PATCH", "PUT", "DELETE"})
# 20% of the operator's calls: 5% each of 409 (writes only: no API server answers a read with
# it), 429, 500 and no answer at all (for half of these, the write was done nonetheless).
API_FAULTS = [
    Fault(share=0.05, status=409, clients=CLIENTS),
    Fault(share=0.05, status=429, retry_after=1, methods=ALL_METHODS, clients=CLIENTS),
    Fault(share=0.05, status=500, methods=ALL_METHODS, clients=CLIENTS),
    Fault(share=0.025, hang=True, delay=0.5, methods=ALL_METHODS, clients=CLIENTS),
    Fault(share=0.025, hang=True, applied=True, delay=0.5, methods=ALL_METHODS, clients=CLIENTS),
]
# Every watch cut within two seconds; half of the watches that resume refused 410 Gone.
WATCH_FAULTS = [WatchFault(cut_after=(0.5, 2.0), gone=0.5, clients=CLIENTS)]
# What the operator logs only for a bug, not for the API's refusals: its catch-alls. (kopf
# logs a traceback when it throttles after a refusal: that is not one.)
BUG_LINES = ("trying again in 30", "a delayed call of", "failed; listing again")
MANAGED = "app.kubernetes.io/managed-by"
# The emulator store's keys, (group, version, plural), of InferenceServices and their children.
ISVC_KEY = (ISVC[0].rpartition("/")[0], ISVC[0].rpartition("/")[2], ISVC[1])
CHILD_KEYS = frozenset(
    (api_version.rpartition("/")[0], api_version.rpartition("/")[2], plural)
    for api_version, plural in CHILD_RESOURCES
)
_namespaces = itertools.count()


# Figures


@dataclasses.dataclass
class Figures:
    """What one scenario cost, for docs/reliability.md."""

    scenario: str
    operations: int
    calls: int  # the operator's calls (not watches)
    injected: collections.Counter[str]
    restarts: int
    late: int  # children created for an owner already deleted (see `LateChildren`)
    converged: float  # seconds from the burst's end to convergence

    def row(self) -> str:
        failed = sum(v for k, v in self.injected.items() if not k.startswith("watch"))
        share = failed / self.calls if self.calls else 0.0
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.injected.items())) or "none"
        return (
            f"| {self.scenario} | {self.operations} | {self.calls} | {failed} ({share:.0%}) "
            f"| {kinds} | {self.restarts} | {self.late} | {self.converged:.1f} s |"
        )


FIGURES: list[Figures] = []


class LateChildren:
    """Count the children stored naming as controller an InferenceService already deleted.

    A reconcile under way when its InferenceService goes creates them before the operator
    hears of the deletion. The emulator's garbage collector deletes them; this only counts
    them, as the store tells its writes, on the emulator's loop.
    """

    def __init__(self, emulator: EmulatorThread) -> None:
        self.count = 0
        self._emulator = emulator
        self._live: set[str] = set()

        def listen(store: Store) -> None:
            self._live.update(o["metadata"]["uid"] for o in store.list(ISVC_KEY, None))
            store.listeners.append(self._heard)

        emulator.call(listen)

    def _heard(self, key: ResourceKey, event: Event) -> None:
        meta = event["object"]["metadata"]
        if key == ISVC_KEY:
            if event["type"] == "ADDED":
                self._live.add(meta["uid"])
            elif event["type"] == "DELETED":
                self._live.discard(meta["uid"])
        elif key in CHILD_KEYS and event["type"] == "ADDED":
            refs = meta.get("ownerReferences") or []
            controllers = {r.get("uid") for r in refs if r.get("controller")}
            if controllers and not controllers & self._live:
                self.count += 1

    def close(self) -> int:
        """Stop counting; give the count."""
        self._emulator.call(lambda store: store.listeners.remove(self._heard))
        return self.count


class Meter:
    """Measures a scenario by the emulator's counters."""

    def __init__(self, emulator: EmulatorThread) -> None:
        self.emulator = emulator.emulator
        self.calls = self._calls()
        self.injected = self.emulator.injected.copy()
        self.late = LateChildren(emulator)

    def _calls(self) -> int:
        return sum(self.emulator.calls_by_client[c] for c in CLIENTS)

    def record(self, scenario: str, *, operations: int, restarts: int, converged: float) -> None:
        FIGURES.append(
            Figures(
                scenario,
                operations,
                self._calls() - self.calls,
                self.emulator.injected - self.injected,
                restarts,
                self.late.close(),
                converged,
            )
        )


# Fixtures


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorThread]:
    print(f"\nfault seed {SEED} (set KUBESERVE_FAULT_SEED={SEED} to replay)")
    with EmulatorThread(seed=SEED) as em:
        yield em
    if FIGURES:
        print(f"\nOperator under faults (seed {SEED}):")
        print(
            "| scenario | operations | operator calls | failed by injection | injected "
            "| restarts | late children collected | converged after |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for figures in FIGURES:
            print(figures.row())


@pytest.fixture()
def operator(emulator: EmulatorThread, tmp_path: Path) -> Iterator[OperatorProcess]:
    """An operator of this test alone (conftest shows its log when the test fails)."""
    process = OperatorProcess(
        emulator, tmp_path, "--gateway-api", resync_seconds=RESYNC_SECONDS
    ).start()
    yield process
    emulator.emulator.faults.clear()
    emulator.emulator.watch_faults.clear()
    process.stop()


# The burst


def random_spec(rng: random.Random) -> dict[str, Any]:
    """Give one of the shapes an InferenceService takes: 1-3 variants, some options."""
    names = rng.sample(["a", "b", "c", "d"], rng.randint(1, 3))
    cuts = sorted(rng.sample(range(1, 100), len(names) - 1))
    weights = [hi - lo for lo, hi in zip([0, *cuts], [*cuts, 100], strict=True)]
    extras: list[dict[str, Any]] = [
        {},
        {"replicas": 2},
        {"autoscaling": {"minReplicas": 1, "maxReplicas": 3}},
        {"disruptionBudget": {"maxUnavailable": 1}},
    ]
    variants = [
        specs.variant(n, w, **rng.choice(extras)) for n, w in zip(names, weights, strict=True)
    ]
    routing = rng.choice([None, {"sticky": {"header": "x-user"}}, {"router": {"replicas": 2}}])
    return specs.isvc(*variants, routing=routing)["spec"]


@dataclasses.dataclass
class Burst:
    """Creates, updates and deletes of InferenceServices, and what should exist after them."""

    kube: Kube
    namespace: str
    rng: random.Random
    specs: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    created: int = 0

    def step(self) -> None:
        """Do one random operation: 40% creates, 50% updates, 10% deletes."""
        roll = self.rng.random()
        if not self.specs or roll < 0.4:
            name = f"s{self.created}"
            self.created += 1
            spec = random_spec(self.rng)
            body = specs.isvc(name=name, namespace=self.namespace)
            self.kube.create(ISVC, self.namespace, body | {"spec": spec})
            self.specs[name] = spec
            return
        name = self.rng.choice(sorted(self.specs))
        if roll < 0.9:
            spec = random_spec(self.rng)
            change = merge_patch.diff({"spec": self.specs[name]}, {"spec": spec})
            self.kube.patch(ISVC, self.namespace, name, change)
            self.specs[name] = spec
            return
        self.kube.delete(ISVC, self.namespace, name)
        del self.specs[name]

    def run(self, operations: int, *, before: Callable[[int], None] = lambda _: None) -> None:
        """Do `operations` operations a few milliseconds apart; `before(i)` precedes the i-th."""
        for i in range(operations):
            before(i)
            self.step()
            time.sleep(self.rng.uniform(0, 0.03))


# Convergence


def problems(kube: Kube, namespace: str, expected: set[str]) -> list[str]:
    """Say what keeps the namespace from having converged (nothing: it has)."""
    found: list[str] = []
    isvcs = {o["metadata"]["name"]: o for o in kube.list(ISVC, namespace)}
    uids = {o["metadata"]["uid"] for o in isvcs.values()}
    if set(isvcs) != expected:
        found.append(f"InferenceServices {sorted(isvcs)}, expected {sorted(expected)}")
    children: dict[str, set[tuple[str, str]]] = collections.defaultdict(set)
    for resource in CHILD_RESOURCES:
        for child in kube.list(resource, namespace, MANAGED):
            name, kind = child["metadata"]["name"], child["kind"]
            owner = (child["metadata"].get("labels") or {}).get(meta.ISVC_LABEL, "")
            refs = child["metadata"].get("ownerReferences") or []
            controllers = [r.get("uid") for r in refs if r.get("controller")]
            live = isvcs.get(owner)
            if not uids & set(controllers):
                found.append(f"orphan {kind} {name} (of {owner!r}: no owner {controllers} exists)")
            elif live is None or controllers != [live["metadata"]["uid"]]:
                found.append(f"{kind} {name}: owner references {refs}")
            children[owner].add((kind, name))
    for name, isvc in isvcs.items():
        want = desired_children(isvc, namespace)
        if children[name] != want:
            lost, extra = sorted(want - children[name]), sorted(children[name] - want)
            found.append(f"{name}: children lost {lost}, extra {extra}")
        status = isvc.get("status") or {}
        ready = [c for c in status.get("conditions") or [] if c["type"] == "Ready"]
        if status.get("observedGeneration") != isvc["metadata"]["generation"] or not (
            ready and ready[0]["status"] == "True"
        ):
            found.append(f"{name}: {ready} for generation {status.get('observedGeneration')}")
    return found


def converge(kube: Kube, namespace: str, expected: set[str]) -> float:
    """Play the controllers the emulator lacks until the namespace converges; give seconds.

    The garbage collector is not played: the emulator's collects the children of a deleted
    owner, late ones too, so an orphan left is a problem like any other.
    """
    started = time.monotonic()

    def converged() -> bool:
        play_controllers(kube, namespace)
        left = problems(kube, namespace, expected)
        assert not left, "\n".join(left[:20])
        return True

    wait_for(converged, timeout=CONVERGE_SECONDS, interval=0.5, what=f"convergence, seed {SEED}")
    return time.monotonic() - started


def assert_up_and_sane(process: OperatorProcess) -> None:
    """The operator runs, and logged no bug: only the API's refusals."""
    running = process.process is not None and process.process.poll() is None
    assert running, f"the operator exited (seed {SEED})"
    bugs = [line for line in process.log().splitlines() if any(b in line for b in BUG_LINES)]
    assert not bugs, f"seed {SEED}:\n" + "\n".join(bugs[:20])


# The fault scenarios


@dataclasses.dataclass(frozen=True)
class Scenario:
    """Faults that fall during a burst of `operations`, and how often the operator is killed."""

    name: str
    operations: int
    faults: list[Fault] = dataclasses.field(default_factory=list)
    watch_faults: list[WatchFault] = dataclasses.field(default_factory=list)
    kills: int = 0


SCENARIOS = {
    "api-errors": Scenario("API errors and timeouts, 20% of calls", 30, faults=API_FAULTS),
    "watch-cuts": Scenario("watches cut, half the resumes 410 Gone", 30, watch_faults=WATCH_FAULTS),
    "kills": Scenario("SIGKILL at 3 random points", 50, kills=3),
    "everything": Scenario(
        "all of these at once",
        30,
        faults=API_FAULTS,
        watch_faults=WATCH_FAULTS,
        kills=2,
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_a_burst_under_faults_converges_with_every_child_once_and_the_operator_up(
    kube: Kube,
    emulator: EmulatorThread,
    operator: OperatorProcess,
    namespace: str,
    scenario: Scenario,
) -> None:
    meter = Meter(emulator)
    emulator.emulator.faults[:] = scenario.faults
    emulator.emulator.watch_faults[:] = scenario.watch_faults
    rng = random.Random(f"{SEED}-{scenario.name}")
    # Three operations apart at least: each kill is followed by its restart before the next.
    kills = set(rng.sample(range(3, scenario.operations - 5, 3), scenario.kills))
    restarts: set[int] = set()

    def kill_or_restart(i: int) -> None:
        if i in kills:
            operator.stop(kill=True)
            restarts.add(i + 2)  # two operations later: the user does not wait for it
        elif i in restarts:
            operator.start()

    burst = Burst(kube, namespace, rng)
    burst.run(scenario.operations, before=kill_or_restart)
    converged = converge(kube, namespace, set(burst.specs))
    assert operator.starts == 1 + scenario.kills, f"seed {SEED}"
    assert_up_and_sane(operator)
    meter.record(
        scenario.name,
        operations=scenario.operations,
        restarts=scenario.kills,
        converged=converged,
    )


# Any spec at all


@st.composite
def broken(draw: st.DrawFn, obj: dict[str, Any]) -> dict[str, Any]:
    """Break a valid InferenceService in one of the ways admission would have refused.

    Its junk is JSON without infinities, as anything written through the API is.
    """
    obj = copy.deepcopy(obj)
    spec = obj["spec"]
    variant = spec["variants"][0]
    how = draw(
        st.sampled_from(
            ["weights", "twin", "no variants", "mirror", "junk field", "junk variant", "junk spec"]
        )
    )
    if how == "weights":
        variant["weight"] = draw(st.sampled_from([101, -5, 1000]))
    elif how == "twin":
        spec["variants"].append(copy.deepcopy(variant))
    elif how == "no variants":
        spec["variants"] = []
    elif how == "mirror":
        spec.setdefault("routing", {})["mirror"] = {"variant": "nowhere", "percent": 10}
    elif how == "junk field":
        field = draw(st.sampled_from(["model", "replicas", "weight", "resources", "name"]))
        variant[field] = draw(strategies.api_json_values)
    elif how == "junk variant":
        spec["variants"][0] = draw(strategies.api_json_values)
    else:
        obj["spec"] = draw(strategies.api_json_values)
    return obj


@st.composite
def any_inference_services(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Draw six InferenceServices: three valid, three broken (which pruning may mend)."""
    valid = [draw(strategies.inference_services()) for _ in range(3)]
    return valid + [draw(broken(draw(strategies.inference_services()))) for _ in range(3)]


def outcome(isvc: dict[str, Any]) -> tuple[str, str] | None:
    """Give (status, reason) of the Ready condition, once it is for the latest generation."""
    status = isvc.get("status") or {}
    ready = [c for c in status.get("conditions") or [] if c["type"] == "Ready"]
    if not ready or status.get("observedGeneration") != isvc["metadata"].get("generation"):
        return None
    return ready[0]["status"], ready[0]["reason"]


@pytest.mark.slow
def test_any_spec_written_past_admission_ends_ready_or_invalid_and_the_operator_stays_up(
    kube: Kube, emulator: EmulatorThread, operator: OperatorProcess
) -> None:
    meter = Meter(emulator)
    started = time.monotonic()
    tried = {"valid": 0, "invalid": 0}

    @hypothesis_seed(SEED)
    @settings(
        max_examples=3,
        deadline=None,
        database=None,
        phases=[Phase.generate],  # no shrinking: each example costs seconds
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(any_inference_services())
    def fed_to_the_operator(objs: list[dict[str, Any]]) -> None:
        valid: dict[str, bool] = {}
        for obj in objs:
            namespace = f"fuzz{next(_namespaces)}"  # one each: child names cannot collide
            kube.create_namespace(namespace)
            obj["metadata"]["namespace"] = namespace
            stored = kube.create(ISVC, namespace, obj)
            try:
                validation.parse(stored)
            except SpecError:
                valid[namespace] = False
            else:
                valid[namespace] = True
            tried["valid" if valid[namespace] else "invalid"] += 1

        def settled() -> bool:
            for namespace, ok in valid.items():
                play_controllers(kube, namespace)
                [isvc] = kube.list(ISVC, namespace)
                got = outcome(isvc)
                want = ("True", "Ready") if ok else ("False", "InvalidSpec")
                assert got == want, f"{namespace}: {got}, want {want}: {isvc.get('spec')!r:.300}"
            return True

        wait_for(settled, timeout=30, interval=0.3, what=f"every outcome, seed {SEED}")
        for namespace, ok in valid.items():
            [isvc] = kube.list(ISVC, namespace)
            message = next(c for c in isvc["status"]["conditions"] if c["type"] == "Ready")
            assert ok or message["message"].startswith("the spec is invalid: "), message
        assert_up_and_sane(operator)

    fed_to_the_operator()
    assert tried["valid"] and tried["invalid"], tried
    meter.record(
        f"generated specs ({tried['valid']} valid, {tried['invalid']} invalid)",
        operations=sum(tried.values()),
        restarts=0,
        converged=time.monotonic() - started,
    )
