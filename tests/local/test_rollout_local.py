"""`kubeserve up` runs a rollout: real servers and nginx, the file edited as a commit would be.

The proof the rollout issue asks of the data plane: under continuous load the live split
walks 1 → 5 → 25 → 50 → 100 with not one failed request across the router's reloads, the
share each step's requests see matches its weight (an exact binomial test at 99.9%), and no
sticky user moves from the candidate back to the baseline. A candidate that answers 5xx is
rolled back and the router carries the split before again; one whose model cannot load holds
the rollout; an invalid edit keeps the running spec.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeserve.api import status, validation
from kubeserve.local import experiment, router_reload, spec_file, up
from kubeserve.local import rollout as local_rollout
from kubeserve.rollout import decide
from support import specs

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
needs_nginx = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (apt-get install nginx)"
)
NAME = "shift"
STEPS = [1, 5, 25, 50, 100]
USER_KEYS = 300
ALPHA = 0.001  # the binomial test's level: 99.9%
LIVE = re.compile(r"^router: (\S+) live \(config reloaded\)$")


def model(root: Path, name: str) -> dict[str, str]:
    return {"format": "onnx", "storageUri": (root / name).as_uri()}


def shift(
    models: Path,
    v1: int,
    v2: int,
    *,
    v2_model: str = "digits-onnx/v2",
    **rollout: Any,
) -> dict[str, Any]:
    """A sticky rollout of v2 over v1, fast enough for a test (checked at every --interval)."""
    obj = specs.isvc(
        specs.variant("v1", v1, model=model(models, "digits-onnx/v1")),
        specs.variant("v2", v2, model=model(models, v2_model)),
        name=NAME,
        routing={"sticky": {"header": "x-user-id"}, "overrideHeader": "x-kubeserve-variant"},
    )
    obj["spec"]["rollout"] = {
        "candidate": "v2",
        "steps": STEPS,
        "minStepDuration": "2s",
        "minRequestsPerStep": 20,
        "gates": [{"metric": "errorRate", "maxIncrease": 0.01, "max": 0.05}],
        **rollout,
    }
    return obj


def write(path: Path, obj: dict[str, Any]) -> None:
    """Replace the file at once, as an editor's save or `git pull` does."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(obj))
    os.replace(tmp, path)


def broken_onnx(path: Path) -> None:
    """Write a model that loads and is ready, and fails every prediction (a 500)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    # 64 features do not reshape into rows of 7: onnxruntime fails at run time, not at load.
    shape = numpy_helper.from_array(np.array([-1, 7], dtype=np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["input", "shape"], ["output"])],
        "broken",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)],
        [shape],
    )
    built = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    built.ir_version = 8
    path.mkdir(parents=True)
    onnx.save(built, path / "model.onnx")


@dataclasses.dataclass
class Line:
    at: float
    text: str


class LocalRun:
    """A `kubeserve up` process: its output lines as they come, each with the time it came."""

    def __init__(self, spec_path: Path, models: Path, *extra: str) -> None:
        self.path = spec_path
        self.status_file = spec_path.with_name("status.yaml")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kubeserve.cli",
                "up",
                "-f",
                str(spec_path),
                "--port",
                "0",
                "--models-root",
                str(models),
                "--status-file",
                str(self.status_file),
                "--interval",
                "0.3",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[Line] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        found = self.wait_for(r"is up at (http://\S+)", timeout=120)
        self.base = re.search(r"http://\S+", found.text).group(0)  # type: ignore[union-attr]
        self.url = f"{self.base}/v1/models/{NAME}:predict"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for text in self.proc.stdout:
            with self._changed:
                self.lines.append(Line(time.monotonic(), text.rstrip("\n")))
                self._changed.notify_all()

    def wait_for(self, pattern: str, *, after: int = 0, timeout: float = 30) -> Line:
        """Give the first line from index `after` on that matches."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines[after:]:
                    if re.search(pattern, line.text):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    output = "\n".join(line.text for line in self.lines)
                    raise AssertionError(f"no line matching {pattern!r}; the run said:\n{output}")
                self._changed.wait(min(left, 0.5))

    def status(self) -> dict[str, Any]:
        loaded: dict[str, Any] = yaml.safe_load(self.status_file.read_text())["status"]
        return loaded

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=60)
        assert self.proc.returncode == 0, self.output()
        return self.output()

    def output(self) -> str:
        return "\n".join(line.text for line in self.lines)


