"""Ports picked for local listeners stay out of the range outgoing connections use."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from kubeserve.local import router_config


def test_a_free_port_is_below_the_ephemeral_range_and_can_be_bound() -> None:
    low, _ = router_config.ephemeral_range()
    ports = {router_config.free_port() for _ in range(50)}
    assert all(router_config.LOWEST <= p < low for p in ports)
    assert len(ports) > 40, "picked at random, not one port again and again"
    with socket.socket() as s:
        s.bind((router_config.LOOPBACK, ports.pop()))


def test_the_ephemeral_range_is_the_kernels_where_it_says() -> None:
    proc = Path("/proc/sys/net/ipv4/ip_local_port_range")
    if not proc.exists():
        pytest.skip("no /proc: the range is Linux's default guess")
    low, high = (int(v) for v in proc.read_text().split())
    assert router_config.ephemeral_range() == (low, high)


def test_without_room_below_the_range_any_free_port_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(router_config, "ephemeral_range", lambda: (1024, 65535))
    port = router_config.free_port()
    with socket.socket() as s:
        s.bind((router_config.LOOPBACK, port))
