"""The figures of the lag and population gauges, from offsets and summaries (no Faust, no I/O).

:mod:`agents.worker` reads the offsets from the broker and the assignment from Faust every
10 s and sets the gauges from what these functions return; the tests drive them directly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

#: (topic, partition)
Partition = tuple[str, int]
#: Gauge label values: (topic, partition as text).
Labels = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Offsets:
    """One input partition as the broker has it."""

    #: The group's committed offset (the next record to process); None: never committed.
    committed: int | None
    #: The partition's first and end offsets.
    first: int
    end: int

    @property
    def position(self) -> int:
        """Where the group resumes: its committed offset, else the partition's first offset
        (an input partition with no committed offset is read from its start)."""
        return self.committed if self.committed is not None else self.first

    @property
    def behind(self) -> int:
        """Records after the position; never below zero (the embedded broker has reported
        end offsets below the true count)."""
        return max(0, self.end - self.position)


@dataclass
class LagFigures:
    """What the lag gauges show, by label values."""

    #: Every input partition, owned by this worker or not: the group's lag.
    group: dict[Labels, float] = field(default_factory=dict)
    #: The partitions this worker owns: messages behind, seconds behind, seconds stalled.
    lag: dict[Labels, float] = field(default_factory=dict)
    seconds: dict[Labels, float] = field(default_factory=dict)
    stalled: dict[Labels, float] = field(default_factory=dict)
    #: Per owned partition: (committed position, monotonic time it was first seen there),
    #: for the next round's stall figure.
    seen: dict[Partition, tuple[int, float]] = field(default_factory=dict)


def lag_figures(offsets: Mapping[Partition, Offsets], owned: Iterable[Partition],
                applied: Callable[[str, int], tuple[int, float] | None],
                commit_seen: Mapping[Partition, tuple[int, float]],
                now: float, clock: float) -> LagFigures:
    """The lag figures of ``offsets``; ``owned``: this worker's partitions now (a revoked
    partition gets no series); ``applied(topic, partition)``: the offset and Kafka timestamp
    (epoch s) of the newest record this worker applied there; ``now`` the wall clock,
    ``clock`` a monotonic one; ``commit_seen`` the previous round's :attr:`LagFigures.seen`.

    Seconds behind: ``now`` less the newest applied record's timestamp while records wait
    behind it, 0 when every record up to the end is applied; unknown (no series) until this
    assignment has applied a record there. Stalled: seconds the committed position has not
    moved while records wait behind it.
    """
    mine = set(owned)
    out = LagFigures()
    for (topic, partition), o in offsets.items():
        labels = (topic, str(partition))
        behind = o.behind
        out.group[labels] = behind
        if (topic, partition) not in mine:
            continue
        out.lag[labels] = behind
        newest = applied(topic, partition)
        if behind == 0:
            out.seconds[labels] = 0.0
        elif newest is not None and newest[0] + 1 >= o.position:  # not a past assignment's
            waiting = o.end > newest[0] + 1
            out.seconds[labels] = max(0.0, now - newest[1]) if waiting else 0.0
        before = commit_seen.get((topic, partition))
        since = before[1] if before is not None and before[0] == o.position else clock
        if behind == 0:
            since = clock  # nothing waits: not a stall
        out.seen[(topic, partition)] = (o.position, since)
        out.stalled[labels] = clock - since
    return out


@dataclass
class Population:
    """The population gauges' figures."""

    #: (status, stage label) -> users; the stage label is "" outside probation.
    by_status: Counter[tuple[str, str]] = field(default_factory=Counter)
    limit_extended: int = 0
    pending_labels: int = 0
    users: int = 0


def population(summary: Mapping[str, tuple[str, int, int, int]], owned: set[int],
               partition_of: Callable[[str], int]) -> Population:
    """Count the users of ``summary`` (user_id -> status, stage, limit, pending labels) whose
    partition is one of ``owned``: the memory store keeps the keys of revoked partitions, which
    their new owner counts."""
    out = Population()
    for uid, (status, stage, limit, waiting) in summary.items():
        if partition_of(uid) not in owned:
            continue
        out.users += 1
        out.pending_labels += waiting
        out.by_status[(status, str(stage) if stage else "")] += 1
        out.limit_extended += limit
    return out
