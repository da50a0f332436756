"""The cyclic garbage collector's settings for limitstream's processes.

CPython frees almost everything by reference counting; the cyclic collector only exists for
reference cycles. It runs a young-generation pass after every 700 net allocations of
container objects, and every tenth of those also scans the middle generation, every
hundredth the whole heap. The engine allocates a few dozen short-lived lists and dicts per
event and keeps thousands of user states alive, so with those defaults the collector runs
every few events and keeps rescanning states that are not garbage — and finds almost
nothing: the engine's data has no cycles. Measured on the replay bench (1 000 users x 90
days, `python -m bench.replay_bench`): see the README's performance section.

:func:`tune_gc` freezes what the process has loaded so far (modules, policy, model: never
garbage) and raises the thresholds. Cyclic garbage (asyncio and exception frames, mostly)
is still collected, only later: at most :data:`GC_THRESHOLDS`\\ [0] container allocations
later, a bounded and small amount of memory.
"""

from __future__ import annotations

import gc
from typing import Final

#: (young generation, middle, old): CPython's defaults are (700, 10, 10).
GC_THRESHOLDS: Final = (50_000, 20, 100)


def tune_gc() -> None:
    """Freeze the objects loaded so far and raise the collector's thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
