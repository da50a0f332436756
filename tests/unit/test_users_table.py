"""The user table drops the changelog records Faust applies late for partitions whose users
the agent already serves (agents/users_table.UsersTable.apply_changelog_batch)."""

from __future__ import annotations

from faust.types.tuples import ConsumerMessage

from agents.users_table import UsersTable, _ChangelogEvent, users_table
from streams.app import create_app, key_partition
from streams.settings import Settings

PARTITIONS = 4


def _event(table: UsersTable, key: bytes, value: bytes, offset: int) -> _ChangelogEvent:
    topic = table.changelog_topic.get_topic_name()
    partition = key_partition(key, PARTITIONS)
    return _ChangelogEvent(key, value, ConsumerMessage(
        topic, partition, offset, 0.0, 0, {}, key, value, None))


def _two_users_on_two_partitions() -> tuple[bytes, bytes]:
    keys = [f"u{i:06d}".encode() for i in range(64)]
    first = keys[0]
    other = next(k for k in keys if key_partition(k, PARTITIONS) != key_partition(first,
                                                                                    PARTITIONS))
    return first, other


async def test_late_records_of_served_partitions_are_dropped_until_the_next_recovery() -> None:
    app = create_app(Settings(broker="kafka://127.0.0.1:1"))
    table = users_table(app, PARTITIONS, {})
    served_user, standby_user = _two_users_on_two_partitions()
    table.data[served_user] = b"newest, stored by the agent"
    table._owned = frozenset({key_partition(served_user, PARTITIONS)})  # its tail is applied

    # One buffer, as Faust's recovery fills it: a late record of the served partition, and a
    # standby partition's record.
    table.apply_changelog_batch([_event(table, served_user, b"stale", 40),
                                 _event(table, standby_user, b"standby copy", 12)])
    assert table.data[served_user] == b"newest, stored by the agent"
    assert table.data[standby_user] == b"standby copy"

    # The next rebalance's recovery applies the partition's records again.
    await table.on_rebalance(set(), set(), set(), 8)
    table.apply_changelog_batch([_event(table, served_user, b"recovered", 41)])
    assert table.data[served_user] == b"recovered"
