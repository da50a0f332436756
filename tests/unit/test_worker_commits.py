"""Commits the broker refuses are counted (agents/worker.py count_refused_commits)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry

from agents.metrics import Metrics
from agents.worker import count_refused_commits


class FakeConsumer:
    """Faust's consumer as count_refused_commits sees it: ``_commit(offsets) -> bool``."""

    def __init__(self, answers: list[bool]) -> None:
        self.answers = answers
        self.calls: list[Mapping[Any, int]] = []

    async def _commit(self, offsets: Mapping[Any, int]) -> bool:
        self.calls.append(offsets)
        return self.answers.pop(0)


async def test_a_refused_commit_is_counted_and_its_answer_passed_on() -> None:
    registry = CollectorRegistry()
    metrics = Metrics.create(registry)
    consumer = FakeConsumer([True, False, True])
    count_refused_commits(consumer, metrics)
    answers = [await consumer._commit({("tx", 0): n}) for n in (1, 2, 3)]
    assert answers == [True, False, True]
    assert consumer.calls == [{("tx", 0): 1}, {("tx", 0): 2}, {("tx", 0): 3}]
    assert registry.get_sample_value("limitstream_commit_failures_total") == 1
