"""Reproducible synthetic customer-engagement data for the ``engagement`` model spec.

One row per customer of a hybrid social / gig app. Columns are exactly
``load_spec("engagement").columns``: ``customer_id`` (``cus_`` + 10 hex chars, unique by
construction), the PII columns ``name`` and ``email`` (Faker's per-country name lists sampled
with numpy; unique e-mails on the RFC 2606 domains example.com / .org / .net), the 33 features in
spec order, and the target ``engagement_score``. Dtypes follow the spec: integer -> int64,
float -> float64, boolean -> bool, categorical -> pandas' default ``str`` dtype holding only the
spec's categories. The spec's min/max are validation limits; the generated values sit well inside
them; the limits are enforced by clipping, which binds only in the extreme tails (about 0.15% of
rows at account_age_days = 3650, i.e. founding customers; < 0.06% for any other column).

Generative story (all vectorised numpy; see ``_features``):

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

Determinism: numpy ``SeedSequence(seed)`` spawns independent PCG64 streams per block (ids,
rows in chunks of 131,072, e-mail de-duplication), so the same ``(n_rows, seed)`` gives an
identical frame on the same numpy / pyarrow / Faker versions. Speed (2 vCPU): ~0.35 s for
100,000 rows, ~4-6 s and ~0.8 GB peak RSS for 1,000,000 rows.
"""

from __future__ import annotations

import hashlib
import importlib
import unicodedata
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .spec import ModelSpec, load_spec

__all__ = [
    "DEFAULT_SEED",
    "HORIZON_DAYS",
    "KAPPA",
    "SPEC_NAME",
    "CHURN_LABEL",
    "best_achievable_r2",
    "expected_churn",
    "expected_engagement",
    "generate_customers",
    "theoretical_best_r2",
    "write_dataset",
]

DEFAULT_SEED = 7
"""Seed used by ``generate_customers`` when none is given."""

SPEC_NAME = "engagement"
"""The built-in model spec this generator produces data for."""

CHURN_LABEL = "churned_30d"
"""The second label (the ``churn`` model's target): 1 if the customer leaves in the next 30 days."""

HORIZON_DAYS = 30
"""Length of the target window: ``engagement_score`` is active days out of this many."""

KAPPA = 11.0
"""Concentration of the Beta prior on a customer's daily-active probability (see module docs)."""

# Intercept of the linear predictor z (calibrated so that mean engagement is about 0.45).
_Z0 = -2.0

_ID_PREFIX = "cus_"
_ID_BITS = 40  # 10 hex characters
_MAX_ROWS = 1 << _ID_BITS
_CHUNK_ROWS = 1 << 17  # rows generated per chunk (fixed: part of the seed -> data mapping)

_REFERENCE_YEAR = 2025  # "today" for birth years in e-mail addresses

_STR_DTYPE = pd.StringDtype("pyarrow", na_value=np.nan)  # pandas' default ``str`` dtype


# --------------------------------------------------------------------------------------------
# spec helpers
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _spec() -> ModelSpec:
    return load_spec(SPEC_NAME)


def _categories(name: str) -> tuple[str, ...]:
    cats = _spec().feature(name).categories
    assert cats is not None
    return cats


def _bounds(name: str) -> tuple[float, float]:
    f = _spec().feature(name)
    lo = -np.inf if f.min is None else f.min
    hi = np.inf if f.max is None else f.max
    return lo, hi


# --------------------------------------------------------------------------------------------
# small numerical helpers
# --------------------------------------------------------------------------------------------


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


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


def _to_str_series(values: pa.Array) -> pd.Series:
    """A pandas Series of the default ``str`` dtype backed by the given Arrow string array."""
    return pd.Series(pd.array(values, dtype=_STR_DTYPE), copy=False)


def _strings(categories: tuple[str, ...], codes: np.ndarray) -> pd.Series:
    """A pandas ``str`` Series holding ``categories[codes]`` (built in Arrow, no Python loop)."""
    return _to_str_series(pc.take(pa.array(list(categories), type=pa.string()), pa.array(codes)))


# --------------------------------------------------------------------------------------------
# identifiers and PII
# --------------------------------------------------------------------------------------------


