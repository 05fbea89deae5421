"""Scoring one partition with bounded memory, and combining partitions' statistics exactly.

``score_partition`` reads only its partition's row groups, ``BATCH_ROWS`` rows at a time and only
the columns scoring needs (id, routing key, features, target, split columns; never PII), routes each
row champion/challenger by its sticky hash, and stages its part (the id replaced by its keyed hash)
and its rows of the results catalog. ``score_partitions`` runs partitions in a process pool.
Per-version statistics (``merge_version_stats``) and drift counts merge exactly; a version's
realised metrics leave out the rows on its training side (``stagewise.pipeline.splitting``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stagewise.monitoring import drift as driftlib
from stagewise.pipeline import modeling, review, splitting
from stagewise.pipeline.inputs import ObjectPin, RangedReader, is_parquet, read_table
from stagewise.pipeline.scoring.plan import PartitionPlan
from stagewise.pipeline.scoring.publish import staging_prefix
from stagewise.pipeline.spec import ModelSpec
from stagewise.pipeline.version_files import load_artifact
from stagewise.platform.runtime.aws import AwsClients, AwsTarget
from stagewise.platform.runtime.failpoints import failpoint
from stagewise.platform.runtime.idhash import hash_ids
from stagewise.platform.runtime.objects import ObjectStore
from stagewise.registry import routing
from stagewise.registry.records import ModelRecord, VersionRecord

BATCH_ROWS = 100_000
"""Rows read, scored and written at a time within a partition (bounds the memory of a task)."""


# ------------------------------------------------------------------------------------ the job
@dataclass(frozen=True)
class ScoringJob:
    """Everything a partition needs, picklable so a worker process can score it alone.

    Attributes:
        target: where AWS calls go (workers build their own ``AwsClients`` from it).
        data_bucket: bucket of the prediction parts.
        spec: the model spec (features, id column, target, routing key).
        run_id: the run the parts belong to.
        record: the model record read once at the start of the step (routing is frozen for the run).
        versions: version number -> record, for every version that serves or shadows.
        baselines: version number -> baseline statistics (``baseline.json``) or None.
        source: local path of the input (Parquet or CSV).
        source_name: the input's file name (decides Parquet vs CSV with the magic bytes).
        source_pin: when set, the input is this S3 object version (a Parquet file) and each
            partition reads only its row groups from it by ranged GETs (``inputs.RangedReader``)
            instead of reading ``source``.
        plan: the input's partition plan.
        workdir: folder for the parts before upload.
        id_salt: the secret salt of the id hash (``stagewise.platform.runtime.idhash``): parts carry
            ``<id column>_hash``, never the id. Not shown by ``repr``.
        batch_rows: rows per batch.
    """

    target: AwsTarget
    data_bucket: str
    spec: ModelSpec
    run_id: str
    record: ModelRecord
    versions: dict[int, VersionRecord]
    baselines: dict[int, dict[str, Any] | None]
    source: str
    source_name: str
    plan: PartitionPlan
    workdir: str
    id_salt: bytes = field(repr=False, default=b"")
    batch_rows: int = BATCH_ROWS
    source_pin: ObjectPin | None = None

    @property
    def id_hash_column(self) -> str:
        """The parts' row identifier: ``<id column>_hash``."""
        return f"{self.spec.id_column}_hash"

    @property
    def prefix(self) -> str:
        """Key prefix where the run's prediction parts are staged until all are scored."""
        return staging_prefix(self.spec.name, self.run_id)

    def columns(self) -> list[str]:
        """The input columns scoring reads: id, routing key, features, (if present) target, and
        the columns each version's split reads (to know which rows it trained on)."""
        key = self.spec.rollout.routing_key or self.spec.id_column
        splits = [d.column for d in self.splits().values() if d is not None]
        return list(dict.fromkeys([self.spec.id_column, key, *self.spec.feature_names, self.spec.target.name, *splits]))

    def splits(self) -> dict[int, splitting.SplitDefinition | None]:
        """Version -> its recorded split definition (None: unknown, every row counts as trained on)."""
        return {n: splitting.SplitDefinition.from_lineage(v.lineage) for n, v in self.versions.items()}


ModelLoader = Callable[[VersionRecord], Any]


@dataclass
class _Accumulator:
    stats: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    drift: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    rows: int = 0


