"""`kubeserve operator --api-timeout`: parsed, checked, and given to every client it makes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kubeserve import cluster
from kubeserve.controller import main as operator_main
from kubeserve.controller import runtime
from kubeserve.controller.config import OperatorConfig
from kubeserve.controller.metrics import OperatorMetrics
from support.chart import CHART, one, render, require_tool, run, value_args


def parse(*argv: str) -> Any:
    return operator_main.build_parser().parse_args(list(argv))


@pytest.fixture()
def kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kubeconfig of a cluster nobody calls: making clients reads it, and nothing more."""
    path = tmp_path / "kubeconfig"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }
    path.write_text(json.dumps(config))
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv(operator_main.API_TIMEOUT_ENV, raising=False)
    return path


def test_the_default_is_thirty_seconds() -> None:
    assert operator_main.api_timeout_from(parse(), {}) == cluster.DEFAULT_TIMEOUT == 30.0


def test_the_flag_takes_seconds_and_beats_the_environment() -> None:
    assert operator_main.api_timeout_from(parse("--api-timeout", "12.5"), {}) == 12.5
    env = {operator_main.API_TIMEOUT_ENV: "7"}
    assert operator_main.api_timeout_from(parse(), env) == 7.0
    assert operator_main.api_timeout_from(parse("--api-timeout", "3"), env) == 3.0


@pytest.mark.parametrize("value", ["0", "-1", "abc", "inf", "nan", ""])
def test_a_timeout_that_is_not_seconds_above_zero_is_refused_naming_the_flag(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        parse(f"--api-timeout={value}")
    assert info.value.code == 2
    assert "argument --api-timeout:" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-5", "soon"])
def test_a_bad_environment_value_is_refused_naming_the_variable(
    value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(operator_main.API_TIMEOUT_ENV, value)
    assert operator_main.main(["--metrics-port", "0", "--health-port", "0"]) == 2
    assert f"kubeserve operator: {operator_main.API_TIMEOUT_ENV}: " in capsys.readouterr().err


def test_every_client_the_operator_makes_gets_the_timeout(
    kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[cluster.Cluster] = []
    connect = cluster.Cluster.from_environment

    def recording(**kwargs: Any) -> cluster.Cluster:
        client = connect(**kwargs)
        made.append(client)
        return client

    monkeypatch.setattr(cluster.Cluster, "from_environment", recording)
    operator = operator_main.build_runtime(OperatorConfig(), OperatorMetrics(), api_timeout=4.5)
    assert [client.timeout for client in made] == [4.5, 4.5], "reconciles' and watches'"
    assert operator.work.retry_delay(None) == runtime.RETRY_DELAY


def test_a_client_calls_with_its_timeout_and_watches_add_their_own(
    kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = cluster.Cluster.from_environment(timeout=4.5)
    asked: list[Any] = []

    def call_api(*_: Any, _request_timeout: Any = None) -> Any:
        asked.append(_request_timeout)
        raise ConnectionError("nobody there")

    monkeypatch.setattr(client._api, "call_api", call_api)
    kind = cluster.KINDS[("v1", "ConfigMap")]
    with pytest.raises(cluster.ApiError):
        client.get(kind, "default", "c")
    with pytest.raises(cluster.ApiError):
        list(client.watch(kind, "default", resource_version="1", timeout_seconds=300))
    assert asked == [4.5, (4.5, 304.5)]


def test_the_testing_retry_delay_reaches_the_runtime(kubeconfig: Path) -> None:
    args = parse("--testing-retry-delay", "0.25")
    operator = operator_main.build_runtime(
        OperatorConfig(), OperatorMetrics(), api_timeout=30.0, retry_delay=args.testing_retry_delay
    )
    assert operator.work.retry_delay(None) == 0.25
    assert operator.work.retry_delay(2.0) == 2.0


# The chart sets it


def test_the_chart_passes_its_value_to_the_operator(tmp_path: Path) -> None:
    require_tool("helm")
    for values, expected in [({}, 30.0), ({"operator": {"apiTimeoutSeconds": 2.5}}, 2.5)]:
        container = one(render(values, tmp_path), "Deployment")["spec"]["template"]["spec"][
            "containers"
        ][0]
        env = {e["name"]: e["value"] for e in container["env"]}
        args = operator_main.build_parser().parse_args(container.get("args", []))
        assert operator_main.api_timeout_from(args, env) == expected


@pytest.mark.parametrize("value", [0, -1, "30"])
def test_the_chart_refuses_a_timeout_that_is_not_seconds_above_zero(
    value: object, tmp_path: Path
) -> None:
    helm = require_tool("helm")
    values = {"operator": {"apiTimeoutSeconds": value}}
    proc = run(
        [helm, "template", "kubeserve", str(CHART), *value_args(values, tmp_path)], check=False
    )
    assert proc.returncode != 0 and "apiTimeoutSeconds" in proc.stderr, proc.stderr[:500]