def _id_integers(rng: np.random.Generator, n: int) -> np.ndarray:
    """Distinct 40-bit integers for rows ``0..n-1`` (uint64 array of shape (n,)).

    The row index is pushed through a seed-keyed bijection of the 40-bit integers: add a key,
    then three rounds of xor-shift (invertible) and multiplication by an odd constant
    (invertible modulo 2**40), then add a second key. A bijection maps distinct rows to distinct
    values, so ids are unique for any ``n <= 2**40`` by construction, yet look random and differ
    between seeds.
    """
    mask = np.uint64(_MAX_ROWS - 1)
    k0, k1, m1, m2, m3 = (np.uint64(v) for v in rng.integers(0, _MAX_ROWS, size=5, dtype=np.uint64))
    m1, m2, m3 = m1 | np.uint64(1), m2 | np.uint64(1), m3 | np.uint64(1)  # odd => invertible
    x = (np.arange(n, dtype=np.uint64) + k0) & mask
    with np.errstate(over="ignore"):
        for mult, shift in ((m1, 19), (m2, 17), (m3, 21)):
            x ^= x >> np.uint64(shift)
            x = (x * mult) & mask  # uint64 wrap-around, then mod 2**40: exact
        x = (x + k1) & mask
    return x


def _customer_ids(rng: np.random.Generator, n: int) -> tuple[pa.Array, pa.Array]:
    """Unique customer ids ``cus_`` + 10 lowercase hex characters (see ``_id_integers``).

    Returns:
        ``(ids, hex_part)``: Arrow string arrays of length n, e.g. ``cus_3fa9c01b2d`` and
        ``3fa9c01b2d``.
    """
    x = _id_integers(rng, n)
    digits = _ID_BITS // 4
    hex_lut = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    chars = np.empty((n, digits), dtype=np.uint8)
    for j in range(digits):  # one hex digit at a time keeps the temporaries at O(n) bytes
        chars[:, j] = hex_lut[(x >> np.uint64(4 * (digits - 1 - j))) & np.uint64(15)]
    del x
    fixed = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(digits), n, [None, pa.py_buffer(chars)]
    )
    hex_part = fixed.cast(pa.binary()).cast(pa.string())
    return pc.binary_join_element_wise(_ID_PREFIX, hex_part, ""), hex_part


# Faker person locale used for the names of each country (Faker has no en_CA / en_AU person data).
_NAME_LOCALES = {
    "US": "en_US", "GB": "en_GB", "DE": "de_DE", "FR": "fr_FR", "ES": "es_ES",
    "BR": "pt_BR", "MX": "es_MX", "IN": "en_IN", "CA": "en_US", "AU": "en_US",
}  # fmt: skip


def _duplicated(values: pa.Array) -> np.ndarray:
    """bool mask of entries equal to an earlier entry."""
    return _to_str_series(values).duplicated(keep="first").to_numpy()


def _slug(name: str) -> str:
    ascii_ = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return "".join(ch for ch in ascii_.lower() if "a" <= ch <= "z") or "user"


class _NamePools:
    """Faker's name lists for every country, flattened into Arrow arrays for vectorised sampling.

    ``first`` / ``last`` hold every list of every locale back to back; ``first_lists[(country,
    female)]`` and ``last_lists[country]`` give each list's offset into them and its cumulative
    weights (Faker's frequency weights where it has them, uniform otherwise).
    """

    def __init__(self) -> None:
        first: list[str] = []
        last: list[str] = []
        self.first_lists: dict[tuple[int, bool], tuple[int, np.ndarray]] = {}
        self.last_lists: dict[int, tuple[int, np.ndarray]] = {}
        for code, country in enumerate(_categories("country")):
            provider = importlib.import_module(
                f"faker.providers.person.{_NAME_LOCALES[country]}"
            ).Provider
            for kind, target, key in (
                ("first_names_female", first, (code, True)),
                ("first_names_male", first, (code, False)),
                ("last_names", last, code),
            ):
                raw = getattr(provider, kind)
                if isinstance(raw, dict):
                    names, weights = list(raw), np.asarray(list(raw.values()), dtype=float)
                else:
                    names, weights = list(raw), np.ones(len(raw))
                entry = (len(target), np.cumsum(weights) / weights.sum())
                target.extend(names)
                if kind == "last_names":
                    self.last_lists[code] = entry
                else:
                    self.first_lists[key] = entry  # type: ignore[index]
        first_slugs, last_slugs = [_slug(x) for x in first], [_slug(x) for x in last]
        self.first = pa.array(first, pa.string())
        self.last = pa.array(last, pa.string())
        self.first_slug = pa.array(first_slugs, pa.string())
        self.last_slug = pa.array(last_slugs, pa.string())
        self.first_initial = pa.array([x[0] for x in first_slugs], pa.string())
        self.last_initial = pa.array([x[0] for x in last_slugs], pa.string())


