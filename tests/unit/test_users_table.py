"""The user table drops the changelog records Faust applies late for partitions whose users
the agent already serves (agents/users_table.UsersTable.apply_changelog_batch), and a recovery
callback that a newer rebalance overtook changes nothing."""

from __future__ import annotations

from faust.types import TP
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


async def test_a_recovery_callback_started_after_a_newer_rebalance_began_changes_nothing(
) -> None:
    """Faust's recovery can end between a newer rebalance's revoke and its assignment: its
    table callback then starts after that rebalance began. Its tail must not land."""
    app = create_app(Settings(broker="kafka://127.0.0.1:1"))
    table = users_table(app, PARTITIONS, {})
    user, _ = _two_users_on_two_partitions()
    partition = key_partition(user, PARTITIONS)
    table.data[user] = b"recovered up to the reported end"
    await table.on_rebalance(set(), set(), set(), 7)  # the assignment this recovery serves
    app.on_rebalance_start()  # a newer rebalance's revoke, before the callback starts

    async def tail(active_tps: set[TP]) -> list[_ChangelogEvent]:
        return [_event(table, user, b"tail of the overtaken recovery", 90)]

    table._read_tail = tail  # type: ignore[method-assign]  # no broker here
    await table.on_recovery_completed({TP(table.changelog_topic.get_topic_name(), partition)},
                                      set())
    assert table.data[user] == b"recovered up to the reported end"
    assert not table._owned  # the newer rebalance's recovery applies Faust's records again
