"""The first two steps: ``ingest`` (the input into the data bucket, content-addressed) and
``validate`` (the spec's expectation suite, Great Expectations; fails closed)."""

from __future__ import annotations

import json
from pathlib import Path

from stagewise.pipeline import modeling
from stagewise.pipeline.inputs import is_parquet, read_table
from stagewise.pipeline.scoring.plan import PartitionPlan, plan_source, rows_per_partition
from stagewise.pipeline.steps.context import RunContext, ValidationFailed
from stagewise.pipeline.steps.results import Ingested, Validated
from stagewise.platform.runtime.failpoints import failpoint
from stagewise.platform.runtime.objects import S3Uri, sha256_bytes, sha256_file


def ingest(ctx: RunContext) -> Ingested:
    """Put the input in the data bucket under its content hash, ``raw/<model>/<sha256>/<name>``
    (skipped if already there); an ``s3://`` input is read where it is (into memory). A local
    input stays on disk (``ctx.work.data_file``): hashed and uploaded as a stream.

    Raises:
        FileNotFoundError: the local input does not exist.
    """
    src = ctx.data_source
    if src.startswith("s3://"):
        uri = S3Uri.parse(src)
        data = ctx.objects.get_bytes(uri.bucket, uri.key)
        ctx.work.data_bytes = data
        return Ingested(data_uri=str(uri), data_sha256=sha256_bytes(data), data_name=Path(uri.key).name, bytes=len(data),
                        uploaded=False)
    path = Path(src)
    if not path.is_file():
        raise FileNotFoundError(f"input data {path} does not exist; create it with `stagewise data generate --out {path}`")
    st = path.stat()
    digest = sha256_file(path)  # streamed: the input is never held in memory whole here
    key = f"raw/{ctx.spec.name}/{digest}/{path.name}"
    uploaded = ctx.objects.head_sha256(ctx.data_bucket, key) != digest
    if uploaded:
        ctx.objects.put_file(ctx.data_bucket, key, path)  # a multipart upload from disk when large
    ctx.work.data_file, ctx.work.data_file_stamp = path, (st.st_size, st.st_mtime_ns)
    return Ingested(data_uri=f"s3://{ctx.data_bucket}/{key}", data_sha256=digest, data_name=path.name, bytes=path.stat().st_size,
                    uploaded=uploaded)


def validation_prefix(model: str, run_id: str) -> str:
    """Where a run's validation result and Data Docs are published: ``validation/<model>/<run id>``
    (``result.json``, ``data-docs/``, and ``_manifest.json`` once all are there)."""
    return f"validation/{model}/{run_id}"


