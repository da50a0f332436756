"""Helpers for end-to-end tests: publish logs, read topics, wait for the worker to catch up."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from lab.replay import Replay
from lab.simulate import LogLine, SimConfig, simulate
from limitstream.worker_process import WorkerProcess
from policies.engine_factory import engine_for
from policies.processor import INPUT_TOPICS
from policies.spec import load_policy
from streams.app import aiokafka_kwargs
from streams.codec import Limits, encode
from streams.kafka_io import LogRecord, ensure_topics, logical_topics, produce, record_dict
from streams.offset_trace import (
    gaps,
    premature_batches,
    processed_ends,
    tp_key,
    unprocessed,
    unsafe_commits,
)
from streams.settings import Settings


def settings_of(env: dict[str, str]) -> Settings:
    return Settings.from_env({**os.environ, **env})


def record(topic: str, value: dict[str, Any] | None = None, *, key: str | None = "",
           raw: bytes | None = None) -> LogRecord:
    """A log record; ``key=""`` means "the value's user_id" (a well-behaved producer)."""
    if key == "" and value is not None:
        key = value.get("user_id")
    data = raw if raw is not None else orjson.dumps(value)
    return LogRecord(topic, key.encode() if key else None, data)


def publish(env: dict[str, str], records: Iterable[LogRecord]) -> Counter[str]:
    """Publish in order; returns how many records went to each logical topic."""
    settings = settings_of(env)
    recs = list(records)

    async def run() -> None:
        await ensure_topics(settings)
        await produce(settings, recs)

    asyncio.run(run())
    return Counter(r.topic for r in recs)


def read_topic(env: dict[str, str], topic: str, idle: float = 1.0) -> list[dict[str, Any]]:
    """Every record of ``topic`` (logical or real name) as :func:`streams.kafka_io.consume`
    gives them, read as :func:`read_to_end` does."""
    real = logical_topics(settings_of(env)).get(topic, topic)
    return [record_dict(r) for r in read_to_end(env, [real], idle)]


def committed_offsets(env: dict[str, str], topic: str) -> dict[int, int]:
    """The consumer group's committed offset of each partition of ``topic`` (0: none)."""
    settings = settings_of(env)
    real = logical_topics(settings)[topic]

    async def run() -> dict[int, int]:
        c = AIOKafkaConsumer(**aiokafka_kwargs(settings), group_id=settings.app_id,
                             enable_auto_commit=False)
        await c.start()
        try:
            parts = c.partitions_for_topic(real) or set()
            if not parts:
                await c._client.force_metadata_update()  # aiokafka has no public call for it
                parts = c.partitions_for_topic(real) or set()
            return {p: await c.committed(TopicPartition(real, p)) or 0 for p in parts}
        finally:
            await c.stop()

    return asyncio.run(run())


def committed_total(env: dict[str, str], topic: str) -> int:
    """Sum over partitions of the consumer group's committed offsets on ``topic``."""
    return sum(committed_offsets(env, topic).values())


def offset_report(env: dict[str, str]) -> str:
    """From the workers' offset trace (LIMITSTREAM_OFFSET_TRACE), per input partition: the
    offsets no worker processed below what was committed or processed, with the commits that
    passed them (a lost update), where the committed offset stopped behind the processed
    ones (commits that stall), and the gaps Faust's consumer filled — the first things to
    know when an event went missing."""
    path = env.get("LIMITSTREAM_OFFSET_TRACE", "")
    if not path or not Path(path).exists():
        return "no offset trace"
    names = logical_topics(settings_of(env))
    committed = {tp_key(names[t], p): o
                 for t in INPUT_TOPICS for p, o in committed_offsets(env, t).items()}
    processed = processed_ends(path)
    ends = {tp: max(o, processed.get(tp, 0)) for tp, o in committed.items()}
    behind = [f"{tp} committed {o}, processed to {processed[tp]}"
              for tp, o in sorted(committed.items()) if processed.get(tp, 0) > o]
    holes = [str(h) for h in unprocessed(path, ends)]
    # The test logs hold no transaction markers: any gap Faust filled is a skip.
    filled = [f"{tp} {a}..{b}" for tp, a, b in gaps(path) if tp in committed]
    return (f"offset trace ({path}): holes: {'; '.join(holes[:10]) or 'none'}; "
            f"commits behind: {'; '.join(behind) or 'none'}; "
            f"gaps Faust filled: {'; '.join(filled[:10]) or 'none'}")


