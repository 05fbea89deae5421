"""Reproducible synthetic customer-engagement data for the ``engagement`` model spec.

PLACEHOLDER DOCSTRING
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
    "best_achievable_r2",
    "expected_engagement",
    "generate_customers",
    "theoretical_best_r2",
    "write_dataset",
]

DEFAULT_SEED = 7
"""Seed used by ``generate_customers`` when none is given."""

SPEC_NAME = "engagement"
"""The built-in model spec this generator produces data for."""

HORIZON_DAYS = 30
"""Length of the target window: ``engagement_score`` is active days out of this many."""

KAPPA = 40.0
"""Concentration of the Beta prior on a customer's daily-active probability (see module docs)."""

# Intercept of the linear predictor z (calibrated so that mean engagement is about 0.45).
_Z0 = -1.45

_ID_PREFIX = "cus_"
_ID_BITS = 40  # 10 hex characters
_MAX_ROWS = 1 << _ID_BITS

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


def _strings(categories: tuple[str, ...] | list[str], codes: np.ndarray) -> pd.Series:
    """A pandas ``str`` Series holding ``categories[codes]`` (built in Arrow, no Python loop)."""
    arr = pc.take(pa.array(list(categories), type=pa.string()), pa.array(codes))
    return pd.Series(pd.array(arr, dtype=_STR_DTYPE))


# --------------------------------------------------------------------------------------------
# identifiers and PII
# --------------------------------------------------------------------------------------------


def _customer_ids(rng: np.random.Generator, n: int) -> pd.Series:
    """``cus_`` + 10 lowercase hex characters, unique by construction.

    The row index ``0..n-1`` is pushed through a seed-keyed bijection of the 40-bit integers
    (add a key, then xor-shift / odd-multiply rounds, each invertible modulo 2**40), so distinct
    rows always get distinct ids for any ``n <= 2**40`` while the ids look random.
    """
    mask = np.uint64(_MAX_ROWS - 1)
    k0, k1, m1, m2, m3 = (np.uint64(v) for v in rng.integers(0, _MAX_ROWS, size=5, dtype=np.uint64))
    m1, m2, m3 = m1 | np.uint64(1), m2 | np.uint64(1), m3 | np.uint64(1)  # odd => invertible
    x = (np.arange(n, dtype=np.uint64) + k0) & mask
    with np.errstate(over="ignore"):
        for mult, shift in ((m1, 19), (m2, 17), (m3, 21)):
            x ^= x >> np.uint64(shift)
            x = (x * mult) & mask  # uint64 wrap-around then mod 2**40: exact
        x = (x + k1) & mask
    shifts = np.arange(_ID_BITS - 4, -1, -4, dtype=np.uint64)
    nibbles = ((x[:, None] >> shifts) & np.uint64(15)).astype(np.uint8)
    width = len(_ID_PREFIX) + _ID_BITS // 4
    chars = np.empty((n, width), dtype=np.uint8)
    chars[:, : len(_ID_PREFIX)] = np.frombuffer(_ID_PREFIX.encode(), dtype=np.uint8)
    chars[:, len(_ID_PREFIX) :] = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[nibbles]
    fixed = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), n, [None, pa.py_buffer(chars.tobytes())]
    )
    return pd.Series(pd.array(fixed.cast(pa.binary()).cast(pa.string()), dtype=_STR_DTYPE))


# Faker person locale used for the names of each country (Faker has no en_CA / en_AU person data).
_NAME_LOCALES = {
    "US": "en_US", "GB": "en_GB", "DE": "de_DE", "FR": "fr_FR", "ES": "es_ES",
    "BR": "pt_BR", "MX": "es_MX", "IN": "en_IN", "CA": "en_US", "AU": "en_US",
}  # fmt: skip


def _slug(name: str) -> str:
    ascii_ = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return "".join(ch for ch in ascii_.lower() if "a" <= ch <= "z") or "user"


class _NamePool:
    """Faker's weighted name lists for one locale, flattened into arrays for vectorised sampling."""

    def __init__(self, locale: str) -> None:
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        self.lists: dict[str, tuple[list[str], np.ndarray]] = {}
        for kind in ("first_names_female", "first_names_male", "last_names"):
            raw = getattr(provider, kind)
            if isinstance(raw, dict):
                names, weights = list(raw.keys()), np.asarray(list(raw.values()), dtype=float)
            else:
                names, weights = list(raw), np.ones(len(raw))
            self.lists[kind] = (names, np.cumsum(weights) / weights.sum())


