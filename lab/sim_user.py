"""One simulated user: a hidden plan drawn from a persona, and :meth:`SimUser.step`, which
emits one day of their events (lab.simulate runs the population)."""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Sequence
from heapq import heappop, heappush
from typing import Any

from features.windows import DAY_MS, HOUR_MS, MINUTE_MS
from lab.personas import (
    BUST_OUT,
    CASH_MCC,
    COLLAPSE,
    DAY_CUM,
    DRIFTER,
    DUE_AFTER_MS,
    FRAUD,
    FRAUD_COUNTRIES,
    FRAUD_MCCS,
    GROWER,
    LOGNORMAL,
    MIN_DUE,
    NIGHT_CUM,
    NOTICE_DPD,
    ONLINE_COUNTRIES,
    RECOVERER,
    SEASONAL,
    TECHNICAL,
    THIN,
    TRIP_COUNTRIES,
    WEEKDAY,
    Z_STEPS,
    Z_TABLE,
    Lifestyle,
    PendingRow,
    Row,
    SimConfig,
    SimDay,
    foreign_country,
    pick_persona,
    poisson,
)


class SimUser:
    """One user's hidden plan and running state; :meth:`step` emits one day of their events."""

    __slots__ = (
        "balance", "burst_day", "bust_day", "ca_prob", "catch_up", "cb_prob", "collapse_day",
        "currency", "declared", "defaulted", "drift_day", "end_ts", "eseq", "growth", "gseq",
        "home", "hours", "income", "inst_n", "lam", "late_left", "liab_ratio", "limit",
        "miss_day", "misses_left", "next_ca_day", "open_day", "pay_full", "payday", "peak_mult",
        "peaks", "pending", "persona", "profile", "raise_day", "raise_mult", "report_day", "rng",
        "scale", "share", "stmt_day", "stop_day", "trip", "truth", "uid",
    )

    def __init__(self, cfg: SimConfig, idx: int, cal: list[SimDay],
                 profiles: list[Lifestyle], shares: Sequence[float]) -> None:
        self.uid = f"u{idx:06d}"
        rng = self.rng = random.Random(f"limitstream-user:{cfg.seed}:{idx}")
        r = rng.random
        days = cfg.days
        self.persona = persona = pick_persona(shares, r())
        self.currency = cfg.currency
        self.home = cfg.home_country
        self.end_ts = cfg.end_ts
        self.balance = 0
        self.pending: list[PendingRow] = []
        self.gseq = 0
        self.eseq = 0
        self.inst_n = 0
        self.defaulted = False
        self.truth: dict[str, Any] = {
            "user_id": self.uid, "persona": persona, "opened_ts": None, "initial_limit": 0,
            "monthly_income": 0, "defaults": False, "default_ts": None,
            "default_installment_id": None, "collapse_ts": None, "recovers_ts": None,
            "missed_installments": [], "fraud_burst_ts": None, "fraud_burst_end_ts": None,
            "fraud_burst_count": 0, "fraud_chargeback_ts": None, "peak_months": [],
            "income_growth_monthly": 0.0,
            # Purchases this user tried that the simulator's own bank (the static initial
            # limit) declined, [ts, amount, merchant category, country] each: demand that never
            # reaches the log, which the backtest offers to every run's card so that declines
            # compare like with like.
            "declined_demand": [],
        }
        # -- the common plan (drawn in a fixed order: reproducibility) --
        income_major = 10_000.0 * math.exp(0.45 * Z_TABLE[int(r() * Z_STEPS)])
        if persona == THIN:
            income_major *= 0.6
            self.open_day = min(days - 1, int(days * (0.55 + 0.30 * r())))
            limit_major = min(8_000, max(2_000, round(income_major * (0.5 + r()) / 500) * 500))
            self.declared = 0 if r() < 0.5 else round(income_major * (0.9 + 0.4 * r()) / 100) * 100
        elif persona == BUST_OUT:
            # A new account with a standard limit and a generous declared income.
            self.open_day = min(days - 1, int(days * (0.2 + 0.4 * r())))
            limit_major = min(20_000, max(5_000, round(income_major * (0.8 + r()) / 1000) * 1000))
            self.declared = round(income_major * (1.0 + 0.5 * r()) / 100) * 100
        else:
            self.open_day = 0
            limit_major = min(50_000, max(5_000, round(income_major * (1.0 + 2.0 * r()) / 1000)
                                          * 1000))
            self.declared = 0 if r() < 0.1 else round(income_major * (0.9 + 0.4 * r()) / 100) * 100
        self.income = round(income_major * 100)
        self.limit = limit_major * 100
        self.truth["initial_limit"] = self.limit
        self.truth["monthly_income"] = self.income
        self.profile = profiles[int(r() * len(profiles))]
        self.hours = NIGHT_CUM if r() < 0.2 else DAY_CUM
        self.scale = math.sqrt(income_major / 10_000.0) * (0.7 + 0.6 * r())
        spend_share = 0.15 + 0.20 * r()  # of monthly income
        self.payday = 1 + int(r() * 28)
        self.stmt_day = 1 + int(r() * 28)
        self.report_day = 1 + int(r() * 28)
        self.share = 0.10 + 0.20 * r()
        self.pay_full = 0.6 + 0.35 * r()
        self.catch_up = False  # seasonal: pays the whole balance after a peak month
        self.cb_prob = 0.0 if r() < 0.7 else 0.02 * r()
        self.ca_prob = 0.0 if r() < 0.85 else 0.01 * r()
        self.liab_ratio = 0.0 if r() < 0.4 else 0.4 * r()
        self.trip: tuple[int, int, str] | None = None
        if persona != THIN and r() < 0.25 and days > 2:
            t0 = 1 + int(r() * (days - 1))
            self.trip = (t0, t0 + 3 + int(r() * 7), foreign_country(TRIP_COUNTRIES, self.home, r()))
        # -- persona plans --
        self.growth = 0.0
        self.raise_day = days
        self.raise_mult = 1.0
        self.collapse_day = days
        self.stop_day = days  # the first statement from this day on is never paid
        self.drift_day = days
        self.bust_day = days
        self.late_left = 0
        self.next_ca_day = days
        self.miss_day = days
        self.misses_left = 0
        self.burst_day = -1
        self.peaks: frozenset[int] = frozenset()
        self.peak_mult = 1.0
        if persona == GROWER:
            self.growth = 0.02 + 0.03 * r()
            self.raise_day = int(days * (0.2 + 0.6 * r()))
            self.raise_mult = 1.1 + 0.2 * r()
            spend_share = 0.45 + 0.25 * r()
            self.pay_full = 0.0
            self.share = 0.15 + 0.15 * r()
            self.truth["income_growth_monthly"] = round(self.growth, 4)
        elif persona == COLLAPSE:
            lo, hi = max(1, days // 9), days - 95
            self.collapse_day = lo + int(r() * (hi - lo + 1)) if hi >= lo else max(1, days // 3)
            self.next_ca_day = self.collapse_day + int(r() * 3)
            self.pay_full = 0.3 + 0.4 * r()
            self.truth["collapse_ts"] = cfg.start_ts + self.collapse_day * DAY_MS
            self.stop_day = self.collapse_day + 5
        elif persona == DRIFTER:
            lo, hi = max(1, days // 9), days - 160
            self.drift_day = lo + int(r() * (hi - lo + 1)) if hi >= lo else max(1, days // 4)
            self.stop_day = self.drift_day + 60 + int(r() * 61)
            self.pay_full = 0.0
            self.share = 0.10 + 0.05 * r()
            self.truth["drift_ts"] = cfg.start_ts + self.drift_day * DAY_MS
        elif persona == BUST_OUT:
            self.bust_day = self.open_day + 20 + int(r() * 21)
            self.stop_day = self.bust_day
            self.truth["bust_ts"] = cfg.start_ts + self.bust_day * DAY_MS
        elif persona == TECHNICAL:
            self.late_left = 1
            lo, hi = 30, days - 30
            self.miss_day = lo + int(r() * (hi - lo + 1)) if hi >= lo else max(1, days // 2)
        elif persona == RECOVERER:
            lo, hi = 25, days - 105
            self.miss_day = lo + int(r() * (hi - lo + 1)) if hi >= lo else max(1, days // 3)
            self.misses_left = 1 if r() < 0.5 else 2
            self.pay_full = 0.0
        elif persona == FRAUD:
            self.pay_full = 1.0
            lo, hi = max(1, days // 6), days - 2
            self.burst_day = lo + int(r() * (hi - lo + 1)) if hi >= lo else -1
        elif persona == THIN:
            spend_share = 0.05 + 0.10 * r()
            self.pay_full = 0.8
        elif persona == SEASONAL:
            months = sorted({day.month for day in cal[1:]}) or [cal[0].month]
            peaks = {months[int(r() * len(months))]}
            if r() < 0.5:
                peaks.add(months[int(r() * len(months))])
            self.peaks = frozenset(peaks)
            self.peak_mult = 2.5 + 1.5 * r()
            self.truth["peak_months"] = sorted(peaks)
        self.lam = spend_share * income_major / 30.0 / (self.profile.mean_major * self.scale)

    # -- helpers --

    def _push(self, ts: int, topic: str, value: dict[str, Any], delta: int = 0) -> None:
        if ts < self.end_ts:
            heappush(self.pending, (ts, self.gseq, topic, value, delta))
            self.gseq += 1

    def _tx(self, ts: int, kind: str, amount: int, mcc: str, country: str,
            delta: int = 0) -> None:
        self._push(ts, "transactions", {
            "event_id": "", "user_id": self.uid, "ts": ts, "kind": kind, "amount": amount,
            "currency": self.currency, "merchant_category": mcc, "country": country,
        }, delta)

    def _inflow(self, ts: int, amount: int) -> None:
        self._push(ts, "transactions", {
            "event_id": "", "user_id": self.uid, "ts": ts, "kind": "inflow",
            "amount": max(1, amount), "currency": self.currency,
        })

    def _account(self, ts: int, kind: str, name: str, amount: int) -> None:
        self._push(ts, "account-events", {
            "event_id": "", "user_id": self.uid, "ts": ts, "kind": kind, name: amount,
            "currency": self.currency,
        })

    def _repay(self, ts: int, kind: str, inst: str, name: str, value: int,
               delta: int = 0) -> None:
        v: dict[str, Any] = {"event_id": "", "user_id": self.uid, "ts": ts, "kind": kind,
                             "installment_id": inst, name: value}
        if kind != "overdue":
            v["currency"] = self.currency
        self._push(ts, "repayments", v, delta)

    def _income_now(self, d: int) -> int:
        """True monthly income on day ``d`` (minor units)."""
        inc = self.income
        if self.persona == GROWER:
            inc = round(inc * (1.0 + self.growth) ** (d / 30.0)
                        * (self.raise_mult if d >= self.raise_day else 1.0))
        elif self.persona == RECOVERER and self.miss_day - 15 <= d < self.miss_day + 30:
            inc //= 2
        elif d >= self.collapse_day:
            inc = round(inc * 0.15)  # odd jobs
        return inc

    # -- one day --

    def step(self, d: int, day: SimDay, out: list[Row]) -> None:
        if d >= self.open_day:
            if d == self.open_day:
                self._open(d, day)
            else:
                self._live(d, day)
        pending = self.pending
        end = day.end
        uid = self.uid
        while pending and pending[0][0] < end:
            ts, _, topic, value, delta = heappop(pending)
            self.eseq += 1
            value["event_id"] = f"{uid}-{self.eseq}"
            if delta:
                self.balance += delta
            out.append((ts, topic, uid, value))

    def _open(self, d: int, day: SimDay) -> None:
        r = self.rng.random
        if d == 0:
            ts = day.start + int(r() * 2 * HOUR_MS)
        else:
            ts = day.at(9 * HOUR_MS + int(r() * 11 * HOUR_MS))
        self.truth["opened_ts"] = ts
        v: dict[str, Any] = {"event_id": "", "user_id": self.uid, "ts": ts, "kind": "opened",
                             "initial_limit": self.limit, "currency": self.currency}
        if self.declared:
            v["declared_income"] = self.declared * 100
        self._push(ts, "account-events", v)
        if r() < 0.6:
            self._account(ts + int((1 + r() * 59) * MINUTE_MS), "liabilities_reported",
                          "monthly_liabilities", round(self.income * self.liab_ratio / 100) * 100)

    def _live(self, d: int, day: SimDay) -> None:
        r = self.rng.random
        persona = self.persona
        income = self._income_now(d)
        collapsed = d >= self.collapse_day
        # -- inflows --
        if persona == THIN or collapsed:
            if r() < (0.12 if collapsed else 0.15):
                share = (0.15 + 0.4 * r()) if collapsed else (0.1 + 0.3 * r())
                self._inflow(day.at(8 * HOUR_MS + int(r() * 14 * HOUR_MS)), round(income * share))
        elif day.mday == self.payday:
            self._inflow(day.at(9 * HOUR_MS + int(r() * 3 * HOUR_MS)),
                         round(income * (0.97 + 0.06 * r())))
        if not collapsed and r() < 0.04:  # transfers from family, friends, savings
            self._inflow(day.at(8 * HOUR_MS + int(r() * 15 * HOUR_MS)),
                         round(50_000 * math.exp(0.8 * Z_TABLE[int(r() * Z_STEPS)])))
        # -- purchases --
        lam = self.lam * WEEKDAY[day.weekday]
        if persona == DRIFTER and d >= self.drift_day:
            lam *= min(4.0, 1.02 ** (d - self.drift_day))
        elif persona == GROWER:
            lam *= income / self.income
        elif persona == SEASONAL and day.month in self.peaks:
            lam *= self.peak_mult
        elif collapsed:
            lam *= 0.3 if self.defaulted else 0.5
        n = poisson(r, lam) if lam > 0 else 0
        if n:
            self._purchases(n, d, day)
        # -- cash advances --
        if collapsed and d >= self.next_ca_day:
            self.next_ca_day = d + 2 + int(r() * 5)
            self._cash_advance(day, 0.05 + 0.10 * r())
        elif self.ca_prob and r() < self.ca_prob:
            self._cash_advance(day, 0.02 + 0.08 * r())
        elif persona == DRIFTER and d >= self.drift_day and r() < 0.06:
            self._cash_advance(day, 0.03 + 0.07 * r())
        if d == self.burst_day:
            self._burst(day)
        if self.bust_day <= d < self.bust_day + 2:
            self._bust_out(day, last=d == self.bust_day + 1)
        # -- statement, reports --
        if day.mday == self.stmt_day and d >= self.open_day + 14:
            self._statement(d, day)
        if day.mday == self.report_day:
            if r() < (0.05 if persona == THIN else 0.2):
                reported = income if not collapsed or r() < 0.5 else self.income
                reported = round(reported * (0.95 + 0.1 * r()) / 10_000) * 10_000
                self._account(day.at(10 * HOUR_MS + int(r() * 8 * HOUR_MS)), "income_reported",
                              "monthly_income", reported)
            drifting = persona == DRIFTER and d >= self.drift_day
            if r() < (0.6 if drifting else 0.12):
                ratio = self.liab_ratio * (1.6 if collapsed else 1.0)
                if drifting:  # debt elsewhere climbs with the spending
                    ratio = max(ratio, 0.1) * (1.0 + 0.01 * (d - self.drift_day))
                self._account(day.at(10 * HOUR_MS + int(r() * 8 * HOUR_MS)),
                              "liabilities_reported", "monthly_liabilities",
                              round(self.income * ratio / 10_000) * 10_000)

    def _purchases(self, n: int, d: int, day: SimDay) -> None:
        # The hot loop (most events are purchases): helpers inlined, look-ups hoisted.
        r = self.rng.random
        prof = self.profile
        codes, cum, medians = prof.codes, prof.cum, prof.medians
        last = len(codes) - 1
        hours = self.hours
        scale = self.scale * 100.0
        trip = self.trip
        abroad = trip is not None and trip[0] <= d < trip[1]
        home, limit, uid, currency = self.home, self.limit, self.uid, self.currency
        pending = self.pending
        start = day.start
        shift = DAY_MS - day.tod0  # day.at(local) == start + (shift + local) % DAY_MS
        balance = self.balance
        declined = self.truth["declined_demand"]
        for _ in range(n):
            h = bisect_right(hours, r())
            ts = start + (shift + (h if h < 24 else 23) * HOUR_MS + int(r() * HOUR_MS)) % DAY_MS
            j = bisect_right(cum, r())
            if j > last:
                j = last
            amount = int(medians[j] * scale * LOGNORMAL[int(r() * Z_STEPS)]) or 1
            if balance + amount > limit:
                # Declined: never reaches the log. Recorded without drawing from the user's
                # random stream (the log stays the same): abroad on a trip, abroad.
                declined.append([ts, amount, codes[j], trip[2] if abroad and trip else home])
                continue
            mcc = codes[j]
            if abroad and trip is not None and r() < 0.85:
                country = trip[2]
                if r() < 0.15:
                    mcc = "7011"
            elif self.cb_prob and r() < self.cb_prob:
                country = foreign_country(ONLINE_COUNTRIES, home, r())
            else:
                country = home
            balance += amount
            heappush(pending, (ts, self.gseq, "transactions", {
                "event_id": "", "user_id": uid, "ts": ts, "kind": "purchase", "amount": amount,
                "currency": currency, "merchant_category": mcc, "country": country,
            }, 0))
            self.gseq += 1
            if r() < 0.015:  # returned goods
                back = amount if r() < 0.7 else max(1, int(amount * (0.2 + 0.7 * r())))
                self._tx(ts + int((1 + 19 * r()) * DAY_MS), "refund", back, mcc, country, -back)
        self.balance = balance

    def _cash_advance(self, day: SimDay, share: float) -> None:
        r = self.rng.random
        available = self.limit - self.balance
        amount = min(round(self.limit * share / 50_000) * 50_000, available // 50_000 * 50_000)
        if amount >= 50_000:
            self.balance += amount
            self._tx(day.at(9 * HOUR_MS + int(r() * 13 * HOUR_MS)), "cash_advance", amount,
                     CASH_MCC, self.home)

    def _bust_out(self, day: SimDay, last: bool) -> None:
        """Max the line out over two days: everyday purchases, then a cash advance."""
        r = self.rng.random
        prof = self.profile
        budget = max(0, self.limit - self.balance)
        spend = budget if last else int(budget * (0.5 + 0.2 * r()))
        n = 4 + int(r() * 6)
        weights = [0.5 + r() for _ in range(n)]
        total = sum(weights)
        for w in weights:
            amount = int(spend * 0.8 * w / total)
            if amount <= 0:
                continue
            j = min(bisect_right(prof.cum, r()), len(prof.codes) - 1)
            self.balance += amount
            self._tx(day.at(9 * HOUR_MS + int(r() * 12 * HOUR_MS)), "purchase", amount,
                     prof.codes[j], self.home)
        self._cash_advance(day, 0.2 * spend / max(1, self.limit))

    def _burst(self, day: SimDay) -> None:
        r = self.rng.random
        budget = int(max(0, self.limit - self.balance) * (0.75 + 0.2 * r()))
        # 8-20 purchases, fewer when little credit is left: each one stays a big ticket.
        n = max(8, min(8 + int(r() * 13), budget // 40_000))
        ts0 = day.at(30 * MINUTE_MS + int(r() * 3 * HOUR_MS))
        duration = (40 + int(r() * 71)) * MINUTE_MS
        offsets = [0, *sorted(int(r() * duration) for _ in range(n - 1))]
        weights = [0.5 + r() for _ in range(n)]
        total = sum(weights)
        abroad = r() < 0.75
        countries = (foreign_country(FRAUD_COUNTRIES, self.home, r()),
                     foreign_country(FRAUD_COUNTRIES, self.home, r()))
        chargeback = r() < 0.8
        back_ts = ts0 + int((6 + 14 * r()) * DAY_MS)
        for off, w in zip(offsets, weights, strict=True):
            amount = max(1, int(budget * w / total))
            mcc = FRAUD_MCCS[int(r() * len(FRAUD_MCCS))]
            country = countries[int(r() * 2)] if abroad and r() < 0.9 else self.home
            self.balance += amount
            self._tx(ts0 + off, "purchase", amount, mcc, country)
            if chargeback:
                self._tx(back_ts + off, "refund", amount, mcc, country, -amount)
        if ts0 < self.end_ts:
            self.truth["fraud_burst_ts"] = ts0
            self.truth["fraud_burst_end_ts"] = min(ts0 + offsets[-1], self.end_ts - 1)
            self.truth["fraud_burst_count"] = sum(1 for o in offsets if ts0 + o < self.end_ts)
            if chargeback and back_ts < self.end_ts:
                self.truth["fraud_chargeback_ts"] = back_ts

    def _statement(self, d: int, day: SimDay) -> None:
        balance = self.balance
        if balance <= 0:
            return  # nothing owed, no installment this month
        r = self.rng.random
        persona = self.persona
        self.inst_n += 1
        inst = f"{self.uid}-m{self.inst_n}"
        amount_due = min(balance, max(int(balance * self.share), MIN_DUE))
        ts = day.at(2 * HOUR_MS + int(r() * 3 * HOUR_MS))
        due_ts = ts + DUE_AFTER_MS
        self._push(ts, "repayments", {
            "event_id": "", "user_id": self.uid, "ts": ts, "kind": "due",
            "installment_id": inst, "amount_due": amount_due, "due_ts": due_ts,
            "currency": self.currency,
        })
        truth = self.truth
        if persona == TECHNICAL and self.late_left and d >= self.miss_day:
            # Paid in full 1-3 days late (a technical reason), after the 1-day notice.
            self.late_left = 0
            paid_ts = due_ts + int((1 + int(r() * 3)) * DAY_MS + (1 + 19 * r()) * HOUR_MS)
            self._notices(inst, due_ts, paid_ts)
            self._repay(paid_ts, "paid", inst, "amount_paid", amount_due, -amount_due)
            truth["missed_installments"].append(inst)
            return
        if self.defaulted or d >= self.stop_day:
            # Never paid: notices climb for as long as the horizon lasts.
            if not self.defaulted:
                self.defaulted = True
                if due_ts + 30 * DAY_MS < self.end_ts:
                    truth["defaults"] = True
                    truth["default_ts"] = due_ts
                    truth["default_installment_id"] = inst
                if persona != BUST_OUT and r() < 0.4:  # a token partial payment, late
                    part = max(1, int(amount_due * (0.05 + 0.25 * r())))
                    self._repay(due_ts + int((3 + 22 * r()) * DAY_MS), "paid", inst,
                                "amount_paid", part, -part)
            self._notices(inst, due_ts, self.end_ts)
            return
        if persona == RECOVERER and self.misses_left and d >= self.miss_day:
            # Paid 5-20 days late, in full, after the first notices.
            self.misses_left -= 1
            paid_ts = due_ts + int((5 + int(r() * 16)) * DAY_MS + (1 + 19 * r()) * HOUR_MS)
            self._notices(inst, due_ts, paid_ts)
            self._repay(paid_ts, "paid", inst, "amount_paid", amount_due, -amount_due)
            truth["missed_installments"].append(inst)
            if not self.misses_left:
                truth["recovers_ts"] = paid_ts if paid_ts < self.end_ts else None
            return
        # On time: between the statement and the due date.
        paid_ts = due_ts - int((1 + 359 * r()) * HOUR_MS)
        pay_full = self.pay_full
        if persona == SEASONAL:
            if day.month in self.peaks:
                pay_full = 0.1
            elif self.catch_up:
                pay_full = 1.0
        if persona == DRIFTER and d >= self.drift_day:
            amount = amount_due  # the minimum, and nothing more
        elif r() < pay_full:
            amount = balance
        else:
            amount = min(balance, int(amount_due * (1.2 + 0.8 * r())) if persona == GROWER
                         else int(amount_due * (1.0 + 0.6 * r())))
        self._repay(paid_ts, "paid", inst, "amount_paid", amount, -amount)
        if persona == SEASONAL:
            self.catch_up = day.month in self.peaks

    def _notices(self, inst: str, due_ts: int, until: int) -> None:
        for dpd in NOTICE_DPD:
            t = due_ts + dpd * DAY_MS
            if t >= until or t >= self.end_ts:
                break
            self._repay(t, "overdue", inst, "days_past_due", dpd)
