"""A real worker whose core raises on one user's purchases: the poison-record path, end to end.

Run as ``python -m tests.e2e.faulty_worker worker``; everything else is the production worker.
"""

from __future__ import annotations

import sys

from limitstream.cli import main
from policies.engine import Engine, Source, StepResult, UserState
from streams.records import InputEvent

POISON_PREFIX = "poison"
_step = Engine.step


def _faulty_step(self: Engine, state: UserState | None, event: InputEvent,
                 source: Source) -> StepResult:
    if event.user_id.startswith(POISON_PREFIX) and event.kind == "purchase":
        raise RuntimeError("injected fault: this record makes processing raise")
    return _step(self, state, event, source)


if __name__ == "__main__":
    Engine.step = _faulty_step  # type: ignore[method-assign]
    sys.exit(main(sys.argv[1:]))
