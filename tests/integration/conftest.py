"""Fixtures: one API emulator and one operator per module, a fresh namespace per test."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest

from kubeserve.testing.emulator import EmulatorThread
from kubeserve.testing.kube_client import Kube
from kubeserve.testing.operator_process import OperatorProcess
from kubeserve.testing.pod_metrics import StandInPods
from support import settling

_names = itertools.count(1)


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorThread]:
    with EmulatorThread() as em:
        yield em


@pytest.fixture(scope="module")
def kube(emulator: EmulatorThread) -> Kube:
    return Kube(emulator.url)


StartOperator = Callable[..., OperatorProcess]


@pytest.fixture(scope="module")
def start_operator(
    emulator: EmulatorThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StartOperator]:
    """Start operators with a module's own arguments: `start_operator(workdir, *args, ...)`.

    Each works in a fresh folder named `workdir` and is stopped when the module ends.
    """
    started: list[OperatorProcess] = []

    def start(workdir: str, *args: str, resync_seconds: float = 3.0) -> OperatorProcess:
        process = OperatorProcess(
            emulator, tmp_path_factory.mktemp(workdir), *args, resync_seconds=resync_seconds
        )
        started.append(process.start())
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="module")
def operator(start_operator: StartOperator) -> OperatorProcess:
    return start_operator("operator")


@pytest.fixture(scope="module")
def gateway_operator(start_operator: StartOperator) -> OperatorProcess:
    """An operator that manages Gateway API routes too and resyncs every second."""
    return start_operator(
        "gateway-operator", "--gateway-api", resync_seconds=settling.GATEWAY_RESYNC_SECONDS
    )


@pytest.fixture()
def namespace(kube: Kube, request: pytest.FixtureRequest) -> str:
    name = f"t{next(_names)}-{request.node.name.replace('_', '-')[5:30].strip('-').lower()}"
    kube.create_namespace(name)
    return name


@pytest.fixture()
def pods(kube: Kube, namespace: str) -> Iterator[StandInPods]:
    """Stand-in pods of the InferenceService "digits" in the test's namespace."""
    made = StandInPods(kube, namespace)
    yield made
    made.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when == "call":
        process = item.funcargs.get("operator") if hasattr(item, "funcargs") else None
        if isinstance(process, OperatorProcess):
            report.sections.append(
                ("operator log (last 60 lines)", "\n".join(process.log().splitlines()[-60:]))
            )