@pytest.fixture
def running(tmp_path: Path, example_models: Path) -> Iterator[Callable[..., LocalRun]]:
    runs: list[LocalRun] = []

    def start(obj: dict[str, Any], *extra: str) -> LocalRun:
        path = tmp_path / "shift.yaml"
        write(path, obj)
        runs.append(LocalRun(path, example_models, *extra))
        return runs[-1]

    yield start
    for run in runs:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()


BODY = json.dumps({"instances": [[0.0] * 64]}).encode()


@dataclasses.dataclass(frozen=True)
class Answer:
    """One request through the router: when it was sent and answered, who served it, or why not."""

    sent: float
    done: float
    key: str | None
    variant: str | None
    status: int | None
    error: str | None = None


def ask(url: str, key: str | None = None) -> Answer:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["x-user-id"] = key
    sent = time.monotonic()
    try:
        request = urllib.request.Request(url, data=BODY, headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
            variant, code = response.headers["x-kubeserve-variant"], response.status
    except urllib.error.HTTPError as exc:
        return Answer(sent, time.monotonic(), key, exc.headers["x-kubeserve-variant"], exc.code)
    except OSError as exc:
        return Answer(sent, time.monotonic(), key, None, None, repr(exc))
    return Answer(sent, time.monotonic(), key, variant, code)


class Load:
    """Continuous load through the router until stopped: random-split and sticky-user threads."""

    def __init__(self, url: str, *, random_threads: int = 3, sticky_threads: int = 1) -> None:
        self.url = url
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._random, daemon=True) for _ in range(random_threads)
        ] + [
            threading.Thread(target=self._sticky, args=(i, sticky_threads), daemon=True)
            for i in range(sticky_threads)
        ]

    def _random(self) -> None:
        while not self._stop.is_set():
            self.answers.append(ask(self.url))

    def _sticky(self, first: int, every: int) -> None:
        user = first
        while not self._stop.is_set():
            self.answers.append(ask(self.url, f"user-{user % USER_KEYS}"))
            user += every

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)


def binomial_p_value(k: int, n: int, p: float) -> float:
    """Give the exact two-sided p-value of k successes in n draws of probability p."""
    if p in (0.0, 1.0):
        return 1.0 if k == n * p else 0.0

    def log_pmf(i: int) -> float:
        return (
            math.lgamma(n + 1)
            - math.lgamma(i + 1)
            - math.lgamma(n - i + 1)
            + i * math.log(p)
            + (n - i) * math.log1p(-p)
        )

    observed = log_pmf(k)
    return min(
        1.0, sum(math.exp(log_pmf(i)) for i in range(n + 1) if log_pmf(i) <= observed + 1e-7)
    )


def test_the_binomial_test_rejects_a_wrong_share_and_keeps_a_right_one() -> None:
    assert binomial_p_value(50, 1000, 0.05) > 0.5
    assert binomial_p_value(80, 1000, 0.05) < ALPHA
    assert binomial_p_value(25, 1000, 0.05) < ALPHA


@dataclasses.dataclass(frozen=True)
class Epoch:
    """A stretch of time when the router surely carried one split."""

    weights: dict[str, int]
    begin: float
    end: float


def epochs(run: LocalRun, after: int) -> list[Epoch]:
    """Cut the run's time at each rollout event line (before a reload) and router line (after).

    The event is said before nginx is even asked to test the new config, so a request sent
    before the test saw the event line met the old config; one sent after the router line met
    the new one. Requests in between are left out.
    """
    found: list[Epoch] = []
    weights, begin = None, 0.0
    for line in run.lines[after:]:
        if line.text.startswith("rollout: ") and weights is not None:
            found.append(Epoch(weights, begin, line.at))
            weights = None
        elif match := LIVE.match(line.text):
            weights = dict(
                (name, int(w)) for name, w in (p.split("=") for p in match.group(1).split(","))
            )
            begin = line.at
    if weights is not None:
        found.append(Epoch(weights, begin, math.inf))
    return found


