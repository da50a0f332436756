"""The raw ceiling: plain aiokafka consume -> orjson decode -> one keyed send per input.

``python -m bench.ref_aiokafka`` (configured by the ``BENCH_*`` variables of
:mod:`bench.ref_faust`). No consumer group (partitions are assigned, so no group join), no
state, no commits: what the client library and the broker allow on this machine. The
producer is tuned (5 ms linger, 256 KiB batches); the last record counts once its output is
flushed to the broker.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.harness import PARTITIONS, write_status


async def run() -> None:
    bootstrap = os.environ["BENCH_BROKER"].removeprefix("kafka://")
    src, dst = os.environ["BENCH_INPUT"], os.environ["BENCH_OUTPUT"]
    expect = int(os.environ["BENCH_EXPECT"])
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=4 * 1024 * 1024)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5,
                                max_batch_size=256 * 1024)
    await consumer.start()
    await producer.start()
    try:
        consumer.assign([TopicPartition(src, p) for p in range(PARTITIONS)])
        n, first = 0, 0.0
        loads, dumps, send = orjson.loads, orjson.dumps, producer.send
        while n < expect:
            batch = await consumer.getmany(timeout_ms=1000, max_records=2000)
            for records in batch.values():
                for r in records:
                    if n == 0:
                        first = time.time()
                    v = loads(r.value)
                    await send(dst, dumps({"user_id": v["user_id"], "ts": v["ts"],
                                           "amount": v.get("amount", 0),
                                           "trigger_event_id": v["event_id"]}), key=r.key)
                    n += 1
        await producer.flush()
        write_status(os.environ["BENCH_STATUS"], first, time.time(), n)
    finally:
        await producer.stop()
        await consumer.stop()


if __name__ == "__main__":
    asyncio.run(run())
    sys.exit(0)
