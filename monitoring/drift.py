"""Data drift of scored data against the baseline stored with a model version.

For each feature:

* **PSI** (population stability index), ``sum((a - e) * ln(a / e))`` over bins, where ``e`` and
  ``a`` are the baseline's and the current data's share of rows per bin (shares floored at
  ``EPSILON`` so empty bins stay finite). Numeric bins are cut at the baseline's deciles (the
  ``quantiles`` of ``baseline.json``, duplicates merged) plus one bin for nulls; categorical bins
  are the spec's categories plus nulls. Threshold: PSI > 0.2 is a significant shift (Siddiqi,
  *Credit Risk Scorecards*, 2006: < 0.1 stable, 0.1-0.25 moderate, > 0.25 major; 0.2 is the
  common alerting line).
* **KS statistic**: the two-sample Kolmogorov-Smirnov statistic D (``scipy.stats.ks_2samp``)
  between the baseline's sample and a sample of the current values (numeric features only).
  With thousands of rows every p-value is tiny, so the statistic itself is thresholded (D > 0.1).

The score step *collects* mergeable counts (bin counts and a bounded value sample per feature), so
scoring partitions combine exactly; the report step *evaluates* them into a ``DriftReport``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

EPSILON = 1e-4
SAMPLE = 2_000  # current values kept per numeric feature and partition for the KS statistic


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """PSI between two share vectors over the same bins (each sums to 1; floored at ``EPSILON``).

    Raises:
        ValueError: the vectors differ in length.
    """
    e = np.maximum(np.asarray(expected, dtype="float64"), EPSILON)
    a = np.maximum(np.asarray(actual, dtype="float64"), EPSILON)
    if e.shape != a.shape:
        raise ValueError(f"bins differ: {e.shape} vs {a.shape}")
    return float(np.sum((a - e) * np.log(a / e)))


def numeric_edges(quantiles: Iterable[float]) -> np.ndarray:
    """Interior bin edges from the baseline's decile values (min and max dropped, duplicates merged)."""
    q = np.unique(np.asarray(list(quantiles), dtype="float64"))
    return q[1:-1] if q.size > 2 else q[:0]


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin: ``len(edges) + 1`` value bins (right-closed at the edges) then one null bin."""
    v = np.asarray(values, dtype="float64")
    nulls = ~np.isfinite(v)
    idx = np.searchsorted(edges, v[~nulls], side="left")
    counts = np.bincount(idx, minlength=len(edges) + 1).astype("int64")
    return np.append(counts, int(nulls.sum()))


def _expected_numeric(stats: dict[str, Any], edges: np.ndarray) -> np.ndarray:
    sample = np.asarray(stats.get("sample", []), dtype="float64")
    counts = bin_counts(sample, edges)[:-1].astype("float64")
    shares = counts / counts.sum() if counts.sum() else np.full(len(counts), 1 / len(counts))
    nulls = float(stats.get("null_fraction", 0.0))
    return np.append(shares * (1 - nulls), nulls)


def category_codes(col: pd.Series, categories: list[str]) -> np.ndarray:
    """Position of each value in the baseline's ``categories`` (-1: null or another value), shape
    (n,). A ``pd.Categorical`` column (the model's feature matrix, already encoded by the spec)
    is re-mapped through its categories' names (a handful, not the rows); any other column is
    looked up by pandas."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        lookup = np.append(pd.Index(categories).get_indexer(col.cat.categories), -1)  # code -1 (null) -> -1
        return lookup[col.cat.codes.to_numpy()]
    return pd.Categorical(col, categories=categories).codes.astype("int64")


def collect(frame: pd.DataFrame, baseline: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """Mergeable drift counts of ``frame`` (the spec's feature columns; scoring passes the model's
    feature matrix) against ``baseline``.

    Returns:
        ``{"rows": n, "features": {name: {"counts": [...], "sample": [...]}}}``; categorical
        features carry counts per baseline category plus ``other`` and nulls, and no sample.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"rows": int(len(frame)), "features": {}}
    for name, stats in baseline.get("features", {}).items():
        if name not in frame.columns:
            continue
        col = frame[name]
        if stats.get("type") == "categorical":
            cats = list(stats.get("shares", {}))
            codes = category_codes(col, cats)  # -1: null or not a baseline category
            counts = np.bincount(codes[codes >= 0], minlength=len(cats)).tolist()
            nulls = int(col.isna().sum())
            counts += [int(len(col) - sum(counts) - nulls), nulls]
            out["features"][name] = {"counts": counts}
        else:
            v = col.to_numpy(dtype="float64", na_value=np.nan)
            finite = v[np.isfinite(v)]
            sample = finite if finite.size <= SAMPLE else rng.choice(finite, SAMPLE, replace=False)
            out["features"][name] = {"counts": bin_counts(v, numeric_edges(stats.get("quantiles", []))).tolist(),
                                     "sample": sample.tolist()}
    return out


def merge(parts: list[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """Combine ``collect`` outputs of several partitions: counts add, samples are pooled and
    thinned back to ``SAMPLE`` values."""
    if not parts:
        return {"rows": 0, "features": {}}
    rng = np.random.default_rng(seed)
    merged: dict[str, Any] = {"rows": sum(p["rows"] for p in parts), "features": {}}
    for name in parts[0]["features"]:
        feats = [p["features"][name] for p in parts if name in p["features"]]
        entry: dict[str, Any] = {"counts": np.sum([f["counts"] for f in feats], axis=0).astype("int64").tolist()}
        if "sample" in feats[0]:
            pooled = np.concatenate([np.asarray(f["sample"], dtype="float64") for f in feats])
            entry["sample"] = (pooled if pooled.size <= SAMPLE else rng.choice(pooled, SAMPLE, replace=False)).tolist()
        merged["features"][name] = entry
    return merged


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's drift: PSI, KS statistic D (None for categoricals), and whether it crossed a threshold."""

    feature: str
    psi: float
    ks: float | None
    drifted: bool


@dataclass(frozen=True)
class DriftReport:
    """Drift of one scoring run against one version's baseline.

    Attributes:
        version: the version whose baseline was used.
        rows: rows compared.
        features: per-feature drift, most drifted (highest PSI) first.
        drifted_share: share of features that drifted, 0..1.
        psi_threshold, ks_threshold: the thresholds applied (from the model spec).
    """

    version: int
    rows: int
    features: tuple[FeatureDrift, ...]
    drifted_share: float
    psi_threshold: float
    ks_threshold: float

    @property
    def drifted(self) -> list[FeatureDrift]:
        """The features over a threshold, most drifted first."""
        return [f for f in self.features if f.drifted]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {**asdict(self), "features": [asdict(f) for f in self.features]}


def evaluate(counts: dict[str, Any], baseline: dict[str, Any], version: int, psi_threshold: float = 0.2,
             ks_threshold: float = 0.1) -> DriftReport:
    """PSI and KS of collected ``counts`` against ``baseline`` (``baseline.json`` of ``version``).

    A feature drifts when PSI > ``psi_threshold`` or KS > ``ks_threshold``.
    """
    results = []
    for name, got in counts.get("features", {}).items():
        stats = baseline["features"][name]
        actual = np.asarray(got["counts"], dtype="float64")
        total = actual.sum()
        if total == 0:
            continue
        if stats.get("type") == "categorical":
            shares = stats.get("shares", {})
            nulls = float(stats.get("null_fraction", 0.0))
            expected = np.array([v * (1 - nulls) for v in shares.values()] + [0.0, nulls])
            value_psi, ks = psi(expected, actual / total), None
        else:
            edges = numeric_edges(stats.get("quantiles", []))
            value_psi = psi(_expected_numeric(stats, edges), actual / total)
            base, cur = np.asarray(stats.get("sample", [])), np.asarray(got.get("sample", []))
            ks = float(ks_2samp(base, cur).statistic) if base.size and cur.size else None
        drifted = value_psi > psi_threshold or (ks is not None and ks > ks_threshold)
        results.append(FeatureDrift(name, round(value_psi, 6), None if ks is None else round(ks, 6), drifted))
    results.sort(key=lambda f: -f.psi)
    share = sum(f.drifted for f in results) / len(results) if results else 0.0
    return DriftReport(version, int(counts.get("rows", 0)), tuple(results), share, psi_threshold, ks_threshold)

