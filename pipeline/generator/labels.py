"""The labels: ``engagement_score`` (the ``engagement`` model's target) and ``churned_30d`` (the
``churn`` model's), the true functions they are drawn from, and the R^2 ceiling they imply.

Inputs: feature arrays keyed by spec name (``_linear_predictor``, while generating), or any frame
with the spec's feature columns: ``expected_engagement`` and ``expected_churn`` (the specs'
``reference`` functions), ``best_achievable_r2`` and ``theoretical_best_r2`` (which also read the
target). Outputs: per-row expectations and probabilities (float64 arrays), drawn labels
(``_draw_target``), R^2 values. The README says why a known true function matters; the maths is
documented here, once.

Target. ``engagement_score`` is the share of the next ``HORIZON_DAYS`` = 30 days on which the
customer is active. With sigma the logistic function and [.] an indicator::

    z(x) = -2.0
           + 2.2  * tanh(sessions_per_week / 12)                    habit, saturating
           + 1.6  * days_active_last_30 / 30                        recent frequency
           - 1.5  * sigma((days_since_last_login - 10) / 2)         lapse threshold near 10 days
           + 2.0  * w_soc[intent] * tanh(3 * (match_success_rate - 0.15))
           + 0.5  * w_gig[intent] * log(1 + gig_applications_sent_month + 2 * gig_listings_active)
           + 0.3  * w_gig[intent] * (avg_job_completion_rating - 4.3)     (0 when null)
           + tier[subscription_tier]                                 free 0, plus 0.2, premium 0.4
           + 0.9  * push_open_rate - 0.2 * [not push_notifications_enabled]
           + 0.15 * log(1 + messages_received_week)
           - 0.25 * [device_os == "web"]
           - 0.35 * tanh(support_tickets_90d / 3)
           + 0.12 * (app_rating - 3)                                 (0 when null)
           - 0.4  * exp(-account_age_days / 30)                      early churn of new accounts

    w_soc = {social: 1.0, gigs: 0.1, both: 0.5},  w_gig = {social: 0.1, gigs: 1.0, both: 0.5}
    (intent = primary_intent: social customers are retained by matches, gig customers by
    gig activity and good job ratings.)

    g(x) = sigma(z(x))                                   = E[engagement_score | x]
    p | x ~ Beta(KAPPA * g, KAPPA * (1 - g)),  KAPPA = 11   (customer-level overdispersion)
    engagement_score = Binomial(30, p) / 30              (a multiple of 1/30 in [0, 1])

So ``engagement_score`` is beta-binomial / 30: E[y | x] = g(x) exactly, no clipping is needed,
and (beta-binomial variance, e.g. https://en.wikipedia.org/wiki/Beta-binomial_distribution,
Var(K) = n g (1-g) (kappa + n) / (kappa + 1), divided by n^2)::

    Var(y | x) = g (1 - g) (KAPPA + 30) / (30 (KAPPA + 1))

By the law of total variance the best possible R^2 (a model that knows g) is
``1 - E[Var(y|x)] / Var(y)`` (``theoretical_best_r2``); ``best_achievable_r2`` measures the R^2
of g itself on a frame. Mean engagement is ~0.46 with a U-shaped distribution (~11% zeros, ~7%
ones), as in real DAU/MAU data.

Second label. ``churned_30d`` (int 0/1, the ``churn`` model's target) says whether the customer
leaves in the next 30 days. It depends on behaviour only, through a logistic model plus Bernoulli
noise (its own RNG stream, so adding it changed no other column)::

    u(x) = -2.2
           + 3.0 * sigma((days_since_last_login - 14) / 3)         lapsed for two weeks or more
           - 1.6 * tanh(sessions_per_week / 8)                      habit protects
           - 1.4 * days_active_last_30 / 30
           + 0.9 * tanh(support_tickets_90d / 3)                    friction
           + tier_churn[subscription_tier]                          free 0, plus -0.4, premium -0.8
           + 1.2 * exp(-account_age_days / 60)                      new accounts leave more
           - 0.8 * push_open_rate
           + 0.5 * [payment_methods_saved == 0]

    P(churned_30d = 1 | x) = sigma(1.5 * u(x))   (``expected_churn``);  churned_30d ~ Bernoulli(P)

Measured on 20,000 rows (seed 7): 17.9% churn; the PR-AUC of the true probability is 0.86 and an
XGBoost classifier trained on 16,000 rows reaches 0.855 on the other 4,000.

Calibration, measured (XGBoost 3.2 with the spec's hyperparameters, categoricals as
``pd.Categorical`` with the spec's categories, ``enable_categorical=True``, 80/20 split with
``random_state=42``; seeds 7 / 11 / 2024)::

    rows      best_achievable_r2     XGBoost holdout R^2
    20,000    0.859 / 0.857 / 0.859  0.846 / 0.847 / 0.845
    100,000   0.856 / 0.857 / 0.857  0.850 / 0.852 / 0.847
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .common import _sigmoid, _spec

CHURN_LABEL = "churned_30d"
"""The second label (the ``churn`` model's target): 1 if the customer leaves in the next 30 days."""

HORIZON_DAYS = 30
"""Length of the target window: ``engagement_score`` is active days out of this many."""

KAPPA = 11.0
"""Concentration of the Beta prior on a customer's daily-active probability (see module docs)."""

# Intercept of the linear predictor z (calibrated so that mean engagement is about 0.45).
_Z0 = -2.0

# Features the target function reads (everything else only correlates with them).
_TARGET_INPUTS = (
    "sessions_per_week",
    "days_active_last_30",
    "days_since_last_login",
    "primary_intent",
    "match_success_rate",
    "gig_applications_sent_month",
    "gig_listings_active",
    "avg_job_completion_rating",
    "subscription_tier",
    "push_notifications_enabled",
    "push_open_rate",
    "messages_received_week",
    "device_os",
    "support_tickets_90d",
    "app_rating",
    "account_age_days",
)

_W_SOCIAL = np.array([1.0, 0.1, 0.5])  # by primary_intent: social, gigs, both
_W_GIG = np.array([0.1, 1.0, 0.5])
_TIER_EFFECT = np.array([0.0, 0.2, 0.4])  # free, plus, premium


def _linear_predictor(x: dict[str, np.ndarray]) -> np.ndarray:
    """z(x) of the module docstring; categoricals are int codes in spec order."""
    intent = x["primary_intent"]
    w_soc, w_gig = _W_SOCIAL[intent], _W_GIG[intent]
    app_rating = np.nan_to_num(x["app_rating"] - 3.0, nan=0.0)
    job_rating = np.nan_to_num(x["avg_job_completion_rating"] - 4.3, nan=0.0)
    gig_activity = x["gig_applications_sent_month"] + 2.0 * x["gig_listings_active"]
    return (
        _Z0
        + 2.2 * np.tanh(x["sessions_per_week"] / 12.0)
        + 1.6 * x["days_active_last_30"] / 30.0
        - 1.5 * _sigmoid((x["days_since_last_login"] - 10.0) / 2.0)
        + 2.0 * w_soc * np.tanh(3.0 * (x["match_success_rate"] - 0.15))
        + 0.5 * w_gig * np.log1p(gig_activity)
        + 0.3 * w_gig * job_rating
        + _TIER_EFFECT[x["subscription_tier"]]
        + 0.9 * x["push_open_rate"]
        - 0.2 * (1.0 - x["push_notifications_enabled"])
        + 0.15 * np.log1p(x["messages_received_week"])
        - 0.25 * (x["device_os"] == 2)
        - 0.35 * np.tanh(x["support_tickets_90d"] / 3.0)
        + 0.12 * app_rating
        - 0.4 * np.exp(-x["account_age_days"] / 30.0)
    )


def _target_inputs(df: pd.DataFrame) -> dict[str, np.ndarray]:
    missing = [c for c in _TARGET_INPUTS if c not in df.columns]
    if missing:
        raise ValueError(f"frame lacks feature columns needed by the target function: {missing}")
    x: dict[str, np.ndarray] = {}
    for name in _TARGET_INPUTS:
        feature = _spec().feature(name)
        col = df[name]
        if feature.type == "categorical":
            codes = np.asarray(pd.Categorical(col, categories=feature.categories).codes)
            if (codes < 0).any():
                bad = sorted(set(col[codes < 0].astype(str)))[:5]
                raise ValueError(
                    f"column {name!r} holds values outside the spec's categories: {bad}"
                )
            x[name] = codes.astype(np.int64)
        elif feature.type == "boolean" and not (
            pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col)
        ):  # e.g. "True"/"False" strings from a text export
            lowered = col.astype(str).str.strip().str.lower()
            mapped = lowered.map({"true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0})
            if mapped.isna().any():
                bad = sorted(set(col[mapped.isna()].astype(str)))[:5]
                raise ValueError(f"column {name!r} holds non-boolean values: {bad}")
            x[name] = mapped.to_numpy(dtype=np.float64)
        else:
            try:
                x[name] = pd.to_numeric(col).to_numpy(dtype=np.float64, na_value=np.nan)
            except (TypeError, ValueError) as e:
                raise ValueError(f"column {name!r} is not numeric: {e}") from e
            allows_null = feature.max_null_fraction > 0
            if not allows_null and np.isnan(x[name]).any():
                raise ValueError(f"column {name!r} holds nulls but the spec allows none")
    return x


def expected_engagement(df: pd.DataFrame) -> np.ndarray:
    """Noise-free expected target ``E[engagement_score | features] = g(x) = sigmoid(z(x))``.

    Reads only feature columns (see the module docstring for z), so it works on any frame with
    the spec's feature columns: generated data, a holdout split or a scoring batch. Categorical
    columns may be plain strings or ``pd.Categorical``; the boolean may be bool or 0/1.

    Args:
        df: frame with (at least) the feature columns named in the module docstring.

    Returns:
        float64 array of shape ``(len(df),)`` with values in (0, 1): expected share of the next
        30 days on which the customer is active.

    Raises:
        ValueError: a needed feature column is missing, a categorical holds a value outside the
            spec's categories, or a column that may not be null holds nulls.
    """
    return _sigmoid(_linear_predictor(_target_inputs(df)))


_TIER_CHURN = {"free": 0.0, "plus": -0.4, "premium": -0.8}


def expected_churn(df: pd.DataFrame) -> np.ndarray:
    """``P(churned_30d = 1 | features) = sigmoid(1.5 * u(x))`` (module docstring), float64 in (0, 1).

    Reads only feature columns, so it works on any frame with them (a holdout split, a batch).

    Raises:
        KeyError: a needed feature column is missing.
        ValueError: ``subscription_tier`` holds a value outside free/plus/premium.
    """
    def num(name: str) -> np.ndarray:
        return pd.to_numeric(df[name]).to_numpy(dtype=np.float64, na_value=0.0)

    tier = df["subscription_tier"].astype(str).map(_TIER_CHURN)
    if tier.isna().any():
        raise ValueError(f"subscription_tier holds values outside {sorted(_TIER_CHURN)}")
    u = (-2.2 + 3.0 * _sigmoid((num("days_since_last_login") - 14.0) / 3.0)
         - 1.6 * np.tanh(num("sessions_per_week") / 8.0) - 1.4 * num("days_active_last_30") / 30.0
         + 0.9 * np.tanh(num("support_tickets_90d") / 3.0) + tier.to_numpy(dtype=np.float64)
         + 1.2 * np.exp(-num("account_age_days") / 60.0) - 0.8 * num("push_open_rate")
         + 0.5 * (num("payment_methods_saved") == 0))
    return _sigmoid(1.5 * u)


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    y = np.asarray(y, dtype=np.float64)
    ss_res = float(np.sum((y - pred) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot == 0.0:
        raise ValueError("engagement_score is constant; R^2 is undefined")
    return 1.0 - ss_res / ss_tot


def _target_values(df: pd.DataFrame) -> np.ndarray:
    name = _spec().target.name
    if name not in df.columns:
        raise ValueError(f"frame has no target column {name!r}")
    y = pd.to_numeric(df[name]).to_numpy(dtype=np.float64, na_value=np.nan)
    if len(y) < 2 or np.isnan(y).any():
        raise ValueError(f"{name!r} needs at least 2 rows and no nulls to compute R^2")
    return y


def best_achievable_r2(df: pd.DataFrame) -> float:
    """R^2 of the true expectation ``expected_engagement(df)`` against ``df["engagement_score"]``.

    This is what a model that knows the generating function exactly scores on these rows: the
    ceiling for any model (up to sampling noise of the rows themselves).

    Args:
        df: frame with the feature columns and ``engagement_score``.

    Returns:
        R^2 = 1 - SS_res / SS_tot as a float (about 0.86 for this generator).

    Raises:
        ValueError: feature columns are missing or invalid (see ``expected_engagement``), the
            target is missing, has nulls, fewer than 2 rows, or is constant.
    """
    y = _target_values(df)
    return _r2(y, expected_engagement(df))


def theoretical_best_r2(df: pd.DataFrame) -> float:
    """Closed-form best R^2: ``1 - mean(Var(y|x)) / Var(y)`` with Var(y|x) from the module docs.

    For the beta-binomial target ``Var(y|x) = g(1-g) (KAPPA + 30) / (30 (KAPPA + 1))``. It agrees
    with ``best_achievable_r2`` up to sampling noise (about +-0.005 at 20,000 rows).

    Args:
        df: frame with the feature columns and ``engagement_score``.

    Returns:
        the expected R^2 of the true function, as a float.

    Raises:
        ValueError: as ``best_achievable_r2``.
    """
    y = _target_values(df)
    g = expected_engagement(df)
    n = HORIZON_DAYS
    noise = g * (1.0 - g) * (KAPPA + n) / (n * (KAPPA + 1.0))
    return 1.0 - float(noise.mean()) / float(y.var())


def _draw_target(rng: np.random.Generator, g: np.ndarray) -> np.ndarray:
    """Beta-binomial share of active days: ``Binomial(30, p) / 30``, ``p ~ Beta(g k, (1-g) k)``."""
    p = rng.beta(g * KAPPA, (1.0 - g) * KAPPA)
    return rng.binomial(HORIZON_DAYS, p) / HORIZON_DAYS
