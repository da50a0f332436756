"""One pass of the backtest over a recorded log: the engine (or a baseline) deciding, and the
card authorising the log's spending against the pass's own limits (see :mod:`lab.backtest`)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson

from features.windows import DAY_MS
from lab.benchmark import benchmark
from lab.learning import InProcessLearning
from lab.replay import CHUNK, Replay
from lab.truth import (
    CYCLE_MS,
    DRAWABLE,
    SPEND,
    is_defaulter,
)
from policies.engine import DECISIONS, Engine
from policies.engine_factory import engine_for, feature_config
from policies.spec import Policy
from streams.codec import Limits
from streams.kafka_io import LogRecord, parse_log_line
from streams.settings import Settings


class Mode(StrEnum):
    REALTIME = "realtime"
    MONTHLY = "monthly"
    STATIC = "static"


@dataclass(frozen=True, slots=True)
class Point:
    """The account as the card sees it from ``ts`` on."""

    ts: int
    limit: int
    status: str
    stage: int
    action: str
    reason: str = ""  #: the decision's first reason code ("" for baselines and reviews)
    hold_until: int = 0  #: HOLD_FOR_REVIEW: when core banking lifts the hold by itself

    @property
    def drawable(self) -> int:
        return self.limit if self.status in DRAWABLE else 0

    def drawable_at(self, ts: int) -> int:
        """The drawable limit at ``ts``: an anomaly hold past its declared end no longer
        holds (core banking lifts it; limitstream records the release at the next event)."""
        if self.status == "HOLD_FOR_REVIEW" and 0 < self.hold_until <= ts:
            return self.limit
        return self.drawable


@dataclass(slots=True)
class RunResult:
    """What one pass over the log produced, before scoring."""

    name: str
    mode: Mode
    policy_file: str = ""
    policy_version: str = ""
    seconds: float = 0.0
    first_ts: int = 0
    last_ts: int = 0
    #: Per user, the account as the card sees it, from the opening on.
    trajectories: dict[str, list[Point]] = field(default_factory=dict)
    #: Per defaulter, the balance after every event up to ``default_ts``.
    balance_at_default: dict[str, int] = field(default_factory=dict)
    balance_at_end: dict[str, int] = field(default_factory=dict)
    #: Balance after each change, for the sample users only.
    balance_series: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    first_overdue: dict[str, int] = field(default_factory=dict)
    declined: dict[str, list[int]] = field(default_factory=dict)  #: uid -> [count, amount]
    #: The part of ``declined`` that is demand the simulator's bank declined (not in the log).
    declined_demand: dict[str, list[int]] = field(default_factory=dict)
    #: Demand the simulator's bank declined that this run authorised: [count, amount].
    demand_authorised: list[int] = field(default_factory=lambda: [0, 0])
    #: Fraud-burst spending: uid -> [authorised, declined] amounts inside the burst window.
    fraud_spend: dict[str, list[int]] = field(default_factory=dict)
    #: (event ts, labels learnt, rolling ROC AUC, rolling log loss) at each model snapshot.
    quality: list[tuple[int, int, float, float]] = field(default_factory=list)
    #: Per action, per first reason code: how many decisions (the officer's "why").
    reasons: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Per day of the horizon (days since the first event): decisions by risk source.
    sources: dict[int, dict[str, int]] = field(default_factory=dict)
    #: Raises: [count, total amount] and the users raised.
    raises: list[int] = field(default_factory=lambda: [0, 0])
    raised_users: set[str] = field(default_factory=set)
    benchmark: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    replay: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _Ledger:
    """One user's balance and the declined spending whose refunds must be dropped."""

    balance: int = 0
    declined: dict[tuple[str, str], list[int]] = field(default_factory=dict)

    def refund_dropped(self, mcc: str, country: str, amount: int) -> bool:
        pool = self.declined.get((mcc, country))
        if not pool:
            return False
        if amount in pool:
            pool.remove(amount)
            return True
        for i, a in enumerate(pool):
            if a >= amount:  # a partial refund of a declined purchase
                del pool[i]
                return True
        return False