def within(epoch: Epoch, answers: list[Answer]) -> list[Answer]:
    return [a for a in answers if a.sent > epoch.begin and a.done < epoch.end]


@dataclasses.dataclass(frozen=True)
class Walked:
    """One rollout walked under load: the run, its epochs from the first reload on, the answers."""

    run: LocalRun
    epochs: list[Epoch]
    answers: list[Answer]
    said: str


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory, example_models: Path) -> Iterator[Walked]:
    """Start at v1=100, commit v2=100 under continuous load, wait for the walk to succeed."""
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install nginx)")
    path = tmp_path_factory.mktemp("walk") / "shift.yaml"
    write(path, shift(example_models, 100, 0))
    run = LocalRun(path, example_models)
    try:
        with Load(run.url, random_threads=3, sticky_threads=2) as load:
            time.sleep(0.5)  # some requests before: all on v1
            mark = len(run.lines)
            write(path, shift(example_models, 0, 100))  # the commit "v2: 100"
            run.wait_for(r"^rollout: RolloutSucceeded", after=mark, timeout=90)
            run.wait_for(r"^router: v1=0,v2=100 live", after=mark, timeout=30)
            time.sleep(1.0)  # the last step's requests
        said = run.stop()
        yield Walked(run, epochs(run, mark), load.answers, said)
    finally:
        if run.proc.poll() is None:
            run.proc.kill()


@needs_nginx
@pytest.mark.slow
def test_a_rollout_walks_every_step_under_load_and_no_request_fails(walk: Walked) -> None:
    found, answers, said = walk.epochs, walk.answers, walk.said
    failed = [a for a in answers if a.status != 200]
    assert not failed, f"{len(failed)} of {len(answers)} requests failed: {failed[:5]}"
    shares = [e.weights["v2"] for e in found]
    assert shares == STEPS, said
    assert len(re.findall(r"^rollout: RolloutAdvanced", said, re.M)) == len(STEPS) - 2
    print(f"\n{len(answers)} requests, {len(failed)} failed, {len(found)} reloads")


@needs_nginx
@pytest.mark.slow
def test_each_steps_share_of_requests_matches_its_weight(walk: Walked) -> None:
    found, answers = walk.epochs, walk.answers
    random_split = [a for a in answers if a.key is None]
    for epoch in found:
        seen = Counter(a.variant for a in within(epoch, random_split))
        n, k = sum(seen.values()), seen["v2"]
        share = epoch.weights["v2"] / 100
        p_value = binomial_p_value(k, n, share)
        print(f"step v2={epoch.weights['v2']}%: {k}/{n} = {k / n:.4f} (p = {p_value:.3g})")
        assert n >= 300, f"too few requests at v2={share:.0%} to test: {n}"
        assert p_value >= ALPHA, f"v2 at {share:.0%} saw {k} of {n}"


@needs_nginx
@pytest.mark.slow
def test_no_sticky_user_moves_from_the_candidate_back_to_the_baseline(walk: Walked) -> None:
    found, answers = walk.epochs, walk.answers
    by_user: dict[str, list[str]] = defaultdict(list)
    for epoch in found:
        seen: dict[str, set[str]] = defaultdict(set)
        for a in within(epoch, [a for a in answers if a.key is not None]):
            seen[a.key].add(a.variant)
        for key, variants in seen.items():
            assert len(variants) == 1, f"{key} saw {variants} under one split"
            by_user[key].append(variants.pop())
    for key, path in by_user.items():
        first_v2 = path.index("v2") if "v2" in path else len(path)
        assert set(path[first_v2:]) <= {"v2"}, f"{key} went {path}"
    moved = [key for key, path in by_user.items() if path[0] == "v1" and path[-1] == "v2"]
    assert len(by_user) == USER_KEYS and len(moved) > USER_KEYS // 2


