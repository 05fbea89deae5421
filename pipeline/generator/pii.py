"""Identifiers and personal data of the generated customers: ``customer_id``, ``name``, ``email``.

Inputs: numpy ``Generator`` streams and, for names, each row's country, gender and age (the
population's codes, in the spec's category order). Outputs, as Arrow string arrays:

* ``_customer_ids``: ``cus_`` + 10 lowercase hex characters, unique by construction (a seed-keyed
  bijection of the 40-bit integers, ``_id_integers``); hence at most ``_MAX_ROWS`` = 2**40 rows.
* ``_names_chunk``: full names from Faker's per-country name lists, sampled with numpy (Faker's
  frequency weights where it has them), and the parts of an e-mail address derived from them.
* ``_unique_emails``: the addresses, on the RFC 2606 domains example.com / .org / .net, made
  unique as in a real customer table.

The README ("The data and the model spec") says where these columns go; ids leave a scoring run
only as a keyed hash.
"""

from __future__ import annotations

import importlib
import unicodedata
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stagewise.platform.contract import MissingExtra

from .common import _categories, _to_str_series

_ID_PREFIX = "cus_"
_ID_BITS = 40  # 10 hex characters
_MAX_ROWS = 1 << _ID_BITS

_REFERENCE_YEAR = 2025  # "today" for birth years in e-mail addresses


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
            # Faker's module is named by locale at run time and loaded on first use (``_name_pools``
            # is cached), so importing the generator does not import Faker.
            try:
                provider = importlib.import_module(f"faker.providers.person.{_NAME_LOCALES[country]}").Provider
            except ModuleNotFoundError as e:
                raise MissingExtra("the data generator draws names from faker, which is not installed") from e
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