def assert_commits_safe(env: dict[str, str]) -> None:
    """No worker committed an input offset before every record below it had been processed
    (the offset trace, LIMITSTREAM_OFFSET_TRACE): the precondition of every lost update,
    checked even in runs where the records were processed later and nothing was lost; and no
    worker stored a batch of a generation before that generation's seek."""
    settings = settings_of(env)
    names = logical_topics(settings)
    partitions = [tp_key(names[t], p) for t in INPUT_TOPICS for p in range(settings.partitions)]
    path = env["LIMITSTREAM_OFFSET_TRACE"]
    unsafe = unsafe_commits(path, partitions)
    assert not unsafe, f"offset trace ({path}): " + "; ".join(str(h) for h in unsafe[:10])
    early = premature_batches(path)
    assert not early, f"offset trace ({path}): " + "; ".join(early[:5])


def wait_committed(env: dict[str, str], produced: Counter[str], timeout: float = 90.0) -> None:
    """Wait until the worker group has committed past every record produced."""
    deadline = time.monotonic() + timeout
    last: dict[str, int] = {}
    while time.monotonic() < deadline:
        last = {t: committed_total(env, t) for t in produced}
        if all(last[t] >= n for t, n in produced.items()):
            return
        time.sleep(0.5)
    raise TimeoutError(f"committed {last}, produced {dict(produced)}; {offset_report(env)}")


# -- simulated logs in phases ----------------------------------------------------------------
#
# A worker merges a user's records from different topics by event time, but it cannot wait
# for a record not yet published: a caught-up partition holds nobody back. A log published
# at a rate while workers come and go is therefore published in phases, where a phase holds
# at most one topic per user, waiting for the group's commits between phases; the fold then
# replays it phase by phase (``fold(env, *phases)``), the order the workers saw.

def phased(lines: Iterable[LogLine], max_phases: int) -> list[list[LogRecord]]:
    """Phase k holds the k-th single-topic run of every user's records, in log order.

    A user's runs after ``max_phases`` are dropped (their story is cut short there): the
    last phases are small, and each phase costs a commit round trip.
    """
    phases: list[list[LogRecord]] = [[] for _ in range(max_phases)]
    run: dict[str, int] = {}
    topic: dict[str, str] = {}
    for line in lines:
        if topic.get(line.key) != line.topic:
            topic[line.key] = line.topic
            run[line.key] = run.get(line.key, -1) + 1
        if run[line.key] < max_phases:
            phases[run[line.key]].append(record(line.topic, line.value))
    return [p for p in phases if p]


def simulated_phases(users: int, days: int, max_phases: int = 6,
                     seed: int = 7) -> list[list[LogRecord]]:
    """A simulated population's log (lab.simulate), in phases (see :func:`phased`)."""
    return phased(simulate(SimConfig(users=users, days=days, seed=seed)), max_phases)


def user_of(rec: LogRecord) -> str:
    return rec.key.decode() if rec.key else ""


def publish_at(env: dict[str, str], records: Iterable[LogRecord], rate: float) -> None:
    """Publish in order at about ``rate`` records/s (0: as fast as possible)."""
    settings = settings_of(env)
    recs = list(records)

    async def run() -> None:
        await ensure_topics(settings)
        await produce(settings, recs, rate=rate)

    asyncio.run(run())


def publish_phase(env: dict[str, str], records: list[LogRecord], produced: Counter[str],
                  rate: float = 0.0, timeout: float = 90.0) -> None:
    """Publish one phase, add it to ``produced`` (cumulative: committed_total is the absolute
    offset on each topic) and wait until the group has committed past all of it."""
    publish_at(env, records, rate)
    produced.update(r.topic for r in records)
    wait_committed(env, produced, timeout=timeout)


#: A held feed's trickle: records per publish, and their rate (records/s).
TRICKLE, TRICKLE_RATE = 10, 10.0