@lru_cache(maxsize=1)
def _name_pools() -> _NamePools:
    return _NamePools()


def _sample_list(entry: tuple[int, np.ndarray], u: np.ndarray) -> np.ndarray:
    offset, cdf = entry
    return offset + np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)


_EMAIL_DOMAINS = ("example.com", "example.org", "example.net")  # RFC 2606 reserved domains


def _names_chunk(
    rng: np.random.Generator, country: np.ndarray, gender: np.ndarray, age: np.ndarray
) -> tuple[pa.Array, pa.Array, pa.Array, pa.Array]:
    """Names and e-mail parts for one chunk of rows.

    Returns:
        ``(full_name, base, local, domain)`` Arrow string arrays of the chunk's length: the full
        name ("Jane Doe"), the e-mail local part without digits ("jane.doe"), the local part
        with digits ("jane.doe91") and the domain ("example.com").
    """
    n = len(country)
    pools = _name_pools()
    genders = _categories("gender")
    # nonbinary / undisclosed customers get a female or male first name with equal odds
    female = (gender == genders.index("female")) | (
        (gender != genders.index("male")) & (rng.random(n) < 0.5)
    )
    u_first, u_last = rng.random(n), rng.random(n)
    first_idx = np.empty(n, dtype=np.int64)
    last_idx = np.empty(n, dtype=np.int64)
    for code in range(len(_categories("country"))):
        in_country = country == code
        for is_female in (True, False):
            rows = in_country & (female == is_female)
            first_idx[rows] = _sample_list(pools.first_lists[(code, is_female)], u_first[rows])
        last_idx[in_country] = _sample_list(pools.last_lists[code], u_last[in_country])
    fi, li = pa.array(first_idx), pa.array(last_idx)
    full_name = pc.binary_join_element_wise(
        pc.take(pools.first, fi), pc.take(pools.last, li), " "
    )

    f, la = pc.take(pools.first_slug, fi), pc.take(pools.last_slug, li)
    f1, l1 = pc.take(pools.first_initial, fi), pc.take(pools.last_initial, li)
    patterns = [
        pc.binary_join_element_wise(f, la, "."),  # jane.doe
        pc.binary_join_element_wise(f, la, ""),  # janedoe
        pc.binary_join_element_wise(f1, la, ""),  # jdoe
        pc.binary_join_element_wise(f, la, "_"),  # jane_doe
        pc.binary_join_element_wise(f, l1, ""),  # janed
        pc.binary_join_element_wise(la, f, "."),  # doe.jane
        f,  # jane (always followed by digits)
    ]
    pattern = rng.choice(len(patterns), size=n, p=[0.34, 0.14, 0.14, 0.08, 0.06, 0.06, 0.18])
    base = pc.choose(pa.array(pattern), *patterns)
    # digits: none, a two-digit birth year, or a small number; pattern "jane" always has digits
    kind = rng.choice(3, size=n, p=[0.5, 0.3, 0.2])
    kind[(pattern == len(patterns) - 1) & (kind == 0)] = 1
    birth_year = (_REFERENCE_YEAR - age) % 100
    number = np.where(kind == 1, birth_year, rng.integers(1, 1000, size=n))
    digits = pc.cast(pa.array(number), pa.string())
    two_digit_year = (kind == 1) & (birth_year < 10)  # "05", not "5"
    if two_digit_year.any():
        digits = pc.if_else(
            pa.array(two_digit_year), pc.binary_join_element_wise("0", digits, ""), digits
        )
    digits = pc.if_else(pa.array(kind == 0), "", digits)
    local = pc.binary_join_element_wise(base, digits, "")
    domain = pc.take(
        pa.array(_EMAIL_DOMAINS, pa.string()),
        pa.array(rng.choice(len(_EMAIL_DOMAINS), size=n, p=[0.62, 0.2, 0.18])),
    )
    return full_name, base, local, domain


