"""The customer population: the 33 features of the ``engagement`` spec, drawn from latent factors.

Input: a numpy ``Generator`` and a row count. Output: ``_features`` returns the 33 features as numpy
arrays keyed by spec name, categoricals as int codes into the spec's categories (``customers``
turns them into the frame's columns). Why the data looks like a hybrid social / gig app is told in
the README ("The data and the model spec"); how each column is drawn (all vectorised numpy) is
documented here:

* Demographics: country (US 30%, IN 16%, BR 12%, ... ES 4%), age 18 + Gamma(2, ~7 y) (median
  ~29, younger in IN/BR/MX), gender, city tier, device OS (multinomial logit: iOS-heavy in
  US/GB/CA/AU, Android-heavy in IN/BR/MX, web for older users), primary intent (social for the
  young, gigs for older users and emerging markets), acquisition channel, account age (a third
  recent sign-ups, the rest log-normal with median ~1.4 years).
* Unpublished latent factors: *activity* (drives recency, active days, sessions, messages, likes,
  push opt-in and open rate), *social* and *gig orientation* (tied to primary_intent; drive
  messaging / posting vs. gig applications, listings and support tickets), profile *quality*
  (match rate, profile views, connections, virality), *wealth* (country; subscription tier,
  payment methods, revenue), *creator* and *satisfaction* (app rating, tickets).
* Recency/frequency are consistent: lapsed customers (~17%) have days_since_last_login >= 30 and
  days_active_last_30 = 0; otherwise active days = last-login day + Binomial over the earlier
  days of the window, sessions_per_week = active days x sessions per active day x 7 / 30.
* Heavy tails (negative-binomial / log-normal) for messages, likes, profile views, connections,
  gig applications and transaction_revenue_month (USD: subscription fee 0 / 9.99 / 29.99 +
  completed gig value + in-app purchases; median 0, 99th percentile ~580).
* Nulls only where the spec allows them: ``app_rating`` is NaN for customers who never rated
  (~41%; J-shaped 1-5 stars otherwise), ``avg_job_completion_rating`` is NaN when no gig was
  completed in the last 90 days (~69% overall, ~88% of social-intent customers).
  ``push_open_rate`` is 0 when push notifications are disabled.

The spec's min/max are validation limits; the generated values sit well inside them; the limits
are enforced by clipping, which binds only in the extreme tails (about 0.15% of rows at
account_age_days = 3650, i.e. founding customers; < 0.06% for any other column).
"""

from __future__ import annotations

import numpy as np

from .common import _sigmoid, _spec

# Per-country parameters, in the spec's country order US GB DE FR ES BR MX IN CA AU.
_COUNTRY_SHARE = np.array([0.30, 0.07, 0.06, 0.05, 0.04, 0.12, 0.08, 0.16, 0.06, 0.06])
_COUNTRY_AGE_SCALE = np.array([7.5, 7.5, 8.0, 7.5, 7.0, 6.0, 6.0, 5.5, 7.5, 7.5])  # gamma scale, yr
_COUNTRY_IOS = np.array([0.45, 0.30, -0.35, -0.20, -0.60, -1.40, -1.10, -2.10, 0.25, 0.35])
_COUNTRY_WEALTH = np.array([0.35, 0.30, 0.30, 0.20, 0.05, -0.35, -0.30, -0.60, 0.30, 0.30])
_COUNTRY_EMERGING = np.array([0, 0, 0, 0, 0, 1, 1, 1, 0, 0], dtype=bool)


def _bounds(name: str) -> tuple[float, float]:
    f = _spec().feature(name)
    lo = -np.inf if f.min is None else f.min
    hi = np.inf if f.max is None else f.max
    return lo, hi


def _choice_logits(rng: np.random.Generator, logits: np.ndarray) -> np.ndarray:
    """Sample one category per row from a multinomial logit (Gumbel-max trick).

    Args:
        rng: random generator.
        logits: float array of shape (n, k).

    Returns:
        int64 array of shape (n,) with category codes in ``[0, k)``.
    """
    return np.argmax(logits + rng.gumbel(size=logits.shape), axis=1).astype(np.int64)


def _neg_binomial(rng: np.random.Generator, mean: np.ndarray, shape: float) -> np.ndarray:
    """Gamma-Poisson (negative binomial) counts with the given mean and gamma shape.

    Var = mean + mean**2 / shape: a small shape gives the heavy right tail of real activity counts.
    """
    return rng.poisson(mean * rng.gamma(shape, 1.0 / shape, size=mean.shape)).astype(np.int64)


