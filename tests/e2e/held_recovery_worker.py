"""A real worker whose first table recovery stops reading the changelog midway until a newer
rebalance's recovery has begun: a recovery that a newer rebalance overtakes while Faust is
still reading (a big changelog, a slow broker).

Run as ``python -m tests.e2e.held_recovery_worker worker``. When Faust's recovery applies
its :data:`HOLD_AT`-th changelog record, the worker logs ``recovery read held`` and that read
waits until a recovery of a newer consumer generation has sought its changelog partitions
and no table recovery callback is running any more (whatever callbacks the overtaken
recovery left behind have done their work); it then logs ``recovery read released`` and
the worker goes on as the production worker does.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from faust.tables.recovery import Recovery
from faust.types import TP, EventT

from agents.users_table import UsersTable
from limitstream.cli import main

log = logging.getLogger(__name__)
#: The changelog record, counted from the worker's start, at which the read is held.
HOLD_AT = 20
_on_recovery_completed = UsersTable.on_recovery_completed
_seek_offsets = Recovery._seek_offsets
_applied = 0
#: The newest consumer generation whose recovery has sought its active changelog partitions.
_sought_generation = -1
#: Table recovery callbacks running now.
_callbacks = 0
#: Notified when either of the two above changes.
_changed = asyncio.Condition()


async def _notify() -> None:
    async with _changed:
        _changed.notify_all()


async def _hold_once(self: UsersTable, event: EventT[Any]) -> None:
    global _applied
    _applied += 1
    if _applied != HOLD_AT:
        return
    held = self.app.consumer_generation_id
    log.warning("recovery read held in generation %d", held)
    async with _changed:
        await _changed.wait_for(lambda: _sought_generation > held and not _callbacks)
    log.warning("recovery read released in generation %d", _sought_generation)


async def _noted_seek_offsets(self: Recovery, consumer: Any, tps: set[TP], offsets: Any,
                              title: str) -> None:
    global _sought_generation
    await _seek_offsets(self, consumer, tps, offsets, title)
    if title == "active":
        _sought_generation = self.app.consumer_generation_id
        await _notify()


async def _counted_on_recovery_completed(self: UsersTable, active_tps: set[TP],
                                         standby_tps: set[TP]) -> None:
    global _callbacks
    _callbacks += 1
    try:
        await _on_recovery_completed(self, active_tps, standby_tps)
    finally:
        _callbacks -= 1
        await _notify()


if __name__ == "__main__":
    UsersTable.on_changelog_event = _hold_once  # type: ignore[method-assign]
    Recovery._seek_offsets = _noted_seek_offsets  # type: ignore[method-assign]
    UsersTable.on_recovery_completed = (  # type: ignore[method-assign]
        _counted_on_recovery_completed)
    sys.exit(main(sys.argv[1:]))