def _unique_emails(
    rng: np.random.Generator, base: pa.Array, local: pa.Array, domain: pa.Array, id_hex: pa.Array
) -> pa.Array:
    """``local@domain``, made unique as in a real customer table.

    A duplicate of an earlier address gets a fresh 3-5 digit number (up to three rounds); any
    left after that get ``+<customer id hex>`` sub-addressing. Generated local parts never contain
    "+" and customer ids are unique, so the result is unique by construction.
    """
    email = pc.binary_join_element_wise(local, domain, "@")
    for _ in range(3):
        dup = _duplicated(email)
        if not dup.any():
            return email
        rows = np.flatnonzero(dup)
        idx = pa.array(rows)
        digits = pc.cast(pa.array(rng.integers(100, 100_000, size=len(rows))), pa.string())
        fresh = pc.binary_join_element_wise(
            pc.binary_join_element_wise(pc.take(base, idx), digits, ""), pc.take(domain, idx), "@"
        )
        email = _scatter(email, rows, fresh)
    dup = _duplicated(email)
    if dup.any():
        tagged = pc.binary_join_element_wise(
            pc.binary_join_element_wise(local, id_hex, "+"), domain, "@"
        )
        email = pc.if_else(pa.array(dup), tagged, email)
    return email


def _scatter(values: pa.Array, rows: np.ndarray, new: pa.Array) -> pa.Array:
    """``values`` with ``values[rows] = new`` (rows sorted ascending)."""
    position = np.full(len(values), -1, dtype=np.int64)
    position[rows] = np.arange(len(rows))
    mask = position >= 0
    spread = pc.take(new, pa.array(np.where(mask, position, 0)))
    return pc.if_else(pa.array(mask), spread, values)


# --------------------------------------------------------------------------------------------
# features
# --------------------------------------------------------------------------------------------

# Per-country parameters, in the spec's country order US GB DE FR ES BR MX IN CA AU.
_COUNTRY_SHARE = np.array([0.30, 0.07, 0.06, 0.05, 0.04, 0.12, 0.08, 0.16, 0.06, 0.06])
_COUNTRY_AGE_SCALE = np.array([7.5, 7.5, 8.0, 7.5, 7.0, 6.0, 6.0, 5.5, 7.5, 7.5])  # gamma scale, yr
_COUNTRY_IOS = np.array([0.45, 0.30, -0.35, -0.20, -0.60, -1.40, -1.10, -2.10, 0.25, 0.35])
_COUNTRY_WEALTH = np.array([0.35, 0.30, 0.30, 0.20, 0.05, -0.35, -0.30, -0.60, 0.30, 0.30])
_COUNTRY_EMERGING = np.array([0, 0, 0, 0, 0, 1, 1, 1, 0, 0], dtype=bool)


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


