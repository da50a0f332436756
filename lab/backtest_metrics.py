"""Scoring a backtest pass against the ground truth: losses, credit to good users, harms,
time to suspension and to reinstatement, fraud, and the differences between runs."""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from features.windows import DAY_MS
from lab.backtest_pass import (
    Point,
    RunResult,
)
from lab.truth import (
    DRAWABLE,
    NOT_OPEN,
    RECOVERER,
    STATUSES,
    THIN,
    is_defaulter,
    is_good,
    personas,
)

#: Reasons of an anomaly hold (a hold on a good user without a fraud burst is a false hold).
ANOMALY_HOLDS: Final = frozenset({"SPENDING_BURST", "SEVERE_ANOMALY", "LINE_DRAWN_IN_A_DAY"})
#: Recoverers cured at least this long before the end can meet the 150-day median goal.
ELIGIBLE_DAYS: Final = 150


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


def kaplan_meier(times: Sequence[float], done: Sequence[bool]) -> list[tuple[float, float]]:
    """The Kaplan-Meier estimate of the share *not yet* done, as ``(time, share)`` steps at
    each time something was done (``done[i]`` false: ``times[i]`` is when observation of that
    one stopped, right-censored). Ties: the done before the censored, as is the convention.

    Examples
    --------
    >>> kaplan_meier([10, 20, 30, 40], [True, False, True, True])
    [(10, 0.75), (30, 0.375), (40, 0.0)]
    """
    order = sorted(zip(times, done, strict=True), key=lambda td: (td[0], not td[1]))
    at_risk, share = len(order), 1.0
    steps: list[tuple[float, float]] = []
    i = 0
    while i < len(order):
        t = order[i][0]
        k = n_done = 0
        while i + k < len(order) and order[i + k][0] == t:
            n_done += int(order[i + k][1])
            k += 1
        if n_done:
            share *= 1.0 - n_done / at_risk
            steps.append((t, share))
        at_risk -= k
        i += k
    return steps


def _km_done_by(steps: Sequence[tuple[float, float]], t: float) -> float:
    """The estimated share done by ``t`` (1 - the survival at ``t``)."""
    left = 1.0
    for ts, share in steps:
        if ts > t:
            break
        left = share
    return 1.0 - left


