"""The seeded portfolio simulator: reproducible, contract-valid, ordered, and its personas
behave as its docstring says."""

from __future__ import annotations

import hashlib
import itertools
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from features.windows import DAY_MS, HOUR_MS
from lab.personas import (
    BUST_OUT,
    COLLAPSE,
    DEFAULT_MIX,
    DRIFTER,
    FRAUD,
    FRAUD_MCCS,
    GROWER,
    ON_TIME_PERSONAS,
    PERSONAS,
    RECOVERER,
    SEASONAL,
    STEADY,
    TECHNICAL,
    THIN,
)
from lab.simulate import (
    LogLine,
    SimConfig,
    ground_truth,
    simulate,
    truth_path,
    write_log,
)
from streams.codec import BadInput, Limits, decode

CFG = SimConfig(users=700, days=180, seed=11)


class Population:
    """One simulated population, indexed the ways the tests need."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.lines = list(simulate(cfg))
        self.truth = {t["user_id"]: t for t in ground_truth(cfg)}
        self.by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for line in self.lines:
            self.by_user[line.key].append(line.value)

    def users(self, persona: str) -> list[str]:
        return [u for u, t in self.truth.items() if t["persona"] == persona]

    def kind(self, user: str, kind: str) -> list[dict[str, Any]]:
        return [v for v in self.by_user[user] if v["kind"] == kind]


@pytest.fixture(scope="module")
def pop() -> Population:
    return Population(CFG)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- reproducibility and the file format --


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    cfg = SimConfig(users=120, days=75, seed=3)
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    n = write_log(cfg, a, progress=False)
    assert write_log(cfg, b, progress=False) == n > 0
    write_log(SimConfig(users=120, days=75, seed=4), c, progress=False)
    assert _sha(a) == _sha(b)
    assert _sha(a) != _sha(c)
    assert _sha(truth_path(a)) == _sha(truth_path(b))
    assert truth_path(a) == tmp_path / "a.truth.jsonl"
    assert len(a.read_bytes().splitlines()) == n


def test_write_log_lines_are_the_simulated_events(tmp_path: Path) -> None:
    cfg = SimConfig(users=40, days=60, seed=5)
    path = tmp_path / "log.jsonl"
    write_log(cfg, path, progress=False)
    assert path.read_bytes().splitlines() == [
        orjson.dumps({"topic": ln.topic, "key": ln.key, "value": ln.value})
        for ln in simulate(cfg)]
    truth = [orjson.loads(line) for line in truth_path(path).read_bytes().splitlines()]
    assert truth == ground_truth(cfg)


def test_one_simulation_gives_the_events_and_then_the_truth() -> None:
    # What `limitstream simulate --to-broker --out` relies on to run the simulation once.
    cfg = SimConfig(users=40, days=60, seed=5)
    truth: list[dict[str, object]] = []
    events = simulate(cfg, truth)
    first = next(events)
    assert truth == [] and first == next(simulate(cfg))
    rest = list(events)
    assert [first, *rest] == list(simulate(cfg))
    assert truth == ground_truth(cfg) and len(truth) == 40


def test_a_users_story_does_not_depend_on_the_population_size() -> None:
    small = [ln for ln in simulate(SimConfig(users=15, days=90)) if ln.key == "u000007"]
    large = [ln for ln in simulate(SimConfig(users=45, days=90)) if ln.key == "u000007"]
    assert small == large
    assert small


# -- the contract --


def test_every_event_passes_the_strict_codec(pop: Population) -> None:
    limits = Limits(currency=CFG.currency)
    rejected: list[tuple[LogLine, BadInput]] = []
    for line in pop.lines:
        try:
            event = decode(line.topic, orjson.dumps(line.value), limits)
        except BadInput as exc:
            rejected.append((line, exc))
            continue
        assert (event.user_id, event.ts) == (line.key, line.ts)
    assert rejected == []
    assert {ln.topic for ln in pop.lines} == {"transactions", "repayments", "account-events"}
    kinds = {ln.value["kind"] for ln in pop.lines}
    assert kinds >= {"purchase", "cash_advance", "refund", "inflow", "due", "paid", "overdue",
                     "opened", "income_reported", "liabilities_reported"}


def test_event_time_order_inside_the_horizon(pop: Population) -> None:
    ts = [ln.ts for ln in pop.lines]
    assert all(a <= b for a, b in itertools.pairwise(ts))
    assert CFG.start_ts <= ts[0] and ts[-1] < CFG.end_ts


def test_ids_are_unique_and_repayments_reference_issued_installments(pop: Population) -> None:
    ids = [ln.value["event_id"] for ln in pop.lines]
    assert len(ids) == len(set(ids))
    for user, events in pop.by_user.items():
        assert events[0]["kind"] == "opened", user
        assert sum(e["kind"] == "opened" for e in events) == 1
        issued: dict[str, dict[str, Any]] = {}
        for e in events:
            if e["kind"] == "due":
                assert e["installment_id"] not in issued
                assert e["due_ts"] == e["ts"] + 20 * DAY_MS
                issued[e["installment_id"]] = e
            elif e["kind"] in ("paid", "overdue"):
                assert e["installment_id"] in issued, e


def test_balance_stays_within_the_limit_and_amounts_look_real(pop: Population) -> None:
    amounts = []
    for user, events in pop.by_user.items():
        limit = pop.truth[user]["initial_limit"]
        balance = 0
        for e in events:
            kind = e["kind"]
            if kind in ("purchase", "cash_advance"):
                balance += e["amount"]
                assert balance <= limit, (user, e)
            elif kind == "refund":
                balance -= e["amount"]
            elif kind == "paid":
                balance -= e["amount_paid"]
            if kind == "purchase":
                amounts.append(e["amount"])
    amounts.sort()
    median = amounts[len(amounts) // 2]
    assert 2_000 <= median <= 20_000  # 20-200 major units
    foreign = sum(1 for ln in pop.lines if ln.value["kind"] == "purchase"
                  and ln.value["country"] != CFG.home_country)
    assert 0.002 < foreign / len(amounts) < 0.05


def test_declined_demand_is_spend_the_static_limit_could_not_take(pop: Population) -> None:
    """Each purchase the simulator's bank declined (ground truth ``declined_demand``) would
    have taken the balance over the initial limit, and a revolving grower's demand meets it."""
    checked = 0
    for user, t in pop.truth.items():
        limit, events = t["initial_limit"], pop.by_user[user]
        for ts, amount, mcc, country in t["declined_demand"]:
            assert amount > 0 and pop.cfg.start_ts <= ts < pop.cfg.end_ts
            assert isinstance(mcc, str) and isinstance(country, str)
            # The balance then was at most: everything before the day before, plus every spend
            # of the two days around (the day's purchases are drawn before they are emitted).
            balance = 0
            for e in events:
                kind, e_ts = e["kind"], e["ts"]
                if e_ts >= ts + DAY_MS:
                    break
                if kind in ("purchase", "cash_advance"):
                    balance += e["amount"]
                elif e_ts < ts - DAY_MS:
                    balance -= e["amount"] if kind == "refund" else e.get("amount_paid", 0)
            assert balance + amount > limit, (user, ts, amount)
            checked += 1
    assert checked > 0
    growers = pop.users(GROWER)
    assert sum(1 for u in growers if pop.truth[u]["declined_demand"]) >= 0.5 * len(growers)


