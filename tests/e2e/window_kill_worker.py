"""A real worker that, once armed, SIGKILLs itself inside the delivered-but-not-stored window.

Run as ``python -m tests.e2e.window_kill_worker worker`` with ``LIMITSTREAM_TEST_WINDOW_KILL``
naming a file. The agent awaits the delivery of every output of a set of records before it
writes the first user state of that set to the table (agents/user_agent.py); here, when the
file exists at the first ``UsersTable.put`` of a set that sent outputs, the worker removes the
file, logs ``window kill`` and SIGKILLs itself: the outputs are on their topics, no state of
the set is stored and no offset of it committed, so its restart re-sends them. (A set without
outputs leaves the worker armed: random SIGKILLs, which almost never land in the window, have
nothing to re-send either.) Everything else is the production worker.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Awaitable, Iterable
from pathlib import Path
from typing import Any

from aiokafka.structs import RecordMetadata
from faust.transport.drivers.aiokafka import Producer

from agents.users_table import UsersTable
from limitstream.cli import main

log = logging.getLogger(__name__)
_put = UsersTable.put
_delivered = UsersTable.delivered
_send = Producer.send
#: True between two sets of records: the next put is the first of its set.
_between_sets = True
#: True once the current set has sent a record to another topic than a changelog.
_outputs_sent = False


def _die_if_armed() -> None:
    # Synchronous on purpose: nothing else of the worker runs between the check and the kill.
    arm = Path(os.environ["LIMITSTREAM_TEST_WINDOW_KILL"])
    if arm.exists():
        arm.unlink(missing_ok=True)  # the soak disarms the others as soon as one has died
        log.warning("window kill: outputs delivered, no state stored")
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.kill(os.getpid(), signal.SIGKILL)


async def _noted_send(self: Producer, topic: str, *args: Any, **kwargs: Any
                      ) -> Awaitable[RecordMetadata]:
    global _outputs_sent
    if not topic.endswith("-changelog"):
        _outputs_sent = True
    fut: Awaitable[RecordMetadata] = await _send(self, topic, *args, **kwargs)
    return fut


async def _put_or_die(self: UsersTable, key: bytes, value: bytes) -> Awaitable[RecordMetadata]:
    global _between_sets
    if _between_sets:
        _between_sets = False
        if _outputs_sent:
            _die_if_armed()
    return await _put(self, key, value)


def _delivered_then_between(self: UsersTable, records: Iterable[RecordMetadata]) -> None:
    global _between_sets, _outputs_sent
    # The set's states are delivered: the next put starts another set.
    _between_sets, _outputs_sent = True, False
    _delivered(self, records)


if __name__ == "__main__":
    Producer.send = _noted_send  # type: ignore[method-assign]
    UsersTable.put = _put_or_die  # type: ignore[method-assign]
    UsersTable.delivered = _delivered_then_between  # type: ignore[method-assign]
    sys.exit(main(sys.argv[1:]))
