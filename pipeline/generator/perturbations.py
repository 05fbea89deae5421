"""Perturbations of a generated frame, the faults the pipeline must notice (the README's
"Monitoring: drift, dashboard, alerts" and "The registry: staged rollout" show what catches them).

Inputs: a frame from ``generate_customers`` and a seed; outputs: a changed copy (the input frame
is never modified), each drawn from its own RNG stream keyed by the seed.

* Drift: ``parse_drift`` reads the CLI's ``FEATURE=SHIFT,...`` into ``{feature: shift}``;
  ``with_drift`` moves those features and redraws the target from the true function
  (``labels``), so the features' distribution moves while the relationship a model learnt holds.
* Label noise: ``with_label_noise`` replaces the target on a share of rows by noise, features
  untouched: labels broken upstream.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .common import DEFAULT_SEED, _spec
from .labels import HORIZON_DAYS, _draw_target, expected_engagement


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