# -- personas --


def test_persona_mix_roughly_as_configured() -> None:
    truth = ground_truth(SimConfig(users=2000, days=20, seed=1))
    for persona in PERSONAS:
        share = sum(t["persona"] == persona for t in truth) / len(truth)
        assert abs(share - DEFAULT_MIX[persona]) < 0.03, (persona, share)
    custom = ground_truth(SimConfig(users=300, days=20, persona_mix={STEADY: 0.5, FRAUD: 0.5}))
    assert {t["persona"] for t in custom} == {STEADY, FRAUD}


def test_config_is_validated() -> None:
    assert abs(sum(DEFAULT_MIX.values()) - 1.0) < 1e-9
    with pytest.raises(ValueError, match="sum"):
        SimConfig(persona_mix={STEADY: 0.5})
    with pytest.raises(ValueError, match="unknown"):
        SimConfig(persona_mix={"gambler": 1.0})
    with pytest.raises(ValueError, match="currency"):
        SimConfig(currency="yuan")


def test_on_time_personas_are_never_overdue(pop: Population) -> None:
    users = [u for u, t in pop.truth.items() if t["persona"] in ON_TIME_PERSONAS]
    assert len(users) > 400
    for user in users:
        assert pop.kind(user, "overdue") == [], user
        due = {e["installment_id"]: e for e in pop.kind(user, "due")}
        for paid in pop.kind(user, "paid"):
            assert paid["ts"] < due[paid["installment_id"]]["due_ts"], user
            assert paid["amount_paid"] >= due[paid["installment_id"]]["amount_due"]
        assert not pop.truth[user]["defaults"]


