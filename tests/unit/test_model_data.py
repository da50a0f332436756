"""A synthetic borrower population for the model tests, an offline reference fit, and an exact
AUC; plus tests of these helpers themselves (so the learning tests measure against something
known to be right).

The population draws every feature of ``features.names.FEATURE_NAMES`` at realistic scales
(money in minor units, so several features are in the 10^5..10^7 range) from one latent
"financial stress" factor, and the label from a *known* logistic of a handful of them: late
payments, utilisation, falling inflow, debt-to-income, days past due, cash-advance share.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from features.names import FEATURE_NAMES
from lab.benchmark import roc_auc

Vector = dict[str, float]

#: The true model: ``logit = B0 + sum(coef * transform(feature))`` (see ``_true_logit``).
B0 = -4.4


def _true_logit(f: dict[str, NDArray[np.float64]]) -> NDArray[np.float64]:
    return (
        B0
        + 0.55 * f["late_count_12"]
        + 2.0 * f["utilization"]
        - 1.2 * np.log(f["inflow_trend"])
        + 1.0 * f["debt_to_income"]
        + 0.02 * f["max_dpd_90d"]
        + 1.5 * f["cash_advance_share_30d"]
    )


def _flipped(logit: NDArray[np.float64]) -> NDArray[np.float64]:
    """``c - logit`` with ``c`` found by bisection so that the mean PD is unchanged: the risk
    ordering is reversed at the same base rate (a flip that also lowered the base rate could
    *lower* the log loss, and only the AUC would see it)."""
    target = float(np.mean(1 / (1 + np.exp(-logit))))
    lo, hi = -50.0, 50.0
    for _ in range(100):
        c = (lo + hi) / 2
        if float(np.mean(1 / (1 + np.exp(-(c - logit))))) < target:
            lo = c
        else:
            hi = c
    return (lo + hi) / 2 - logit


def population(
    n: int, seed: int = 7, flip: bool = False
) -> tuple[list[Vector], list[int], NDArray[np.float64]]:
    """``n`` feature vectors, their labels and their true PDs. ``flip=True`` inverts the
    concept (the logit's sign), for drift tests."""
    rng = np.random.default_rng(seed)
    stress = rng.normal(size=n)  # latent: drives the risky features together
    f: dict[str, NDArray[np.float64]] = {}
    for w, scale in (("1h", 0.02), ("24h", 0.5), ("7d", 3.0), ("30d", 12.0)):
        count = rng.poisson(scale * np.exp(0.2 * stress)).astype(float)
        mean_amount = rng.lognormal(mean=9.5, sigma=0.8, size=n)  # ~13 000 minor units
        f[f"spend_count_{w}"] = count
        f[f"spend_sum_{w}"] = count * mean_amount
        f[f"spend_max_{w}"] = np.where(count > 0, mean_amount * rng.uniform(1, 3, n), 0.0)
    f["spend_velocity_24h"] = f["spend_sum_24h"] / np.maximum(f["spend_sum_30d"] / 30, 1.0)
    f["merchant_categories_24h"] = np.minimum(f["spend_count_24h"], rng.poisson(1.0, n))
    f["merchant_categories_30d"] = np.minimum(f["spend_count_30d"], rng.poisson(5.0, n))
    f["cash_advance_share_30d"] = np.clip(rng.beta(1, 12, n) + 0.08 * np.maximum(stress, 0), 0, 1)
    f["night_share_30d"] = rng.beta(1, 15, n)
    f["cross_border_share_30d"] = rng.beta(1, 30, n)
    f["refund_ratio_30d"] = rng.beta(1, 40, n)
    income = rng.lognormal(mean=12.9, sigma=0.5, size=n)  # ~400 000 minor units a month
    f["income_monthly"] = income
    f["inflow_30d"] = income * rng.uniform(0.6, 1.2, n)
    f["inflow_trend"] = np.exp(rng.normal(-0.15 * stress, 0.25))
    f["liabilities_monthly"] = income * rng.beta(2, 8, n)
    f["debt_to_income"] = f["liabilities_monthly"] / income + rng.beta(2, 10, n) + 0.1 * np.abs(
        stress
    )
    limit = income * rng.uniform(1.0, 4.0, n)
    f["utilization"] = np.clip(rng.beta(2, 4, n) + 0.15 * stress, 0, 1.2)
    f["balance"] = f["utilization"] * limit
    f["utilization_peak_30d"] = np.minimum(f["utilization"] + rng.beta(1, 8, n), 1.5)
    late = rng.binomial(12, 1 / (1 + np.exp(2.8 - 0.9 * stress))).astype(float)
    f["late_count_12"] = late
    f["ontime_count_12"] = 12 - late
    f["max_dpd_90d"] = np.where(late > 0, rng.integers(1, 60, n) * np.minimum(late, 3) / 3, 0.0)
    f["days_since_ontime"] = np.minimum(rng.exponential(20 + 20 * late), 365)
    f["days_since_missed"] = np.where(late > 0, np.minimum(rng.exponential(90, n), 365), 365.0)
    f["paid_due_ratio_3"] = np.clip(1 - 0.1 * late + rng.normal(0, 0.05, n), 0, 1.2)
    f["overdue_amount"] = np.where(late > 0, rng.lognormal(10, 1, n), 0.0)
    # Payment behaviour and the balance's trend: derived, as below; outside the true model, so
    # mostly noise (the payment ratio follows paid / due).
    f["payment_ratio_3"] = f["paid_due_ratio_3"] * (1.0 + 10.0 * f["night_share_30d"])
    f["min_payments_3"] = np.minimum(f["merchant_categories_24h"], 3.0)
    f["amount_due_trend"] = 1.0 + f["cross_border_share_30d"]
    f["liabilities_trend"] = 1.0 + f["refund_ratio_30d"]
    f["days_since_open"] = rng.uniform(30, 3000, n)
    f["anomaly_score"] = rng.beta(2, 8, n)
    # The last hour's anomaly scores: derived, so that the draws above (and the labels) stay.
    f["anomaly_burst_1h"] = f["anomaly_score"] * np.minimum(f["spend_count_1h"], 5.0)
    assert set(f) == set(FEATURE_NAMES), set(FEATURE_NAMES) ^ set(f)

    logit = _true_logit(f)
    if flip:
        logit = _flipped(logit)
    pd_true = 1 / (1 + np.exp(-logit))
    y = (rng.uniform(size=n) < pd_true).astype(int)
    xs = [{k: float(f[k][i]) for k in FEATURE_NAMES} for i in range(n)]
    return xs, [int(v) for v in y], pd_true


def matrix(xs: list[Vector]) -> NDArray[np.float64]:
    return np.array([[x[k] for k in FEATURE_NAMES] for x in xs], dtype=float)


def fit_offline(
    X: NDArray[np.float64], y: NDArray[np.float64], ridge: float = 1e-4, iters: int = 50
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Batch logistic regression by Newton/IRLS on standardised features (tiny ridge for the
    collinear ones). Returns ``(beta, mu, sd)``; ``beta[0]`` is the intercept."""
    mu, sd = X.mean(axis=0), X.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    Z = np.column_stack([np.ones(len(X)), (X - mu) / sd])
    beta = np.zeros(Z.shape[1])
    penalty = ridge * len(X) * np.eye(Z.shape[1])
    penalty[0, 0] = 0.0  # never shrink the intercept
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(Z @ beta, -30, 30)))
        grad = Z.T @ (p - y) + penalty @ beta
        hess = (Z * (p * (1 - p))[:, None]).T @ Z + penalty
        step = np.linalg.solve(hess, grad)
        beta -= step
        if float(np.max(np.abs(step))) < 1e-10:
            break
    return beta, mu, sd


def predict_offline(
    fit: tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]],
    X: NDArray[np.float64],
) -> NDArray[np.float64]:
    beta, mu, sd = fit
    Z = np.column_stack([np.ones(len(X)), (X - mu) / sd])
    p: NDArray[np.float64] = 1 / (1 + np.exp(-np.clip(Z @ beta, -30, 30)))
    return p


def auc(scores: NDArray[np.float64] | list[float], y: NDArray[np.float64] | list[int]) -> float:
    """Exact ROC AUC (the lab's, average ranks for ties) of data that has both classes."""
    value = roc_auc([float(v) for v in scores], [int(v) for v in y])
    assert value is not None, "both classes are needed"
    return value


# -- tests of the helpers ------------------------------------------------------------------------


def test_auc_matches_the_definition() -> None:
    assert auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert auc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == 0.5


def test_population_is_learnable_and_at_a_credit_base_rate() -> None:
    xs, y, pd_true = population(4000)
    rate = sum(y) / len(y)
    assert 0.05 < rate < 0.25, rate
    assert auc(pd_true, y) > 0.75  # the features carry real signal
    assert all(math.isfinite(v) for x in xs[:50] for v in x.values())


def test_offline_fit_recovers_the_signal() -> None:
    xs, y, pd_true = population(4000)
    X, t = matrix(xs), np.asarray(y, dtype=float)
    fit = fit_offline(X, t)
    p = predict_offline(fit, X)
    # In-sample, the fitted logistic ranks at least as well as the truth minus overfitting.
    assert auc(p, y) > auc(pd_true, y) - 0.01
    assert abs(float(p.mean()) - float(t.mean())) < 1e-6  # the MLE matches the base rate