@needs_nginx
@pytest.mark.slow
def test_the_status_file_shows_the_rollout_succeeded_at_the_live_split(walk: Walked) -> None:
    shown = walk.run.status()
    status.InferenceServiceStatus.model_validate(shown)
    rollout = status.RolloutStatus.model_validate(shown["rollout"])
    assert rollout.phase == "Succeeded" and rollout.progress == "Succeeded 5/5"
    assert rollout.live_weights == {"v1": 0, "v2": 100}
    assert rollout.start_weights == {"v1": 100, "v2": 0}
    assert shown["traffic"] == "v1=0,v2=100"
    assert {v: e["weight"] for v, e in shown["variants"].items()} == {"v1": 0, "v2": 100}
    assert shown["observedGeneration"] == 2
    (condition,) = [c for c in shown["conditions"] if c["type"] == decide.CONDITION]
    assert (condition["status"], condition["reason"]) == ("False", "Succeeded")


@needs_nginx
@pytest.mark.slow
def test_a_candidate_that_answers_5xx_is_rolled_back_and_the_router_carries_the_split_before(
    running: Callable[..., LocalRun], example_models: Path, tmp_path: Path
) -> None:
    broken_onnx(tmp_path / "broken")
    # The file is the commit "v2: 100"; --start-weights is the split live before it.
    obj = shift(example_models, 0, 100, v2_model=str(tmp_path / "broken"))
    obj["spec"]["variants"][1]["model"] = model(tmp_path, "broken")
    run = running(obj, "--start-weights", "v1=100,v2=0")
    started = run.wait_for(r"^rollout: RolloutStarted")
    with Load(run.url, random_threads=3, sticky_threads=0) as load:
        back = run.wait_for(
            r"^rollout: Warning RolloutRolledBack: Roll back 1→0: harm on errorRate"
        )
        live = run.wait_for(r"^router: v1=100,v2=0 live", after=run.lines.index(back))
        time.sleep(0.5)
    after = [a for a in load.answers if a.sent > live.at]
    assert len(after) > 100 and {a.variant for a in after} == {"v1"}
    assert all(a.status == 200 for a in after)
    assert any(a.status == 500 and a.variant == "v2" for a in load.answers)
    shown = run.status()
    assert shown["rollout"]["phase"] == "RolledBack"
    assert shown["rollout"]["liveWeights"] == {"v1": 100, "v2": 0}
    assert shown["traffic"] == "v1=100,v2=0"
    (condition,) = [c for c in shown["conditions"] if c["type"] == decide.CONDITION]
    assert (condition["status"], condition["reason"]) == ("False", "RolledBack")
    assert started.at < back.at
    run.stop()


@needs_nginx
@pytest.mark.slow
def test_edits_of_the_file_invalid_needing_a_restart_or_to_a_candidate_that_cannot_load(
    running: Callable[..., LocalRun], example_models: Path, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "model.onnx").write_bytes(b"not a model")
    before = shift(example_models, 100, 0)
    before["spec"]["variants"][1]["model"] = model(tmp_path, "garbage")
    run = running(before)
    run.wait_for(
        r"^warning: variant v2, the rollout's candidate, is not ready: model failed to load"
    )

    # Invalid: every problem said, generation 1 kept.
    mark = len(run.lines)
    invalid = shift(example_models, 60, 60, steps=[5, 1])
    invalid["spec"]["variants"][1]["model"] = model(tmp_path, "garbage")
    write(run.path, invalid)
    run.wait_for(r"invalid, still serving generation 1:$", after=mark)
    run.wait_for(r"^  spec\.rollout\.steps\[1\]: steps must increase", after=mark)
    run.wait_for(r"^  spec\.variants.*sum", after=mark)

    # A new model needs new servers: said, nothing applied.
    mark = len(run.lines)
    write(run.path, shift(example_models, 100, 0))
    run.wait_for(r"variant v2's model changed: restart kubeserve up", after=mark)

    # The commit "v2: 100" with a candidate that never became ready: the rollout holds.
    mark = len(run.lines)
    after = shift(example_models, 0, 100)
    after["spec"]["variants"][1]["model"] = model(tmp_path, "garbage")
    write(run.path, after)
    run.wait_for(r"generation 2: weights v1=0,v2=100", after=mark)
    run.wait_for(
        r"^rollout: RolloutStarted: .*held at 0: the candidate's pods are not ready", after=mark
    )
    answers = [ask(run.url) for _ in range(50)]
    assert {(a.variant, a.status) for a in answers} == {("v1", 200)}
    shown = run.status()
    assert shown["rollout"]["phase"] == "Holding"
    assert shown["traffic"] == "v1=100,v2=0"
    (condition,) = [c for c in shown["conditions"] if c["type"] == decide.CONDITION]
    assert (condition["status"], condition["reason"]) == ("True", "Holding")

    # `kubeserve rollout shift abort`, locally: the annotation edited in.
    mark = len(run.lines)
    after["metadata"]["annotations"] = {decide.MANUAL_ANNOTATION: "abort/1"}
    write(run.path, after)
    run.wait_for(r"generation 2 kept; rollout command 'abort/1' taken now", after=mark)
    run.wait_for(
        r"^rollout: Warning RolloutRolledBack: Roll back 0→0: kubeserve rollout abort", after=mark
    )
    assert run.status()["rollout"]["phase"] == "RolledBack"
    said = run.stop()
    assert "router: " not in said  # the live split never moved: no reload