class Feed(threading.Thread):
    """Publishes phases from a background thread, waiting for the group's commits after each.

    ``rates`` gives a phase's publishing rate (records/s; a slow phase keeps the stream live
    while a test kills and restarts workers). ``started[i]`` is set when phase i begins.
    With ``hold``, the phases from ``hold_from`` on trickle (:data:`TRICKLE` records at a
    time, at :data:`TRICKLE_RATE`) until ``hold`` is set: a test's disturbances
    that run late on a loaded machine still find records streaming, and the rest goes at
    its rate once they are done. :meth:`finish` joins and re-raises what went wrong in the
    thread.
    """

    def __init__(self, env: dict[str, str], phases: list[list[LogRecord]],
                 rates: dict[int, float] | None = None, timeout: float = 120.0,
                 hold: threading.Event | None = None, hold_from: int = 0) -> None:
        super().__init__(daemon=True)
        self.env = env
        self.phases = phases
        self.rates = rates or {}
        self.timeout = timeout
        self.hold = hold
        self.hold_from = hold_from
        self.started = [threading.Event() for _ in phases]
        self.error: BaseException | None = None

    def held(self, phase: int) -> bool:
        return self.hold is not None and phase >= self.hold_from and not self.hold.is_set()

    def run(self) -> None:
        produced: Counter[str] = Counter()
        try:
            for i, recs in enumerate(self.phases):
                self.started[i].set()
                while recs and self.held(i):
                    head, recs = recs[:TRICKLE], recs[TRICKLE:]
                    publish_at(self.env, head, TRICKLE_RATE)
                    produced.update(r.topic for r in head)
                publish_phase(self.env, recs, produced, self.rates.get(i, 0.0), self.timeout)
        except BaseException as exc:  # handed to the test thread by finish()
            self.error = exc

    def finish(self, timeout: float = 180.0) -> None:
        self.join(timeout)
        if self.is_alive():
            raise TimeoutError(f"the feed did not finish within {timeout:.0f} s")
        if self.error is not None:
            raise self.error


# -- the pure fold of a log -----------------------------------------------------------------

#: Output topics whose records the fold must reproduce exactly (ids and values).
FOLD_OUTPUTS = ("limit-changes", "account-status", "decisions", "labels")
OUTPUT_TOPICS = (*FOLD_OUTPUTS, "dead-letter")


@dataclass
class Fold:
    """What the pure core makes of a log: the users' views and the outputs, by id."""

    views: dict[str, dict[str, Any]]
    #: logical output topic -> event_id -> value (JSON round-tripped, as a reader sees it)
    outputs: dict[str, dict[str, dict[str, Any]]]
    #: user -> valid events of the user in the log
    applied: Counter[str]
    dead_letters: int


def fold(env: dict[str, str], *runs: Iterable[LogRecord]) -> Fold:
    """Replay ``runs`` through the core built as the worker builds it, one after another,
    each as one ``limitstream replay`` (merged by event time as a whole: a log published at
    once). A log published in phases, each committed before the next is published, is one
    run per phase: the worker cannot apply a record before the phases before it. The model
    stays cold (fewer labels than the policy's gate needs, asserted below), so the rules
    decide live too, whenever each worker installs a snapshot."""
    settings = settings_of(env)
    policy = load_policy(settings.policy_file)
    m = policy.model
    engine, _ = engine_for(policy, settings)  # the worker's own factory
    replay = Replay(engine, Limits(settings.currency, settings.max_message_bytes),
                    partitions=settings.partitions)
    outputs: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in OUTPUT_TOPICS}
    for out in (out for log in runs for out in replay.run(log)):
        value = orjson.loads(encode(out.value))
        assert value["event_id"] not in outputs[out.topic], "the fold repeated an output id"
        outputs[out.topic][value["event_id"]] = value
    views = {uid: orjson.loads(orjson.dumps(s.view())) for uid, s in replay.states.items()}
    applied = Counter({uid: s.features_applied for uid, s in replay.states.items()})
    assert len(outputs["labels"]) < m.min_labels, (
        "the log yields enough labels to warm the model up: live decisions would then depend "
        "on when each worker installs a snapshot, and the rules-only fold would not apply")
    return Fold(views, outputs, applied, replay.stats.dead_letters)


# -- reading what the workers produced -------------------------------------------------------

