"""A watch that the API throttles waits as long as the API asks, within reason."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from kubeserve import cluster
from kubeserve.controller import informer, pending

KIND = cluster.KINDS[("v1", "ConfigMap")]


class ThrottledApi:
    """Refuses every list with 429 and the given Retry-After; stops the informer after `n`."""

    def __init__(self, retry_after: float | None, stop: threading.Event, n: int = 3) -> None:
        self.retry_after, self.stop, self.n, self.calls = retry_after, stop, n, 0

    def list_page(self, *_: Any, **__: Any) -> tuple[list[dict[str, Any]], str, str | None]:
        self.calls += 1
        if self.calls >= self.n:
            self.stop.set()
        raise cluster.ApiError(429, "TooManyRequests", "slow down", retry_after=self.retry_after)


class RecordedStop(threading.Event):
    """The informer's stop event, recording each wait instead of sleeping it."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0.0)
        return self.is_set()


def _waits(retry_after: float | None) -> list[float]:
    stop = RecordedStop()
    watch = informer.Informer(
        ThrottledApi(retry_after, stop),  # type: ignore[arg-type]
        KIND,
        "ns",
        labels="app.kubernetes.io/managed-by=kubeserve",
        on_change=lambda event, obj: None,
    )
    watch._stop = stop
    watch._run()
    return stop.waits


def test_a_throttled_list_waits_the_retry_after_when_it_is_longer_than_the_backoff() -> None:
    assert _waits(7.0) == [7.0, 7.0, 7.0]


def test_the_backoff_wins_when_it_is_longer_than_the_retry_after() -> None:
    assert _waits(1.5) == [1.5, 2.0, 5.0]


def test_without_retry_after_the_backoff_is_as_before() -> None:
    assert _waits(None) == list(informer.BACKOFF[:3])


@pytest.mark.parametrize("asked", [3600.0, 1e12])
def test_a_retry_after_of_hours_is_capped(asked: float) -> None:
    assert _waits(asked) == [pending.MAX_RETRY_AFTER] * 3
