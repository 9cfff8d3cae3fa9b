"""A refusal's Retry-After: read from the API's answer, and honoured by the retry of the work."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Hashable
from typing import Any, cast

import kubernetes
import pytest
import urllib3

from kubeserve import cluster
from kubeserve.controller import overlay, packed, pending, reconcile, runtime, work
from kubeserve.controller.config import OperatorConfig
from kubeserve.controller.metrics import OperatorMetrics
from support import specs

CONFIGMAP = cluster.KINDS[("v1", "ConfigMap")]
OWNER = ("default", "digits")
# What no parser may take for seconds: an HTTP-date, fractions, signs, words, other digits.
NOT_SECONDS = ["Wed, 21 Oct 2015 07:28:00 GMT", "1.5", "-3", "+3", "soon", "", " ", "٣", "1e3"]


def answer(status: int, headers: dict[str, str], details: Any = None) -> urllib3.HTTPResponse:
    body: dict[str, Any] = {"kind": "Status", "code": status, "reason": "TooManyRequests"}
    if details is not None:
        body["details"] = details
    return urllib3.HTTPResponse(
        body=json.dumps(body).encode(), headers=headers, status=status, preload_content=True
    )


class StandInClient:
    """Answers every call with one urllib3 response, or raises the client's ApiException."""

    def __init__(self, response: urllib3.HTTPResponse, *, raise_it: bool = False) -> None:
        self.response, self.raise_it = response, raise_it
        self.timeouts: list[Any] = []

    def param_serialize(self, **_: Any) -> tuple[Any, ...]:
        return ("GET", "http://stand-in/api/v1/configmaps", {}, None, None)

    def call_api(self, *_: Any, _request_timeout: Any = None) -> Any:
        self.timeouts.append(_request_timeout)
        if self.raise_it:
            raise kubernetes.client.ApiException(http_resp=self.response)
        return kubernetes.client.rest.RESTResponse(self.response)


def refusal(response: urllib3.HTTPResponse, *, raise_it: bool = False) -> cluster.ApiError:
    client = cluster.Cluster(
        cast(kubernetes.client.ApiClient, StandInClient(response, raise_it=raise_it))
    )
    with pytest.raises(cluster.ApiError) as info:
        client.get(CONFIGMAP, "default", "c")
    return info.value


# Reading it


@pytest.mark.parametrize("raise_it", [False, True], ids=["response", "ApiException"])
def test_a_429_carries_the_seconds_its_retry_after_asks_for(raise_it: bool) -> None:
    error = refusal(answer(429, {"Retry-After": "7"}), raise_it=raise_it)
    assert (error.status, error.retry_after, error.retriable) == (429, 7.0, True)


@pytest.mark.parametrize("raise_it", [False, True], ids=["response", "ApiException"])
def test_a_503s_retry_after_counts_too(raise_it: bool) -> None:
    assert refusal(answer(503, {"Retry-After": "2"}), raise_it=raise_it).retry_after == 2.0


@pytest.mark.parametrize("value", NOT_SECONDS)
def test_a_retry_after_that_is_not_whole_seconds_is_ignored(value: str) -> None:
    assert refusal(answer(429, {"Retry-After": value})).retry_after is None
    assert refusal(answer(429, {"Retry-After": value}), raise_it=True).retry_after is None


def test_without_the_header_the_statuss_details_say_it_as_older_servers_did() -> None:
    assert refusal(answer(429, {}, {"retryAfterSeconds": 4})).retry_after == 4.0
    assert refusal(answer(429, {"Retry-After": "1"}, {"retryAfterSeconds": 4})).retry_after == 1.0
    for garbage in ["4", -1, True, 1.5, None, ["x"]]:
        assert refusal(answer(429, {}, {"retryAfterSeconds": garbage})).retry_after is None
    assert refusal(answer(429, {}, "not an object")).retry_after is None


def test_a_proxys_page_instead_of_a_status_is_a_refusal_like_any_other() -> None:
    page = urllib3.HTTPResponse(
        body=b"<html>503 Service Temporarily Unavailable</html>",
        headers={"Retry-After": "5"},
        status=503,
        preload_content=True,
    )
    error = refusal(page)
    assert (error.status, error.retry_after, error.retriable) == (503, 5.0, True)
    assert "Service Temporarily Unavailable" in error.message


