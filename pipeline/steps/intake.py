"""The first two steps: ``ingest`` (the input into the data bucket, content-addressed) and
``validate`` (the spec's expectation suite, Great Expectations; fails closed)."""

from __future__ import annotations

import json
from pathlib import Path

from stagewise.pipeline import modeling
from stagewise.pipeline.inputs import (
    ObjectPin, RangedReader, download_input, is_parquet, local_input, pin_object, read_table,
)
from stagewise.pipeline.scoring.plan import PartitionPlan, plan_source, rows_per_partition
from stagewise.pipeline.steps.context import RunContext, ValidationFailed
from stagewise.pipeline.steps.results import Ingested, Validated
from stagewise.platform.runtime.failpoints import failpoint
from stagewise.platform.runtime.objects import S3Uri, StorageError, sha256_file


def ingest(ctx: RunContext) -> Ingested:
    """Put the input in the data bucket under its content hash, ``raw/<model>/<sha256>/<name>``
    (skipped if already there); an ``s3://`` input stays where it is and is streamed to the
    task's disk (``inputs.download_input``), hashed there. Either way the input is a file on disk
    (``ctx.work.data_file``), never whole in memory.

    Raises:
        FileNotFoundError: the local input does not exist.
        StorageError: the ``s3://`` input does not exist.
    """
    src = ctx.data_source
    if src.startswith("s3://"):
        uri = S3Uri.parse(src)
        path, digest, etag = download_input(ctx.objects, str(uri), ctx.workdir)
        st = path.stat()
        ctx.work.data_file, ctx.work.data_file_stamp = path, (st.st_size, st.st_mtime_ns)
        return Ingested(data_uri=str(uri), data_sha256=digest, data_name=Path(uri.key).name, bytes=st.st_size, uploaded=False,
                        data_etag=etag)
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

    On AWS the partitions are validated by a Distributed Map, in three kinds of task:
    ``ctx.fan_out`` (the first task) only plans and returns ``pending`` with the partition count
    (an input validated whole is validated there and then); ``ctx.partition = (i, n)`` validates
    partition ``i`` alone, reading only its row groups, and leaves its partial result in
    ``ctx.work.validation_partial`` (a row group it cannot read is recorded there, not raised:
    the merge fails the run with it, exit 2, as a local run would); ``ctx.work.validation_partials``
    set (the merge task) merges them exactly and publishes as above.

    Raises:
        ValidationFailed: the data failed an expectation or could not be read (exit 2).
    """
    from stagewise.pipeline.validation import validate_frame  # deferred: Great Expectations takes ~1.5 s to import
    from stagewise.pipeline import validation_partitions as vp  # deferred: as above

    ingested: Ingested = ctx.needs("ingest")
    prefix, staged = validation_prefix(ctx.spec.name, ctx.run_id), f"staging/validation/{ctx.spec.name}/{ctx.run_id}"
    per_partition = rows_per_partition(ctx.settings.rows_per_partition)
    docs_dir = ctx.workdir / "data-docs"

    def prepare(frame):
        return modeling.prepare(frame, ctx.spec)  # ignored columns dropped, number-coded categories, whole floats

    if ctx.partition is not None:
        return _validate_partition(ctx, ingested, per_partition, prepare)
    partials = ctx.work.validation_partials
    report, df, plan = None, None, None
    if partials is not None:  # the merge task of an AWS run's Map
        if unreadable := [d["error"] for d in partials if "error" in d]:  # its partition task could not read it
            raise _unreadable(ctx, ingested, ValueError(unreadable[0]))
        ctx.progress(0, 1, f"merging {len(partials)} partitions' results for {ctx.spec.name!r} suite")
        plan_count = len(partials)
        try:
            report = vp.merge_partials(partials, _open(ctx, input_source(ctx, ingested)), ingested.data_name, ctx.spec, docs_dir,
                                       run_name=ctx.run_id)
        except vp.UnsupportedForPartitions:  # a partition listed more distinct values than GX keeps: validate whole
            path = local_input(ctx.objects, ingested.data_uri, ingested.data_sha256, ingested.data_name, ctx.workdir)
            df, plan_count = read_table(path.read_bytes(), ingested.data_name), 1
        except ValueError as e:
            raise _unreadable(ctx, ingested, e) from e
    else:
        data = ctx.work.data
        if data is None:
            raise RuntimeError(f"run {ctx.run_id}: validate needs the ingested input (ingest runs first)")
        plan = _partitioned(data, ingested.data_name, per_partition)
        if ctx.fan_out and plan is not None and _mergeable(ctx.spec):
            ctx.work.frame = None
            return Validated(success=True, rows=plan.rows, partitions=plan.count, pending=True)
        if plan is None:
            try:
                df = read_table(data.read_bytes(), ingested.data_name)
            except ValueError as e:
                raise _unreadable(ctx, ingested, e) from e
        rows = len(df) if df is not None else plan.rows
        where = f" in {plan.count} partitions" if plan is not None else ""
        ctx.progress(0, 1, f"validating {rows:,} rows{where} against {ctx.spec.name!r} suite")
        if plan is not None:
            try:
                report = vp.validate_partitions(data, ingested.data_name, ctx.spec, docs_dir, per_partition=per_partition,
                                                prepare=prepare, run_name=ctx.run_id, progress=ctx.progress)
            except vp.UnsupportedForPartitions:
                df, plan = read_table(data.read_bytes(), ingested.data_name), None  # the suite needs the whole frame at once
            except ValueError as e:  # a row group that cannot be read
                raise _unreadable(ctx, ingested, e) from e
        plan_count = plan.count if plan is not None else 1
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
        data_docs_local=str(report.docs_index) if report.docs_index else None, partitions=plan_count,
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


def _validate_partition(ctx: RunContext, ingested: Ingested, per_partition: int, prepare) -> Validated:
    """One partition of an AWS run's validation Map: its partial result, for the merge task."""
    from stagewise.pipeline.validation_partitions import validate_partition  # deferred: Great Expectations, ~1.5 s

    index, count = ctx.partition
    ctx.progress(0, 1, f"validating partition {index + 1}/{count} against {ctx.spec.name!r} suite")
    try:
        partial = validate_partition(_open(ctx, input_source(ctx, ingested)), ingested.data_name, ctx.spec, index, count,
                                     per_partition=per_partition, prepare=prepare, run_name=ctx.run_id)
    except ValueError as e:  # a row group that cannot be read, or an input that changed: the merge fails the run
        partial = {"index": index, "count": count, "rows": 0, "results": [], "error": str(e)}
    ctx.work.validation_partial = partial
    return Validated(success="error" not in partial, rows=partial["rows"], evaluated=len(partial["results"]),
                     failed=sum(not r["success"] for r in partial["results"]) + ("error" in partial), partitions=count,
                     pending=True, failed_expectations=[partial["error"]] if "error" in partial else [])