def batches(job: ScoringJob, index: int, frame: pd.DataFrame | None = None,
            features: pd.DataFrame | None = None, s3: Any = None) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    """The rows of partition ``index``, ``job.batch_rows`` at a time, as ``(rows, feature matrix)``.

    With ``frame`` (the whole input, already in memory) the partition is one slice of it (and of
    ``features``, its ``modeling.feature_matrix`` if already built); otherwise only the
    partition's row groups and ``job.columns()`` are read, batch by batch, from ``job.source``
    or (``job.source_pin`` set) from S3 by ranged reads through ``s3`` (a boto3 S3 client).
    """
    start, end = job.plan.bounds(index)
    if frame is not None:  # already in memory: one batch (fewer, larger predict calls)
        df = frame.iloc[start:end]
        yield df, features.iloc[start:end] if features is not None else modeling.feature_matrix(df, job.spec)
        return
    for df in _read_batches(job, index, start, end, s3):
        yield df, modeling.feature_matrix(df, job.spec)


def _read_batches(job: ScoringJob, index: int, start: int, end: int, s3: Any = None) -> Iterator[pd.DataFrame]:
    import pyarrow.parquet as pq

    if job.source_pin is not None:  # only this partition's column chunks (and the footer) cross the network
        pf = pq.ParquetFile(RangedReader(s3, job.source_pin), pre_buffer=True)
    elif not is_parquet(Path(job.source), job.source_name):
        df = read_table(Path(job.source).read_bytes(), job.source_name)
        for lo in range(start, end, job.batch_rows):
            yield df.iloc[lo:min(end, lo + job.batch_rows)]
        return
    else:
        pf = pq.ParquetFile(job.source)
    present = set(pf.schema_arrow.names)
    columns = [c for c in job.columns() if c in present]
    for batch in pf.iter_batches(batch_size=job.batch_rows, row_groups=job.plan.row_groups(index), columns=columns):
        yield batch.to_pandas()


