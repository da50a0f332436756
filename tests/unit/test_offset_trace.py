"""The offset trace (streams/offset_trace.py): what the workers processed, read back as the
offsets nobody processed and the commits that passed them."""

from __future__ import annotations

import os
from pathlib import Path

from streams.offset_trace import (
    OffsetTrace,
    premature_batches,
    processed_ends,
    read_trace,
    unprocessed,
    unsafe_commits,
)


def test_a_hole_below_the_committed_offset_is_named_with_its_commits(tmp_path: Path) -> None:
    path = tmp_path / "offsets.jsonl"
    first, second = OffsetTrace(path), OffsetTrace(path)  # two workers, one file
    first.seek(1, {("tx", 0): None, ("tx", 1): None})
    first.batch(1, [("tx", 0, o) for o in range(0, 10)] + [("tx", 1, o) for o in range(5)])
    first.commit(1, {("tx", 0): 10, ("tx", 1): 5})
    # The second owner of tx:0 starts at 12: offsets 10 and 11 are never processed.
    second.seek(2, {("tx", 0): 10})
    second.batch(2, [("tx", 0, o) for o in range(12, 20)])
    second.commit(2, {("tx", 0): 20})
    with open(path, "ab") as f:
        f.write(b'{"pid": 1, "kind": "bat')  # a SIGKILL mid-line

    assert [line["kind"] for line in read_trace(path)] == [
        "seek", "batch", "commit", "seek", "batch", "commit"]
    holes = unprocessed(path, {"tx:0": 20, "tx:1": 5})
    assert [(h.partition, h.first, h.last) for h in holes] == [("tx:0", 10, 11)]
    assert [offset for _, offset in holes[0].committed_by] == [20]
    assert "tx:0 offsets 10..11 not processed (never)" in str(holes[0])
    # The same commit, seen as it happened: it passed 10 and 11 before anyone processed them.
    unsafe = unsafe_commits(path, ["tx:0", "tx:1"])
    assert [(h.partition, h.first, h.last, h.committed_by[0][1]) for h in unsafe] == [
        ("tx:0", 10, 11, 20)]


def test_a_commit_is_unsafe_even_if_the_records_are_processed_later(tmp_path: Path) -> None:
    path = tmp_path / "offsets.jsonl"
    trace = OffsetTrace(path)
    trace.batch(1, [("tx", 0, o) for o in range(3, 6)])
    trace.commit(1, {("tx", 0): 6})  # 0..2 not processed yet: a crash now would lose them
    trace.batch(1, [("tx", 0, o) for o in range(0, 3)])
    trace.commit(1, {("tx", 0): 6})
    assert unprocessed(path, {"tx:0": 6}) == []
    assert [(h.first, h.last) for h in unsafe_commits(path, ["tx:0"])] == [(0, 2)]
    assert unsafe_commits(path, ["tx:1"]) == []


def test_offsets_processed_twice_or_out_of_order_leave_no_hole(tmp_path: Path) -> None:
    path = tmp_path / "offsets.jsonl"
    trace = OffsetTrace(path)
    trace.batch(1, [("tx", 0, o) for o in (5, 6, 7)])
    trace.batch(1, [("tx", 0, o) for o in (0, 1, 2, 3, 4, 5)])  # a replay after a rebalance
    assert unprocessed(path, {"tx:0": 8}) == []
    assert processed_ends(path) == {"tx:0": 8}
    # Records above the last one processed and below the committed offset: a hole too.
    assert [(h.first, h.last) for h in unprocessed(path, {"tx:0": 10})] == [(8, 9)]


def test_a_batch_before_its_generations_seek_is_named(tmp_path: Path) -> None:
    path = tmp_path / "offsets.jsonl"
    trace = OffsetTrace(path)
    trace.seek(4, {("tx", 2): 2392})
    trace.batch(4, [("tx", 2, o) for o in range(2392, 2400)])
    trace.batch(5, [("tx", 2, o) for o in range(2400, 2404)])  # flow ran before the seek
    trace.seek(5, {("tx", 2): 2400})
    trace.batch(5, [("tx", 2, o) for o in range(2400, 2410)])
    assert premature_batches(path) == [
        f"pid {os.getpid()} stored {{'tx:2': [[2400, 2403]]}} in generation 5 before its seek"]
