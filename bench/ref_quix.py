"""The same minimal job on Quix Streams (the bench-only ``bench`` extra: quixstreams>=3).

``python -m bench.ref_quix`` (configured by the ``BENCH_*`` variables of
:mod:`bench.ref_faust`): JSON decode, per-user 1-hour aggregates in Quix's state store
(RocksDB, with its changelog topic) and one output message per input — the job of
``bench.ref_faust conventional``. Quix's defaults otherwise; the librdkafka settings the
embedded broker needs (FINDINGS.md): explicit topic retention configs and a 6 s session.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from bench.harness import PARTITIONS, TOPIC_CONFIGS, write_status

HOUR_MS = 3_600_000


def main() -> int:
    from quixstreams import Application, State
    from quixstreams.models import TopicConfig

    bootstrap = os.environ["BENCH_BROKER"].removeprefix("kafka://")
    expect = int(os.environ["BENCH_EXPECT"])
    status = os.environ["BENCH_STATUS"]
    app = Application(
        broker_address=bootstrap,
        consumer_group=os.environ["BENCH_GROUP"],
        auto_offset_reset="earliest",
        state_dir=os.path.join(os.environ["BENCH_DATADIR"], "quix-state"),
        loglevel="WARNING",
        consumer_extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
    )
    config = TopicConfig(num_partitions=PARTITIONS, replication_factor=1,
                         extra_config=dict(TOPIC_CONFIGS))
    source = app.topic(os.environ["BENCH_INPUT"], value_deserializer="json", config=config)
    out = app.topic(os.environ["BENCH_OUTPUT"], value_serializer="json", config=config)
    progress = {"n": 0, "first": 0.0}

    def aggregate(value: dict[str, Any], state: State) -> dict[str, Any]:
        hour = value["ts"] // HOUR_MS
        key = str(hour)
        total = state.get(key, 0) + value.get("amount", 0)
        state.set(key, total)
        n = progress["n"] = progress["n"] + 1
        if n == 1:
            progress["first"] = time.time()
        if n == expect:
            write_status(status, progress["first"], time.time(), n)
        return {"user_id": value["user_id"], "hour": hour, "total": total,
                "trigger_event_id": value["event_id"]}

    sdf = app.dataframe(source)
    sdf = sdf.apply(aggregate, stateful=True)
    sdf.to_topic(out)
    app.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