def test_a_refusal_that_says_nothing_asks_for_no_wait() -> None:
    error = refusal(answer(500, {}))
    assert error.retry_after is None and error.retriable


def test_a_watch_refused_carries_its_retry_after() -> None:
    client = cluster.Cluster(
        cast(kubernetes.client.ApiClient, StandInClient(answer(429, {"Retry-After": "3"})))
    )
    with pytest.raises(cluster.ApiError) as info:
        list(client.watch(CONFIGMAP, "default", resource_version="1"))
    assert (info.value.status, info.value.retry_after) == (429, 3.0)


# Waiting for it


def test_refused_work_waits_the_longer_of_its_delay_and_the_apis_ask_up_to_a_bound() -> None:
    queue = pending.PendingWork(lambda *_: None, threads=1, retry_delay=5.0)
    assert queue.retry_delay(None) == 5.0
    assert queue.retry_delay(1.0) == 5.0
    assert queue.retry_delay(0.0) == 5.0
    assert queue.retry_delay(12.0) == 12.0
    assert queue.retry_delay(86400.0) == pending.MAX_RETRY_AFTER == 60.0
    assert queue.retry_delay(float("inf")) == pending.MAX_RETRY_AFTER


def test_work_refused_with_a_retry_after_is_not_tried_again_before_it() -> None:
    tries: list[float] = []
    done = threading.Event()

    def work_off(owner: Hashable, todo: work.Work, trigger: str) -> None:
        tries.append(time.monotonic())
        if len(tries) == 1:
            raise pending.Retry(0.6)
        done.set()

    queue = pending.PendingWork(work_off, threads=1, retry_delay=0.05)
    queue.add("a", work.FullReconcile(), "create")
    queue.start()
    try:
        assert done.wait(5)
    finally:
        queue.stop()
    assert tries[1] - tries[0] >= 0.6


def test_work_refused_without_one_is_tried_again_after_the_usual_delay() -> None:
    tries: list[float] = []
    done = threading.Event()

    def work_off(owner: Hashable, todo: work.Work, trigger: str) -> None:
        tries.append(time.monotonic())
        if len(tries) == 1:
            raise pending.Retry()
        done.set()

    queue = pending.PendingWork(work_off, threads=1, retry_delay=0.05)
    queue.add("a", work.FullReconcile(), "create")
    queue.start()
    try:
        assert done.wait(5)
    finally:
        queue.stop()
    assert 0.05 <= tries[1] - tries[0] < 0.5


class Refusing:
    """A reconciler whose every reconcile the API refuses with `error`."""

    def __init__(self, error: cluster.ApiError) -> None:
        self.overlay = overlay.WriteOverlay()
        self.error = error

    def settle_status(self, seconds: float, defer: Any) -> None:
        pass

    def reconcile(self, *_: Any) -> reconcile.Outcome:
        raise self.error


def test_the_runtime_hands_the_apis_ask_to_the_queue_and_logs_the_wait(
    caplog: pytest.LogCaptureFixture,
) -> None:
    error = cluster.ApiError(429, "TooManyRequests", "slow down", retry_after=9)
    operator = runtime.OperatorRuntime(
        OperatorConfig(),
        cast(reconcile.Reconciler, Refusing(error)),
        OperatorMetrics(),
        retry_delay=0.5,
    )
    operator.capture({OWNER: [packed.pack(specs.isvc(name="digits", namespace="default"))]})
    with (
        caplog.at_level(logging.WARNING, logger="kubeserve.reconcile"),
        pytest.raises(pending.Retry) as info,
    ):
        operator._work_off(OWNER, work.FullReconcile(), "create")
    assert info.value.after == 9
    assert "retrying in 9s" in caplog.text


def test_the_runtimes_own_delay_is_the_default_of_the_queue() -> None:
    operator = runtime.OperatorRuntime(
        OperatorConfig(),
        cast(reconcile.Reconciler, Refusing(cluster.ApiError(500, "x", "y"))),
        OperatorMetrics(),
    )
    assert operator.work.retry_delay(None) == runtime.RETRY_DELAY