# Without nginx: the local status keeps the live split, the rollout's, never the spec's.


class Quiet:
    """A port nothing listens on: a server whose /metrics cannot be read."""

    def __init__(self) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]


def local_status(
    obj: dict[str, Any], *, live: dict[str, int] | None, ready: bool, said: list[str]
) -> experiment.LocalStatus:
    isvc = spec_file.with_generation(validation.parse(obj), 1)
    started = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    servers = [
        experiment.Server(n, Quiet().port, 100 + i, started) for i, n in enumerate(["v1", "v2"])
    ]
    return experiment.LocalStatus(
        isvc,
        servers,
        url="http://127.0.0.1:1",
        live=live,
        not_ready=lambda _server: None if ready else "model is loading",
        say=said.append,
        interval=1.0,
    )


NOW = datetime.datetime(2025, 1, 1, 0, 1, tzinfo=datetime.UTC)


def test_started_from_a_split_before_the_status_shows_the_live_split_not_the_destination() -> None:
    said: list[str] = []
    local = local_status(
        shift(Path("/m"), 0, 100), live={"v1": 100, "v2": 0}, ready=True, said=said
    )
    assert local.status["traffic"] == "v1=100,v2=0"
    assert local.due(NOW) and local.collect(NOW)
    assert local.live == {"v1": 99, "v2": 1}
    assert local.status["traffic"] == "v1=99,v2=1"
    assert {v: e["weight"] for v, e in local.status["variants"].items()} == {"v1": 99, "v2": 1}
    assert local.status["rollout"]["phase"] == "Progressing"
    assert [v.weight for v in local.live_isvc.spec.variants] == [99, 1]
    assert local.isvc.spec.live_weights() == {"v1": 0, "v2": 100}  # the spec is untouched
    assert said == [
        "rollout: RolloutStarted: Start v2 0→100 in 5 steps (1, 5, 25, 50, 100), baseline v1; now at 1"
    ]
    # The next check waits for the interval.
    assert not local.due(NOW + datetime.timedelta(seconds=0.5))
    assert local.due(NOW + datetime.timedelta(seconds=1))


def test_a_candidate_that_is_not_ready_holds_the_split() -> None:
    said: list[str] = []
    local = local_status(
        shift(Path("/m"), 0, 100), live={"v1": 100, "v2": 0}, ready=False, said=said
    )
    assert not local.collect(NOW)
    assert local.live == {"v1": 100, "v2": 0}
    assert local.status["rollout"]["phase"] == "Holding"
    port = local.servers[1].port
    assert local.status["rollout"]["lastDecision"]["reason"].endswith(
        f"held at 0: the candidate's pods are not ready: the server on port {port}: "
        "model is loading"
    )


def test_the_status_shows_the_interval_the_run_checks_at() -> None:
    said: list[str] = []
    local = local_status(
        shift(Path("/m"), 0, 100), live={"v1": 100, "v2": 0}, ready=True, said=said
    )
    local.collect(NOW)
    assert local.status["rollout"]["intervalSeconds"] == 1.0  # --interval 1, not the file's


