"""What every part of the engagement generator shares.

Input: the built-in ``engagement`` model spec (``stagewise.pipeline.spec``), the only thing outside
this package the generator reads. Outputs: the spec's name and the default seed, the cached spec and
its category lists (``_spec``, ``_categories``), the logistic function that both the population and
the labels are written in (``_sigmoid``), and the pandas ``str`` dtype every text column of the
frame is built with (``_to_str_series``). The data's story is in the README ("The data and the
model spec").
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
import pyarrow as pa

from ..spec import ModelSpec, load_spec

DEFAULT_SEED = 7
"""Seed used by ``generate_customers`` and the perturbations when none is given."""

SPEC_NAME = "engagement"
"""The built-in model spec this generator produces data for."""

_STR_DTYPE = pd.StringDtype("pyarrow", na_value=np.nan)  # pandas' default ``str`` dtype


@lru_cache(maxsize=1)
def _spec() -> ModelSpec:
    return load_spec(SPEC_NAME)


def _categories(name: str) -> tuple[str, ...]:
    cats = _spec().feature(name).categories
    assert cats is not None
    return cats


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _to_str_series(values: pa.Array) -> pd.Series:
    """A pandas Series of the default ``str`` dtype backed by the given Arrow string array."""
    return pd.Series(pd.array(values, dtype=_STR_DTYPE), copy=False)
