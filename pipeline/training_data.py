"""Training past one task's memory: how the train step holds its data, and, when the whole input
would not fit the train task, training that streams the input partition by partition.

The mode is chosen per run and recorded in the version's lineage (``lineage["training"]``):

* ``in_memory``: the whole input as one DataFrame, XGBoost fitted on the train split (the default
  whenever the estimate fits).
* ``external_memory``: XGBoost's external-memory training (``xgboost.ExtMemQuantileDMatrix``,
  XGBoost >= 3.0, CPU ``hist``; https://xgboost.readthedocs.io/en/stable/tutorials/external_memory.html)
  fed by an ``xgboost.DataIter`` over the input's partitions (the scoring plan's Parquet row
  groups). Each partition is read (only the spec's columns), conformed as validation read it,
  split by the spec's repeatable split, and only its training rows are handed to XGBoost, which
  quantises them into pages cached on local disk (``<workdir>/xgb-cache``, removed afterwards)
  and streams those pages every boosting round. Every training row is used.
* ``sample``: a seeded sample of the training split, fitted in memory. A training row is kept when
  the keyed BLAKE2b hash of its split key (salt ``sample-<seed>``; ``splitting.unit_hash``) is
  below ``sample_rows / training rows``: the same rows for the same data whatever the file's
  order or partitioning, and about ``sample_rows`` of them.

``auto`` (the spec's default, ``training.mode``) picks ``in_memory`` when ``estimate`` fits the
budget, ``MEMORY_FRACTION`` of the train task's memory less ``LIBRARIES_MIB`` (the stack's
``taskSizes.train.memoryMiB``: the
same decision on a laptop as on AWS, so both executors train the same artifact), else the spec's
``training.beyond_memory`` (default ``external_memory``). A CSV input is read whole (it has no
row groups to stream) and always trains in memory.

In the streaming modes the holdout stays in memory as the columns evaluation needs (features as
``modeling.feature_matrix`` types, id, target, split columns; about ``holdout_fraction`` x rows x
8 bytes x features), and the version's baseline statistics (drift) are computed on a seeded
sample of at most ``BASELINE_ROWS`` training rows.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import xgboost as xgb

from stagewise.pipeline import modeling, splitting
from stagewise.pipeline.inputs import is_parquet, read_table
from stagewise.pipeline.scoring.plan import PartitionPlan, plan_source
from stagewise.pipeline.spec import ModelSpec
from stagewise.platform.contract import native_code

Source = Path | bytes
"""The input: a local file or its bytes (Parquet or CSV)."""

MEMORY_FRACTION = 0.75
"""Share of the train task's memory the in-memory estimate may use, after ``LIBRARIES_MIB``; the
rest is headroom (allocator fragmentation, the model, XGBoost's histograms)."""

LIBRARIES_MIB = 512
"""What the Python process holds before any data: pandas, pyarrow, XGBoost, scikit-learn, Great
Expectations and boto3 imported (~450 MiB measured here), MiB."""

TRAIN_BATCH_ROWS = 250_000
"""Rows per batch when training streams the input (one ``xgboost.DataIter`` batch; the holdout and
baseline pass reads the same batches): a few hundred MB of pandas at a time, whatever the
partition size."""

ESTIMATE_SAMPLE_ROWS = 100_000
"""Rows read (the first row groups) to measure the conformed frame's bytes per row."""

BASELINE_ROWS = 500_000
"""Training rows the streaming modes' baseline statistics are computed on (a seeded sample). By
the Dvoretzky-Kiefer-Wolfowitz inequality (Massart 1990), the empirical CDF of n = 500,000
values is within sqrt(ln(2/0.01) / (2n)) = 0.0023 of the true one with 99% probability: the
decile edges (PSI bins) are off by at most about 0.23 percentile points."""


@dataclass(frozen=True)
class TrainingPlan:
    """How the train step holds its data (``decide``); ``to_lineage`` is what the version records.

    Attributes:
        mode: ``in_memory``, ``external_memory`` or ``sample``.
        reason: one sentence: why this mode (the spec forced it, or the estimate against the budget).
        rows: rows of the whole input.
        estimated_bytes: the in-memory training estimate (``estimate``), bytes; None if not measured.
        budget_bytes: ``MEMORY_FRACTION`` of the train task's memory less ``LIBRARIES_MIB``, bytes.
        sample_rows, seed: the sample policy (``sample`` only).
    """

    mode: str
    reason: str
    rows: int
    estimated_bytes: int | None
    budget_bytes: int
    sample_rows: int | None = None
    seed: int | None = None

    def to_lineage(self) -> dict[str, Any]:
        """JSON-ready, without the fields that do not apply."""
        doc = {"mode": self.mode, "reason": self.reason, "estimated_bytes": self.estimated_bytes, "budget_bytes": self.budget_bytes}
        if self.mode == "sample":
            doc |= {"sample_rows": self.sample_rows, "seed": self.seed}
        return doc


def estimate(bytes_per_row: float, rows: int, n_features: int) -> int:
    """Bytes the in-memory train step adds at its peak, from the conformed input's size: the frame
    (``bytes_per_row`` x ``rows``, pandas' deep ``memory_usage``) plus 24 bytes per feature per
    row (the feature matrix and its train-split copy, 8-byte columns; XGBoost's float32 transfer
    buffer and its 1-byte quantised matrix).

    Calibrated on this machine (``benchmarks/pipeline.py --large``, 2,000,000 generated customers,
    33 features, 377 bytes per conformed row): the train step peaked at 2,796 and 3,001 MiB of RSS
    in two runs, about 2,350-2,550 MiB over the ~450 MiB of libraries; this estimate gives 2,230 MiB
    (1,169 bytes per row), and the budget's headroom (``MEMORY_FRACTION``) covers the rest.
    """
    return int(rows * (bytes_per_row + n_features * 24))


def decide(spec: ModelSpec, rows: int, bytes_per_row: float | None, task_memory_mib: int, streamable: bool) -> TrainingPlan:
    """The training mode of a run (module docstring).

    Args:
        rows: rows of the whole input.
        bytes_per_row: the conformed frame's bytes per row (``bytes_per_row``), None if unknown.
        task_memory_mib: the train task's memory (``taskSizes.train.memoryMiB``), MiB.
        streamable: the input is Parquet (it can be read partition by partition).
    """
    t = spec.training
    budget = int(max(0, task_memory_mib * MEMORY_FRACTION - LIBRARIES_MIB) * 2**20)
    need = estimate(bytes_per_row, rows, len(spec.features)) if bytes_per_row is not None else None
    sample = {"sample_rows": t.sample_rows, "seed": t.seed}

    def plan(mode: str, reason: str) -> TrainingPlan:
        return TrainingPlan(mode, reason, rows, need, budget, **(sample if mode == "sample" else {}))

    if not streamable:
        return plan("in_memory", "the input is CSV: read whole (only Parquet is read by partitions)")
    if t.mode != "auto":
        return plan(t.mode, f"the spec's training.mode is {t.mode}")
    if need is None or need <= budget:
        return plan("in_memory", f"the estimate {_gib(need)} fits the train task's {task_memory_mib:,} MiB "
                                 f"(budget {_gib(budget)})")
    return plan(t.beyond_memory, f"the estimate {_gib(need)} exceeds the train task's {task_memory_mib:,} MiB "
                                 f"(budget {_gib(budget)}): training.beyond_memory is {t.beyond_memory}")


def _gib(n: int | None) -> str:
    return "unknown" if n is None else f"{n / 2**30:.2f} GiB"


def bytes_per_row(source: Source, name: str, spec: ModelSpec, frame: pd.DataFrame | None = None) -> float | None:
    """Bytes per row of the conformed input in pandas (deep ``memory_usage``), measured on its
    first ``ESTIMATE_SAMPLE_ROWS`` rows (of ``frame`` if given, else read from the first row
    groups); None for an empty input."""
    if frame is None:
        if not is_parquet(source, name):
            return None
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(_arrow(source))
        frame = next(pf.iter_batches(batch_size=ESTIMATE_SAMPLE_ROWS), None)
        if frame is None:
            return None
        frame = modeling.prepare(frame.to_pandas(), spec)
    head = frame.iloc[:ESTIMATE_SAMPLE_ROWS]
    return float(head.memory_usage(deep=True).sum()) / len(head) if len(head) else None


# ------------------------------------------------------------------------------- streaming
@dataclass
class Streamed:
    """What streaming training hands the evaluate step.

    Attributes:
        model: the fitted ``XGBRegressor`` / ``XGBClassifier``.
        fit_seconds: XGBoost's own time (building the external-memory matrix and boosting), seconds.
        train_rows: training rows seen (``external_memory``: all fitted; ``sample``: before sampling).
        fitted_rows: rows the model was fitted on.
        holdout: the holdout rows (features typed as ``modeling.feature_matrix``, id, target and
            split columns), index 0..n-1.
        holdout_features: ``modeling.feature_matrix(holdout)``.
        baseline_sample: feature matrix of at most ``BASELINE_ROWS`` training rows (seeded).
        batches: batches read per pass (``TRAIN_BATCH_ROWS`` at most, within partitions).
    """

    model: Any
    fit_seconds: float
    train_rows: int
    fitted_rows: int
    holdout: pd.DataFrame
    holdout_features: pd.DataFrame
    baseline_sample: pd.DataFrame
    batches: int
    details: dict[str, Any] = field(default_factory=dict)


def partition_frames(source: Source, name: str, spec: ModelSpec, plan: PartitionPlan,
                     frame: pd.DataFrame | None = None, extra: tuple[str, ...] = (),
                     batch_rows: int | None = None) -> Iterator[pd.DataFrame]:
    """The input, conformed, in batches of at most ``batch_rows`` rows (default
    ``TRAIN_BATCH_ROWS``) within each partition of ``plan`` (its row groups), in file order, with
    only the columns training reads (``columns``, plus ``extra`` where present): slices of
    ``frame`` when it is already in memory, else read from the Parquet ``source``."""
    batch = batch_rows or TRAIN_BATCH_ROWS
    if frame is not None:
        for i in range(plan.count):
            start, end = plan.bounds(i)
            for lo in range(start, end, batch):
                yield frame.iloc[lo:min(end, lo + batch)]
        return
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(_arrow(source))
    present = set(pf.schema_arrow.names)
    cols = [c for c in [*columns(spec), *extra] if c in present]
    for i in range(plan.count):
        for record_batch in pf.iter_batches(batch_size=batch, row_groups=plan.row_groups(i), columns=cols):
            yield modeling.prepare(record_batch.to_pandas(), spec)


def columns(spec: ModelSpec) -> list[str]:
    """The columns training reads: id, features, target and split columns (never PII)."""
    out = [spec.id_column, *spec.feature_names, spec.target.name]
    return out + [c for c in spec.split_columns if c not in out]


def split_definition(source: Source, name: str, spec: ModelSpec, frame: pd.DataFrame | None = None) -> splitting.SplitDefinition:
    """The spec's split definition of this input (``splitting.define``), reading only the time
    column for a time split (the cut-off comes from the whole column; a hash split reads nothing).

    Raises:
        SplitError: as ``splitting.define``.
    """
    if frame is not None or spec.split.method == "hash":
        return splitting.define(spec, frame if frame is not None else pd.DataFrame())
    import pyarrow.parquet as pq

    column = spec.split.time_column or ""
    present = set(pq.ParquetFile(_arrow(source)).schema_arrow.names)
    if column not in present:
        raise splitting.SplitError(f"the split column {column!r} is not in the data")
    times = pq.read_table(_arrow(source), columns=[column]).to_pandas()
    return splitting.define(spec, times)


class _TrainBatches(xgb.DataIter):
    """``xgboost.DataIter`` over the training rows of each partition (external memory)."""

    def __init__(self, batches: Callable[[], Iterator[tuple[pd.DataFrame, np.ndarray]]], cache: Path) -> None:
        self._batches, self._it = batches, None
        self.rows = 0
        super().__init__(cache_prefix=str(cache / "cache"), release_data=True)

    def next(self, input_data: Callable[..., None]) -> bool:
        if self._it is None:
            self._it = self._batches()
        batch = next(self._it, None)
        if batch is None:
            return False
        X, y = batch
        self.rows += len(X)
        input_data(data=X, label=y)
        return True

    def reset(self) -> None:
        self._it, self.rows = None, 0


def train_streaming(source: Source, name: str, spec: ModelSpec, plan: PartitionPlan, training: TrainingPlan,
                    split: splitting.SplitDefinition, workdir: Path, frame: pd.DataFrame | None = None,
                    progress: Callable[[int, int], None] | None = None, extra: tuple[str, ...] = ()) -> Streamed:
    """Fit the model without the whole input in memory (``training.mode`` ``external_memory`` or
    ``sample``; module docstring).

    One pass collects the holdout (the columns evaluation reads), the baseline sample and, for
    ``sample``, the sampled training rows; ``external_memory`` then streams the training rows to
    XGBoost in partitions. ``extra``: columns to keep in the holdout besides the spec's (the
    champion's split column, for the comparison on rows neither version trained on).

    Raises:
        SplitError: a key or time value cannot be split, or one side of the split is empty.
    """
    cols = [*columns(spec), *(c for c in extra if c not in columns(spec))]
    hold_parts: list[pd.DataFrame] = []
    base_parts: list[pd.DataFrame] = []
    fit_parts: list[tuple[pd.DataFrame, np.ndarray]] = []
    expected_train = max(1.0, plan.rows * (1.0 - split.holdout_fraction))
    base_p = min(1.0, BASELINE_ROWS / expected_train)
    sample_p = min(1.0, (training.sample_rows or 0) / expected_train) if training.mode == "sample" else 1.0
    rng = np.random.default_rng(0)
    train_rows = batches = 0
    key = spec.split.key or spec.id_column
    for df in partition_frames(source, name, spec, plan, frame, extra):
        batches += 1
        hold = splitting.holdout_mask(split, df)
        X = modeling.feature_matrix(df, spec)
        other = [c for c in cols if c in df.columns and c not in X.columns]
        hold_parts.append(pd.concat([df.loc[hold, other], X.loc[hold]], axis=1).reset_index(drop=True))
        X_train = X.loc[~hold]
        train_rows += len(X_train)
        base_parts.append(X_train[rng.random(len(X_train)) < base_p] if base_p < 1.0 else X_train)
        if training.mode == "sample":
            keep = splitting.unit_hash(df.loc[~hold, key], f"sample-{training.seed}") < sample_p
            fit_parts.append((X_train[keep], _labels(df.loc[~hold], spec)[keep]))
        del df, X, X_train
    holdout = pd.concat(hold_parts, ignore_index=True) if hold_parts else pd.DataFrame(columns=cols)
    if train_rows == 0 or len(holdout) == 0:
        raise splitting.SplitError(
            f"the split ({split.describe()}) puts all {plan.rows:,} rows in {'the holdout' if train_rows == 0 else 'training'}: "
            "add rows, or change split.holdout_fraction")
    baseline_sample = pd.concat(base_parts, ignore_index=True)
    del hold_parts, base_parts
    details: dict[str, Any] = {"batches": batches, "partitions": plan.count}
    t0 = time.perf_counter()
    if training.mode == "sample":
        X = pd.concat([x for x, _ in fit_parts], ignore_index=True)
        y = np.concatenate([y for _, y in fit_parts])
        del fit_parts
        model = modeling.train_model(X, y, spec, progress=progress)
        fitted = len(X)
        details |= {"sample_fraction": round(sample_p, 6)}
        del X, y
    else:
        model, fitted = _fit_external(source, name, spec, plan, split, workdir, frame, progress)
    fit_seconds = time.perf_counter() - t0
    return Streamed(model=model, fit_seconds=fit_seconds, train_rows=train_rows, fitted_rows=fitted, holdout=holdout,
                    holdout_features=modeling.feature_matrix(holdout, spec), baseline_sample=baseline_sample,
                    batches=batches, details=details)


def _fit_external(source: Source, name: str, spec: ModelSpec, plan: PartitionPlan, split: splitting.SplitDefinition,
                  workdir: Path, frame: pd.DataFrame | None, progress: Callable[[int, int], None] | None) -> tuple[Any, int]:
    """XGBoost external memory over the partitions' training rows; the sklearn-API model (the
    booster's parameters are the estimator's own ``get_xgb_params``, as ``fit`` would pass them)."""
    estimator = modeling.estimator(spec, progress)
    params = {k: v for k, v in estimator.get_xgb_params().items() if v is not None}
    rounds = estimator.get_num_boosting_rounds()
    callbacks = estimator.get_params().get("callbacks") or []
    max_bin = int(params.get("max_bin") or 256)

    def batches() -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
        for df in partition_frames(source, name, spec, plan, frame):
            train = ~splitting.holdout_mask(split, df)
            yield modeling.feature_matrix(df, spec).loc[train], _labels(df, spec)[train]

    cache = workdir / "xgb-cache"
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    try:
        it = _TrainBatches(batches, cache)
        with native_code():
            matrix = xgb.ExtMemQuantileDMatrix(it, max_bin=max_bin, enable_categorical=True)
            rows = int(matrix.num_row())
            booster = xgb.train(params, matrix, num_boost_round=rounds, callbacks=callbacks)
        del matrix, it
        path = workdir / "external-memory-model.ubj"
        booster.save_model(path)
        model = modeling.model_class(spec.task)()
        model.load_model(path)
        path.unlink()
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return model, rows


def _labels(df: pd.DataFrame, spec: ModelSpec) -> np.ndarray:
    y = df[spec.target.name].to_numpy(dtype="float64")
    return y.astype("int64") if spec.task == "classification" else y


def _arrow(source: Source) -> Any:
    import pyarrow as pa

    return pa.BufferReader(source) if isinstance(source, bytes) else str(source)


def read_frame(source: Source, name: str, spec: ModelSpec) -> pd.DataFrame:
    """The whole input, conformed as validation read it (the in-memory mode).

    Raises:
        ValueError: unreadable input (``inputs.read_table``).
    """
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    return modeling.prepare(read_table(data, name), spec)


def input_plan(source: Source, name: str, per_partition: int) -> PartitionPlan:
    """The input's partition plan (``scoring.plan_source``)."""
    return plan_source(source, name, per_partition)