def read_to_end(env: dict[str, str], topics: Iterable[str], idle: float = 1.0
                ) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of the real ``topics``, from the beginning: read up to the end offsets,
    then until ``idle`` seconds bring nothing new (the embedded broker's end offsets have
    lagged behind the true count). Only the last read waits ``idle``: a wait per read of
    several seconds was a visible share of the suite's time."""
    settings = settings_of(env)

    async def run() -> list[ConsumerRecord[bytes, bytes]]:
        out: list[ConsumerRecord[bytes, bytes]] = []
        c = AIOKafkaConsumer(**aiokafka_kwargs(settings), group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest")
        await c.start()
        try:
            await c._client.force_metadata_update()  # no public call for it
            tps = [TopicPartition(real, p) for real in topics
                   for p in sorted(c.partitions_for_topic(real) or ())]
            c.assign(tps)
            await c.seek_to_beginning(*tps)
            end = await c.end_offsets(tps)
            caught_up = False
            while True:
                batch = await c.getmany(timeout_ms=int(idle * 1000))
                for tp_records in batch.values():
                    out.extend(tp_records)
                if not caught_up:
                    pos = {tp: await c.position(tp) for tp in tps}
                    caught_up = all(pos[tp] >= end[tp] for tp in tps)
                elif not batch:
                    return out
        finally:
            await c.stop()

    return asyncio.run(run())


def read_outputs(env: dict[str, str], topics: Iterable[str] = OUTPUT_TOPICS,
                 idle: float = 1.0) -> dict[str, list[dict[str, Any]]]:
    """Every record of the logical ``topics``, in one pass of :func:`read_to_end`."""
    names = logical_topics(settings_of(env))
    logical = {names[t]: t for t in topics}
    out: dict[str, list[dict[str, Any]]] = {t: [] for t in topics}
    for r in read_to_end(env, logical, idle):
        out[logical[r.topic]].append({
            "topic": logical[r.topic], "partition": r.partition, "offset": r.offset,
            "key": r.key.decode() if r.key else None,
            "value": orjson.loads(r.value) if r.value is not None else None})
    return out


def wait_log(worker: WorkerProcess, text: str, timeout: float = 60.0) -> None:
    """Wait until ``text`` is in the worker's log (the test workers that hold a recovery
    say so there)."""
    assert worker.log_path is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in worker.log_path.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{text!r} not in the worker's log within {timeout:.0f} s"
                       + worker.log_tail())


# -- partition ownership ---------------------------------------------------------------------

def owners(worker: WorkerProcess) -> dict[str, set[int]]:
    """Worker URL -> partitions of the user table it serves, as ``worker`` sees the group
    (Faust's router view of the last assignment)."""
    status, body = worker.get("/router/")
    if status != 200:
        return {}
    out: dict[str, set[int]] = {}
    for url, tables in orjson.loads(body).items():
        for topic, parts in tables.items():
            if topic.endswith("users-changelog") and parts:
                out[url.rstrip("/")] = set(parts)
    return out


def ready(worker: WorkerProcess) -> bool:
    try:
        return worker.alive() and worker.get("/readyz", timeout=1.0)[0] == 200
    except OSError:
        return False


def wait_assignment(workers: list[WorkerProcess], partitions: int, timeout: float = 60.0,
                    poll: float = 0.1) -> float:
    """Wait until ``workers`` are all ready and, as each of them sees it, split the
    ``partitions`` among themselves, each owning at least one; returns the seconds waited."""
    t0 = time.monotonic()
    want = {w.url for w in workers}
    assert len(want) == len(workers), f"two workers share a web port: {[w.url for w in workers]}"
    seen: list[dict[str, set[int]]] = []
    while time.monotonic() - t0 < timeout:
        dead = [w for w in workers if not w.alive()]
        if dead:
            raise RuntimeError("worker(s) exited while waiting for an assignment: "
                               + "".join(f"{w.url} with {w.process.returncode}{w.log_tail()}"
                                         for w in dead))
        if all(ready(w) for w in workers):
            seen = [owners(w) for w in workers]
            if all(set(o) == want and all(o.values()) and set().union(*o.values())
                   == set(range(partitions)) and sum(map(len, o.values())) == partitions
                   for o in seen):
                return time.monotonic() - t0
        time.sleep(poll)
    raise TimeoutError(f"no assignment of {partitions} partitions to {sorted(want)} within "
                       f"{timeout:.0f} s; last seen {seen}"
                       + "".join(w.log_tail(1500) for w in workers))


