"""``limitstream redrive``: send dead letters back to their source topic once the cause is fixed.

A dead-lettered event leaves no trace in its user's state (``policies/processor.py``), so the
same event published again is applied like a new one: a command refused on a frozen account,
re-driven after the unfreeze, takes effect. Re-driving twice is harmless: the second copy is an
upstream duplicate (same ``event_id``), counted and dropped.

The dead-letter topic is read from its beginning (no consumer group: reading commits
nothing) until it has been idle for ``--timeout`` seconds; the dead letters that pass the
filters (``--code``, ``--topic``, ``--since``/``--until`` on the record's timestamp) are
published to their ``source_topic`` under their original key, byte for byte. ``--dry-run``
prints the same lines without sending. Not re-driven, and counted in the summary:

* a truncated dead letter (its bytes were cut: the record was larger than the bounds);
* one whose source is not an input topic (a re-keyed record with an invalid source header);
* a record of the topic that is not a dead letter at all.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

import orjson

from policies.processor import INPUT_TOPICS
from streams.kafka_io import LogRecord


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters to re-drive (an empty set: any)."""

    codes: frozenset[str] = frozenset()
    topics: frozenset[str] = frozenset()  #: logical source topics
    since_ms: int = 0  #: record timestamp at or after (0: no bound)
    until_ms: int = 0  #: record timestamp before (0: no bound)

    def matches(self, dead: dict[str, Any]) -> bool:
        ts = dead.get("timestamp", 0)
        return ((not self.codes or dead["error"]["code"] in self.codes)
                and (not self.topics or dead["source_topic"] in self.topics)
                and ts >= self.since_ms and (not self.until_ms or ts < self.until_ms))


def to_record(dead: Any) -> tuple[LogRecord | None, str]:
    """The record to publish for one dead letter, or None and why it cannot be re-driven."""
    if not isinstance(dead, dict) or not isinstance(dead.get("error"), dict):
        return None, "not_a_dead_letter"
    if dead.get("truncated", False):
        return None, "truncated"
    if dead.get("source_topic") not in INPUT_TOPICS:
        return None, "no_input_topic"
    try:
        value = base64.b64decode(dead["raw_b64"], validate=True)
    except (KeyError, TypeError, binascii.Error):
        return None, "not_a_dead_letter"
    key = dead.get("key")
    return LogRecord(dead["source_topic"], key.encode() if key else None, value), ""


@dataclass(slots=True)
class Redrive:
    """The dead letters read, the ones selected and what became of them."""

    read: int = 0
    selected: int = 0
    sent: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def plan(self, dead_letters: Iterable[Any], selection: Selection,
             out: IO[str]) -> list[LogRecord]:
        """The records to send, a line printed for each selected dead letter."""
        skipped = self.skipped
        records: list[LogRecord] = []
        for dead in dead_letters:
            self.read += 1
            record, why = to_record(dead)
            if why == "not_a_dead_letter":
                skipped[why] += 1
                continue
            if not selection.matches(dead):
                continue
            self.selected += 1
            line = {"event_id": dead["event_id"], "source_topic": dead["source_topic"],
                    "partition": dead["partition"], "offset": dead["offset"],
                    "code": dead["error"]["code"], "key": dead.get("key"),
                    "raw_size": dead.get("raw_size")}
            if record is None:
                skipped[why] += 1
                out.write(orjson.dumps({"skipped": why, **line}).decode() + "\n")
                continue
            records.append(record)
            out.write(orjson.dumps({"send": True, **line}).decode() + "\n")
        return records

    def summary(self, dry_run: bool) -> dict[str, Any]:
        return {"read": self.read, "selected": self.selected,
                "would_send" if dry_run else "sent": self.sent,
                "skipped": dict(self.skipped)}


def parse_time(text: str) -> int:
    """Epoch milliseconds, or an ISO 8601 date/time (UTC unless it says otherwise)."""
    if text.isdigit():
        return int(text)
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def add_parser(sub: Any) -> None:
    """The ``redrive`` sub-command of the CLI."""
    r = sub.add_parser("redrive", help="re-publish dead letters to their source topic "
                       "(after the cause is fixed)")
    r.add_argument("--code", action="append", default=[],
                   help="only dead letters with this error code (repeatable)")
    r.add_argument("--topic", action="append", default=[], choices=INPUT_TOPICS,
                   help="only dead letters from this source topic (repeatable)")
    r.add_argument("--since", default="", help="record timestamp at or after: epoch ms or "
                   "ISO 8601 (UTC unless given)")
    r.add_argument("--until", default="", help="record timestamp before: epoch ms or ISO 8601")
    r.add_argument("--dry-run", action="store_true",
                   help="print what would be sent, send nothing")
    r.add_argument("--timeout", type=float, default=5.0,
                   help="stop reading dead-letter after this many seconds without a record")
    r.set_defaults(func=cmd_redrive)


def cmd_redrive(args: argparse.Namespace) -> int:
    from limitstream.cli import _need_broker, _settings
    from streams.kafka_io import consume, ensure_topics, produce

    settings = _need_broker(_settings())
    try:
        selection = Selection(frozenset(args.code), frozenset(args.topic),
                              parse_time(args.since) if args.since else 0,
                              parse_time(args.until) if args.until else 0)
    except ValueError as exc:
        sys.exit(f"limitstream: redrive: {exc}")
    job = Redrive()

    async def run() -> None:
        await ensure_topics(settings)
        dead = [r["value"] async for r in consume(settings, "dead-letter",
                                                   idle=args.timeout)]
        records = job.plan(dead, selection, sys.stdout)
        if args.dry_run:
            job.sent = len(records)
        else:
            job.sent = await produce(settings, records)

    asyncio.run(run())
    print(orjson.dumps(job.summary(args.dry_run)).decode(), file=sys.stderr)
    return 0
