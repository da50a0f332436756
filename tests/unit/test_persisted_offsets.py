"""The RocksDB store's recovery check against the changelog fence
(agents/users_table.check_persisted_offsets)."""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition
from faust.exceptions import ConsistencyError
from faust.types import TP

from agents.users_table import check_persisted_offsets

CHANGELOG = "app-users-changelog"


def test_a_database_behind_the_fence_recovers() -> None:
    # Persisted 75 while the broker reported the end as 75 (highwater 74): the restart Faust's
    # own check refused on the embedded broker. The fence, written after it, is at 76.
    check_persisted_offsets({TP(CHANGELOG, 3): 75, TP(CHANGELOG, 1): None},
                            {TopicPartition(CHANGELOG, 3): 76, TopicPartition(CHANGELOG, 1): 0})


@pytest.mark.parametrize("persisted", [76, 900])
def test_a_database_at_or_past_the_fence_stops_the_worker(persisted: int) -> None:
    with pytest.raises(ConsistencyError, match=r"app-users-changelog\[3\] has applied "
                                               rf"changelog offset {persisted}"):
        check_persisted_offsets({TP(CHANGELOG, 3): persisted},
                                {TopicPartition(CHANGELOG, 3): 76})