def score_partition(job: ScoringJob, index: int, objects: ObjectStore, load_model: ModelLoader,
                    frame: pd.DataFrame | None = None, features: pd.DataFrame | None = None,
                    progress: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
    """Score partition ``index`` of ``job.plan`` and upload its part(s) (``frame`` and
    ``features``: the input and its feature matrix when already in memory, see ``batches``).

    Each key is routed champion/challenger by its sticky hash (``stagewise.registry.routing``);
    each version predicts the rows it serves (shadow: the challenger also predicts every row
    into ``shadow/part-<index>.parquet``, serving none).

    Returns:
        The partition's result (JSON-ready): ``rows_scored``, ``predict_seconds`` (time in
        XGBoost's predict, serving versions), ``per_version`` (version ->
        ``rows``, ``mean_prediction``, ``labeled``, ``r2``, ``rmse``, ``mae``, label sums),
        ``drift_counts`` (version -> ``drift.collect`` counts), ``staged_uri`` and
        ``staged_shadow_uri`` (the staged parts; ``publish_predictions`` publishes them), and
        ``staged_results`` (version -> the staged rows of the results catalog,
        ``stagewise.pipeline.catalog``: id hash, run id, prediction, features, target), ``review``
        (this partition's review candidates, records of ``review.COLUMNS``).

    Raises:
        PartitionError: ``index`` is outside the plan.
        StorageError: a model artifact's sha256 differs from the registered one.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    spec, record = job.spec, job.record
    r = record.rollout
    shadow = r is not None and r.shadow
    key = spec.rollout.routing_key or spec.id_column
    part = f"part-{index:05d}.parquet"
    Path(job.workdir).mkdir(parents=True, exist_ok=True)
    out_path = Path(job.workdir) / part
    shadow_path = Path(job.workdir) / f"shadow-{part}"
    writer = shadow_writer = None
    results: dict[int, Any] = {}  # version -> ParquetWriter of its rows of the results catalog
    result_columns = [*spec.feature_names, spec.target.name]
    splits = job.splits()
    numeric = [f.name for f in spec.features if f.type in ("integer", "float")]
    queue: list[pd.DataFrame] = []  # this partition's review candidates so far
    acc = _Accumulator()
    predict_seconds = 0.0
    start, end = job.plan.bounds(index)
    try:
        for df, X in batches(job, index, frame, features, objects.s3):
            served = routing.assign(record, df[key].to_numpy())
            labels = df[spec.target.name].to_numpy(dtype="float64") if spec.target.name in df.columns else None
            trained = splitting.memberships(splits, df)  # version -> rows it trained on: never evidence
            prediction = np.empty(len(df), dtype="float64")
            in_training = np.empty(len(df), dtype=bool)
            for number in np.unique(served).tolist():
                mask = served == number
                model = load_model(job.versions[number])
                t = time.perf_counter()
                prediction[mask] = modeling.predict(model, X[mask], spec)
                predict_seconds += time.perf_counter() - t
                in_training[mask] = trained[number][mask]
                acc.stats.setdefault(number, []).append(_version_stats(
                    prediction[mask], labels[mask] if labels is not None else None, decision_threshold(job.versions[number], spec),
                    trained[number][mask]))
            ids = hash_ids(df[spec.id_column].to_numpy(), job.id_salt)
            table = pa.table({job.id_hash_column: ids, "prediction": prediction, "model_version": served})
            writer = writer or pq.ParquetWriter(out_path, table.schema)
            writer.write_table(table)
            rows = pa.Table.from_pandas(modeling.conform(df, spec)[[c for c in result_columns if c in df.columns]], preserve_index=False)
            rows = rows.add_column(0, job.id_hash_column, pa.array(ids, pa.string()))
            rows = rows.add_column(1, "run_id", pa.array([job.run_id] * len(df), pa.string()))
            rows = rows.add_column(2, "prediction", pa.array(prediction, pa.float64()))
            rows = rows.add_column(3, "in_training", pa.array(in_training, pa.bool_()))
            if spec.task == "classification":  # the served version's decision at its own threshold
                cut = np.empty(len(df), dtype="float64")
                for number in np.unique(served).tolist():
                    cut[served == number] = decision_threshold(job.versions[number], spec)
                rows = rows.add_column(4, "decision", pa.array(prediction >= cut, pa.bool_()))
            for number in np.unique(served).tolist():
                sub = rows.filter(pa.array(served == number))
                if number not in results:
                    results[number] = pq.ParquetWriter(Path(job.workdir) / f"results-v{number}-{part}", sub.schema)
                results[number].write_table(sub)
            other = other_version = None
            if shadow:
                shadow_pred = modeling.predict(load_model(job.versions[r.challenger]), X, spec)
                acc.stats.setdefault(r.challenger, []).append(
                    {**_version_stats(shadow_pred, labels, decision_threshold(job.versions[r.challenger], spec),
                                      trained[r.challenger]), "shadow": True})
                st = pa.table({job.id_hash_column: ids, "prediction": shadow_pred,
                               "model_version": np.full(len(df), r.challenger, dtype="int64")})
                shadow_writer = shadow_writer or pq.ParquetWriter(shadow_path, st.schema)
                shadow_writer.write_table(st)
                other, other_version = shadow_pred, np.full(len(df), r.challenger)
            elif r is not None and spec.review.size:  # each row as the version that did not serve it sees it
                other_version = np.where(served == r.challenger, record.champion, r.challenger)
                other = np.empty(len(df), dtype="float64")
                for number in np.unique(other_version).tolist():
                    mask = other_version == number
                    other[mask] = modeling.predict(load_model(job.versions[number]), X[mask], spec)
            if spec.review.size:
                queue = [review.merge(queue + [review.candidates(
                    ids, job.id_hash_column, df, prediction, served, other, other_version, job.baselines, numeric,
                    spec.review.size)], spec.review.size)]
            for number, baseline in job.baselines.items():
                if baseline is not None:
                    acc.drift.setdefault(str(number), []).append(driftlib.collect(X, baseline, seed=index))
            acc.rows += len(df)
            if progress:
                progress(acc.rows, end - start, f"partition {index + 1}/{job.plan.count}: {acc.rows:,} of {end - start:,} rows")
    finally:
        for w in (writer, shadow_writer, *results.values()):
            if w is not None:
                w.close()
    if writer is None:  # an empty partition still publishes an (empty) part
        empty = pa.table({job.id_hash_column: pa.array([], pa.string()), "prediction": pa.array([], pa.float64()),
                          "model_version": pa.array([], pa.int64())})
        pq.write_table(empty, out_path)
    objects.put_file(job.data_bucket, f"{job.prefix}/{part}", out_path, "application/vnd.apache.parquet")
    shadow_uri = None
    if shadow and shadow_writer is not None:
        objects.put_file(job.data_bucket, f"{job.prefix}/shadow/{part}", shadow_path, "application/vnd.apache.parquet")
        shadow_uri = f"s3://{job.data_bucket}/{job.prefix}/shadow/{part}"
    staged_results = {}
    for number in sorted(results):
        path = Path(job.workdir) / f"results-v{number}-{part}"
        key = f"{job.prefix}/results/model_version={number}/{part}"
        objects.put_file(job.data_bucket, key, path, "application/vnd.apache.parquet")
        staged_results[str(number)] = f"s3://{job.data_bucket}/{key}"
        path.unlink()
    for p in (out_path, shadow_path):
        p.unlink(missing_ok=True)
    failpoint("score.partition-staged")
    return {
        "index": index,
        "rows_scored": acc.rows,
        "predict_seconds": predict_seconds,
        "per_version": merge_version_stats([{str(n): s} for n, parts in acc.stats.items() for s in parts]),
        "drift_counts": {v: driftlib.merge(parts, seed=index) for v, parts in acc.drift.items()},
        "staged_uri": f"s3://{job.data_bucket}/{job.prefix}/{part}",
        "staged_shadow_uri": shadow_uri,
        "staged_results": staged_results,
        "review": review.merge(queue, spec.review.size).to_dict("records") if queue else [],
    }


def _version_stats(pred: np.ndarray, labels: np.ndarray | None, threshold: float | None = None,
                   trained: np.ndarray | None = None) -> dict[str, Any]:
    """Per-version scoring statistics of one batch; ``label_sum`` and ``label_sum_sq`` (over
    labelled rows) let batches' and partitions' R² be merged exactly
    (R² = 1 - SSE / (Σy² - (Σy)²/n)). With a classifier's ``threshold``: the confusion counts
    at it (``tp``, ``fp``, ``fn``, ``tn``) and the log-loss and Brier sums instead, all additive.

    ``trained`` (bool, per row): the rows the version trained on (``splitting.memberships``).
    They count in ``rows`` and ``mean_prediction`` and, as ``in_training``, are left out of
    ``labeled`` and of every metric: the online gates' evidence is only rows the version has not
    seen (None: every row counts)."""
    stats: dict[str, Any] = {"rows": int(len(pred)), "mean_prediction": float(pred.mean()) if len(pred) else None, "labeled": 0,
                             "in_training": int(trained.sum()) if trained is not None else 0}
    if labels is not None and trained is not None:
        labels = np.where(trained, np.nan, labels)
    if labels is not None and threshold is not None:
        ok = np.isfinite(labels)
        y, p = labels[ok].astype("int64"), np.clip(pred[ok], 1e-15, 1 - 1e-15)
        stats.update(labeled=int(ok.sum()), **dict(zip(("tp", "fp", "fn", "tn"), modeling.confusion(y, p, threshold))),
                     logloss_sum=float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).sum()),
                     brier_sum=float(np.square(p - y).sum()))
    elif labels is not None and len(pred) >= 2:
        ok = np.isfinite(labels)
        if ok.sum() >= 2:
            stats.update(modeling.holdout_metrics(labels[ok], pred[ok]))
            stats["labeled"] = int(stats.pop("samples"))
            stats["label_sum"] = float(labels[ok].sum())
            stats["label_sum_sq"] = float(np.square(labels[ok]).sum())
    return stats


def decision_threshold(version: VersionRecord, spec: ModelSpec) -> float | None:
    """A classifier version's decision threshold (its ``threshold`` metric, chosen at evaluation;
    0.5 for a version registered without one); None for a regressor."""
    if spec.task != "classification":
        return None
    return float(version.metrics.get("threshold", 0.5))


def merge_version_stats(parts: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per-version scoring stats of several batches or partitions combined into the stats of all rows.

    ``rows``, ``labeled`` and ``in_training`` add up; ``mean_prediction`` (by rows), ``mae`` and ``rmse`` (by
    labeled rows) are exact. ``r2`` is exact when every part carries ``label_sum`` and
    ``label_sum_sq`` (the labels' sum and sum of squares), else None (its gates are inconclusive).
    Keys are version numbers as strings.
    """
    merged: dict[str, dict[str, Any]] = {}
    for number in sorted({k for p in parts for k in p}, key=int):
        stats = [p[number] for p in parts if number in p]
        rows = sum(s["rows"] for s in stats)
        labeled = [s for s in stats if s.get("labeled")]
        n = sum(s["labeled"] for s in labeled)
        means = [(s["mean_prediction"], s["rows"]) for s in stats if s.get("mean_prediction") is not None]
        out: dict[str, Any] = {
            "rows": rows,
            "mean_prediction": sum(m * r for m, r in means) / sum(r for _, r in means) if means else None,
            "labeled": n,
            "in_training": sum(s.get("in_training", 0) for s in stats),
        }
        if n and all("tp" in s for s in labeled):  # a classifier: counts and sums add up exactly
            counts = {k: sum(s[k] for s in labeled) for k in ("tp", "fp", "fn", "tn")}
            out.update(counts, **modeling.confusion_rates(*counts.values()),
                       logloss=sum(s["logloss_sum"] for s in labeled) / n, brier=sum(s["brier_sum"] for s in labeled) / n,
                       logloss_sum=sum(s["logloss_sum"] for s in labeled), brier_sum=sum(s["brier_sum"] for s in labeled))
        elif n:
            sse = sum(s["rmse"] ** 2 * s["labeled"] for s in labeled)
            out["mae"] = sum(s["mae"] * s["labeled"] for s in labeled) / n
            out["rmse"] = math.sqrt(sse / n)
            out["r2"] = None
            if all("label_sum" in s and "label_sum_sq" in s for s in labeled):
                total, total_sq = sum(s["label_sum"] for s in labeled), sum(s["label_sum_sq"] for s in labeled)
                sst = total_sq - total * total / n
                out.update(label_sum=total, label_sum_sq=total_sq, r2=1.0 - sse / sst if sst > 0 else None)
        if any(s.get("shadow") for s in stats):
            out["shadow"] = True
        merged[number] = out
    return merged


