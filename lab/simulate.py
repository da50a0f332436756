"""Seeded portfolio simulator: a reproducible population of credit-line users (issue 6).

:func:`simulate` produces every *input* event of a population — ``transactions``,
``repayments`` and ``account-events`` — in event-time order; the personas are described
in :mod:`lab.personas`. Same configuration, same bytes.

Example
-------
>>> cfg = SimConfig(users=3, days=40)
>>> lines = list(simulate(cfg))
>>> lines[0].topic, lines[0].value["kind"]
('account-events', 'opened')
>>> all(a.ts <= b.ts for a, b in zip(lines, lines[1:], strict=False))
True
>>> [t["persona"] for t in ground_truth(cfg)] == [t["persona"] for t in ground_truth(cfg)]
True
"""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Iterator, Mapping, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any

import orjson

from lab.personas import (
    PERSONAS,
    TOPICS,
    LogLine,
    Row,
    SimConfig,
    calendar,
    lifestyles,
)
from lab.sim_user import SimUser

#: The simulator's interface; its configuration and output records are defined with the
#: personas and re-exported here.
__all__ = ["LogLine", "SimConfig", "ground_truth", "main", "simulate", "truth_path",
           "write_log", "write_truth"]


class _Population:
    """All users; :meth:`days` yields each day's events of everybody in event-time order."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.calendar = calendar(cfg)
        profiles = lifestyles(cfg.seed)
        shares = [cfg.persona_mix[p] for p in PERSONAS]
        self.users = [SimUser(cfg, i, self.calendar, profiles, shares)
                      for i in range(1, cfg.users + 1)]

    def days(self) -> Iterator[list[Row]]:
        """One list per day, sorted by ts; equal ts keep (user index, the user's own order)."""
        key = itemgetter(0)
        users = self.users
        for d, day in enumerate(self.calendar):
            out: list[Row] = []
            # The simulation makes no reference cycles: the cyclic collector would only
            # rescan the population's live objects (a third of the time), so it is paused
            # while a day is built, never while the caller runs.
            collecting = gc.isenabled()
            gc.disable()
            try:
                for user in users:
                    user.step(d, day, out)
            finally:
                if collecting:
                    gc.enable()
            out.sort(key=key)  # stable: ties stay in user order, then in the user's order
            yield out

    def truth(self) -> list[dict[str, Any]]:
        """Per user, what really happened (complete once :meth:`days` is exhausted)."""
        return [u.truth for u in self.users]


def simulate(cfg: SimConfig, truth: list[dict[str, Any]] | None = None
             ) -> Iterator[LogLine]:
    """Every input event of every user, ts non-decreasing, ties in a deterministic order.

    ``truth``, when given, receives :func:`ground_truth` once the events are exhausted: a
    caller that needs both runs the simulation once."""
    pop = _Population(cfg)
    for batch in pop.days():
        for ts, topic, key, value in batch:
            yield LogLine(topic, key, value, ts)
    if truth is not None:
        truth.extend(pop.truth())


def ground_truth(cfg: SimConfig) -> list[dict[str, Any]]:
    """What each user is and what happens to them: persona, ``defaults``, ``default_ts``
    (due date of the first installment that is never paid, when its 30 dpd point is inside
    the horizon), ``collapse_ts``, ``recovers_ts``, ``missed_installments``,
    ``fraud_burst_ts`` (first purchase of the burst), ``peak_months``, ... — one dict per
    user, in user order. Runs the simulation (the outcomes depend on the balance)."""
    pop = _Population(cfg)
    for _ in pop.days():
        pass
    return pop.truth()


def truth_path(path: Path) -> Path:
    """Where the ground truth of the log at ``path`` goes: ``pop.jsonl`` →
    ``pop.truth.jsonl``."""
    return path.with_name(path.name.removesuffix(path.suffix) + ".truth.jsonl")


def write_truth(cfg: SimConfig, path: Path,
                truth: Sequence[Mapping[str, Any]] | None = None) -> Path:
    """Write the ground truth of the log at ``path`` (JSON Lines, one user a line) next to
    it; ``truth`` saves re-running the simulation when the caller has it. Returns its path."""
    rows = ground_truth(cfg) if truth is None else truth
    out = truth_path(path)
    with out.open("wb") as f:
        for row in rows:
            f.write(orjson.dumps(row) + b"\n")
    return out


def write_log(cfg: SimConfig, path: Path, progress: bool = True) -> int:
    """Write the log as JSON Lines (``{"topic", "key", "value"}``, value an object) and its
    ground truth next to it (:func:`truth_path`). Returns the number of log lines."""
    pop = _Population(cfg)
    dumps = orjson.dumps
    # The line is orjson.dumps({"topic": t, "key": k, "value": v}) byte for byte, assembled
    # around the value (topics are fixed, keys are [a-z0-9] ids): half the work, no dicts.
    heads = {t: b'{"topic":' + dumps(t) + b',"key":"' for t in TOPICS}
    lines = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f, _Progress(progress, cfg) as bar:
        for batch in pop.days():
            if batch:
                f.write(b"\n".join([heads[topic] + key.encode() + b'","value":' + dumps(value)
                                     + b"}" for _, topic, key, value in batch]))
                f.write(b"\n")
                lines += len(batch)
            bar.advance(len(batch))
    write_truth(cfg, path, pop.truth())
    return lines


class _Progress:
    """A rich progress bar over the simulated days (on stderr), or nothing."""

    def __init__(self, enabled: bool, cfg: SimConfig) -> None:
        self.enabled = enabled
        self.cfg = cfg
        self.events = 0

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn(f"simulating {self.cfg.users:,} users"), BarColumn(),
                MofNCompleteColumn(), TextColumn("days"),
                TextColumn("{task.fields[events]:,} events"), TimeElapsedColumn(),
                TimeRemainingColumn(), console=Console(stderr=True),
            )
            self.bar.__enter__()
            self.task = self.bar.add_task("simulate", total=self.cfg.days, events=0)
        return self

    def advance(self, events: int) -> None:
        self.events += events
        if self.enabled:
            self.bar.update(self.task, advance=1, events=self.events)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.__exit__(None, None, None)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lab.simulate OUT.jsonl [--users N --days D --seed S]``."""
    parser = argparse.ArgumentParser(prog="python -m lab.simulate",
                                     description="Write a seeded simulated portfolio log.")
    parser.add_argument("out", type=Path, help="JSON Lines log to write (truth goes beside it)")
    defaults = SimConfig(users=0)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--days", type=int, default=defaults.days)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    cfg = SimConfig(users=args.users, days=args.days, seed=args.seed)
    n = write_log(cfg, args.out, progress=not args.no_progress)
    print(f"{n} events -> {args.out} (truth: {truth_path(args.out)})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
