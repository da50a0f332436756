"""free_port hands out distinct, bindable ports outside the kernel's ephemeral range."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator

import pytest

from streams import broker
from streams.broker import free_port


def test_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(20000 <= p < broker._ephemeral_start() for p in ports)
    for p in ports[:20]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", p))


def test_ports_in_use_or_handed_out_before_are_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    given = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        in_use = held.getsockname()[1]
        fresh = free_port()
        broker._handed_out.discard(fresh)  # free, and not handed out as far as free_port knows
        draws: Iterator[int] = iter([in_use, given, fresh])

        class Scripted:
            def randrange(self, lo: int, hi: int) -> int:
                return next(draws)

        monkeypatch.setattr(broker, "_LOWEST_PORT", 1024)
        monkeypatch.setattr(broker, "_ephemeral_start", lambda: 65536)
        monkeypatch.setattr(random, "SystemRandom", Scripted)
        assert free_port() == fresh