# -- assertions shared by the crash and multi-worker tests ------------------------------------

def dedup(records: list[dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], int]:
    """Group output records by event_id: every copy of an id must be the same message (same
    value, same key, same partition). Returns the first copy of each id and the number of
    extra copies."""
    first: dict[str, dict[str, Any]] = {}
    extra = 0
    for r in records:
        eid = r["value"]["event_id"]
        if eid in first:
            extra += 1
            f = first[eid]
            assert r["value"] == f["value"], f"two different messages share the id {eid}"
            assert (r["key"], r["partition"]) == (f["key"], f["partition"]), eid
        else:
            first[eid] = r
    return first, extra


def assert_versions_increase(topic: str, records: Iterable[dict[str, Any]]) -> None:
    """Per user, the versions of the deduplicated outputs strictly increase in offset order."""
    last: dict[str, tuple[int, int]] = {}
    for r in sorted(records, key=lambda r: (r["partition"], r["offset"])):
        uid, v = r["value"]["user_id"], r["value"]["version"]
        if uid in last:
            assert v > last[uid][0], (
                f"{topic}: {uid} version {v} at offset {r['offset']} after version "
                f"{last[uid][0]} at offset {last[uid][1]}")
        last[uid] = (v, r["offset"])


def assert_outputs_exact(env: dict[str, str], expected: Fold) -> dict[str, int]:
    """The live outputs, deduplicated by event_id, are the fold's, id for id and value for
    value; per-user versions strictly increase; no dead letter unless the fold has some.
    Returns the duplicate copies seen per topic (what the at-least-once restarts produced)."""
    live = read_outputs(env)
    duplicates: dict[str, int] = {}
    for topic in FOLD_OUTPUTS:
        unique, duplicates[topic] = dedup(live[topic])
        got = {eid: r["value"] for eid, r in unique.items()}
        want = expected.outputs[topic]
        assert got.keys() == want.keys(), (
            f"{topic}: {len(got.keys() - want.keys())} ids not in the fold, "
            f"{len(want.keys() - got.keys())} of the fold's ids missing")
        wrong = [eid for eid in want if got[eid] != want[eid]]
        assert not wrong, f"{topic}: {len(wrong)} messages differ from the fold, e.g. {wrong[0]}"
        if topic != "labels":
            assert_versions_increase(topic, unique.values())
    # Every decision has exactly one audit record: a user's versions there are 1..n.
    versions: dict[str, list[int]] = {}
    for r in sorted(dedup(live["decisions"])[0].values(),
                    key=lambda r: (r["partition"], r["offset"])):
        versions.setdefault(r["value"]["user_id"], []).append(r["value"]["version"])
    for uid, vs in versions.items():
        assert vs == list(range(1, len(vs) + 1)), f"{uid}: decision versions {vs}"
        assert expected.views[uid]["version"] == len(vs), uid
    unique_dead, duplicates["dead-letter"] = dedup(live["dead-letter"])
    assert len(unique_dead) == expected.dead_letters
    return duplicates


def changelog_story(env: dict[str, str], uids: Iterable[str]) -> str:
    """Each user's states as the user table's changelog holds them, in order: (changelog
    partition@offset, events applied, the input offsets inside). A count that falls, or stops
    short of the log's, says whether a state was overwritten from an older one (a lost
    update in the table) or never written (the view read elsewhere)."""
    wanted = {uid.encode() for uid in uids}
    changelog = f"{env['LIMITSTREAM_APP_ID']}-users-changelog"
    story: dict[str, list[str]] = {uid.decode(): [] for uid in wanted}
    for r in read_to_end(env, [changelog]):
        if r.key in wanted and r.value is not None:
            state = orjson.loads(r.value)
            story[r.key.decode()].append(f"{r.partition}@{r.offset}: n={state['n']} "
                                         f"o={state['o']}")
    return "; ".join(f"{uid}: [{', '.join(lines)}]" for uid, lines in sorted(story.items()))


def dead_letter_report(env: dict[str, str]) -> str:
    """The dead letters the group wrote, by error code (a valid record that a transient
    failure made fail every time is dead-lettered as ``processing_failed``)."""
    codes = Counter(str((r["value"] or {}).get("error", {}).get("code"))
                    for r in read_outputs(env, ["dead-letter"])["dead-letter"])
    return f"dead letters by code: {dict(sorted(codes.items()))}"