def _km_median(steps: Sequence[tuple[float, float]]) -> float | None:
    """The first time by which half are estimated done (``None``: not within the data)."""
    return next((t for t, share in steps if share <= 0.5), None)


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
                good_limit_sum[k] += p.drawable_at(g)
    good_mean = [s / n if n else 0.0 for s, n in zip(good_limit_sum, good_open, strict=True)]
    days_open = [m for m, n in zip(good_mean, good_open, strict=True) if n]
    n_susp = n_cut = n_either = 0
    per_persona: dict[str, dict[str, Any]] = {}
    for p_name in personas(truth):
        per_persona[p_name] = {"users": 0, "suspended": 0, "cut": 0, "held": 0, "raised": 0,
                               "declined_amount": 0}
    for u in users:
        s, c = _adverse(traj.get(u, []))
        row = per_persona[str(truth[u].get("persona"))]
        row["users"] += 1
        row["suspended"] += int(s)
        row["cut"] += int(c)
        row["held"] += int(any(p.status == "HOLD_FOR_REVIEW" for p in traj.get(u, [])))
        row["raised"] += int(u in r.raised_users)
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
    # Per affected recoverer, the days from cure to full limit, or to the horizon's end when
    # not there yet (right-censored): the Kaplan-Meier view.
    km_times: list[float] = []
    km_done: list[bool] = []
    recoverers = affected = censored = back_censored = eligible = eligible_restored = 0
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
        # Cured early enough for the goal's median (150 days) to fit inside the horizon.
        in_time = int(rec) + ELIGIBLE_DAYS * DAY_MS <= h.end
        eligible += int(in_time)
        restored_at = _restored_from(t, int(rec), whole)
        km_done.append(restored_at is not None)
        km_times.append(((h.end if restored_at is None else restored_at) - int(rec)) / DAY_MS)
        if restored_at is None:
            censored += 1
        else:
            full.append((restored_at - int(rec)) / DAY_MS)
            eligible_restored += int(in_time)
        drawable = _restored_from(t, int(rec), lambda p: p.drawable > 0)
        if drawable is None:
            back_censored += 1
        else:
            back.append((drawable - int(rec)) / DAY_MS)
    restored = affected - censored
    km = kaplan_meier(km_times, km_done)
    km_median = _km_median(km)
    reinstatement: dict[str, Any] = {"recoverers": recoverers, "affected": affected, **_days(full),
                     "censored": censored, "restored_share": _share(restored, affected),
                     "eligible": eligible, "eligible_restored": eligible_restored,
                     "eligible_restored_share": _share(eligible_restored, eligible),
                     "km_restored_by_150_days": round(_km_done_by(km, ELIGIBLE_DAYS), 4)
                     if km_times else None,
                     "km_median_days": None if km_median is None else round(km_median, 2),
                     "credit_back": {**_days(back), "censored": back_censored}}

    # Harms the goals name: suspensions of users never past due, thin files, false holds.
    never_late = [u for u in good if u not in r.first_overdue]
    thin = [u for u in good if truth[u].get("persona") == THIN]
    non_fraud = [u for u in good if truth[u].get("fraud_burst_ts") is None]
    susp_never_late = sum(1 for u in never_late if _adverse(traj.get(u, []))[0])
    thin_susp = sum(1 for u in thin if _adverse(traj.get(u, []))[0])
    false_holds = sum(1 for u in non_fraud if any(
        p.action == "HOLD_LINE" and p.reason in ANOMALY_HOLDS for p in traj.get(u, [])))
    good_raised = len(r.raised_users & good_set)

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
            # The figure before the simulator's declined demand was offered to every run (the
            # log's purchases only: the static limit declined almost none by construction).
            "declined_amount_log_only": sum(
                r.declined.get(u, [0, 0])[1] - r.declined_demand.get(u, [0, 0])[1]
                for u in good),
            "never_past_due": len(never_late),
            "suspended_never_past_due": susp_never_late,
            "suspended_never_past_due_share": _share(susp_never_late, len(never_late)),
            "thin_file": len(thin),
            "thin_file_suspended": thin_susp,
            "thin_file_suspended_share": _share(thin_susp, len(thin)),
            "non_fraud": len(non_fraud),
            "false_holds": false_holds,
            "false_holds_share": _share(false_holds, len(non_fraud)),
            "raised": good_raised,
            "raised_share": _share(good_raised, ng),
        },
        "raises": {"count": r.raises[0], "amount_total": r.raises[1],
                   "mean_size": round(r.raises[1] / r.raises[0]) if r.raises[0] else None,
                   "users": len(r.raised_users)},
        "reasons": {a: dict(sorted(v.items(), key=lambda kv: -kv[1]))
                    for a, v in sorted(r.reasons.items())},
        "time_to_suspension": time_to_suspension,
        "time_to_reinstatement": reinstatement,
        "fraud": {"bursts": len(r.fraud_spend), "spend_authorised": fraud_auth,
                  "spend_declined": fraud_decl,
                  "authorised_share": _share(fraud_auth, fraud_auth + fraud_decl)},
        "declined": {"count": sum(v[0] for v in r.declined.values()),
                     "amount": sum(v[1] for v in r.declined.values()),
                     "demand_declined": sum(v[1] for v in r.declined_demand.values()),
                     "demand_authorised_count": r.demand_authorised[0],
                     "demand_authorised": r.demand_authorised[1]},
        "by_persona": per_persona,
    }
    series: dict[str, Any] = {
        "days": [round((t_k - h.start) / DAY_MS, 4) for t_k in grid],
        "state_mix": mix,
        "good_mean_limit": [round(x) for x in good_mean],
        "quality": [list(q) for q in r.quality],
        "decisions_by_source": {str(d): v for d, v in sorted(r.sources.items())},
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


def _pct_change(x: float | int | None, base: float | int | None) -> float | None:
    if x is None or base is None or base == 0:
        return None
    return round(100.0 * (x - base) / base, 2)


#: The figures whose change against the baselines the report states, in percent.
CHANGED: Final = ("defaulters.loss_total", "good_users.mean_limit", "good_users.declined_amount",
                  "good_users.suspended", "good_users.cut_not_suspended", "fraud.spend_authorised")


def relative_changes(m: Mapping[str, Any], static: Mapping[str, Any],
                     monthly: Mapping[str, Any]) -> dict[str, dict[str, float | None]]:
    """Per figure of :data:`CHANGED`, the change in percent against the static limit and the
    monthly review (``None`` where the baseline is 0: a change from nothing has no ratio)."""
    a, s, mo = _numbers(m), _numbers(static), _numbers(monthly)
    return {k: {"vs_static_pct": _pct_change(a.get(k), s.get(k)),
                "vs_monthly_pct": _pct_change(a.get(k), mo.get(k))} for k in CHANGED}


def _goal(name: str, measured: float | None, target: str, met: bool | None) -> dict[str, Any]:
    return {"goal": name, "measured": measured, "target": target, "met": met}


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else round(a / b, 4)


def _le(x: float | None, bound: float) -> bool | None:
    return None if x is None else x <= bound


def goals(runs: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Issue 17's "Done when" goals, measured on the champion (``met`` is ``None`` when the
    figure cannot be computed: a gap, not a pass)."""
    champ, static = runs["champion"]["metrics"], runs["static"]["metrics"]
    rules = runs["rules_only"]["metrics"]
    g, sg = champ["good_users"], static["good_users"]
    loss = _ratio(champ["defaulters"]["loss_total"], static["defaulters"]["loss_total"])
    limit = _ratio(g["mean_limit"], sg["mean_limit"])
    declined, declined_static = g["declined_amount"], sg["declined_amount"]
    log_only = _ratio(g["declined_amount_log_only"], sg["declined_amount_log_only"])
    rei = champ["time_to_reinstatement"]
    bench = runs["champion"].get("benchmark") or {}
    online = bench.get("online_roc_auc")
    beats = (champ["defaulters"]["loss_total"] < rules["defaulters"]["loss_total"]
             and g["suspended"] <= rules["good_users"]["suspended"]
             and g["cut_not_suspended"] <= rules["good_users"]["cut_not_suspended"]
             and g["mean_limit"] >= rules["good_users"]["mean_limit"]
             and g["declined_amount"] <= rules["good_users"]["declined_amount"])
    return [
        _goal("loss on defaulters / static's", loss, "<= 0.50", _le(loss, 0.5)),
        _goal("good users' mean drawable limit / static's", limit, ">= 1.05",
              None if limit is None else limit >= 1.05),
        _goal("good users' spend declined / static's, demand the simulator's bank declined "
              f"included (static declined {declined_static}; log purchases only: {log_only})",
              _ratio(declined, declined_static), "<= 2", declined <= 2 * declined_static),
        _goal("good users never past due who were suspended (share)",
              g["suspended_never_past_due_share"], "<= 0.01",
              _le(g["suspended_never_past_due_share"], 0.01)),
        _goal("thin-file good users suspended (share)", g["thin_file_suspended_share"],
              "<= 0.02", _le(g["thin_file_suspended_share"], 0.02)),
        _goal("fraud-burst spend authorised (share)", champ["fraud"]["authorised_share"],
              "<= 0.30", _le(champ["fraud"]["authorised_share"], 0.3)),
        _goal("false holds on good non-fraud users (share)", g["false_holds_share"], "<= 0.01",
              _le(g["false_holds_share"], 0.01)),
        _goal("recovered customers back to ACTIVE at full limit within 150 days of cure "
              "(Kaplan-Meier, censored at the horizon; naive share by the end: "
              f"{rei['restored_share']}, of those cured >= 150 days before the end: "
              f"{rei['eligible_restored_share']})", rei["km_restored_by_150_days"], ">= 0.70",
              None if rei["km_restored_by_150_days"] is None
              else rei["km_restored_by_150_days"] >= 0.7),
        _goal("cure to full limit, median days (Kaplan-Meier; of those restored: "
              f"{rei['median_days']})", rei["km_median_days"], "<= 150",
              _le(rei["km_median_days"], 150)),
        _goal("prequential ROC AUC, current-at-issue labels (later half)", online, ">= 0.75",
              None if online is None else online >= 0.75),
        _goal("offline (hindsight) AUC - prequential AUC", bench.get("gap"), "<= 0.03",
              _le(bench.get("gap"), 0.03)),
        _goal("model policy beats rules-only on loss without more harm to good users",
              None, "loss lower; suspended, cut, declined no higher; mean limit no lower",
              beats),
    ]
