"""Benchmark of the risk model core: throughput on one core and snapshot cost.

Run: ``.venv/bin/python -m bench.bench_model [--labels N] [--repeat R] [--seed S]``

Prints, for every model kind: ``RiskModel.learn`` / ``score`` / ``contributions`` per second,
``Trainer.learn`` per second (score + prequential quality + learn: what the trainer agent pays
per label), the size of a trainer snapshot (model + quality summary + a full 1 000-label quality
window) and of a model-only snapshot, and the time to sign, to verify (MAC + parse + rebuild +
version check), to load on a worker (``Scorer.install_snapshot``) and to restore a trainer.
Feature vectors have every name of ``FEATURE_NAMES`` at realistic scales (money in minor units).
Figures are medians of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from collections.abc import Callable

from features.names import FEATURE_NAMES
from policies.model import KINDS, RiskModel
from policies.risk import Risk
from policies.scorer import Gate, Scorer, Trainer
from policies.snapshot import sign_snapshot, verify_snapshot

KEY = b"bench-key-bench-key-bench-key-32"
TS = 1_767_225_600_000


def vectors(n: int, seed: int) -> tuple[list[dict[str, float]], list[int]]:
    """``n`` random feature vectors and labels from a known logistic of a few features."""
    rng = random.Random(seed)
    xs, ys = [], []
    for _ in range(n):
        x = {name: rng.lognormvariate(9.0, 1.5) for name in FEATURE_NAMES}  # money-like scale
        x.update(
            late_count_12=float(rng.randint(0, 4) if rng.random() < 0.3 else 0),
            utilization=rng.random(),
            inflow_trend=rng.lognormvariate(0.0, 0.3),
            debt_to_income=rng.random() * 0.8,
            anomaly_score=rng.random(),
        )
        logit = -3.5 + 0.6 * x["late_count_12"] + 2.0 * x["utilization"]
        logit -= math.log(x["inflow_trend"])
        xs.append(x)
        ys.append(int(rng.random() < 1 / (1 + math.exp(-logit))))
    return xs, ys


def rate(fn: Callable[[], object], n: int, repeat: int) -> float:
    """Median calls per second of ``fn`` (which performs ``n`` operations)."""
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(n / (time.perf_counter() - t0))
    return statistics.median(runs)


def seconds(fn: Callable[[], object], repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def bench_kind(kind: str, xs: list[dict[str, float]], ys: list[int], repeat: int) -> None:
    n = len(xs)

    def learn_all() -> RiskModel:
        m = RiskModel(kind)
        for x, y in zip(xs, ys, strict=True):
            m.learn(x, y)
        return m

    model = learn_all()
    learn_s = rate(learn_all, n, repeat)
    score_s = rate(lambda: [model.score(x) for x in xs], n, repeat)
    contrib_s = rate(lambda: [model.contributions(x) for x in xs], n, repeat)

    def train_all() -> Trainer:
        t = Trainer(kind)
        for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
            t.learn(x, y, offset=i)
        return t

    trainer = train_all()
    trainer_s = rate(train_all, n, repeat)

    raw = trainer.snapshot(KEY, created_ts=TS)
    meta = {"version": model.version, "n_learned": n, "labels_offset": n - 1, "created_ts": TS}
    model_only = sign_snapshot(model.to_state(), key=KEY, meta=meta)
    sign_t = seconds(lambda: trainer.snapshot(KEY, created_ts=TS), repeat * 5)
    verify_t = seconds(lambda: verify_snapshot(raw, key=KEY), repeat * 5)
    snap = verify_snapshot(raw, key=KEY)

    def rules(x: object) -> Risk:
        return Risk(0.1, "rules", "rules")

    scorer = Scorer(Gate(min_labels=500, min_auc=0.7, max_log_loss=0.5), rules)
    install_t = seconds(lambda: scorer.install_snapshot(snap), repeat * 5)
    restore_t = seconds(lambda: Trainer.restore(snap), repeat * 5)
    risk_s = rate(lambda: [scorer.risk(x) for x in xs], n, repeat)

    print(f"\n{kind} ({n} labels, {len(FEATURE_NAMES)} features)")
    print(f"  RiskModel.learn          {learn_s:>10,.0f} /s   ({1e6 / learn_s:6.1f} µs)")
    print(f"  RiskModel.score          {score_s:>10,.0f} /s   ({1e6 / score_s:6.1f} µs)")
    print(f"  RiskModel.contributions  {contrib_s:>10,.0f} /s   ({1e6 / contrib_s:6.1f} µs)")
    print(f"  Scorer.risk (model path) {risk_s:>10,.0f} /s   ({1e6 / risk_s:6.1f} µs)")
    print(f"  Trainer.learn            {trainer_s:>10,.0f} /s   ({1e6 / trainer_s:6.1f} µs)")
    print(f"  trainer snapshot         {len(raw):>10,} bytes (model-only {len(model_only):,})")
    print(f"  sign (Trainer.snapshot)  {sign_t * 1e3:>10.2f} ms")
    print(f"  verify_snapshot          {verify_t * 1e3:>10.2f} ms")
    print(f"  Scorer.install_snapshot  {install_t * 1e3:>10.2f} ms")
    print(f"  Trainer.restore          {restore_t * 1e3:>10.2f} ms")
    print(
        f"  sign+verify+load         {(sign_t + verify_t + install_t) * 1e3:>10.2f} ms"
        f"   (prequential AUC {trainer.quality.roc_auc:.3f}, log loss "
        f"{trainer.quality.log_loss:.3f})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--labels", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    xs, ys = vectors(args.labels, args.seed)
    print(f"bench_model: median of {args.repeat} runs, base rate {sum(ys) / len(ys):.3f}")
    for kind in KINDS:
        bench_kind(kind, xs, ys, args.repeat)


if __name__ == "__main__":
    main()