def worker_warnings(env: dict[str, str], lines: int = 30) -> str:
    """The last warnings and errors of every worker log beside the offset trace (the test's
    directory), one block per log."""
    trace = env.get("LIMITSTREAM_OFFSET_TRACE", "")
    blocks = []
    for path in sorted(Path(trace).parent.glob("worker-*.log")) if trace else []:
        found = [line for line in path.read_text(errors="replace").splitlines()
                 if "WARNING" in line or "ERROR" in line]
        blocks.append(f"\n--- {path.name}: {len(found)} warnings/errors, the last "
                      f"{min(lines, len(found))} ---\n" + "\n".join(found[-lines:]))
    return "".join(blocks)


def assert_views_exact(worker: WorkerProcess, expected: Fold, env: dict[str, str]) -> None:
    """Every user's ``GET /users/{id}`` (from ``worker``, routed to the owner) is the fold's
    view, and counts every one of the user's valid events: nothing lost, nothing twice.
    A miscount reports every user miscounted, their histories in the changelog and the
    offset trace: what a lost update needs to be explained."""
    miscounted: dict[str, tuple[int, int]] = {}
    wrong: list[str] = []
    for uid, want in expected.views.items():
        status, body = worker.get(f"/users/{uid}", timeout=5.0)
        assert status == 200, f"GET /users/{uid} from {worker.url}: {status} {body[:200]!r}"
        view = orjson.loads(body)
        if view["events_applied"] != expected.applied[uid]:
            miscounted[uid] = (view["events_applied"], expected.applied[uid])
        elif view != want:
            wrong.append(uid)
    assert not miscounted, (
        f"{len(miscounted)} users miscounted (events applied, in the log): "
        f"{sorted(miscounted.items())[:20]}; changelog: "
        f"{changelog_story(env, sorted(miscounted)[:3])}; {dead_letter_report(env)}; "
        f"{offset_report(env)}{worker_warnings(env)}")
    assert not wrong, f"{len(wrong)} users differ from the fold, e.g. {wrong[:5]}"


def metric(worker: WorkerProcess, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` on the worker's /metrics whose labels match."""
    families = text_string_to_metric_families(worker.get("/metrics")[1].decode())
    return sum(s.value for f in families for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def handled(worker: WorkerProcess) -> float:
    """Records the worker has handled: applied, dead-lettered or dropped as duplicates."""
    return (metric(worker, "limitstream_events_total")
            + metric(worker, "limitstream_dead_letters_total")
            + metric(worker, "limitstream_duplicates_total"))


def rounds(log: list[LogRecord]) -> list[list[LogRecord]]:
    """Split a log, in order, into rounds inside which each user's records are on one topic.

    Kafka orders records per partition only: a worker applies one user's records from two
    topics in arrival order. Publishing round by round, each after the previous is handled,
    makes the worker see every user's records in the log's order — the replay's order.
    """
    out: list[list[LogRecord]] = []
    current: list[LogRecord] = []
    topic_of: dict[bytes | None, str] = {}
    for rec in log:
        if topic_of.get(rec.key, rec.topic) != rec.topic:
            out.append(current)
            current, topic_of = [], {}
        topic_of[rec.key] = rec.topic
        current.append(rec)
    if current:
        out.append(current)
    return out


def publish_in_rounds(env: dict[str, str], worker: WorkerProcess, log: list[LogRecord],
                      timeout: float = 60.0) -> int:
    """Publish ``log`` round by round, each once the worker has handled the one before."""
    settings = settings_of(env)
    parts = rounds(log)

    async def run() -> None:
        await ensure_topics(settings)
        names = logical_topics(settings)
        producer = AIOKafkaProducer(**aiokafka_kwargs(settings), linger_ms=1)
        await producer.start()
        try:
            done = handled(worker)
            for part in parts:
                for rec in part:
                    await producer.send(names[rec.topic], rec.value, key=rec.key)
                await producer.flush()
                done += len(part)
                deadline = time.monotonic() + timeout
                while await asyncio.to_thread(handled, worker) < done:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"worker handled {handled(worker)} of {done}")
                    await asyncio.sleep(0.02)
        finally:
            await producer.stop()

    asyncio.run(run())
    return len(parts)
