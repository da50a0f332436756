"""An offset trace: which input offsets each worker processed, sought to and committed.

Exactly once rests on one invariant: an input offset is committed only after a worker has
applied the record (or the record is inside a stored state). When a multi-worker or crash
test finds a user with an event missing, the question is which record no worker processed,
and who committed past it. With ``LIMITSTREAM_OFFSET_TRACE=FILE`` every worker appends one
JSON line per processed batch (the offset ranges per partition), per seek that ends a
rebalance (the committed offsets it started from), per commit, and per gap Faust's consumer
fills (offsets it skipped and will commit as if acked). :func:`unprocessed` reads
the file back and names the offsets nobody processed; :func:`unsafe_commits` names the commits
that passed records nobody had processed yet. The tests set it for every worker they start,
assert that no commit was unsafe and put the holes in their failure messages.

Lines are written with one ``os.write`` on a file opened for appending, so the workers of one
host can share a file; a SIGKILL loses at most the line being written.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

#: Per partition, the processed offsets as inclusive ranges in arrival order.
Ranges = dict[str, list[list[int]]]


def tp_key(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


def offset_ranges(offsets: Iterable[tuple[str, int, int]]) -> Ranges:
    """``(topic, partition, offset)`` in arrival order -> runs of consecutive offsets.

    >>> offset_ranges([("t", 0, 4), ("t", 0, 5), ("u", 1, 9), ("t", 0, 7)])
    {'t:0': [[4, 5], [7, 7]], 'u:1': [[9, 9]]}
    """
    out: Ranges = {}
    for topic, partition, offset in offsets:
        runs = out.setdefault(tp_key(topic, partition), [])
        if runs and runs[-1][1] == offset - 1:
            runs[-1][1] = offset
        else:
            runs.append([offset, offset])
    return out


class OffsetTrace:
    """Appends trace lines to ``path`` (shared by the workers of a host)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._pid = os.getpid()

    def _write(self, kind: str, generation: int, body: Mapping[str, Any]) -> None:
        line = {"pid": self._pid, "ts": time.time(), "kind": kind, "gen": generation, **body}
        os.write(self._fd, orjson.dumps(line) + b"\n")

    def batch(self, generation: int, offsets: Iterable[tuple[str, int, int]]) -> None:
        self._write("batch", generation, {"ranges": offset_ranges(offsets)})

    def seek(self, generation: int, committed: Mapping[tuple[str, int], int | None]) -> None:
        self._write("seek", generation,
                    {"committed": {tp_key(*tp): o for tp, o in committed.items()}})

    def commit(self, generation: int, offsets: Mapping[tuple[str, int], int]) -> None:
        self._write("commit", generation,
                    {"offsets": {tp_key(*tp): o for tp, o in offsets.items()}})

    def gap(self, generation: int, topic: str, partition: int, first: int, last: int) -> None:
        """Faust's consumer saw offsets ``first..last`` skipped and will count them as acked
        (meant for transaction markers; on a log without them, a skip is a fault)."""
        self._write("gap", generation, {"tp": tp_key(topic, partition), "first": first,
                                        "last": last})


def gaps(path: str | Path) -> list[tuple[str, int, int]]:
    """``(partition, first, last)`` of every gap the trace records, in file order."""
    return [(line["tp"], line["first"], line["last"])
            for line in read_trace(path) if line["kind"] == "gap"]


@dataclass(frozen=True, slots=True)
class Hole:
    """Offsets ``first..last`` of a partition that no worker processed (``never``, or not
    before the commits named), and the commits that passed them (pid, offset)."""

    partition: str
    first: int
    last: int
    committed_by: tuple[tuple[int, int], ...]
    when: str = "never"

    def __str__(self) -> str:
        return (f"{self.partition} offsets {self.first}..{self.last} not processed "
                f"({self.when}); committed past by (pid, offset) {list(self.committed_by)}")


def read_trace(path: str | Path) -> Iterator[dict[str, Any]]:
    """The trace's lines; a torn last line (a SIGKILL mid-write) is skipped."""
    with open(path, "rb") as f:
        for raw in f:
            try:
                yield orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue


