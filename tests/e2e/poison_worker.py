"""A real worker with two injected faults that escape the processor's per-record guard.

Run as ``python -m tests.e2e.poison_worker worker``; everything else is the production worker.

* A set of records that holds a value containing :data:`POISON` fails however often it is
  tried (as a record whose dead letter the broker refuses did): the agent must find that
  record and dead-letter it.
* A set that holds :data:`STUCK` fails as if the broker could not be reached, every time: the
  agent keeps retrying, and its health must say it is stuck.
"""

from __future__ import annotations

import sys
from typing import Final

import faust
from aiokafka.errors import KafkaConnectionError

from agents.user_agent import UserAgent
from limitstream.cli import main
from policies.processor import BatchResult

POISON: Final = b"poison-batch"
STUCK: Final = b"stuck-batch"
_handle = UserAgent.handle


async def _faulty_handle(self: UserAgent, events: list[faust.EventT[bytes]]) -> BatchResult:
    for ev in events:
        value = ev.message.value or b""
        if POISON in value:
            raise RuntimeError("injected fault: this record fails every set it is in")
        if STUCK in value:
            raise KafkaConnectionError("injected fault: the broker cannot be reached")
    return await _handle(self, events)


if __name__ == "__main__":
    UserAgent.handle = _faulty_handle  # type: ignore[method-assign]
    sys.exit(main(sys.argv[1:]))
