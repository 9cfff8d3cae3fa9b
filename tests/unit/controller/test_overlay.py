"""The write overlay: our own answers win over older cache copies until the watch catches up."""

from __future__ import annotations

from typing import Any

from kubeserve.controller import overlay

KEY = ("ConfigMap", "default", "digits-router")


def config_map(revision: str, value: str) -> dict[str, Any]:
    return {
        "kind": "ConfigMap",
        "metadata": {"name": KEY[2], "namespace": KEY[1], "resourceVersion": revision},
        "data": {"k": value},
    }


def test_our_answer_is_read_over_an_older_cache_copy_and_not_over_a_newer_one() -> None:
    written = overlay.WriteOverlay()
    written.remember(config_map("5", "ours"))
    assert written.current(*KEY, config_map("4", "old")) == config_map("5", "ours")
    assert written.current(*KEY, None) == config_map("5", "ours"), "created, not yet watched"
    assert written.current(*KEY, config_map("6", "newer")) == config_map("6", "newer")


def test_a_watch_event_of_our_own_write_says_so_and_clears_the_entry() -> None:
    written = overlay.WriteOverlay()
    written.remember(config_map("5", "ours"))
    assert written.observe(*KEY, config_map("4", "old")) is False
    assert len(written) == 1, "an older event leaves our answer in place"
    assert written.observe(*KEY, config_map("5", "ours")) is True
    assert len(written) == 0


def test_a_newer_event_or_a_deletion_supersedes_our_answer() -> None:
    written = overlay.WriteOverlay()
    written.remember(config_map("5", "ours"))
    assert written.observe(*KEY, config_map("7", "someone")) is False
    assert len(written) == 0
    written.remember(config_map("8", "ours"))
    assert written.observe(*KEY, None) is False
    assert written.current(*KEY, None) is None


def test_an_object_with_no_numeric_revision_is_older_than_any_answer() -> None:
    assert overlay.revision({"metadata": {"resourceVersion": "abc"}}) == -1
    assert overlay.revision(None) == -1
    assert overlay.revision(config_map("12", "x")) == 12
