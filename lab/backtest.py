"""Backtest: had we run this policy on this portfolio, what would it have cost and earned, and
whom would it have hurt? (issue 6, §3-4)

The same core the worker runs (:class:`lab.replay.Replay` over
:func:`policies.engine_factory.engine_for`, the model learning in process at the live snapshot
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
``rules_only``
    The champion policy in real time on its transparent rule score alone (the model learns
    but never decides): what the model adds, and what it costs good users.
``static``
    The limit granted at opening, for the whole horizon, never suspended: no engine.

The passes are independent: they run in parallel processes (``workers``), and give the same
figures as one after the other (a test pins it).

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

import os
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from lab.backtest_metrics import (
    Horizon,
    difference,
    goals,
    relative_changes,
    score,
)
from lab.backtest_pass import (
    Mode,
    RunResult,
    run,
)
from lab.truth import (
    DEFINITIONS,
    RUN_ORDER,
    is_defaulter,
    is_good,
    load_truth,
    personas,
    sample_users,
)
from policies.spec import Policy, load_policy
from streams.settings import Settings


def _marks(t: Mapping[str, Any]) -> dict[str, int]:
    """A sample user's ground-truth events, for the plots."""
    names = (("collapse_ts", "collapse"), ("default_ts", "default"),
             ("recovers_ts", "recovery"), ("fraud_burst_ts", "fraud burst"))
    return {label: int(t[k]) for k, label in names if t.get(k) is not None}


# -- the whole backtest ---------------------------------------------------------------------


def _pass(log: Path, truth: Mapping[str, Mapping[str, Any]], name: str, mode: Mode,
          policy: Policy | None, settings: Settings, watched: set[str],
          use_model: bool) -> RunResult:
    """One pass (a top-level function: what a worker process runs)."""
    return run(log, truth, name, mode, policy, settings, watched, use_model)


def backtest(log: Path, truth_file: Path, policy_file: Path,
             challenger_file: Path | None = None, settings: Settings | None = None,
             progress: Callable[[str], None] | None = None,
             workers: int | None = None) -> dict[str, Any]:
    """Run the champion, the optional challenger, the rules-only policy and both baselines
    over ``log``; return the report's data (JSON-able: every figure, every series, the
    definitions). ``workers``: processes running the passes (default: one per core, at most
    one per pass; 1 runs them in this process)."""
    settings = settings or Settings()
    truth = load_truth(truth_file)
    samples = sample_users(truth)
    watched = {u for us in samples.values() for u in us}
    champion = load_policy(policy_file)
    plan: list[tuple[str, Mode, Policy | None, Path | None, bool]] = [
        ("static", Mode.STATIC, None, None, True),
        ("monthly", Mode.MONTHLY, champion, policy_file, True),
        ("rules_only", Mode.REALTIME, champion, policy_file, False),
        ("champion", Mode.REALTIME, champion, policy_file, True),
    ]
    if challenger_file is not None:
        plan.append(("challenger", Mode.REALTIME, load_policy(challenger_file), challenger_file,
                     True))
    n = workers if workers is not None else min(len(plan), os.cpu_count() or 1)
    results: dict[str, RunResult] = {}
    if n <= 1:
        for name, mode, policy, _, use_model in plan:
            if progress:
                progress(f"{name}: running ({mode.value})")
            results[name] = _pass(log, truth, name, mode, policy, settings, watched, use_model)
    else:
        # The passes share nothing: each process reads the log itself.
        with ProcessPoolExecutor(max_workers=n) as pool:
            futures = {name: pool.submit(_pass, log, truth, name, mode, policy, settings,
                                         watched, use_model)
                       for name, mode, policy, _, use_model in plan}
            for name, fut in futures.items():
                results[name] = fut.result()
    for name, _, _, path, _ in plan:
        res = results[name]
        res.policy_file = path.name if path is not None else ""
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
            "uses_model": name != "rules_only" and res.mode is not Mode.STATIC,
            "replay": res.replay, "model": res.model, "benchmark": res.benchmark, **scored,
        }
    by_persona: dict[str, int] = {}
    for t in truth.values():
        by_persona[str(t.get("persona"))] = by_persona.get(str(t.get("persona")), 0) + 1
    diffs: dict[str, Any] = {
        "champion_minus_static": difference(runs["champion"]["metrics"],
                                            runs["static"]["metrics"]),
        "champion_minus_monthly": difference(runs["champion"]["metrics"],
                                             runs["monthly"]["metrics"]),
        "champion_minus_rules_only": difference(runs["champion"]["metrics"],
                                                runs["rules_only"]["metrics"]),
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
        "gate": {"min_labels": champion.model.min_labels, "min_auc": champion.model.min_auc,
                 "max_log_loss": champion.model.max_log_loss,
                 "label_dpd": champion.model.label_dpd,
                 "label_horizon_days": champion.model.label_horizon_days},
        "samples": samples,
        "sample_truth": {u: _marks(truth[u]) for u in sorted(watched)},
        "definitions": dict(DEFINITIONS),
        "runs": {n: runs[n] for n in RUN_ORDER if n in runs},
        "differences": diffs,
        "changes_vs_baselines": {
            name: relative_changes(runs[name]["metrics"], runs["static"]["metrics"],
                                   runs["monthly"]["metrics"])
            for name in ("rules_only", "champion", "challenger") if name in runs},
        "goals": goals(runs),
    }
