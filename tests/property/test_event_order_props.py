"""Property: the event-time merge does not depend on how the records arrive.

Whatever the interleaving of the same per-topic-partition sequences — the fetch timing of a
live worker — a merge that waits for every partition that is not yet caught up (and never
times out) releases the records in the order the replay's merge of the whole log gives.
(Records whose ts cannot be read go at once: the processor dead-letters them.)
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.event_order import UNREADABLE_TS, EventTimeMerge

TOPICS = ("transactions", "repayments", "account-events", "limit-commands", "rekeyed")

#: One record: (topic index, partition, ts). Few distinct ts values, so ties are common.
records = st.lists(
    st.tuples(st.integers(0, len(TOPICS) - 1), st.integers(0, 2),
              st.one_of(st.integers(0, 6), st.just(UNREADABLE_TS))),
    max_size=40)


def sequences(log: list[tuple[int, int, int]]) -> dict[tuple[str, int], list[tuple[int, str]]]:
    """Per topic-partition, its records (ts, unique name) in offset order."""
    out: dict[tuple[str, int], list[tuple[int, str]]] = {}
    for i, (t, p, ts) in enumerate(log):
        out.setdefault((TOPICS[t], p), []).append((ts, f"{TOPICS[t]}/{p}#{i}"))
    return out


def replay_order(seqs: dict[tuple[str, int], list[tuple[int, str]]]) -> list[str]:
    merge: EventTimeMerge[str] = EventTimeMerge(TOPICS, max_idle_ms=0, max_buffered=1 << 30)
    for (topic, partition), recs in seqs.items():
        for ts, name in recs:
            merge.add(topic, partition, ts, name)
    return merge.drain()


@settings(max_examples=300, deadline=None)
@given(log=records, data=st.data())
def test_any_interleaving_gives_the_replay_order(log: list[tuple[int, int, int]],
                                                 data: st.DataObject) -> None:
    seqs = sequences(log)
    # Arrival: repeatedly a topic-partition that still has records delivers its next one;
    # the agent asks the merge after every arrival (and at the end).
    arrivals = [tp for tp, recs in seqs.items() for _ in recs]
    order = data.draw(st.permutations(arrivals))
    delivered = {tp: 0 for tp in seqs}
    merge: EventTimeMerge[str] = EventTimeMerge(TOPICS, max_idle_ms=1 << 40,
                                                max_buffered=1 << 30)

    def caught_up(topic: str, partition: int) -> bool:
        tp = (topic, partition)
        return tp not in seqs or delivered[tp] == len(seqs[tp])

    live: list[str] = []
    for tp in order:
        ts, name = seqs[tp][delivered[tp]]
        delivered[tp] += 1
        merge.add(tp[0], tp[1], ts, name)
        out = merge.release(0, caught_up)
        assert out.idle_timeout == 0 and out.buffer_cap == 0
        live += out.items
    assert len(merge) == 0
    unreadable = {name for recs in seqs.values() for ts, name in recs if ts == UNREADABLE_TS}

    def by_group(names: list[str]) -> dict[int, list[str]]:
        # Each partition group in the replay's order (groups are independent live). Records
        # whose ts cannot be read go at once, to dead-letter: they change no state, and
        # only they may move with the arrival.
        return {p: [n for n in names if n not in unreadable and int(n.split("/")[1][0]) == p]
                for p in range(3)}

    assert by_group(live) == by_group(replay_order(seqs))
