"""A real worker whose next changelog tail read, once armed, waits for a release file: a table
recovery that a newer rebalance overtakes while it reads (what a slow broker does).

Run as ``python -m tests.e2e.stalled_tail_worker worker`` with ``LIMITSTREAM_TEST_TAIL_ARM``
and ``LIMITSTREAM_TEST_TAIL_RELEASE`` naming two files: when the first exists as a tail read
starts, the file is removed and the read waits until the second exists. The worker logs
``stalled tail read: waiting`` then, when that recovery callback has returned, ``stalled
recovery callback returned``. Everything else is the production worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from faust.types import TP

import agents.users_table as users_table
from limitstream.cli import main

log = logging.getLogger(__name__)
_read_to_fences = users_table.read_to_fences
_on_recovery_completed = users_table.UsersTable.on_recovery_completed
_stalled: set[asyncio.Task[Any] | None] = set()


def _take_arm() -> bool:
    arm = Path(os.environ["LIMITSTREAM_TEST_TAIL_ARM"])
    if not arm.exists():
        return False
    arm.unlink()
    return True


def _wait_for_release() -> None:
    release = Path(os.environ["LIMITSTREAM_TEST_TAIL_RELEASE"])
    while not release.exists():
        time.sleep(0.05)


async def _stalled_read(kafka: Mapping[str, Any], starts: Mapping[TopicPartition, int],
                        fences: Mapping[TopicPartition, int],
                        timeout_s: float = users_table.FENCE_READ_TIMEOUT_S,
                        ) -> list[ConsumerRecord[Any, Any]]:
    if await asyncio.to_thread(_take_arm):
        _stalled.add(asyncio.current_task())
        log.warning("stalled tail read: waiting for the release file")
        await asyncio.to_thread(_wait_for_release)
    return await _read_to_fences(kafka, starts, fences, timeout_s)


async def _logged_on_recovery_completed(self: users_table.UsersTable, active_tps: set[TP],
                                        standby_tps: set[TP]) -> None:
    try:
        await _on_recovery_completed(self, active_tps, standby_tps)
    finally:
        if asyncio.current_task() in _stalled:
            log.warning("stalled recovery callback returned")


if __name__ == "__main__":
    users_table.read_to_fences = _stalled_read
    users_table.UsersTable.on_recovery_completed = (  # type: ignore[method-assign]
        _logged_on_recovery_completed)
    sys.exit(main(sys.argv[1:]))
