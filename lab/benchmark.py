"""The honest model benchmark: the prequential River model against a model fit in hindsight.

Both are judged on the same examples, the later half (by time) of the labels the trainer
learnt (installments issued while the account was current). The online figure is the AUC of
the scores the trainer gave each example *before* learning it (prequential: it never saw the
label); the offline model is a logistic regression fit by iteratively reweighted least squares
(numpy) on the earlier half, with the same features, standardised on that half and clipped
like the online pipeline's, and a small ridge penalty so that a constant or collinear feature
cannot make the normal equations singular. Its distance above the online model is what the
online learning costs; the time split keeps the offline model from grading itself on what it
was fit to.

Examples
--------
>>> roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
0.75
>>> import numpy as np
>>> rng = np.random.default_rng(1)
>>> xs = [{"a": float(v), "b": float(rng.normal())} for v in rng.normal(size=400)]
>>> ys = [int(x["a"] + 0.5 * rng.normal() > 1.0) for x in xs]
>>> b = benchmark([(x, y, 0.5, False) for x, y in zip(xs, ys)])
>>> b["offline_roc_auc"] > 0.9, b["online_roc_auc"]        # a constant online score: 0.5
(True, 0.5)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np

#: Standardised values are clipped like the online pipeline's winsoriser (policies/model.py).
Z_CLIP: Final = 8.0
#: Ridge penalty on the standardised weights (not the intercept): defaults are rare (a few
#: dozen in a few thousand labels), and an unpenalised fit separates them and overfits.
RIDGE: Final = 1.0
IRLS_ITERATIONS: Final = 25

Example = tuple[Mapping[str, float], int, float, bool]
"""(features at issue, label, prequential online score, thin file)"""


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """The exact ROC AUC (ties count half); ``None`` when a class is missing: a gap, not 0."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=int)
    pos, neg = int(y.sum()), int(len(y) - y.sum())
    if pos == 0 or neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=float)
    sorted_s = s[order]
    # Average ranks over ties.
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def fit_logistic(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Weights (intercept first) of a ridge logistic regression by IRLS (Newton's method)."""
    a = np.hstack([np.ones((len(x), 1)), x])
    w = np.zeros(a.shape[1])
    penalty = np.full(a.shape[1], RIDGE)
    penalty[0] = 0.0
    for _ in range(IRLS_ITERATIONS):
        p = 1.0 / (1.0 + np.exp(-np.clip(a @ w, -30.0, 30.0)))
        grad = a.T @ (p - y) + penalty * w
        hess = (a * (p * (1.0 - p))[:, None]).T @ a + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return w


def _matrix(rows: Sequence[Mapping[str, float]], names: Sequence[str]) -> np.ndarray:
    return np.array([[float(r.get(n, 0.0)) for n in names] for r in rows], dtype=float)


def benchmark(examples: Sequence[Example]) -> dict[str, Any]:
    """Online (prequential) against offline (fit on the earlier half) ROC AUC on the later
    half of ``examples`` (in time order), overall and for the thin-file and established
    segments."""
    n = len(examples)
    half = n // 2
    out: dict[str, Any] = {"labels": n, "train": half, "test": n - half,
                           "online_roc_auc": None, "offline_roc_auc": None, "gap": None,
                           "segments": {}}
    train, test = examples[:half], examples[half:]
    if not train or not test or len({y for _, y, _, _ in train}) < 2:
        return out
    names = sorted({k for x, _, _, _ in examples for k in x})
    xtr, xte = _matrix([e[0] for e in train], names), _matrix([e[0] for e in test], names)
    mean, std = xtr.mean(axis=0), xtr.std(axis=0)
    std[std == 0] = 1.0
    ztr = np.clip((xtr - mean) / std, -Z_CLIP, Z_CLIP)
    zte = np.clip((xte - mean) / std, -Z_CLIP, Z_CLIP)
    w = fit_logistic(ztr, np.array([y for _, y, _, _ in train], dtype=float))
    offline = (np.hstack([np.ones((len(zte), 1)), zte]) @ w).tolist()
    ys = [y for _, y, _, _ in test]
    online = [p for _, _, p, _ in test]
    out["online_roc_auc"] = roc_auc(online, ys)
    out["offline_roc_auc"] = roc_auc(offline, ys)
    if out["online_roc_auc"] is not None and out["offline_roc_auc"] is not None:
        out["gap"] = round(out["offline_roc_auc"] - out["online_roc_auc"], 4)
    for name, thin in (("current_thin", True), ("current_established", False)):
        idx = [i for i, e in enumerate(test) if e[3] is thin]
        out["segments"][name] = {
            "n": len(idx),
            "positives": sum(ys[i] for i in idx),
            "online_roc_auc": roc_auc([online[i] for i in idx], [ys[i] for i in idx]),
            "offline_roc_auc": roc_auc([offline[i] for i in idx], [ys[i] for i in idx]),
        }
    out["positives_test"] = sum(ys)
    return out