# --------------------------------------------------------------------------------------------
# target
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def generate_customers(n_rows: int = 100_000, seed: int = DEFAULT_SEED) -> pd.DataFrame:
    """Generate the engagement dataset: one row per customer, columns in spec order.

    Args:
        n_rows: number of customers (rows), 1 <= n_rows <= 2**40. 100,000 rows take about
            a second; memory is about 1 KB per row at peak.
        seed: any non-negative integer. The same ``(n_rows, seed)`` always gives an identical
            frame (on the same numpy / Faker versions); a different seed gives different rows.

    Returns:
        DataFrame of shape ``(n_rows, 37)`` with columns ``load_spec("engagement").columns``:
        ``customer_id`` (str, ``cus_`` + 10 hex chars, unique), ``name`` and ``email`` (str, PII;
        e-mails unique, on example.com/.org/.net), the 33 features (integer -> int64,
        float -> float64, boolean -> bool, categorical -> str holding only the spec's
        categories; ``app_rating`` and ``avg_job_completion_rating`` hold NaN where the spec
        allows nulls), ``engagement_score`` (float64 in [0, 1], multiples of 1/30) and
        ``churned_30d`` (int64 0/1, the churn model's label). Default RangeIndex.

    Raises:
        TypeError: ``n_rows`` or ``seed`` is not an integer.
        ValueError: ``n_rows < 1``, ``n_rows > 2**40`` or ``seed < 0``.
    """
    for arg, value in (("n_rows", n_rows), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{arg} must be an integer, got {type(value).__name__}")
    n_rows, seed = int(n_rows), int(seed)
    if n_rows < 1:
        raise ValueError(f"n_rows must be at least 1, got {n_rows}")
    if n_rows > _MAX_ROWS:
        raise ValueError(f"n_rows must be at most 2**40 (the customer_id space), got {n_rows}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")

    spec = _spec()
    # Independent streams per block, so that e.g. changing how names are drawn never changes
    # the features; rows are produced in fixed-size chunks (each with its own child stream) to
    # bound the temporaries at O(chunk) while the output arrays are preallocated.
    ss_ids, ss_rows, ss_emails = np.random.SeedSequence(seed).spawn(3)
    n_chunks = -(-n_rows // _CHUNK_ROWS)
    chunk_streams = ss_rows.spawn(n_chunks)

    out: dict[str, np.ndarray] = {}
    for feature in spec.features:
        if feature.type == "categorical":
            dtype: type = np.int8  # codes into feature.categories
        elif feature.type == "boolean":
            dtype = np.bool_
        elif feature.type == "integer":
            dtype = np.int64
        else:
            dtype = np.float64
        out[feature.name] = np.empty(n_rows, dtype=dtype)
    target = np.empty(n_rows, dtype=np.float64)
    names: list[pa.Array] = []
    bases: list[pa.Array] = []
    locals_: list[pa.Array] = []
    domains: list[pa.Array] = []
    for i, stream in enumerate(chunk_streams):
        lo, hi = i * _CHUNK_ROWS, min(n_rows, (i + 1) * _CHUNK_ROWS)
        rng_features, rng_names, rng_target = (
            np.random.default_rng(s) for s in stream.spawn(3)
        )
        x = _features(rng_features, hi - lo)
        for name, values in x.items():
            out[name][lo:hi] = values
        target[lo:hi] = _draw_target(rng_target, _sigmoid(_linear_predictor(x)))
        name, base, local, domain = _names_chunk(rng_names, x["country"], x["gender"], x["age"])
        names.append(name)
        bases.append(base)
        locals_.append(local)
        domains.append(domain)
        del x

    ids, id_hex = _customer_ids(np.random.default_rng(ss_ids), n_rows)
    emails = _unique_emails(
        np.random.default_rng(ss_emails),
        pa.concat_arrays(bases),
        pa.concat_arrays(locals_),
        pa.concat_arrays(domains),
        id_hex,
    )
    del bases, locals_, domains, id_hex

    columns: dict[str, pd.Series | np.ndarray] = {
        spec.id_column: _to_str_series(ids),
        "name": _to_str_series(pa.concat_arrays(names)),
        "email": _to_str_series(emails),
    }
    del names, ids, emails
    for feature in spec.features:
        if feature.type == "categorical":
            assert feature.categories is not None
            columns[feature.name] = _strings(feature.categories, out.pop(feature.name))
        else:
            columns[feature.name] = out.pop(feature.name)
    columns[spec.target.name] = target
    df = pd.DataFrame(columns, copy=False)
    if list(df.columns) != spec.columns:  # pragma: no cover - guards spec / generator drift
        raise RuntimeError(f"generator columns {list(df.columns)} differ from spec {spec.columns}")
    rng_churn = np.random.default_rng([seed, 0xC4A27])  # its own stream: no other column changes
    df[CHURN_LABEL] = (rng_churn.random(n_rows) < expected_churn(df)).astype(np.int64)
    return df


ROW_GROUP_ROWS = 100_000
"""Rows per Parquet row group of generated files: the unit scoring partitions are cut along."""


def write_dataset(df: pd.DataFrame, path: str | Path) -> str:
    """Write ``df`` as a Parquet file (pyarrow, zstd, no index column, row groups of
    ``ROW_GROUP_ROWS`` rows) and return its sha256.

    Args:
        df: frame to write, e.g. from ``generate_customers``.
        path: destination file; parent directories are created.

    Returns:
        lowercase hex sha256 digest (64 chars) of the bytes written, for lineage records.

    Raises:
        OSError: the file cannot be written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(df, preserve_index=False)
    pq.write_table(table, path, compression="zstd", row_group_size=ROW_GROUP_ROWS)
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def with_label_noise(df: pd.DataFrame, share: float, seed: int = DEFAULT_SEED) -> pd.DataFrame:
    """A copy of ``df`` whose target is replaced, on a random ``share`` of rows, by an independent
    draw ``Binomial(30, 0.5) / 30`` — labels broken upstream (a bad join, a logging outage), the
    kind of fault an online gate on realised R² exists to catch. Features are untouched, so the
    data still passes validation while a model's realised R² collapses (measured: about 0.0 at
    ``share=0.5`` for a model with holdout R² 0.85, since the noise labels' mean and spread differ).

    Args:
        df: a frame from ``generate_customers``.
        share: fraction of rows relabelled, in [0, 1].
        seed: RNG seed of the row choice and the new labels.

    Raises:
        ValueError: ``share`` outside [0, 1].
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"label noise share must be in [0, 1], got {share}")
    rng = np.random.default_rng([seed, 0x1ABE1])
    out = df.copy()
    rows = rng.random(len(out)) < share
    target = _spec().target.name
    noisy = rng.binomial(HORIZON_DAYS, 0.5, size=int(rows.sum())) / HORIZON_DAYS
    values = out[target].to_numpy(dtype="float64", copy=True)
    values[rows] = noisy
    out[target] = values
    return out


def parse_drift(text: str) -> dict[str, float]:
    """Parse ``FEATURE=SHIFT,...`` (e.g. ``sessions_per_week=1.5,device_os=0.4``).

    Raises:
        ValueError: a part is not ``name=number`` or names no engagement feature.
    """
    spec = _spec()
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"--drift {part!r}: expected FEATURE=SHIFT")
        try:
            spec.feature(name.strip())
            out[name.strip()] = float(value)
        except KeyError as e:
            raise ValueError(f"--drift {part!r}: no feature {name.strip()!r} in the engagement spec") from e
        except ValueError as e:
            raise ValueError(f"--drift {part!r}: SHIFT must be a number") from e
    return out


