"""Status settling: changes close to the last write are put off, and one refresh is asked for."""

from __future__ import annotations

from kubeserve.controller import settle

OWNER = ("default", "digits")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def settling(
    seconds: float = 2.0,
) -> tuple[settle.StatusSettling, Clock, list[tuple[object, float]]]:
    clock = Clock()
    asked: list[tuple[object, float]] = []
    found = settle.StatusSettling(
        seconds, lambda owner, delay: asked.append((owner, delay)), clock=clock
    )
    return found, clock, asked


def test_a_status_never_written_is_not_put_off() -> None:
    found, _, asked = settling()
    assert found.put_off(OWNER) is False and asked == []


def test_changes_inside_the_window_are_put_off_and_ask_for_one_refresh_at_its_end() -> None:
    found, clock, asked = settling(2.0)
    found.written(OWNER)
    clock.now += 0.5
    assert found.put_off(OWNER) is True
    clock.now += 0.5
    assert found.put_off(OWNER) is True
    assert asked == [(OWNER, 1.5)], "one refresh, when the window of the last write ends"


def test_a_change_after_the_window_is_not_put_off() -> None:
    found, clock, asked = settling(2.0)
    found.written(OWNER)
    clock.now += 2.0
    assert found.put_off(OWNER) is False and asked == []


def test_a_write_starts_the_window_again_and_a_later_change_asks_again() -> None:
    found, clock, asked = settling(2.0)
    found.written(OWNER)
    clock.now += 1.0
    found.put_off(OWNER)
    clock.now += 1.0
    found.written(OWNER)  # the settled refresh
    clock.now += 0.25
    assert found.put_off(OWNER) is True
    assert asked == [(OWNER, 1.0), (OWNER, 1.75)]


def test_no_window_or_no_one_to_ask_means_every_change_is_written_at_once() -> None:
    found, _, _ = settling(0.0)
    found.written(OWNER)
    assert found.put_off(OWNER) is False
    unset = settle.StatusSettling()
    unset.written(OWNER)
    assert unset.put_off(OWNER) is False


def test_a_forgotten_inferenceservice_starts_afresh() -> None:
    found, _, asked = settling(2.0)
    found.written(OWNER)
    found.forget(OWNER)
    assert found.put_off(OWNER) is False and asked == []
