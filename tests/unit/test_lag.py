"""The lag and population figures (agents/lag.py): from the group's committed offsets and the
end offsets, per owned partition, cleared for revoked partitions; the population of owned
partitions only."""

from __future__ import annotations

from agents.lag import Offsets, lag_figures, population

NOW = 1_800_000_000.0


def nothing_applied(topic: str, partition: int) -> tuple[int, float] | None:
    return None


def test_lag_is_end_less_committed_and_only_owned_partitions_get_series() -> None:
    offsets = {("tx", 0): Offsets(committed=90, first=0, end=100),
               ("tx", 1): Offsets(committed=100, first=0, end=100),
               ("tx", 2): Offsets(committed=5, first=0, end=40)}
    figures = lag_figures(offsets, {("tx", 0), ("tx", 1)}, nothing_applied, {}, NOW, 50.0)
    assert figures.lag == {("tx", "0"): 10, ("tx", "1"): 0}
    # Partition 2 belongs to another worker, or to nobody: only the group figure has it.
    assert figures.group == {("tx", "0"): 10, ("tx", "1"): 0, ("tx", "2"): 35}
    assert set(figures.stalled) == set(figures.lag)


def test_after_a_revocation_the_partition_s_series_goes() -> None:
    offsets = {("tx", 0): Offsets(90, 0, 100), ("tx", 1): Offsets(0, 0, 20_000)}
    before = lag_figures(offsets, {("tx", 0), ("tx", 1)}, nothing_applied, {}, NOW, 0.0)
    after = lag_figures(offsets, {("tx", 0)}, nothing_applied, before.seen, NOW, 10.0)
    assert ("tx", "1") in before.lag and ("tx", "1") not in after.lag
    assert set(after.seen) == {("tx", 0)}


def test_never_committed_starts_at_the_first_offset_and_lag_is_never_negative() -> None:
    offsets = {("tx", 0): Offsets(committed=None, first=30, end=50),
               ("tx", 1): Offsets(committed=120, first=0, end=100)}  # stale end offset
    figures = lag_figures(offsets, {("tx", 0), ("tx", 1)}, nothing_applied, {}, NOW, 0.0)
    assert figures.lag == {("tx", "0"): 20, ("tx", "1"): 0}


def test_seconds_behind_from_the_newest_applied_record_while_records_wait() -> None:
    offsets = {("tx", 0): Offsets(committed=50, first=0, end=100),   # applied up to 59
               ("tx", 1): Offsets(committed=90, first=0, end=100),   # all applied, not committed
               ("tx", 2): Offsets(committed=100, first=0, end=100),  # caught up
               ("tx", 3): Offsets(committed=70, first=0, end=100)}   # nothing applied yet
    newest = {("tx", 0): (59, NOW - 300.0), ("tx", 1): (99, NOW - 2.0),
              ("tx", 2): (99, NOW - 3600.0), ("tx", 3): (12, NOW - 9.0)}  # 12: a past owner's

    def applied(topic: str, partition: int) -> tuple[int, float] | None:
        return newest.get((topic, partition))

    figures = lag_figures(offsets, set(offsets), applied, {}, NOW, 0.0)
    assert figures.seconds == {("tx", "0"): 300.0, ("tx", "1"): 0.0, ("tx", "2"): 0.0}


def test_a_commit_stall_counts_while_records_wait_behind_an_unmoved_committed_offset() -> None:
    part = ("tx", 0)
    seen: dict[tuple[str, int], tuple[int, float]] = {}
    stalled = []
    # committed offset: 10, 10, 10 (records wait), 20 (moved), 20 with nothing waiting.
    for clock, committed, end in ((0.0, 10, 50), (10.0, 10, 50), (20.0, 10, 60),
                                  (30.0, 20, 60), (40.0, 60, 60)):
        figures = lag_figures({part: Offsets(committed, 0, end)}, {part}, nothing_applied,
                              seen, NOW, clock)
        seen = figures.seen
        stalled.append(figures.stalled[("tx", "0")])
    assert stalled == [0.0, 10.0, 20.0, 0.0, 0.0]


def test_population_counts_the_users_of_owned_partitions_only() -> None:
    summary = {"u1": ("ACTIVE", 0, 1_000, 1), "u2": ("PROBATION", 2, 500, 0),
               "u3": ("ACTIVE", 0, 2_000, 2), "u4": ("SUSPENDED", 0, 0, 0)}
    partition = {"u1": 0, "u2": 1, "u3": 2, "u4": 1}
    counted = population(summary, {0, 1}, partition.__getitem__)
    assert counted.users == 3
    assert counted.by_status == {("ACTIVE", ""): 1, ("PROBATION", "2"): 1, ("SUSPENDED", ""): 1}
    assert counted.limit_extended == 1_500
    assert counted.pending_labels == 1