def test_without_a_split_before_the_files_weights_are_live_at_once() -> None:
    said: list[str] = []
    local = local_status(shift(Path("/m"), 0, 100), live=None, ready=True, said=said)
    assert not local.collect(NOW)
    assert local.live == {"v1": 0, "v2": 100} and "rollout" not in local.status
    assert said == []


def test_a_new_generation_without_a_rollout_is_applied_at_once() -> None:
    said: list[str] = []
    plain = specs.isvc(specs.variant("v1", 90), specs.variant("v2", 10), name=NAME)
    local = local_status(plain, live=None, ready=True, said=said)
    assert not local.due(NOW)
    moved = specs.isvc(specs.variant("v1", 50), specs.variant("v2", 50), name=NAME)
    assert local.change(spec_file.with_generation(validation.parse(moved), 2), NOW)
    assert local.live == {"v1": 50, "v2": 50}
    assert local.status["traffic"] == "v1=50,v2=50"
    assert local.status["observedGeneration"] == 2


def test_warnings_are_marked_as_kubectl_shows_them() -> None:
    assert local_rollout.event_line(decide.ROLLED_BACK, "Roll back 5→0: x") == (
        "rollout: Warning RolloutRolledBack: Roll back 5→0: x"
    )
    assert local_rollout.event_line(decide.ADVANCED, "Advance 1→5: y") == (
        "rollout: RolloutAdvanced: Advance 1→5: y"
    )


def test_start_weights_must_be_a_whole_split_of_the_variants_and_need_a_rollout() -> None:
    isvc = validation.parse(shift(Path("/m"), 0, 100))
    assert local_rollout.start_split(isvc, {"v1": 100}) == {"v1": 100, "v2": 0}
    with pytest.raises(ValueError, match="sum to 100, not 90"):
        local_rollout.start_split(isvc, {"v1": 90})
    with pytest.raises(ValueError, match="v3, not a variant"):
        local_rollout.start_split(isvc, {"v1": 100, "v3": 0})
    plain = validation.parse(specs.canary())
    with pytest.raises(ValueError, match=r"no spec\.rollout"):
        local_rollout.start_split(plain, {"v1": 100})


@pytest.mark.parametrize("bad", ["v1", "v1=x", "v1=50,v1=50", "=100", "v1=-1"])
def test_start_weights_that_are_no_split_are_refused_by_the_parser(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        up.build_parser().parse_args(["-f", "x.yaml", "--start-weights", bad])
    assert "is not a split such as v1=100,v2=0" in capsys.readouterr().err


def test_one_interval_flag_for_experiment_and_rollout_the_old_name_kept() -> None:
    assert up.build_parser().parse_args(["-f", "x", "--interval", "2"]).interval == 2.0
    assert up.build_parser().parse_args(["-f", "x", "--experiment-interval", "3"]).interval == 3.0


@needs_nginx
def test_a_config_nginx_refuses_is_never_put_in_place(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text("# the config that serves\n")
    router = router_reload.LiveRouter(
        nginx=str(NGINX), conf=conf, prefix=tmp_path, master=os.getpid(), text=conf.read_text()
    )
    assert not router.apply(conf.read_text())  # the same config: nothing to do
    with pytest.raises(router_reload.ReloadError, match="nginx refused the new config"):
        router.apply("events {\n")
    assert conf.read_text() == "# the config that serves\n"
    assert [p.name for p in tmp_path.iterdir()] == ["nginx.conf"]


def test_an_edit_that_is_neither_a_new_spec_nor_a_command_waits_for_the_interval() -> None:
    said: list[str] = []
    obj = shift(Path("/m"), 0, 100)
    local = local_status(obj, live={"v1": 100, "v2": 0}, ready=True, said=said)
    local.collect(NOW)
    before = copy.deepcopy(local.status["rollout"])
    labelled = copy.deepcopy(obj)
    labelled["metadata"]["labels"] = {"team": "ml"}
    later = NOW + datetime.timedelta(hours=1)  # past the step's duration: a look would act
    assert not local.change(spec_file.with_generation(validation.parse(labelled), 1), later)
    assert local.status["rollout"] == before