def merge_partitions(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The results of several partitions (``score_partition``, or the score step's memo entries of
    each partition) as one: rows and predict seconds add, per-version stats and drift counts merge,
    staged part URIs are listed in partition order."""
    results = sorted(results, key=lambda r: r.get("index", 0))
    versions = {v for r in results for v in r.get("drift_counts", {})}
    return {
        "rows_scored": sum(r["rows_scored"] for r in results),
        "predict_seconds": sum(r.get("predict_seconds", 0.0) for r in results),
        "per_version": merge_version_stats([r["per_version"] for r in results]),
        "drift_counts": {v: driftlib.merge([r["drift_counts"][v] for r in results if v in r.get("drift_counts", {})])
                         for v in sorted(versions)},
        "staged_parts": [r["staged_uri"] for r in results if r.get("staged_uri")],
        "staged_shadow_parts": [r["staged_shadow_uri"] for r in results if r.get("staged_shadow_uri")],
    }


# ---------------------------------------------------------------------------- the process pool
_WORKER: dict[str, Any] = {}


def _worker_score(job: ScoringJob, index: int) -> dict[str, Any]:
    """Process-pool entry: score one partition with this worker's own clients and model cache."""
    if _WORKER.get("target") != job.target:
        _WORKER.clear()
        _WORKER.update(target=job.target, objects=ObjectStore(AwsClients(job.target).client("s3")), models={})
    objects: ObjectStore = _WORKER["objects"]
    return score_partition(job, index, objects, lambda v: load_artifact(objects, v, _WORKER["models"]))


def score_partitions(job: ScoringJob, indices: list[int], workers: int,
                     progress: Callable[[int, int, str], None] | None = None) -> list[dict[str, Any]]:
    """Score ``indices`` in a pool of ``workers`` processes (``spawn``), results in index order.

    Raises:
        Exception: the first partition failure, re-raised in this process.
    """
    import multiprocessing

    results: list[dict[str, Any]] = []
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = [pool.submit(_worker_score, job, i) for i in indices]
        for done, fut in enumerate(as_completed(futures), start=1):
            results.append(fut.result())
            if progress:
                progress(done, len(indices), f"{done} of {len(indices)} partitions scored ({workers} processes)")
    except BaseException:
        # a failure, SIGTERM or Ctrl-C: stop now instead of scoring the queued partitions first (what
        # the workers staged is never published; a re-run stages it again)
        workers_alive = list((getattr(pool, "_processes", None) or {}).values())  # shutdown forgets them
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in workers_alive:
            proc.terminate()
        raise
    pool.shutdown()
    return sorted(results, key=lambda r: r["index"])
