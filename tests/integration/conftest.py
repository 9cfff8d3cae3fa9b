"""Fixtures: one API emulator and one operator per module, a fresh namespace per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from kubeserve.testing.emulator import EmulatorThread
from kubeserve.testing.kube_client import Kube
from kubeserve.testing.operator_process import OperatorProcess

_names = itertools.count(1)


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorThread]:
    with EmulatorThread() as em:
        yield em


@pytest.fixture(scope="module")
def kube(emulator: EmulatorThread) -> Kube:
    return Kube(emulator.url)


@pytest.fixture(scope="module")
def operator(
    emulator: EmulatorThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    process = OperatorProcess(emulator, tmp_path_factory.mktemp("operator")).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def gateway_operator(
    emulator: EmulatorThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """An operator that manages Gateway API routes too and resyncs every second."""
    process = OperatorProcess(
        emulator, tmp_path_factory.mktemp("gateway-operator"), "--gateway-api", resync_seconds=1.0
    ).start()
    yield process
    process.stop()


@pytest.fixture()
def namespace(kube: Kube, request: pytest.FixtureRequest) -> str:
    name = f"t{next(_names)}-{request.node.name.replace('_', '-')[5:30].strip('-').lower()}"
    kube.create_namespace(name)
    return name


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
