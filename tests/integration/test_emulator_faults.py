"""The emulator's fault injection: each kind of fault does what a strained API server does."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from kubeserve.testing.emulator import EmulatorThread
from kubeserve.testing.emulator.server import Fault, WatchFault
from kubeserve.testing.kube_client import Kube

CONFIGMAPS = ("v1", "configmaps")


@pytest.fixture()
def em() -> Iterator[EmulatorThread]:
    with EmulatorThread(seed=7) as running:
        yield running


def post(em: EmulatorThread, name: str, **headers: str) -> requests.Response:
    return requests.post(
        f"{em.url}/api/v1/namespaces/default/configmaps",
        json={"metadata": {"name": name}},
        headers=headers,
        timeout=5,
    )


def test_a_429_says_when_to_come_back(em: EmulatorThread) -> None:
    em.emulator.faults.append(Fault(share=1.0, status=429, retry_after=2))
    answer = post(em, "c")
    assert answer.status_code == 429
    assert answer.headers["Retry-After"] == "2"
    assert answer.json()["details"] == {"retryAfterSeconds": 2}
    assert em.emulator.injected == {"429": 1}


def test_shares_add_up_one_fault_per_call_at_most(em: EmulatorThread) -> None:
    em.emulator.faults[:] = [Fault(share=0.25, status=500), Fault(share=0.25, status=409)]
    codes = [post(em, f"c{i}").status_code for i in range(200)]
    assert 70 < codes.count(500) + codes.count(409) < 130
    assert codes.count(500) > 20 and codes.count(409) > 20
    assert em.emulator.injected["500"] == codes.count(500)


def test_faults_fall_only_on_the_clients_they_name(em: EmulatorThread) -> None:
    em.emulator.faults.append(Fault(share=1.0, status=500, clients=frozenset({"kopf"})))
    assert post(em, "spared").ok
    assert post(em, "hit", **{"User-Agent": "kopf/1.0"}).status_code == 500


def test_a_hung_call_gets_no_answer_but_an_applied_write_is_done(em: EmulatorThread) -> None:
    em.emulator.faults.append(Fault(share=1.0, hang=True, applied=True, delay=0.2))
    started = time.monotonic()
    with pytest.raises(requests.ConnectionError):
        post(em, "done-unheard")
    assert time.monotonic() - started >= 0.2
    em.emulator.faults.clear()
    assert Kube(em.url).get(CONFIGMAPS, "default", "done-unheard") is not None
    em.emulator.faults.append(Fault(share=1.0, hang=True))
    with pytest.raises(requests.ConnectionError):
        post(em, "never-done")
    em.emulator.faults.clear()
    assert Kube(em.url).get(CONFIGMAPS, "default", "never-done") is None
    assert em.emulator.injected == {"timeout": 2}


def watch(em: EmulatorThread, **params: str) -> requests.Response:
    return requests.get(
        f"{em.url}/api/v1/namespaces/default/configmaps",
        params={"watch": "true", **params},
        stream=True,
        timeout=5,
    )


def test_a_watch_is_cut_in_the_middle_of_an_event(em: EmulatorThread) -> None:
    em.emulator.watch_faults.append(WatchFault(cut_after=(0.3, 0.3)))
    started = time.monotonic()
    stream = watch(em)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        lines = list(stream.iter_lines())
        json.loads(lines[-1])  # should the client see the torn line, it cannot read it
    assert 0.3 <= time.monotonic() - started < 2
    assert em.emulator.injected == {"watch-cut": 1}


def test_a_watch_opened_before_the_fault_is_cut_too(em: EmulatorThread) -> None:
    stream = watch(em)
    time.sleep(0.2)
    em.emulator.watch_faults.append(WatchFault(cut_after=(0.1, 0.1)))
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        list(stream.iter_lines())
    assert em.emulator.injected == {"watch-cut": 1}


def test_a_busy_watch_is_cut_all_the_same(em: EmulatorThread) -> None:
    busy = threading.Event()

    def keep_it_busy() -> None:
        kube = Kube(em.url)
        for i in range(200):
            if busy.is_set():
                return
            kube.create(CONFIGMAPS, "default", {"metadata": {"name": f"c{i}"}})

    em.emulator.watch_faults.append(WatchFault(cut_after=(0.3, 0.3)))
    writer = threading.Thread(target=keep_it_busy)
    stream = watch(em)
    writer.start()
    started = time.monotonic()
    try:
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            list(stream.iter_lines())
    finally:
        busy.set()
        writer.join()
    assert time.monotonic() - started < 2


def test_a_resumed_watch_may_be_refused_as_gone(em: EmulatorThread) -> None:
    kube = Kube(em.url)
    kube.create(CONFIGMAPS, "default", {"metadata": {"name": "c"}})
    revision = kube.get(CONFIGMAPS, "default", "c")["metadata"]["resourceVersion"]
    em.emulator.watch_faults.append(WatchFault(cut_after=None, gone=1.0))
    [line] = [line for line in watch(em, resourceVersion=revision).iter_lines() if line]
    event = json.loads(line)
    assert event["type"] == "ERROR" and event["object"]["code"] == 410
    fresh = watch(em, timeoutSeconds="1")
    assert [json.loads(x)["type"] for x in fresh.iter_lines() if x] == ["ADDED"], (
        "a watch that resumes nothing is not refused"
    )
    assert em.emulator.injected == {"watch-gone": 1}