@lru_cache(maxsize=None)
def _name_pool(locale: str) -> _NamePool:
    return _NamePool(locale)


def _names_and_emails(
    rng: np.random.Generator,
    country: np.ndarray,
    gender: np.ndarray,
    age: np.ndarray,
    ids: pd.Series,
) -> tuple[pd.Series, pd.Series]:
    """Full names from Faker's per-country lists and unique e-mails on RFC 2606 example domains."""
    n = len(country)
    countries = _categories("country")
    genders = _categories("gender")
    # Global pools: every (locale, list) pair is appended once, indices are offsets into the pools.
    first_pool: list[str] = []
    last_pool: list[str] = []
    first_idx = np.empty(n, dtype=np.int64)
    last_idx = np.empty(n, dtype=np.int64)
    # nonbinary / undisclosed customers get a female or male first name with equal odds.
    female_list = (gender == genders.index("female")) | (
        (gender != genders.index("male")) & (rng.random(n) < 0.5)
    )
    u_first, u_last = rng.random(n), rng.random(n)
    for c_code, c_name in enumerate(countries):
        pool = _name_pool(_NAME_LOCALES[c_name])
        in_country = country == c_code
        for kind, rows in (
            ("first_names_female", in_country & female_list),
            ("first_names_male", in_country & ~female_list),
        ):
            names, cdf = pool.lists[kind]
            first_idx[rows] = len(first_pool) + np.searchsorted(cdf, u_first[rows], side="right")
            first_pool.extend(names)
        names, cdf = pool.lists["last_names"]
        last_idx[in_country] = len(last_pool) + np.searchsorted(cdf, u_last[in_country], "right")
        last_pool.extend(names)
    first_idx = np.minimum(first_idx, len(first_pool) - 1)  # guard float round-off at cdf == 1
    last_idx = np.minimum(last_idx, len(last_pool) - 1)
    fi, li = pa.array(first_idx), pa.array(last_idx)

    first = pc.take(pa.array(first_pool, pa.string()), fi)
    last = pc.take(pa.array(last_pool, pa.string()), li)
    full_name = pc.binary_join_element_wise(first, last, " ")

    first_slugs = [_slug(s) for s in first_pool]
    last_slugs = [_slug(s) for s in last_pool]
    f = pc.take(pa.array(first_slugs, pa.string()), fi)
    la = pc.take(pa.array(last_slugs, pa.string()), li)
    f1 = pc.take(pa.array([s[0] for s in first_slugs], pa.string()), fi)
    l1 = pc.take(pa.array([s[0] for s in last_slugs], pa.string()), li)
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
    local = pc.choose(pa.array(pattern), *patterns)
    # digits: none, a two-digit birth year, or a small number; pattern "jane" always has digits.
    kind = rng.choice(3, size=n, p=[0.5, 0.3, 0.2])
    kind[(pattern == len(patterns) - 1) & (kind == 0)] = 1
    birth_year = (2025 - age) % 100
    number = np.where(kind == 1, birth_year, rng.integers(1, 1000, size=n))
    digits = pc.cast(pa.array(number), pa.string())
    if (birth_year < 10).any():  # keep two-digit years two digits wide ("05", not "5")
        digits = pc.if_else(
            pa.array((kind == 1) & (birth_year < 10)),
            pc.binary_join_element_wise("0", digits, ""),
            digits,
        )
    digits = pc.if_else(pa.array(kind == 0), "", digits)
    domain_codes = rng.choice(3, size=n, p=[0.62, 0.2, 0.18])
    domain = pc.take(pa.array(["example.com", "example.org", "example.net"]), pa.array(domain_codes))
    local = pc.binary_join_element_wise(local, digits, "")
    email = pc.binary_join_element_wise(local, domain, "@")
    # Make e-mails unique: later duplicates get "+<id hex>" (sub-addressing). No generated local
    # part contains "+", and ids are unique, so the result is unique.
    dup = pd.Series(pd.array(email, dtype=_STR_DTYPE)).duplicated(keep="first").to_numpy()
    if dup.any():
        id_hex = pc.utf8_slice_codeunits(pa.array(ids.array), len(_ID_PREFIX))
        tagged = pc.binary_join_element_wise(
            pc.binary_join_element_wise(local, id_hex, "+"), domain, "@"
        )
        email = pc.if_else(pa.array(dup), tagged, email)
    return (
        pd.Series(pd.array(full_name, dtype=_STR_DTYPE)),
        pd.Series(pd.array(email, dtype=_STR_DTYPE)),
    )