def _in_time_order(path: str | Path) -> list[dict[str, Any]]:
    """The trace's lines ordered by when they were written (the workers append concurrently)."""
    return sorted(read_trace(path), key=lambda line: float(line["ts"]))


def _processed_runs(line: Mapping[str, Any]) -> Iterator[tuple[str, int, int]]:
    """``(partition, first, last)`` of a batch line's processed runs; nothing for others."""
    if line["kind"] == "batch":
        for tp, runs in line["ranges"].items():
            for first, last in runs:
                yield tp, first, last


def unsafe_commits(path: str | Path, partitions: Iterable[str]) -> list[Hole]:
    """Commits of ``partitions`` that passed offsets no worker had processed *by then*.

    A lost update needs two things: a commit past a record nobody processed, and nobody
    processing it afterwards (the committing worker dies, or the partition moves on). The
    first alone is already the fault; this finds it even in runs where the record was
    processed later and nothing was lost. (A trace line is written after the batch is
    stored, and a worker acks — hence commits — only after that.)
    """
    wanted = set(partitions)
    done: dict[str, set[int]] = {}
    found = []
    for line in _in_time_order(path):
        for tp, a, b in _processed_runs(line):
            done.setdefault(tp, set()).update(range(a, b + 1))
        if line["kind"] == "commit":
            for tp, offset in line["offsets"].items():
                if tp not in wanted:
                    continue
                seen = done.get(tp, set())
                missing = [o for o in range(offset) if o not in seen]
                if missing:
                    found.append(Hole(tp, missing[0], missing[-1], ((line["pid"], offset),),
                                      when=f"{len(missing)} of them, by the commit"))
    return found


def premature_batches(path: str | Path) -> list[str]:
    """Batches a worker stored in a consumer generation before it had sought that
    generation's partitions to their committed offsets: records taken from wherever a
    position had drifted, possibly out of order or past records nobody processed."""
    sought: set[tuple[int, int]] = set()
    found = []
    for line in _in_time_order(path):
        key = (line["pid"], line["gen"])
        if line["kind"] == "seek":
            sought.add(key)
        elif line["kind"] == "batch" and key not in sought:
            found.append(f"pid {key[0]} stored {line['ranges']} in generation {key[1]} "
                         "before its seek")
    return found


def processed_ends(path: str | Path) -> dict[str, int]:
    """Per partition, one past the highest offset any worker processed."""
    ends: dict[str, int] = {}
    for line in read_trace(path):
        for tp, _, b in _processed_runs(line):
            ends[tp] = max(ends.get(tp, 0), b + 1)
    return ends


def unprocessed(path: str | Path, ends: Mapping[str, int]) -> list[Hole]:
    """Holes in what the workers processed, per partition, below ``ends[partition]`` (the
    partition's end offset, keys as :func:`tp_key`)."""
    lines = list(read_trace(path))
    done: dict[str, list[tuple[int, int]]] = {}
    for line in lines:
        for tp, a, b in _processed_runs(line):
            done.setdefault(tp, []).append((a, b))
    holes = []
    for tp, end in sorted(ends.items()):
        covered = -1
        gaps = []
        for a, b in sorted(done.get(tp, [])):
            if a > covered + 1:
                gaps.append((covered + 1, a - 1))
            covered = max(covered, b)
        if covered + 1 < end:
            gaps.append((covered + 1, end - 1))
        for first, last in gaps:
            by = tuple((line["pid"], line["offsets"][tp]) for line in lines
                       if line["kind"] == "commit" and line["offsets"].get(tp, -1) > first)
            holes.append(Hole(tp, first, last, by))
    return holes


def offset_trace_of(app: Any) -> OffsetTrace | None:
    """The app's offset trace (``LIMITSTREAM_OFFSET_TRACE``), if it keeps one."""
    trace: OffsetTrace | None = getattr(app, "limitstream_offset_trace", None)
    return trace
