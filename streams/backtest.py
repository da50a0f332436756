"""Backtest: had we run this policy on this portfolio, what would it have cost and earned, and
whom would it have hurt? (issue 6, §3-4)

The same core the worker runs (:class:`streams.replay.Replay` over
:func:`streams.learning.engine_for`, the model learning in process at the live snapshot
cadence) goes over a recorded log once per policy, and the outcome is scored against the
simulator's ground truth, which the engine never sees.

Runs
----
``champion`` / ``challenger`` (``realtime``)
    The policy as the worker applies it: every decision takes effect at the event that
    caused it.
``monthly`` (the incumbent's batch review)
    The champion policy and model, run on the same events, but its decisions reach the card
    only once per statement cycle: the opening takes effect at once; then at each of the
    account's statements (its ``due`` events; an account with nothing owed gets none, so it
    is reviewed 31 days after its last review instead) the account's limit and status are
    read from the engine and held until the next review. The review sees exactly what the
    real-time engine knows at that moment; only the latency differs, so ``champion -
    monthly`` is the value of acting in real time. (A batch policy would also run its own
    state machine at review dates, e.g. a ladder counted in reviews; holding the real-time
    state isolates latency instead.)
``static``
    The limit granted at opening, for the whole horizon, never suspended: no engine.

Closed loop: authorisation
--------------------------
A recorded log is what happened under the limits the simulator's bank granted (the initial
limit). A policy that cuts or suspends would have declined some of those purchases, and the
exposure it leaves is what the backtest must measure. So every run authorises the log's
spending against its own limit, as core banking does with the limits limitstream publishes: a
``purchase`` or ``cash_advance`` that would take the balance over the run's current limit,
or that arrives while the account is not ``ACTIVE``/``PROBATION``, is declined. A declined
transaction never reaches the engine (a live worker never sees a declined authorisation on
``transactions``) nor the ledger, and a later ``refund`` of the same merchant category and
country, no larger than a declined amount, is dropped with it (the refund of a purchase that
never happened; fraud charge-backs are such refunds). Payments come from the log as they are
(the user's behaviour is not re-simulated), applied to the run's balance and floored at 0.

The ledger is the engine's own balance fold (purchases + cash advances - refunds - payments,
never below 0): the run's balance at any time is what the engine's ``balance`` feature says.

Everything here is deterministic: the same log, truth and policies give the same figures
(the timings aside).
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import orjson

from features.windows import DAY_MS
from policies.engine import DECISIONS
from policies.spec import Policy, load_policy
from streams.codec import Limits
from streams.kafka_io import LogRecord, parse_log_line
from streams.learning import InProcessLearning, engine_for
from streams.replay import CHUNK, Replay
from streams.settings import Settings

#: The monthly batch review reviews an account at each of its statements, and an account that
#: had no statement (nothing owed) this long after its last review.
CYCLE_MS: Final = 31 * DAY_MS
SPEND: Final = frozenset({"purchase", "cash_advance"})
#: Statuses on which a card can be drawn.
DRAWABLE: Final = frozenset({"ACTIVE", "PROBATION"})
STATUSES: Final = ("ACTIVE", "PROBATION", "SUSPENDED", "FROZEN", "CLOSED")
NOT_OPEN: Final = "NOT_OPEN"
#: Persona names of the simulator's ground truth (streams/simulate.py).
COLLAPSE: Final = "income_collapse"
RECOVERER: Final = "recovering_misser"
FRAUD: Final = "fraud_burst"
PERSONA_ORDER: Final = ("steady_payer", "growing_earner", COLLAPSE, RECOVERER, FRAUD,
                        "thin_file", "seasonal_spender")
#: Run names, in the order the report shows them.
RUN_ORDER: Final = ("static", "monthly", "champion", "challenger")

DEFINITIONS: Final[Mapping[str, str]] = {
    "defaulter": "ground truth `defaults` is true: an installment is never paid and its 30 days "
                 "past due point falls inside the horizon; `default_ts` is its due date",
    "good_user": "ground truth `defaults` is false and the persona is not income_collapse "
                 "(whose default may fall just past the horizon): steady payers, growing "
                 "earners, recovering missers, fraud victims, thin files, seasonal spenders",
    "ead_limit": "the run's drawable limit of a defaulter at default_ts (0 when suspended)",
    "ead_balance": "the run's balance of a defaulter at default_ts (after every event up to it)",
    "loss": "loss proxy = sum of the defaulters' balances at default_ts (loss given default "
            "100 %, nothing recovered); `balance_at_end` adds what was drawn after default",
    "credit_to_good_users": "revenue proxy: the drawable limit (0 unless ACTIVE/PROBATION) of "
                            "good users with an open account, averaged over users at the end "
                            "of each day and then over the days of the horizon",
    "wrongly_suspended": "good users ever SUSPENDED in the run",
    "wrongly_cut": "good users whose limit was ever lowered while staying drawable (a risk "
                   "cut or a cap clamp; suspensions are counted apart)",
    "time_to_suspension": "days from a user's first overdue notice (1 day past due: the first "
                          "missed payment the bank can see) to the run's suspension; 0 when "
                          "already suspended; users never suspended in the horizon are counted "
                          "as `never_suspended`, not in the median",
    "time_to_reinstatement": "recovering missers with a recovery (`recovers_ts`: their last "
                             "arrears payment) whose limit went below the one they had before "
                             "missing, or who were suspended: days from the recovery to the "
                             "time from which the account stays ACTIVE at that limit or more "
                             "until the end of the horizon (0 if restored before the "
                             "recovery); not restored by the end: `censored`. `credit_back` "
                             "is the same up to the first drawable limit",
    "fraud_spend_authorised": "purchases of fraud bursts (ground truth window) the run authorised",
    "declined": "purchases and cash advances of the log the run declined (over the limit or "
                "not drawable)",
}


# -- ground truth ---------------------------------------------------------------------------


def load_truth(path: Path) -> dict[str, dict[str, Any]]:
    """The ground truth file (JSON Lines, one user a line), by user id."""
    out: dict[str, dict[str, Any]] = {}
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                row = orjson.loads(line)
                out[str(row["user_id"])] = row
    return out


def is_defaulter(t: Mapping[str, Any]) -> bool:
    return bool(t.get("defaults")) and t.get("default_ts") is not None


def is_good(t: Mapping[str, Any]) -> bool:
    return not t.get("defaults") and t.get("persona") != COLLAPSE


def personas(truth: Mapping[str, Mapping[str, Any]]) -> list[str]:
    seen = {str(t.get("persona")) for t in truth.values()}
    return [p for p in PERSONA_ORDER if p in seen] + sorted(seen - set(PERSONA_ORDER))


def sample_users(truth: Mapping[str, Mapping[str, Any]], per_persona: int = 2
                 ) -> dict[str, list[str]]:
    """Users to plot, chosen from the truth alone (never from a run's outcome): per persona
    the first ones, by id, whose story the persona is about (a default, a recovery, a burst)."""
    def telling(t: Mapping[str, Any]) -> bool:
        p = t.get("persona")
        if p == COLLAPSE:
            return is_defaulter(t)
        if p == RECOVERER:
            return t.get("recovers_ts") is not None
        if p == FRAUD:
            return t.get("fraud_burst_ts") is not None
        return True

    out: dict[str, list[str]] = {}
    for p in personas(truth):
        users = sorted(u for u, t in truth.items() if t.get("persona") == p)
        chosen = [u for u in users if telling(truth[u])][:per_persona]
        chosen += [u for u in users if u not in chosen][: per_persona - len(chosen)]
        out[p] = chosen
    return out


# -- one run --------------------------------------------------------------------------------


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

    @property
    def drawable(self) -> int:
        return self.limit if self.status in DRAWABLE else 0


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
    #: Fraud-burst spending: uid -> [authorised, declined] amounts inside the burst window.
    fraud_spend: dict[str, list[int]] = field(default_factory=dict)
    #: (event ts, labels learnt, rolling ROC AUC, rolling log loss) at each model snapshot.
    quality: list[tuple[int, int, float, float]] = field(default_factory=list)
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
                 watched: set[str], policy: Policy | None, settings: Settings) -> None:
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
        self.replay: Replay | None = None
        self.learning: InProcessLearning | None = None
        if policy is not None and mode is not Mode.STATIC:
            engine, scorer = engine_for(policy, settings)
            self.learning = InProcessLearning(scorer, settings.model_kind,
                                              settings.snapshot_every_labels)
            self.replay = Replay(engine, Limits(settings.currency, settings.max_message_bytes),
                                 self.learning)
            self.result.policy_version = policy.version

    # -- the card's view ---------------------------------------------------------------------

    def _show(self, uid: str, p: Point) -> None:
        """The card now sees ``p`` for ``uid`` (recorded if anything changed)."""
        traj = self.result.trajectories.setdefault(uid, [])
        last = traj[-1] if traj else None
        if (last is None or p.action == "OPEN"
                or (last.limit, last.status, last.stage) != (p.limit, p.status, p.stage)):
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
            p = Point(int(v["ts"]), int(v["new_limit"]), str(v["new_status"]),
                      int(v["new_stage"]), str(v["action"]))
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

    def feed(self, topic: str, key: str, value: Mapping[str, Any] | None, raw: LogRecord
             ) -> None:
        r = self.result
        ts = _int(value.get("ts")) if value is not None else None
        kind = value.get("kind") if value is not None else None
        if value is None or ts is None:
            self._enqueue(key, raw, r.last_ts)
            return
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
            ok = card is None or led.balance + amount <= card.drawable
            burst = self.bursts.get(uid)
            in_burst = burst is not None and burst[0] <= ts <= burst[1]
            if in_burst:
                r.fraud_spend.setdefault(uid, [0, 0])[0 if ok else 1] += amount
            if not ok:
                d = r.declined.setdefault(uid, [0, 0])
                d[0] += 1
                d[1] += amount
                mcc, country = str(value.get("merchant_category")), str(value.get("country"))
                led.declined.setdefault((mcc, country), []).append(amount)
                return
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
        self._flush()
        r = self.result
        end = r.last_ts
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
            rep.pop("calibration", None)
            r.model = rep
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
        watched: set[str] | None = None) -> RunResult:
    """One pass of ``mode`` over ``log``."""
    t0 = time.perf_counter()
    p = _Pass(name, mode, truth, watched or set(), policy, settings or Settings())
    for topic, key, value, raw in _read(log):
        p.feed(topic, key, value, raw)
    result = p.finish()
    result.seconds = round(time.perf_counter() - t0, 3)
    return result


# -- scoring --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Horizon:
    start: int  #: midnight UTC of the first event's day
    end: int  #: the last event's ts
    days: int

    @classmethod
    def of(cls, first_ts: int, last_ts: int) -> Horizon:
        start = first_ts - first_ts % DAY_MS
        return cls(start, last_ts, max(1, -(-(last_ts - start) // DAY_MS)))

    def grid(self) -> list[int]:
        """The end of each day of the horizon (the last one is its end)."""
        return [min(self.start + (k + 1) * DAY_MS, self.end) for k in range(self.days)]


def _at(traj: Sequence[Point], ts: int) -> Point | None:
    """The account as the card saw it at ``ts`` (after every change up to it)."""
    i = bisect.bisect_right([p.ts for p in traj], ts)
    return traj[i - 1] if i else None


def _quantile(xs: Sequence[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _days(xs: Sequence[float]) -> dict[str, Any]:
    med, p90 = _quantile(xs, 0.5), _quantile(xs, 0.9)
    return {"n": len(xs),
            "median_days": None if med is None else round(med, 2),
            "p90_days": None if p90 is None else round(p90, 2),
            "mean_days": round(sum(xs) / len(xs), 2) if xs else None}


def _share(k: int, n: int) -> float | None:
    return round(k / n, 4) if n else None


def _adverse(traj: Sequence[Point]) -> tuple[bool, bool]:
    """(ever suspended, ever cut while drawable) from the opening on."""
    suspended = cut = False
    prev: Point | None = None
    for p in traj:
        if p.status == "SUSPENDED":
            suspended = True
        elif (prev is not None and p.action != "OPEN" and p.status in DRAWABLE
              and p.limit < prev.limit):
            cut = True
        prev = p
    return suspended, cut


def _restored_from(traj: Sequence[Point], since: int, ok: Callable[[Point], bool]) -> int | None:
    """The earliest time ``>= since`` from which every point satisfies ``ok`` to the end
    (``None``: the account ends outside ``ok``)."""
    if not traj or not ok(traj[-1]):
        return None
    t = traj[-1].ts
    for p in reversed(traj):
        if not ok(p):
            break
        t = p.ts
    return max(t, since)


def _time_to_suspension(traj: Sequence[Point], miss: int) -> float | None:
    p = _at(traj, miss)
    if p is not None and p.status == "SUSPENDED":
        return 0.0
    for q in traj:
        if q.ts >= miss and q.status == "SUSPENDED":
            return (q.ts - miss) / DAY_MS
    return None


def score(r: RunResult, truth: Mapping[str, Mapping[str, Any]], h: Horizon,
          samples: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """The figures of one run (``metrics``) and the series its plots are drawn from."""
    traj = r.trajectories
    users = sorted(truth)
    defaulters = [u for u in users if is_defaulter(truth[u])]
    good = [u for u in users if is_good(truth[u])]

    # Losses on defaulters.
    ead_limit = ead_bal = bal_end = 0
    suspended_by_default = 0
    for u in defaulters:
        p = _at(traj.get(u, []), int(truth[u]["default_ts"]))
        ead_limit += p.drawable if p else 0
        if p is not None and p.status == "SUSPENDED":
            suspended_by_default += 1
        ead_bal += r.balance_at_default.get(u, 0)
        bal_end += r.balance_at_end.get(u, 0)
    nd = len(defaulters)

    # Good users: credit extended, wrongly suspended or cut.
    grid = h.grid()
    mix: dict[str, list[int]] = {s: [0] * len(grid) for s in (*STATUSES, NOT_OPEN)}
    good_set = set(good)
    good_limit_sum = [0] * len(grid)
    good_open = [0] * len(grid)
    for u in users:
        t = traj.get(u, [])
        j = 0
        for k, g in enumerate(grid):
            while j < len(t) and t[j].ts <= g:
                j += 1
            p = t[j - 1] if j else None
            mix[p.status if p is not None and p.status in mix else NOT_OPEN][k] += 1
            if u in good_set and p is not None:
                good_open[k] += 1
                good_limit_sum[k] += p.drawable
    good_mean = [s / n if n else 0.0 for s, n in zip(good_limit_sum, good_open, strict=True)]
    days_open = [m for m, n in zip(good_mean, good_open, strict=True) if n]
    n_susp = n_cut = n_either = 0
    per_persona: dict[str, dict[str, Any]] = {}
    for p_name in personas(truth):
        per_persona[p_name] = {"users": 0, "suspended": 0, "cut": 0, "declined_amount": 0}
    for u in users:
        s, c = _adverse(traj.get(u, []))
        row = per_persona[str(truth[u].get("persona"))]
        row["users"] += 1
        row["suspended"] += int(s)
        row["cut"] += int(c)
        row["declined_amount"] += r.declined.get(u, [0, 0])[1]
        if u in good_set:
            n_susp += int(s)
            n_cut += int(c and not s)
            n_either += int(s or c)
    ng = len(good)

    # Time from the first missed payment to suspension.
    tts: dict[str, list[float]] = {"all": [], "defaulters": [], "recoverers": []}
    missers: dict[str, int] = {"all": 0, "defaulters": 0, "recoverers": 0}
    for u, miss in r.first_overdue.items():
        if u not in truth:
            continue
        groups = ["all"]
        if is_defaulter(truth[u]):
            groups.append("defaulters")
        if truth[u].get("persona") == RECOVERER:
            groups.append("recoverers")
        d = _time_to_suspension(traj.get(u, []), miss)
        for group in groups:
            missers[group] += 1
            if d is not None:
                tts[group].append(d)
    time_to_suspension = {k: {"missers": missers[k], **_days(v),
                              "never_suspended": missers[k] - len(v)} for k, v in tts.items()}

    # Time from recovery to full reinstatement.
    full: list[float] = []
    back: list[float] = []
    recoverers = affected = censored = back_censored = 0
    for u in users:
        t_u = truth[u]
        rec = t_u.get("recovers_ts")
        first_miss = r.first_overdue.get(u)
        if t_u.get("persona") != RECOVERER or rec is None or first_miss is None:
            continue
        recoverers += 1
        t = traj.get(u, [])
        before = _at(t, first_miss - 1)
        ref = before.drawable if before is not None else 0
        window = [p for p in t if p.ts >= first_miss]
        at_miss = _at(t, first_miss)
        if at_miss is not None:
            window.insert(0, at_miss)

        def whole(p: Point, ref: int = ref) -> bool:
            return p.status == "ACTIVE" and p.limit >= ref

        if all(whole(p) for p in window):
            continue
        affected += 1
        restored = _restored_from(t, int(rec), whole)
        if restored is None:
            censored += 1
        else:
            full.append((restored - int(rec)) / DAY_MS)
        drawable = _restored_from(t, int(rec), lambda p: p.drawable > 0)
        if drawable is None:
            back_censored += 1
        else:
            back.append((drawable - int(rec)) / DAY_MS)
    reinstatement = {"recoverers": recoverers, "affected": affected, **_days(full),
                     "censored": censored,
                     "credit_back": {**_days(back), "censored": back_censored}}

    fraud_auth = sum(v[0] for v in r.fraud_spend.values())
    fraud_decl = sum(v[1] for v in r.fraud_spend.values())
    metrics: dict[str, Any] = {
        "defaulters": {
            "count": nd,
            "ead_limit_total": ead_limit,
            "ead_balance_total": ead_bal,
            "loss_total": ead_bal,
            "loss_mean": round(ead_bal / nd) if nd else None,
            "balance_at_end_total": bal_end,
            "suspended_by_default_ts": suspended_by_default,
        },
        "good_users": {
            "count": ng,
            "mean_limit": round(sum(days_open) / len(days_open)) if days_open else 0,
            "suspended": n_susp,
            "suspended_share": _share(n_susp, ng),
            "cut_not_suspended": n_cut,
            "cut_share": _share(n_cut, ng),
            "suspended_or_cut": n_either,
            "suspended_or_cut_share": _share(n_either, ng),
            "declined_amount": sum(r.declined.get(u, [0, 0])[1] for u in good),
        },
        "time_to_suspension": time_to_suspension,
        "time_to_reinstatement": reinstatement,
        "fraud": {"bursts": len(r.fraud_spend), "spend_authorised": fraud_auth,
                  "spend_declined": fraud_decl},
        "declined": {"count": sum(v[0] for v in r.declined.values()),
                     "amount": sum(v[1] for v in r.declined.values())},
        "by_persona": per_persona,
    }
    series: dict[str, Any] = {
        "days": [round((t_k - h.start) / DAY_MS, 4) for t_k in grid],
        "state_mix": mix,
        "good_mean_limit": [round(x) for x in good_mean],
        "quality": [list(q) for q in r.quality],
        "time_to_suspension_days": {g: [round(x, 3) for x in sorted(v)] for g, v in tts.items()},
        "samples": {
            u: {"limit": [[p.ts, p.drawable, p.status, p.stage] for p in traj.get(u, [])],
                "balance": [list(b) for b in r.balance_series.get(u, [])]}
            for us in samples.values() for u in us},
    }
    return {"metrics": metrics, "series": series}


# -- differences ----------------------------------------------------------------------------


def _numbers(d: Mapping[str, Any], prefix: str = "") -> dict[str, float | int | None]:
    out: dict[str, float | int | None] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_numbers(v, key + "."))
        elif v is None or (isinstance(v, int | float) and not isinstance(v, bool)):
            out[key] = v
    return out


def difference(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, float | int | None]:
    """``a - b`` for every number of two metrics trees (flattened, dotted keys); ``None`` where
    either side has none."""
    na, nb = _numbers(a), _numbers(b)
    out: dict[str, float | int | None] = {}
    for k in na:
        x, y = na[k], nb.get(k)
        out[k] = None if x is None or y is None else (
            round(x - y, 6) if isinstance(x, float) or isinstance(y, float) else x - y)
    return out


#: The figures the report's headline table shows, with how to read them.
HEADLINE: Final = (
    ("defaulters.loss_total", "loss on defaulters (balance at default)", "money", "lower"),
    ("defaulters.ead_limit_total", "exposure at default: limits", "money", "lower"),
    ("defaulters.balance_at_end_total", "defaulters' balance at the end", "money", "lower"),
    ("good_users.mean_limit", "credit extended to good users (mean limit)", "money", "higher"),
    ("good_users.suspended", "good users suspended", "count", "lower"),
    ("good_users.cut_not_suspended", "good users cut (not suspended)", "count", "lower"),
    ("good_users.suspended_or_cut_share", "good users suspended or cut (share)", "share",
     "lower"),
    ("time_to_suspension.defaulters.median_days", "defaulters: first miss to suspension, "
     "median (days)", "days", "lower"),
    ("time_to_suspension.defaulters.p90_days", "defaulters: first miss to suspension, p90",
     "days", "lower"),
    ("time_to_suspension.defaulters.never_suspended", "defaulters never suspended", "count",
     "lower"),
    ("time_to_reinstatement.median_days", "recoverers: recovery to full reinstatement, median",
     "days", "lower"),
    ("time_to_reinstatement.censored", "recoverers not fully reinstated by the end", "count",
     "lower"),
    ("fraud.spend_authorised", "fraud-burst spend authorised", "money", "lower"),
    ("declined.amount", "spend declined (all users)", "money", "neither"),
)


def _marks(t: Mapping[str, Any]) -> dict[str, int]:
    """A sample user's ground-truth events, for the plots."""
    names = (("collapse_ts", "collapse"), ("default_ts", "default"),
             ("recovers_ts", "recovery"), ("fraud_burst_ts", "fraud burst"))
    return {label: int(t[k]) for k, label in names if t.get(k) is not None}


# -- the whole backtest ---------------------------------------------------------------------


def backtest(log: Path, truth_file: Path, policy_file: Path,
             challenger_file: Path | None = None, settings: Settings | None = None,
             progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the champion, the optional challenger and both baselines over ``log``; return the
    report's data (JSON-able: every figure, every series, the definitions)."""
    settings = settings or Settings()
    truth = load_truth(truth_file)
    samples = sample_users(truth)
    watched = {u for us in samples.values() for u in us}
    champion = load_policy(policy_file)
    plan: list[tuple[str, Mode, Policy | None, Path | None]] = [
        ("static", Mode.STATIC, None, None),
        ("monthly", Mode.MONTHLY, champion, policy_file),
        ("champion", Mode.REALTIME, champion, policy_file),
    ]
    if challenger_file is not None:
        plan.append(("challenger", Mode.REALTIME, load_policy(challenger_file), challenger_file))
    results: dict[str, RunResult] = {}
    for name, mode, policy, path in plan:
        if progress:
            progress(f"{name}: running ({mode.value})")
        res = run(log, truth, name, mode, policy, settings, watched)
        res.policy_file = path.name if path is not None else ""
        results[name] = res
        if progress:
            progress(f"{name}: {res.seconds:.1f} s")
    any_run = results["static"]
    horizon = Horizon.of(any_run.first_ts, any_run.last_ts)
    runs: dict[str, Any] = {}
    for name, res in results.items():
        scored = score(res, truth, horizon, samples)
        runs[name] = {
            "mode": res.mode.value, "policy_file": res.policy_file,
            "policy_version": res.policy_version, "seconds": res.seconds,
            "replay": res.replay, "model": res.model, **scored,
        }
    by_persona: dict[str, int] = {}
    for t in truth.values():
        by_persona[str(t.get("persona"))] = by_persona.get(str(t.get("persona")), 0) + 1
    diffs: dict[str, Any] = {
        "champion_minus_static": difference(runs["champion"]["metrics"],
                                            runs["static"]["metrics"]),
        "champion_minus_monthly": difference(runs["champion"]["metrics"],
                                             runs["monthly"]["metrics"]),
    }
    if "challenger" in runs:
        diffs["challenger_minus_champion"] = difference(runs["challenger"]["metrics"],
                                                        runs["champion"]["metrics"])
    return {
        "report": "limitstream backtest",
        "version": 1,
        "log": log.name,
        "truth": truth_file.name,
        "horizon": {"start_ts": horizon.start, "end_ts": horizon.end, "days": horizon.days},
        "population": {
            "users": len(truth),
            "by_persona": {p: by_persona[p] for p in personas(truth)},
            "defaulters": sum(1 for t in truth.values() if is_defaulter(t)),
            "good_users": sum(1 for t in truth.values() if is_good(t)),
        },
        "settings": {"currency": settings.currency, "model_kind": settings.model_kind,
                     "snapshot_every_labels": settings.snapshot_every_labels},
        "samples": samples,
        "sample_truth": {u: _marks(truth[u]) for u in sorted(watched)},
        "definitions": dict(DEFINITIONS),
        "runs": {n: runs[n] for n in RUN_ORDER if n in runs},
        "differences": diffs,
    }
