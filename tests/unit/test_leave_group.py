"""A stopping worker leaves the consumer group itself (agents/leave_group.py).

The end-to-end effect is measured by tests/e2e/test_multiworker.py (SIGTERM hand-over 2.7 to
3.2 s with it, 7.3 to 7.7 s without); these pin the decisions against a stand-in for
aiokafka's consumer and coordinator.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.protocol.group import JoinGroupRequest, LeaveGroupRequest

from agents.leave_group import _leave, leave_group_on_shutdown
from streams.app import create_app
from streams.settings import Settings


class FakeCoordinator:
    def __init__(self, generation: int, member_id: str) -> None:
        self.generation, self.member_id, self.group_id = generation, member_id, "g"
        self.sent: list[Any] = []

    async def _send_req(self, request: Any) -> None:
        self.sent.append(request)


class FakeConsumer:
    def __init__(self, coordinator: FakeCoordinator) -> None:
        self._coordinator = coordinator
        self.unsubscribed = False

    def unsubscribe(self) -> None:
        self.unsubscribed = True


def test_generation_zero_member_sends_leave_group_itself() -> None:
    # aiokafka skips its own LeaveGroup at generation 0, the embedded broker's first.
    consumer = FakeConsumer(FakeCoordinator(generation=0, member_id="m-1"))
    assert asyncio.run(_leave(consumer)) is True
    (request,) = consumer._coordinator.sent
    assert isinstance(request, LeaveGroupRequest)
    assert (request._group, request._member_id) == ("g", "m-1")
    assert consumer.unsubscribed


def test_later_generations_leave_through_unsubscribe() -> None:
    consumer = FakeConsumer(FakeCoordinator(generation=3, member_id="m-1"))
    assert asyncio.run(_leave(consumer)) is False
    assert consumer._coordinator.sent == []  # aiokafka's unsubscribe sends it
    assert consumer.unsubscribed


def test_a_member_that_never_joined_sends_nothing() -> None:
    consumer = FakeConsumer(FakeCoordinator(0, JoinGroupRequest.UNKNOWN_MEMBER_ID))
    assert asyncio.run(_leave(consumer)) is False
    assert consumer._coordinator.sent == [] and consumer.unsubscribed


def test_static_members_keep_their_place() -> None:
    settings = Settings.from_env({"LIMITSTREAM_BROKER": "kafka://127.0.0.1:9"})
    dynamic, static = create_app(settings), create_app(settings)

    def receivers(app: Any) -> int:
        return len(list(app.on_before_shutdown.iter_receivers(app)))

    before = receivers(dynamic)
    leave_group_on_shutdown(dynamic, static_member=False)
    leave_group_on_shutdown(static, static_member=True)
    assert receivers(dynamic) == before + 1
    assert receivers(static) == before