def _int(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


class _Pass:
    """One pass over the log: authorisation, ledger, engine (if any), trajectories."""

    def __init__(self, name: str, mode: Mode, truth: Mapping[str, Mapping[str, Any]],
                 watched: set[str], policy: Policy | None, settings: Settings,
                 use_model: bool = True) -> None:
        self.mode = mode
        self.truth = truth
        self.watched = watched
        self.result = RunResult(name, mode)
        self.ledgers: dict[str, _Ledger] = {}
        #: The account the card sees now: (drawable limit, ...) per user.
        self.card: dict[str, Point] = {}
        self.next_review: dict[str, int] = {}
        self.pending: list[LogRecord] = []
        self.pending_users: set[str] = set()
        self.pending_ts = 0
        self.defaults: dict[str, int] = {
            u: int(t["default_ts"]) for u, t in truth.items() if is_defaulter(t)}
        self.bursts: dict[str, tuple[int, int]] = {
            u: (int(t["fraud_burst_ts"]), int(t.get("fraud_burst_end_ts") or t["fraud_burst_ts"]))
            for u, t in truth.items() if t.get("fraud_burst_ts") is not None}
        #: Per user, the purchases the simulator's bank declined, latest first (popped as the
        #: log reaches their time): offered to this run's card like the log's purchases.
        self.demand: dict[str, list[list[Any]]] = {
            u: sorted(t["declined_demand"], reverse=True)
            for u, t in truth.items() if t.get("declined_demand")}
        self.currency: dict[str, str] = {}
        self.replay: Replay | None = None
        self.learning: InProcessLearning | None = None
        if policy is not None and mode is not Mode.STATIC:
            engine, scorer = engine_for(policy, settings)
            if not use_model:
                # The rules-only policy: the model still learns (its quality is reported), the
                # decisions never read it.
                engine = Engine.rules_only(policy, feature_config(settings), settings.currency)
            self.learning = InProcessLearning(scorer, settings.model_kind,
                                              settings.snapshot_every_labels,
                                              keep_examples=True)
            self.replay = Replay(engine, Limits.from_settings(settings), self.learning,
                                 settings.partitions)
            self.result.policy_version = policy.version

    # -- the card's view ---------------------------------------------------------------------

    def _show(self, uid: str, p: Point) -> None:
        """The card now sees ``p`` for ``uid`` (recorded if anything changed)."""
        traj = self.result.trajectories.setdefault(uid, [])
        last = traj[-1] if traj else None
        if (last is None or p.action == "OPEN"
                or (last.limit, last.status, last.stage, last.hold_until)
                != (p.limit, p.status, p.stage, p.hold_until)):
            traj.append(p)
        self.card[uid] = p

    def _engine_point(self, uid: str, ts: int, action: str) -> Point | None:
        assert self.replay is not None
        state = self.replay.states.get(uid)
        if state is None:
            return None
        a = state.account
        return Point(ts, a.limit, a.status.value, a.stage, action)

    def _review(self, uid: str, ts: int, statement: bool) -> None:
        """Monthly: the reviews due by ``ts`` (at ``ts`` itself for a statement) read the
        engine's account, which is its state after the user's events before ``ts``."""
        due = self.next_review[uid]
        if due <= ts:  # no statement for a cycle: reviewed on the timer
            p = self._engine_point(uid, due, "REVIEW")
            if p is not None:
                self._show(uid, p)
            while due <= ts:
                due += CYCLE_MS
        if statement:
            p = self._engine_point(uid, ts, "REVIEW")
            if p is not None:
                self._show(uid, p)
            due = ts + CYCLE_MS
        self.next_review[uid] = due

    # -- the engine --------------------------------------------------------------------------

    def _flush(self) -> None:
        if not self.pending or self.replay is None:
            self.pending.clear()
            self.pending_users.clear()
            return
        outputs = list(self.replay.run(self.pending))
        self.pending = []
        self.pending_users.clear()
        for o in outputs:
            if o.topic != DECISIONS:
                continue
            v = o.value
            reasons = v["reasons"]
            p = Point(int(v["ts"]), int(v["new_limit"]), str(v["new_status"]),
                      int(v["new_stage"]), str(v["action"]), str(reasons[0]) if reasons else "",
                      int(v.get("hold_until_ts", 0)))
            r = self.result
            if p.action != "HOLD":
                by = r.reasons.setdefault(p.action, {})
                by[p.reason] = by.get(p.reason, 0) + 1
            day = (p.ts - r.first_ts) // DAY_MS
            src = r.sources.setdefault(day, {})
            key = str(v["risk_source"])
            src[key] = src.get(key, 0) + 1
            if p.action == "RAISE":
                r.raises[0] += 1
                r.raises[1] += int(v["new_limit"]) - int(v["old_limit"])
                r.raised_users.add(o.key)
            if self.mode is Mode.REALTIME:
                self._show(o.key, p)
            elif p.action == "OPEN" and o.key not in self.card:
                # Monthly: the opening takes effect at once; then one review per statement.
                self._show(o.key, p)
                self.next_review[o.key] = p.ts + CYCLE_MS
        assert self.learning is not None
        history = self.learning.history
        while len(self.result.quality) < len(history):
            n, auc, loss = history[len(self.result.quality)]
            self.result.quality.append((self.pending_ts, n, auc, loss))

    def _sync(self, uid: str) -> None:
        """Make the engine's outputs for ``uid`` so far visible to the card."""
        if uid in self.pending_users:
            self._flush()

    # -- the pass ----------------------------------------------------------------------------

    def _ledger(self, uid: str) -> _Ledger:
        led = self.ledgers.get(uid)
        if led is None:
            led = self.ledgers[uid] = _Ledger()
        return led

    def _set_balance(self, uid: str, led: _Ledger, balance: int, ts: int) -> None:
        led.balance = balance
        if uid in self.watched:
            self.result.balance_series.setdefault(uid, []).append((ts, balance))

    def _offer_demand(self, uid: str, until: int) -> None:
        """Offer ``uid``'s declined demand up to ``until`` to this run's card: what the card
        authorises is spent (ledger and engine, as a log purchase), the rest is declined."""
        queue = self.demand.get(uid)
        currency = self.currency.get(uid)
        n = 0
        while queue and queue[-1][0] <= until and currency is not None:
            ts, amount, mcc, country = queue.pop()
            n += 1
            value = {"event_id": f"{uid}-demand-{ts}-{n}", "user_id": uid, "ts": ts,
                     "kind": "purchase", "amount": amount, "currency": currency,
                     "merchant_category": mcc, "country": country}
            self.feed("transactions", uid, value,
                      LogRecord("transactions", uid.encode(), orjson.dumps(value)), demand=True)

    def feed(self, topic: str, key: str, value: Mapping[str, Any] | None, raw: LogRecord,
             demand: bool = False) -> None:
        """One record of the log (``demand``: a purchase the simulator's bank declined)."""
        r = self.result
        ts = _int(value.get("ts")) if value is not None else None
        kind = value.get("kind") if value is not None else None
        if value is None or ts is None:
            self._enqueue(key, raw, r.last_ts)
            return
        if not demand:
            self._offer_demand(key, ts)
            currency = value.get("currency")
            if isinstance(currency, str):
                self.currency[key] = currency
        r.first_ts = ts if not r.first_ts else min(r.first_ts, ts)
        r.last_ts = max(r.last_ts, ts)
        uid = key
        led = self._ledger(uid)
        dts = self.defaults.get(uid)
        if dts is not None and uid not in r.balance_at_default and ts > dts:
            r.balance_at_default[uid] = led.balance
        if self.mode is Mode.MONTHLY and uid in self.next_review:
            statement = topic == "repayments" and kind == "due"
            if statement or self.next_review[uid] <= ts:
                self._sync(uid)
                self._review(uid, ts, statement)
        amount = _int(value.get("amount"))
        if topic == "transactions" and kind in SPEND and amount is not None and amount > 0:
            self._sync(uid)
            card = self.card.get(uid)
            ok = card is None or led.balance + amount <= card.drawable_at(ts)
            burst = self.bursts.get(uid)
            in_burst = burst is not None and burst[0] <= ts <= burst[1]
            if in_burst and not demand:
                r.fraud_spend.setdefault(uid, [0, 0])[0 if ok else 1] += amount
            if not ok:
                if not in_burst or demand:  # a declined fraud is not the customer's declined
                    for counts in ((r.declined, r.declined_demand) if demand else (r.declined,)):
                        d = counts.setdefault(uid, [0, 0])
                        d[0] += 1
                        d[1] += amount
                if not demand:  # no refund of a demand purchase ever follows in the log
                    mcc, country = str(value.get("merchant_category")), str(value.get("country"))
                    led.declined.setdefault((mcc, country), []).append(amount)
                return
            if demand:
                r.demand_authorised[0] += 1
                r.demand_authorised[1] += amount
            self._set_balance(uid, led, led.balance + amount, ts)
        elif topic == "transactions" and kind == "refund" and amount is not None and amount > 0:
            if led.refund_dropped(str(value.get("merchant_category")),
                                  str(value.get("country")), amount):
                return
            self._set_balance(uid, led, max(0, led.balance - amount), ts)
        elif topic == "repayments" and kind == "paid":
            paid = _int(value.get("amount_paid"))
            if paid is not None and paid > 0:
                self._set_balance(uid, led, max(0, led.balance - paid), ts)
        elif topic == "repayments" and kind == "overdue":
            r.first_overdue.setdefault(uid, ts)
        elif topic == "account-events" and kind == "opened" and self.mode is Mode.STATIC:
            initial = _int(value.get("initial_limit"))
            if initial is not None and uid not in self.card:
                self._show(uid, Point(ts, initial, "ACTIVE", 0, "OPEN"))
        self._enqueue(uid, raw, ts)

    def _enqueue(self, uid: str, raw: LogRecord, ts: int) -> None:
        if self.replay is None:
            return
        self.pending.append(raw)
        self.pending_users.add(uid)
        self.pending_ts = ts
        if len(self.pending) >= CHUNK:
            self._flush()

    def finish(self) -> RunResult:
        r = self.result
        end = r.last_ts
        for uid in list(self.demand):
            self._offer_demand(uid, end)
        self._flush()
        if self.mode is Mode.MONTHLY:
            for uid in list(self.next_review):
                self._review(uid, end, statement=False)
        for uid in self.defaults:
            led = self.ledgers.get(uid)
            r.balance_at_default.setdefault(uid, led.balance if led else 0)
        r.balance_at_end = {u: led.balance for u, led in self.ledgers.items()
                            if u in self.defaults}
        if self.replay is not None and self.learning is not None:
            s = self.replay.stats
            r.replay = {"records": s.records, "applied": s.applied,
                        "dead_letters": s.dead_letters, "duplicates": s.duplicates,
                        "decisions": s.decisions, "labels": s.labels,
                        "by_action": dict(sorted(s.by_action.items()))}
            rep = self.learning.report()
            r.model = rep
            r.benchmark = benchmark(self.learning.examples)
        return r


def _read(log: Path) -> Iterator[tuple[str, str, dict[str, Any] | None, LogRecord]]:
    """The log's records, with the value decoded when it is a JSON object."""
    dumps = orjson.dumps
    with log.open("rb") as f:
        for line in f:
            if not line.strip():
                continue
            obj = orjson.loads(line)
            value = obj.get("value")
            key = obj.get("key")
            if isinstance(value, dict) and isinstance(key, str):
                yield obj["topic"], key, value, LogRecord(obj["topic"], key.encode(),
                                                          dumps(value))
            else:  # raw or undecodable: the engine dead-letters it, authorisation ignores it
                rec = parse_log_line(line)
                yield rec.topic, key if isinstance(key, str) else "", None, rec


def run(log: Path, truth: Mapping[str, Mapping[str, Any]], name: str, mode: Mode,
        policy: Policy | None = None, settings: Settings | None = None,
        watched: set[str] | None = None, use_model: bool = True) -> RunResult:
    """One pass of ``mode`` over ``log`` (``use_model=False``: the policy on its rule score
    alone)."""
    t0 = time.perf_counter()
    p = _Pass(name, mode, truth, watched or set(), policy, settings or Settings(), use_model)
    for topic, key, value, raw in _read(log):
        p.feed(topic, key, value, raw)
    result = p.finish()
    result.seconds = round(time.perf_counter() - t0, 3)
    return result
