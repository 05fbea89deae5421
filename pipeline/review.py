"""The review queue: after scoring, the rows most worth a human look, each with its reason.

Three reasons, each measured in standard deviations so they can be ranked together:

* ``disagreement`` (only while a challenger is rolling out): |champion - challenger| over the
  served version's training-prediction standard deviation: the row where the two versions disagree
  most is where the rollout changes most for a customer.
* ``extreme``: |prediction - mean| over the standard deviation of the served version's predictions
  on its holdout (the baseline's ``predictions``): predictions far in the tails.
* ``uncertain``: the row's features lie outside what the served version saw in training (the
  baseline's min and max per numeric feature); the score is the largest distance outside, in
  training standard deviations. A tree model extrapolates flat there, so its prediction is least
  supported by data.

Each row's priority is its largest score; the queue is the ``size`` (default 400) rows of highest
priority over the whole input. Partitions keep their own top ``size`` (``candidates``) and
``merge`` takes the top ``size`` of those, so the queue is exact whatever the partitioning.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

DEFAULT_SIZE = 400
COLUMNS = ["priority", "reason", "detail", "prediction", "model_version", "other_prediction", "other_version"]
DTYPES = {"priority": "float64", "prediction": "float64", "model_version": "int64", "other_prediction": "float64",
          "other_version": "float64"}
"""The numeric columns' dtypes (``other_*`` are NaN without a second version)."""
"""The queue's columns after the id hash column, in order."""


def _std(stats: dict[str, Any] | None) -> float:
    s = float((stats or {}).get("std") or 0.0)
    return s if s > 0 else 1.0


def candidates(ids: np.ndarray, id_column: str, df: pd.DataFrame, prediction: np.ndarray, served: np.ndarray,
               other: np.ndarray | None, other_version: np.ndarray | None, baselines: dict[int, dict[str, Any] | None],
               numeric_features: list[str], size: int = DEFAULT_SIZE) -> pd.DataFrame:
    """The ``size`` rows of one batch with the highest review priority.

    Args:
        ids: the rows' id hashes.
        df: the batch (its numeric feature columns are read).
        prediction, served: each row's served prediction and version.
        other, other_version: the other version's prediction and number (None without a challenger).
        baselines: version -> baseline statistics (``modeling.baseline_statistics``) or None.
        numeric_features: features checked for extrapolation.

    Returns:
        DataFrame with ``id_column`` then ``COLUMNS``; at most ``size`` rows, highest priority first.
    """
    n = len(prediction)
    if n == 0:
        return pd.DataFrame(columns=[id_column, *COLUMNS])
    served = np.asarray(served)
    pred_mean, pred_std = np.zeros(n), np.ones(n)
    outside = np.zeros(n)
    worst = np.full(n, -1)  # index into `checked` of the feature furthest outside
    checked: list[tuple[str, dict[str, Any]]] = []
    columns = {name: df[name].to_numpy(dtype="float64", na_value=np.nan) for name in numeric_features if name in df.columns}
    for number in np.unique(served).tolist():
        rows = np.flatnonzero(served == number)
        base = baselines.get(number) or {}
        stats = base.get("predictions") or {}
        pred_mean[rows] = float(stats.get("mean", np.mean(prediction[rows])))
        pred_std[rows] = _std(stats)
        for name, values in columns.items():
            st = (base.get("features") or {}).get(name)
            if not st or st.get("min") is None:
                continue
            v = values[rows]
            dist = np.where(v > st["max"], v - st["max"], np.where(v < st["min"], st["min"] - v, 0.0)) / _std(st)
            dist = np.where(np.isfinite(dist), dist, 0.0)
            better = dist > outside[rows]
            outside[rows] = np.where(better, dist, outside[rows])
            worst[rows] = np.where(better, len(checked), worst[rows])
            checked.append((name, st))
    scores = {"extreme": np.abs(prediction - pred_mean) / pred_std, "uncertain": outside}
    if other is not None:
        scores["disagreement"] = np.abs(prediction - other) / pred_std
    names = list(scores)
    matrix = np.vstack([scores[k] for k in names])
    best, priority = matrix.argmax(axis=0), matrix.max(axis=0)
    # highest priority first, ties by id hash: the order ``merge`` uses, so a partition keeps
    # exactly the rows the whole input's queue would (the queue is the same whatever the partitioning)
    keep = _top(np.asarray(ids, dtype=object), priority, size)

    def detail(i: int) -> str:  # only for the rows kept
        reason = names[best[i]]
        if reason == "disagreement":
            return f"v{served[i]} says {prediction[i]:.4g}, v{other_version[i]} says {other[i]:.4g}"
        if reason == "uncertain" and worst[i] >= 0:
            name, st = checked[worst[i]]
            return f"{name}={df[name].iloc[i]:.4g} outside training [{st['min']:.4g}, {st['max']:.4g}]"
        return f"prediction {prediction[i]:.4g} is {scores['extreme'][i]:.1f} sd from the training mean {pred_mean[i]:.4g}"

    return pd.DataFrame({
        id_column: np.asarray(ids, dtype=object)[keep],
        "priority": priority[keep],
        "reason": np.asarray(names, dtype=object)[best[keep]],
        "detail": [detail(int(i)) for i in keep],
        "prediction": prediction[keep],
        "model_version": served[keep].astype("int64"),
        "other_prediction": other[keep] if other is not None else np.full(len(keep), np.nan),
        "other_version": (np.asarray(other_version, dtype="float64")[keep] if other_version is not None
                          else np.full(len(keep), np.nan)),
    })


def _top(ids: np.ndarray, priority: np.ndarray, size: int) -> np.ndarray:
    """Indices of the ``size`` rows of highest ``priority``, ties by id hash (NaN priorities
    last): the first ``size`` of ``np.lexsort((ids as str, -priority))``. Only the rows at or above
    the ``size``-th priority are sorted (a batch is 100,000 rows; the queue keeps a few dozen), so
    only they are converted to strings."""
    if len(priority) > size > 0:
        threshold = -np.partition(-priority, size - 1)[size - 1]
        if np.isfinite(threshold):
            rows = np.flatnonzero(priority >= threshold)
            return rows[np.lexsort((ids[rows].astype(str), -priority[rows]))][:size]
    return np.lexsort((ids.astype(str), -priority))[:size]


def merge(parts: list[pd.DataFrame], size: int = DEFAULT_SIZE) -> pd.DataFrame:
    """The top ``size`` rows of several batches' or partitions' candidates (priority, then the id
    hash to break ties the same way whatever the partitioning)."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    both = pd.concat(parts, ignore_index=True)
    # candidates that came through JSON (the ECS tasks' hand-over) lose NaN to None: the same schema either way
    both = both.astype({c: t for c, t in DTYPES.items() if c in both.columns})
    key = both.columns[0]
    return both.sort_values(["priority", key], ascending=[False, True], kind="stable").head(size).reset_index(drop=True)