def validate(ctx: RunContext) -> Validated:
    """Run the spec's expectation suite (Great Expectations) on the input, read as the spec
    declares it (``modeling.conform``; ignored columns dropped), and publish the result and Data
    Docs (``validation_prefix``) as predictions are published: staged under ``staging/``, copied,
    then made visible by a manifest written last (``ObjectStore.publish_staged``; the site's
    ``index.html`` is copied after its pages), so a run killed mid-upload leaves none visible.

    A Parquet input of more than one scoring partition (``scoring.rows_per_partition``) is
    validated partition by partition (``validation_partitions``: one partition's frame at a time,
    the per-expectation results merged exactly, uniqueness and row count counted by DuckDB); a
    CSV, a one-partition input, or a suite with an expectation that cannot be merged exactly is
    validated whole. A frame validated whole is kept in ``ctx.work.frame`` (for train and
    in-process score); after partitioned validation nothing is: the train step reads the input
    whole only if it fits the train task's memory (``training_data``).

    Raises:
        ValidationFailed: the data failed an expectation or could not be read (exit 2).
    """
    from stagewise.pipeline.validation import validate_frame  # deferred: Great Expectations takes ~1.5 s to import
    from stagewise.pipeline.validation_partitions import UnsupportedForPartitions, validate_partitions  # deferred: as above

    ingested: Ingested = ctx.needs("ingest")
    prefix, staged = validation_prefix(ctx.spec.name, ctx.run_id), f"staging/validation/{ctx.spec.name}/{ctx.run_id}"
    data = ctx.work.data
    if data is None:
        raise RuntimeError(f"run {ctx.run_id}: validate needs the ingested input (ingest runs first)")
    per_partition = rows_per_partition(ctx.settings.rows_per_partition)
    plan = _partitioned(data, ingested.data_name, per_partition)
    df = None
    if plan is None:
        try:
            df = read_table(_bytes(data), ingested.data_name)
        except ValueError as e:
            raise _unreadable(ctx, ingested, e) from e
    rows = len(df) if df is not None else plan.rows
    where = f" in {plan.count} partitions" if plan is not None else ""
    ctx.progress(0, 1, f"validating {rows:,} rows{where} against {ctx.spec.name!r} suite")
    docs_dir = ctx.workdir / "data-docs"

    def prepare(frame):
        return modeling.prepare(frame, ctx.spec)  # ignored columns dropped, number-coded categories, whole floats

    report = None
    if plan is not None:
        try:
            report = validate_partitions(data, ingested.data_name, ctx.spec, docs_dir, per_partition=per_partition, prepare=prepare,
                                         run_name=ctx.run_id, progress=ctx.progress)
        except UnsupportedForPartitions:
            df = read_table(_bytes(data), ingested.data_name)  # the suite needs the whole frame at once
        except ValueError as e:  # a row group that cannot be read
            raise _unreadable(ctx, ingested, e) from e
    if report is None:
        df = prepare(df)
        report = validate_frame(df, ctx.spec, docs_dir, run_name=ctx.run_id)
    ctx.objects.delete_keys(ctx.data_bucket, ctx.objects.keys(ctx.data_bucket, f"{staged}/"))  # a killed attempt's leftovers
    ctx.objects.put_bytes(ctx.data_bucket, f"{staged}/result.json", json.dumps(report.result, default=str).encode(), "application/json")
    failpoint("validate.result-written")
    docs_files = ctx.objects.upload_dir(ctx.data_bucket, f"{staged}/data-docs", docs_dir) if docs_dir.exists() else 0
    ctx.objects.publish_staged(ctx.data_bucket, staged, prefix, last=("data-docs/index.html",),
                               on_copied=lambda: failpoint("validate.file-published"))
    result = Validated(
        success=report.success, rows=report.row_count, evaluated=report.evaluated, failed=len(report.failed),
        failed_expectations=[f.description for f in report.failed], result_uri=f"s3://{ctx.data_bucket}/{prefix}/result.json",
        data_docs_uri=f"s3://{ctx.data_bucket}/{prefix}/data-docs/index.html" if docs_files else None,
        data_docs_local=str(report.docs_index) if report.docs_index else None,
    )
    if not report.success:
        raise ValidationFailed(
            f"{len(report.failed)} of {report.evaluated} expectations failed",
            ctx.alert(
                "validation.failed",
                f"Validation failed: {len(report.failed)} of {report.evaluated} expectations",
                "The input failed the expectation suite, so nothing was trained, registered or scored. "
                "What is served is unchanged.\n" + "\n".join(f"  * {f.description}" for f in report.failed),
                "Fix the data (or, if the data is right and the suite is wrong, the spec's features/expectations) "
                "and re-run. Open the Data Docs for the full result.",
                numbers={"rows": report.row_count, "expectations evaluated": report.evaluated, "expectations failed": len(report.failed)},
                links={"input": ingested.data_uri, "validation result": result.result_uri or "-",
                       "data docs": result.data_docs_uri or "-"},
            ),
            result,
        )
    ctx.work.frame = df  # None when validated by partitions: train reads what it needs (``training_data``)
    return result


def _unreadable(ctx: RunContext, ingested: Ingested, e: Exception) -> ValidationFailed:
    """The failure (with its alert) of an input that could not be read."""
    return ValidationFailed(
        str(e),
        ctx.alert(
            "validation.failed", "Validation failed: input unreadable", f"The input {ingested.data_uri} could not be read: {e}",
            "Check the file is a parquet (or CSV) export of the dataset and re-run `stagewise run --data FILE`.",
            numbers={"rows": 0}, links={"input": ingested.data_uri},
        ),
        Validated(success=False, rows=0, evaluated=0, failed=1, failed_expectations=[str(e)]),
    )


def _bytes(data: bytes | Path) -> bytes:
    return data if isinstance(data, bytes) else data.read_bytes()


def _partitioned(data: bytes | Path, name: str, per_partition: int) -> PartitionPlan | None:
    """The input's partition plan when it is Parquet in more than one partition (validated by
    partitions), else None (validated whole; an unreadable input is reported by ``read_table``)."""
    if isinstance(data, Path) and data.stat().st_size == 0:
        return None
    if not data or not is_parquet(data, name):
        return None
    try:
        plan = plan_source(data, name, per_partition)
    except Exception:  # noqa: BLE001 - pyarrow raises several types for a corrupt footer; read_table says why
        return None
    return plan if plan.count > 1 else None