def with_drift(df: pd.DataFrame, shifts: dict[str, float], seed: int = DEFAULT_SEED) -> pd.DataFrame:
    """A copy of ``df`` whose population has shifted on the named features.

    A numeric feature moves by ``SHIFT`` standard deviations (``x + SHIFT * std(x)``), clipped to
    the spec's range and rounded for integer features; a categorical or boolean feature gets a
    ``SHIFT`` share of its rows (0..1) reassigned to its last category (``True`` for booleans).
    The target is then redrawn from the documented function of the shifted features (the
    customers changed, and their engagement follows), so the relationship a model learnt still
    holds while the features' distribution is what moved: drift, not broken labels.

    Raises:
        KeyError: a feature is not in the engagement spec.
        ValueError: a categorical/boolean shift is outside [0, 1].
    """
    spec = _spec()
    rng = np.random.default_rng([seed, 0xD21F7])
    out = df.copy()
    for name, shift in shifts.items():
        f = spec.feature(name)
        if f.type in ("categorical", "boolean"):
            if not 0.0 <= shift <= 1.0:
                raise ValueError(f"{name}: a categorical or boolean shift is a share in [0, 1], got {shift}")
            rows = rng.random(len(out)) < shift
            target = True if f.type == "boolean" else (f.categories or ("",))[-1]
            col = out[name].copy()
            col[rows] = target
            out[name] = col
            continue
        values = out[name].to_numpy(dtype="float64", copy=True)
        moved = values + shift * np.nanstd(values)
        lo = f.min if f.min is not None else -np.inf
        hi = f.max if f.max is not None else np.inf
        moved = np.clip(moved, lo, hi)
        if f.type == "integer":
            out[name] = np.rint(moved).astype("int64")
        else:
            out[name] = moved
    out[spec.target.name] = _draw_target(rng, expected_engagement(out))
    return out