def test_income_collapse_users_default(pop: Population) -> None:
    users = pop.users(COLLAPSE)
    assert len(users) >= 30
    reached_60 = 0
    for user in users:
        truth = pop.truth[user]
        assert truth["defaults"] is True, user
        collapse, default = truth["collapse_ts"], truth["default_ts"]
        assert collapse < default
        late = [e for e in pop.kind(user, "overdue") if e["ts"] > default]
        assert max(e["days_past_due"] for e in late) >= 30, user
        reached_60 += max(e["days_past_due"] for e in late) >= 60
        inst = truth["default_installment_id"]
        due = next(e for e in pop.kind(user, "due") if e["installment_id"] == inst)
        assert due["due_ts"] == default
        paid = sum(e["amount_paid"] for e in pop.kind(user, "paid") if e["installment_id"] == inst)
        assert paid < due["amount_due"]
        # the collapse shows before the default: inflows dry up, cash advances start
        after = sum(e["amount"] for e in pop.kind(user, "inflow")
                    if collapse <= e["ts"] < collapse + 30 * DAY_MS)
        assert after < 0.5 * truth["monthly_income"], user
        assert any(e["ts"] >= collapse for e in pop.kind(user, "cash_advance"))
    assert reached_60 >= len(users) // 4


def test_recovering_missers_turn_good_again(pop: Population) -> None:
    users = pop.users(RECOVERER)
    assert len(users) >= 30
    with_later_installments = 0
    for user in users:
        truth = pop.truth[user]
        recovered = truth["recovers_ts"]
        assert recovered is not None and 1 <= len(truth["missed_installments"]) <= 2, user
        assert not truth["defaults"]
        due = {e["installment_id"]: e for e in pop.kind(user, "due")}
        overdue = pop.kind(user, "overdue")
        for inst in truth["missed_installments"]:
            dpd = [e["days_past_due"] for e in overdue if e["installment_id"] == inst]
            assert 5 <= max(dpd) <= 20, (user, dpd)
            paid = [e for e in pop.kind(user, "paid") if e["installment_id"] == inst]
            assert len(paid) == 1 and paid[0]["ts"] > due[inst]["due_ts"] + 5 * DAY_MS
            assert paid[0]["amount_paid"] == due[inst]["amount_due"]
            assert paid[0]["ts"] <= recovered
        assert all(e["installment_id"] in truth["missed_installments"] for e in overdue)
        later = [d for d in due.values() if d["ts"] > recovered]
        with_later_installments += bool(later)
        for d in later:
            paid = [e for e in pop.kind(user, "paid") if e["installment_id"] == d["installment_id"]]
            assert all(p["ts"] < d["due_ts"] for p in paid)
            if d["due_ts"] < CFG.end_ts:
                assert paid, (user, d)
    assert with_later_installments >= len(users) // 2


