"""Leave the consumer group as soon as a stopping worker has committed, so the others take its
partitions over at once instead of at the session timeout.

A worker stopped by SIGTERM did not leave the group: aiokafka sends LeaveGroup only when the
member's generation is above 0, and the embedded broker numbers generations from 0, so a
worker of the first generation never sent it (seen in the workers' logs: "LeaveGroup request
succeeded" only from a worker of a later generation); and aiokafka sends it from its consumer
stop, which runs in Faust's consumer thread late in the shutdown. The others then noticed at
the session timeout: a hand-over of 7.3 to 7.7 s in tests/e2e/test_multiworker.py.

Faust stops a worker in this order: fetcher stopped, in-flight records finished and their
offsets committed (``wait_empty``), then ``on_before_shutdown``. There, in the consumer
thread, this module sends LeaveGroup itself when aiokafka would not, and unsubscribes (which
makes aiokafka send it otherwise, and keeps its coordinator from joining again). A member with
a static identity (``LIMITSTREAM_INSTANCE_ID``) keeps its place by design and is left alone.
Best effort: if it fails, the group falls back on the session timeout, as before.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

import faust
from aiokafka.protocol.group import JoinGroupRequest, LeaveGroupRequest

log = logging.getLogger(__name__)

#: The longest the shutdown waits for the leave (the consumer thread may first finish a poll).
LEAVE_TIMEOUT_S: Final = 3.0


async def _leave(consumer: Any) -> bool:
    """In the consumer thread: leave the group with the aiokafka ``consumer``; True if a
    LeaveGroup was sent here."""
    coordinator = consumer._coordinator
    sent = False
    if coordinator.generation == 0 and coordinator.member_id != JoinGroupRequest.UNKNOWN_MEMBER_ID:
        # aiokafka's own leave skips generation 0, the embedded broker's first generation.
        await coordinator._send_req(LeaveGroupRequest(coordinator.group_id, coordinator.member_id))
        sent = True
    consumer.unsubscribe()
    return sent


def leave_group_on_shutdown(app: faust.App, static_member: bool) -> None:
    """Connect the leave to ``app.on_before_shutdown`` (unless ``static_member``)."""
    if static_member:
        return

    async def on_before_shutdown(sender: Any, /, *args: Any, signal: Any,
                                 **kwargs: Any) -> None:
        try:
            thread = app.consumer._thread  # type: ignore[attr-defined]  # Faust's consumer thread
            consumer = thread._ensure_consumer()
            sent = await asyncio.wait_for(thread.call_thread(_leave, consumer), LEAVE_TIMEOUT_S)
            log.info("left the consumer group%s", " (LeaveGroup sent)" if sent else "")
        except Exception:
            log.warning("could not leave the consumer group: the others take the partitions "
                        "over at the session timeout", exc_info=True)

    app.on_before_shutdown.connect(on_before_shutdown)