def _beta_mean(rng: np.random.Generator, mean: np.ndarray, concentration: float) -> np.ndarray:
    """Beta draws parameterised by mean and concentration (a + b)."""
    mean = np.clip(mean, 1e-4, 1 - 1e-4)
    return rng.beta(mean * concentration, (1.0 - mean) * concentration)


def _clip_int(name: str, x: np.ndarray) -> np.ndarray:
    lo, hi = _bounds(name)
    return np.clip(np.rint(x), lo, hi).astype(np.int64)


def _clip_float(name: str, x: np.ndarray, decimals: int) -> np.ndarray:
    lo, hi = _bounds(name)
    return np.clip(np.round(x.astype(np.float64), decimals), lo, hi)


def _features(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """All 33 features as numpy arrays (categoricals as int codes into the spec's categories)."""
    demo, latent, beh, hyb = rng.spawn(4)
    out: dict[str, np.ndarray] = {}

    # ---- demographics -------------------------------------------------------------------
    country = demo.choice(10, size=n, p=_COUNTRY_SHARE)
    age_f = 18.0 + demo.gamma(2.0, _COUNTRY_AGE_SCALE[country])  # median ~30, long right tail
    age = _clip_int("age", age_f)
    gender = demo.choice(4, size=n, p=[0.47, 0.45, 0.03, 0.05])  # female male nonbinary undiscl.
    emerging = _COUNTRY_EMERGING[country]
    tier_p = np.where(emerging[:, None], [0.36, 0.36, 0.28], [0.47, 0.34, 0.19])
    city_tier = _choice_logits(demo, np.log(tier_p))
    a30 = (age - 30.0) / 10.0  # age in decades around 30
    os_logits = np.stack(
        [
            _COUNTRY_IOS[country] - 0.15 * a30,  # ios
            np.zeros(n),  # android
            -1.9 + 0.45 * a30 + 0.3 * (city_tier == 0),  # web: older, desktop users
        ],
        axis=1,
    )
    device_os = _choice_logits(demo, os_logits)
    intent_logits = np.stack(
        [
            0.35 - 0.35 * a30,  # social: the young
            -0.75 + 0.45 * a30 + 0.45 * emerging + 0.25 * (city_tier == 2),  # gigs
            -0.55 + 0.05 * a30,  # both
        ],
        axis=1,
    )
    intent = _choice_logits(demo, intent_logits)
    channel_logits = np.stack(
        [
            np.zeros(n),  # organic
            -0.45 - 0.2 * a30,  # paid_social
            -0.9 + 0.2 * (intent == 1),  # referral
            -0.5 + 0.3 * (device_os == 0) - 2.0 * (device_os == 2),  # app_store
            -1.2 - 0.5 * a30 + 0.3 * (intent == 0),  # influencer
        ],
        axis=1,
    )
    channel = _choice_logits(demo, channel_logits)
    # tenure: a third joined recently, the rest follow a log-normal (median ~1.4 years)
    recent = demo.random(n) < 0.33
    tenure = np.where(recent, demo.exponential(75.0, n), demo.lognormal(np.log(520.0), 0.7, n))
    tenure = np.minimum(tenure, (age - 13) * 365.0)  # nobody signed up before turning 13
    account_age = _clip_int("account_age_days", tenure)

    # ---- latent factors (never published) ------------------------------------------------
    activity = (
        latent.standard_normal(n)
        + 0.12 * np.log1p(account_age / 90.0)
        + np.array([0.0, -0.2, 0.25, 0.05, -0.1])[channel]
        - 0.05 * a30
        - 0.2
    )
    social = np.array([0.8, -0.9, 0.2])[intent] + 0.6 * latent.standard_normal(n) - 0.15 * a30
    gig = np.array([-1.1, 1.0, 0.35])[intent] + 0.6 * latent.standard_normal(n) + 0.1 * a30
    quality = latent.standard_normal(n)  # profile attractiveness / quality
    wealth = latent.standard_normal(n) + _COUNTRY_WEALTH[country] + 0.1 * a30
    creator = latent.standard_normal(n)  # propensity to post content
    satisfaction = latent.standard_normal(n) + 0.3 * activity
    gig_pos = np.maximum(gig, 0.0)
    u = 0.7 * activity + 0.6 * wealth + 0.35 * gig_pos + latent.logistic(size=n)
    tier = np.digitize(u, [1.35, 2.75])  # 0 free, 1 plus, 2 premium

    # ---- recency and frequency -----------------------------------------------------------
    # last login: lapsed customers (>= 30 days) vs. a geometric gap for current ones.
    lapsed = beh.random(n) < _sigmoid(-2.1 - 1.3 * activity + 0.3 * (tier == 0))
    lapsed &= account_age >= 30
    gap_mean = np.exp(0.6 - 0.9 * activity)
    gap = beh.geometric(1.0 / (1.0 + gap_mean)) - 1
    since_login = np.where(lapsed, 30 + beh.exponential(60.0, n), np.minimum(gap, 29))
    since_login = np.minimum(_clip_int("days_since_last_login", since_login), account_age)
    # active days in the trailing 30: the last-login day plus Binomial over the earlier days
    window = np.clip(np.minimum(29, account_age) - since_login, 0, None)
    p_day = _sigmoid(-0.5 + 1.5 * activity + 0.15 * social)
    days_active = np.where(lapsed, 0, 1 + beh.binomial(window, p_day))
    days_active = _clip_int("days_active_last_30", days_active)
    per_day = np.exp(0.35 + 0.35 * activity + 0.1 * social + 0.5 * beh.standard_normal(n))
    sessions = days_active * per_day * 7.0 / 30.0
    sessions = _clip_float("sessions_per_week", sessions, 2)
    minutes = np.exp(np.log(8.0) + 0.2 * activity + 0.25 * social + 0.5 * beh.standard_normal(n))
    minutes = _clip_float("avg_session_minutes", np.where(sessions > 0, minutes, 0.0), 1)
    time_in_app = np.log1p(sessions * minutes)  # log minutes per week

    # ---- social behaviour ----------------------------------------------------------------
    msg_rate = np.exp(-1.2 + 0.55 * time_in_app + 0.7 * social + 0.35 * gig_pos)
    msg_rate *= beh.gamma(1.5, 1 / 1.5, n)
    sent = beh.poisson(msg_rate)
    received = beh.poisson(msg_rate * np.exp(0.1 + 0.35 * quality + 0.3 * beh.standard_normal(n)))
    posts = _neg_binomial(
        beh, np.exp(-1.7 + 0.4 * time_in_app + 0.6 * social + 0.6 * creator), 0.8
    )
    likes = _neg_binomial(beh, np.exp(0.1 + 0.6 * time_in_app + 0.5 * social), 1.2)
    comments = _neg_binomial(
        beh, np.exp(-1.9 + 0.5 * time_in_app + 0.5 * social + 0.3 * creator), 1.0
    )
    push_on = beh.random(n) < _sigmoid(
        np.array([0.1, 1.3, -0.8])[device_os] + 0.35 * activity
    )
    open_rate = np.where(push_on, _beta_mean(beh, _sigmoid(-1.7 + 0.6 * activity), 10.0), 0.0)
    invites = _neg_binomial(
        beh,
        np.exp(-1.3 + 0.35 * activity + 0.3 * social + 1.0 * (channel == 2))
        * (1.0 + np.log1p(account_age / 365.0)),
        0.6,
    )
    tickets = _neg_binomial(
        beh, np.exp(-2.4 + 0.6 * gig_pos + 0.2 * activity + 0.3 * (tier > 0) - 0.4 * satisfaction),
        1.0,
    )
    pay_methods = beh.poisson(
        np.exp(-1.3 + 0.9 * (tier == 1) + 1.3 * (tier == 2) + 0.5 * gig_pos + 0.2 * wealth)
    )
    # app rating: ~40% never rate; ratings are J-shaped (many 5s, a bump at 1)
    rated = beh.random(n) < _sigmoid(0.0 + 0.45 * activity + 0.5 * np.abs(satisfaction))
    stars = 1 + np.digitize(satisfaction + 0.8 * beh.logistic(size=n), [-1.9, -1.4, -0.9, -0.15])
    app_rating = np.where(rated, stars.astype(np.float64), np.nan)

    # ---- hybrid social / gig ---------------------------------------------------------------
    female, male = gender == 0, gender == 1
    match_rate = _beta_mean(
        hyb, _sigmoid(-1.5 + 0.6 * quality + 0.25 * social + 0.6 * female - 0.3 * male), 8.0
    )
    swipe_ratio = _beta_mean(
        hyb, _sigmoid(-0.6 + 0.55 * male - 0.5 * female - 0.3 * quality), 6.0
    )
    views = np.exp(
        1.2 + 0.5 * time_in_app + 0.7 * quality + 0.3 * social + 0.3 * gig_pos
        + 0.8 * hyb.standard_normal(n)
    )
    views = hyb.poisson(views)
    connections = np.exp(
        2.6 + 0.45 * np.log1p(account_age / 30.0) + 0.35 * activity + 0.4 * social
        + 0.35 * quality + 0.7 * hyb.standard_normal(n)
    )
    virality = 100.0 * _beta_mean(
        hyb, _sigmoid(-2.3 + 0.5 * quality + 0.5 * creator + 0.2 * np.log1p(posts)), 5.0
    )
    applications = _neg_binomial(hyb, np.exp(-0.2 + 1.3 * gig + 0.3 * activity), 0.9)
    listings = _neg_binomial(
        hyb, np.exp(-1.9 + 1.2 * gig + 0.5 * (tier == 2) + 0.3 * wealth), 0.7
    )
    completed = hyb.poisson(0.3 * applications + 1.2 * listings + 0.03)  # last 90 days
    job_quality = 4.45 + 0.3 * hyb.standard_normal(n) + 0.1 * satisfaction
    job_rating = job_quality + 0.7 * hyb.standard_normal(n) / np.sqrt(np.maximum(completed, 1))
    job_rating = np.where(completed > 0, np.clip(job_rating, 1.0, 5.0), np.nan)
    # revenue (USD / month): subscription + completed gig value + in-app purchases
    sub_fee = np.array([0.0, 9.99, 29.99])[tier]
    gigs_month = hyb.poisson(completed / 3.0)
    gig_value = gigs_month * np.exp(
        np.log(60.0) + 0.4 * wealth + hyb.standard_normal(n) / np.sqrt(np.maximum(gigs_month, 1))
    )
    buys = hyb.random(n) < _sigmoid(-2.0 + 0.8 * wealth + 0.5 * social + 0.3 * activity)
    purchases = np.where(buys, hyb.lognormal(np.log(8.0), 0.8, n), 0.0)
    revenue = sub_fee + gig_value + purchases

    out["age"] = age
    out["gender"] = gender
    out["country"] = country
    out["city_tier"] = city_tier
    out["device_os"] = device_os
    out["subscription_tier"] = tier
    out["acquisition_channel"] = channel
    out["primary_intent"] = intent
    out["account_age_days"] = account_age
    out["sessions_per_week"] = sessions
    out["avg_session_minutes"] = minutes
    out["days_active_last_30"] = days_active
    out["messages_sent_week"] = _clip_int("messages_sent_week", sent)
    out["messages_received_week"] = _clip_int("messages_received_week", received)
    out["posts_created_month"] = _clip_int("posts_created_month", posts)
    out["likes_given_week"] = _clip_int("likes_given_week", likes)
    out["comments_made_week"] = _clip_int("comments_made_week", comments)
    out["push_notifications_enabled"] = push_on
    out["push_open_rate"] = _clip_float("push_open_rate", open_rate, 3)
    out["friends_invited"] = _clip_int("friends_invited", invites)
    out["support_tickets_90d"] = _clip_int("support_tickets_90d", tickets)
    out["days_since_last_login"] = since_login
    out["payment_methods_saved"] = _clip_int("payment_methods_saved", pay_methods)
    out["app_rating"] = app_rating
    out["match_success_rate"] = _clip_float("match_success_rate", match_rate, 4)
    out["profile_views_received_week"] = _clip_int("profile_views_received_week", views)
    out["gig_applications_sent_month"] = _clip_int("gig_applications_sent_month", applications)
    out["gig_listings_active"] = _clip_int("gig_listings_active", listings)
    out["transaction_revenue_month"] = _clip_float("transaction_revenue_month", revenue, 2)
    out["content_virality_score"] = _clip_float("content_virality_score", virality, 2)
    out["swipe_like_ratio"] = _clip_float("swipe_like_ratio", swipe_ratio, 4)
    out["avg_job_completion_rating"] = _clip_float("avg_job_completion_rating", job_rating, 2)
    out["total_connections"] = _clip_int("total_connections", connections)
    return out