def _mergeable(spec) -> bool:
    """The spec's suite has an exact partition merge for every expectation (else it is validated whole)."""
    from stagewise.pipeline.validation import build_suite  # deferred: Great Expectations, ~1.5 s
    from stagewise.pipeline.validation_partitions import UnsupportedForPartitions, partition_kinds  # deferred: as above

    try:
        partition_kinds(build_suite(spec))
    except UnsupportedForPartitions:
        return False
    return True


def input_source(ctx: RunContext, ingested: Ingested) -> Path | ObjectPin:
    """Where a partition reads the input: the file this process ingested (or the train task
    downloaded), or the source file of a local run; else, for a Parquet input in S3 whose
    recorded sha256 is the ingested one, or whose ETag is the one ingest hashed (an ``s3://``
    input read where it is), the object pinned by its ETag (ranged reads of the partition's row
    groups only; a replaced object fails them); else a verified download to the task's disk.

    Raises:
        StorageError: the downloaded object's bytes differ from the ingested sha256.
    """
    if ctx.work.data is not None:  # ingested by this process: on disk, checked unchanged
        return ctx.work.data
    if not ctx.data_source.startswith("s3://") and Path(ctx.data_source).is_file():
        return Path(ctx.data_source)
    if ingested.data_name.endswith((".parquet", ".pq")):
        try:
            if ingested.data_etag is None:  # uploaded by ingest: its sha256 metadata ties it to the hash
                return pin_object(ctx.objects.s3, ingested.data_uri, ingested.data_sha256)
            pin = pin_object(ctx.objects.s3, ingested.data_uri)  # read where it is: the ETag ingest hashed
            if pin.etag == ingested.data_etag:
                return pin
        except StorageError:  # gone, or no sha256 metadata: download it and verify (which fails if it changed)
            pass
    return local_input(ctx.objects, ingested.data_uri, ingested.data_sha256, ingested.data_name, ctx.workdir)


def _open(ctx: RunContext, source: Path | ObjectPin) -> Path | RangedReader:
    return RangedReader(ctx.objects.s3, source) if isinstance(source, ObjectPin) else source


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


def _partitioned(data: Path, name: str, per_partition: int) -> PartitionPlan | None:
    """The input's partition plan when it is Parquet in more than one partition (validated by
    partitions), else None (validated whole; an unreadable input is reported by ``read_table``)."""
    if data.stat().st_size == 0 or not is_parquet(data, name):
        return None
    try:
        plan = plan_source(data, name, per_partition)
    except Exception:  # noqa: BLE001 - pyarrow raises several types for a corrupt footer; read_table says why
        return None
    return plan if plan.count > 1 else None
