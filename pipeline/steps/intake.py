"""The first two steps: ``ingest`` (the input into the data bucket, content-addressed) and
``validate`` (the spec's expectation suite, Great Expectations; fails closed)."""

from __future__ import annotations

import json
from pathlib import Path

from stagewise.pipeline import modeling
from stagewise.pipeline.inputs import read_table
from stagewise.pipeline.steps.context import RunContext, ValidationFailed
from stagewise.pipeline.steps.results import Ingested, Validated
from stagewise.platform.runtime.failpoints import failpoint
from stagewise.platform.runtime.objects import S3Uri, sha256_bytes


def ingest(ctx: RunContext) -> Ingested:
    """Put the input in the data bucket under its content hash, ``raw/<model>/<sha256>/<name>``
    (skipped if already there); an ``s3://`` input is read where it is.

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
    data = path.read_bytes()
    digest = sha256_bytes(data)
    key = f"raw/{ctx.spec.name}/{digest}/{path.name}"
    uploaded = ctx.objects.head_sha256(ctx.data_bucket, key) != digest
    if uploaded:
        ctx.objects.put_bytes(ctx.data_bucket, key, data)
    ctx.work.data_bytes = data
    return Ingested(data_uri=f"s3://{ctx.data_bucket}/{key}", data_sha256=digest, data_name=path.name, bytes=len(data),
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
    Keeps the frame in ``ctx.work.frame``.

    Raises:
        ValidationFailed: the data failed an expectation or could not be read (exit 2).
    """
    from stagewise.pipeline.validation import validate_frame  # deferred: Great Expectations takes ~1.5 s to import

    ingested: Ingested = ctx.needs("ingest")
    prefix, staged = validation_prefix(ctx.spec.name, ctx.run_id), f"staging/validation/{ctx.spec.name}/{ctx.run_id}"
    try:
        df = read_table(ctx.work.data_bytes or b"", ingested.data_name)
    except ValueError as e:
        raise ValidationFailed(
            str(e),
            ctx.alert(
                "validation.failed", "Validation failed: input unreadable", f"The input {ingested.data_uri} could not be read: {e}",
                "Check the file is a parquet (or CSV) export of the dataset and re-run `stagewise run --data FILE`.",
                numbers={"rows": 0}, links={"input": ingested.data_uri},
            ),
            Validated(success=False, rows=0, evaluated=0, failed=1, failed_expectations=[str(e)]),
        ) from e
    ctx.progress(0, 1, f"validating {len(df):,} rows against {ctx.spec.name!r} suite")
    docs_dir = ctx.workdir / "data-docs"
    ignored = [c for c in ctx.spec.ignored_columns if c in df.columns]  # e.g. another model's label
    df = modeling.conform(df.drop(columns=ignored) if ignored else df, ctx.spec)  # number-coded categories, whole floats
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
    ctx.work.frame = df
    return result