def test_fraud_burst_users_have_a_night_burst(pop: Population) -> None:
    users = pop.users(FRAUD)
    assert len(users) >= 15
    offset = CFG.utc_offset_minutes * 60_000
    for user in users:
        truth = pop.truth[user]
        start = truth["fraud_burst_ts"]
        assert start is not None, user
        burst = [e for e in pop.kind(user, "purchase") if start <= e["ts"] <= start + 2 * HOUR_MS]
        assert len(burst) >= 8 and truth["fraud_burst_count"] >= 8
        strange = [e for e in burst if e["merchant_category"] in FRAUD_MCCS]
        assert len(strange) >= 8
        assert 0 <= (start + offset) % DAY_MS < 4 * HOUR_MS  # local night
        usual = [e["amount"] for e in pop.kind(user, "purchase") if e not in strange]
        assert sorted(e["amount"] for e in strange)[len(strange) // 2] > sorted(usual)[
            len(usual) // 2]
        # nobody else has such a burst of never-seen categories
    others = [u for u, t in pop.truth.items() if t["persona"] != FRAUD]
    assert not any(e["merchant_category"] in FRAUD_MCCS
                   for u in others for e in pop.kind(u, "purchase"))


def test_thin_files_open_late_with_few_transactions(pop: Population) -> None:
    thin = pop.users(THIN)
    assert len(thin) >= 30
    for user in thin:
        opened = pop.kind(user, "opened")[0]
        assert opened["ts"] >= CFG.start_ts + CFG.days * DAY_MS // 2
        assert opened["initial_limit"] <= 800_000
    per_user = sorted(len(pop.kind(u, "purchase")) for u in thin)
    steady = sorted(len(pop.kind(u, "purchase")) for u in pop.users(STEADY))
    assert per_user[len(per_user) // 2] * 5 < steady[len(steady) // 2]


def test_seasonal_spenders_peak_and_growing_earners_grow(pop: Population) -> None:
    from datetime import UTC, datetime

    def month(ts: int) -> int:
        return datetime.fromtimestamp((ts + CFG.utc_offset_minutes * 60_000) / 1000, UTC).month

    higher = 0
    seasonal = pop.users(SEASONAL)
    for user in seasonal:
        peaks = set(pop.truth[user]["peak_months"])
        by_month: dict[int, int] = defaultdict(int)
        for e in pop.kind(user, "purchase"):
            by_month[month(e["ts"])] += 1
        full = [m for m in range(1, 7)]  # January-June are whole months of the horizon
        peak = [by_month[m] for m in full if m in peaks]
        rest = [by_month[m] for m in full if m not in peaks]
        if peak and rest:
            higher += min(peak) > 1.5 * (sum(rest) / len(rest))
    assert higher >= 0.7 * len(seasonal)

    grew = 0
    for user in pop.users(GROWER):
        inflows = pop.kind(user, "inflow")
        first = sum(e["amount"] for e in inflows if e["ts"] < CFG.start_ts + 60 * DAY_MS)
        last = sum(e["amount"] for e in inflows if e["ts"] >= CFG.end_ts - 60 * DAY_MS)
        grew += last > 1.15 * first
    assert grew >= 0.8 * len(pop.users(GROWER))


@pytest.fixture(scope="module")
def harder() -> Population:
    """The personas added for a harder portfolio, over a year."""
    mix = {DRIFTER: 0.4, BUST_OUT: 0.3, TECHNICAL: 0.3}
    return Population(SimConfig(users=150, days=360, seed=17, persona_mix=mix))


def test_drifters_spend_more_pay_the_minimum_then_default(harder: Population) -> None:
    users = harder.users(DRIFTER)
    assert len(users) >= 40
    for user in users:
        t = harder.truth[user]
        drift = t["drift_ts"]
        if not t["defaults"]:
            continue  # the default fell past the horizon
        assert drift + 60 * DAY_MS <= t["default_ts"]
        # income never falls: salary inflows go on after the drift
        assert any(e["ts"] > t["default_ts"] for e in harder.kind(user, "inflow")), user
        # after the drift and before the default, every installment is paid exactly (the
        # minimum)
        dues = {e["installment_id"]: e for e in harder.kind(user, "due")
                if drift < e["ts"] and e["due_ts"] < t["default_ts"]}
        for p in harder.kind(user, "paid"):
            if p["installment_id"] in dues:
                assert p["amount_paid"] == dues[p["installment_id"]]["amount_due"], user
    assert sum(harder.truth[u]["defaults"] for u in users) >= 0.8 * len(users)


def test_bust_outs_open_late_max_the_line_and_never_pay(harder: Population) -> None:
    users = harder.users(BUST_OUT)
    assert len(users) >= 30
    for user in users:
        t = harder.truth[user]
        assert t["opened_ts"] > harder.cfg.start_ts
        bust = t["bust_ts"]
        sign = {"purchase": 1, "cash_advance": 1, "refund": -1}
        balance = sum(sign.get(e["kind"], 0) * e.get("amount", 0) - e.get("amount_paid", 0)
                      for e in harder.by_user[user] if e["ts"] < bust + 2 * DAY_MS)
        assert balance >= 0.7 * t["initial_limit"], user  # the line maxed out in two days
        assert t["defaults"] is True and t["default_ts"] > bust
        issued_after = {e["installment_id"] for e in harder.kind(user, "due")
                        if e["ts"] > bust}
        assert issued_after and not [e for e in harder.kind(user, "paid")
                                     if e["installment_id"] in issued_after], user


def test_technical_lates_pay_one_installment_a_few_days_late(harder: Population) -> None:
    users = harder.users(TECHNICAL)
    assert len(users) >= 30
    for user in users:
        t = harder.truth[user]
        assert t["defaults"] is False
        notices = harder.kind(user, "overdue")
        assert len(t["missed_installments"]) <= 1
        assert all(e["days_past_due"] == 1 for e in notices), user
        for inst in t["missed_installments"]:
            due = next(e for e in harder.kind(user, "due") if e["installment_id"] == inst)
            for paid in (e for e in harder.kind(user, "paid") if e["installment_id"] == inst):
                assert DAY_MS <= paid["ts"] - due["due_ts"] < 4 * DAY_MS
