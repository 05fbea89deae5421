"""Publishing a run's predictions: staged parts become visible all at once, through a manifest.

Each partition stages its part under ``staging/predictions/<model>/run=<run id>/``; when every
partition has been scored ``publish_predictions`` copies them to ``predictions/<model>/run=<run
id>/`` and writes ``_manifest.json`` there last (Athena ignores ``_`` files), then deletes the
staged copies. Readers read through the manifest (``read_predictions``): a run that died before
its manifest has no predictions, and re-running it re-stages and re-publishes the same bytes.
Staged leftovers expire after a day (the bucket's lifecycle rule).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pandas as pd

from stagewise.pipeline.catalog import results_key
from stagewise.platform.runtime.aws import utc_now
from stagewise.platform.runtime.failpoints import failpoint
from stagewise.platform.runtime.objects import ObjectStore, S3Uri, StorageError

MANIFEST = "_manifest.json"


def staging_prefix(model: str, run_id: str) -> str:
    """Where a run's prediction parts wait until every partition is scored (``staging/`` expires
    after a day: ``stagewise.platform.resources``)."""
    return f"staging/predictions/{model}/run={run_id}"


def published_prefix(model: str, run_id: str) -> str:
    """Where a run's published predictions live: ``predictions/<model>/run=<run id>``."""
    return f"predictions/{model}/run={run_id}"


def read_manifest(objects: ObjectStore, bucket: str, model: str, run_id: str) -> dict[str, Any] | None:
    """The manifest of the run's published predictions, or None if the run has not published
    (it did not finish scoring, or it is still running)."""
    try:
        return json.loads(objects.get_bytes(bucket, f"{published_prefix(model, run_id)}/{MANIFEST}"))
    except StorageError:
        return None


def publish_predictions(objects: ObjectStore, bucket: str, model: str, run_id: str, parts: list[dict[str, Any]],
                        memo: dict[str, Any], summary: dict[str, Any], data: dict[str, Any] | None = None,
                        started_at: str | None = None, review_queue: pd.DataFrame | None = None) -> dict[str, Any]:
    """Publish a run's staged prediction parts: copy each to its final key, then write the manifest
    (last), then delete the staged copies. Idempotent: a run that has a manifest is not published
    again (its manifest is returned); one that died half-way copies the same bytes again.

    Args:
        parts: one entry per partition, in index order: ``index``, ``rows_scored``, ``staged_uri``,
            ``staged_shadow_uri`` (None without a shadow challenger), ``staged_results``, as
            ``score_partition`` returns.
        memo: the score step's hand-over (JSON-ready: ``rows_scored``, ``per_version``, ``weights``,
            ``observations``, ``rollout_id``, ``serving``, ``drift_counts``), kept in the manifest so a
            re-run of the run reports the scoring it published, routed as it was then.
        summary: the score step's summary, kept likewise.
        data: the scored input: ``uri``, ``sha256``, ``name`` (what ``stagewise explain`` reads a
            customer's features from).
        started_at: when the run started (ISO 8601), for the results' date partition when the run
            id does not carry its time (``catalog.run_date``).
        review_queue: the run's review queue (``review.merge`` of every partition's candidates),
            written to ``review_queue.parquet`` beside the parts.

    Returns:
        The manifest: ``model``, ``run_id``, ``published_at`` (ISO 8601 UTC), ``rows`` (int),
        ``parts`` and ``shadow_parts`` (``{"key", "rows"}`` in partition order), ``results``
        (``{"key", "version"}``: the run's rows of the results catalog), ``review_queue``
        (``{"key", "rows"}``, when given), ``memo``, ``summary``, ``data``.

    Raises:
        botocore.exceptions.ClientError: a copy or write failed (nothing is visible to readers
            until the manifest is written; re-run to publish).
    """
    existing = read_manifest(objects, bucket, model, run_id)
    if existing is not None:
        discard_staged(objects, bucket, model, run_id)  # an earlier attempt may have died before it did
        return existing
    final = published_prefix(model, run_id)
    published: dict[str, list[dict[str, Any]]] = {"parts": [], "shadow_parts": [], "results": []}
    for part in sorted(parts, key=lambda p: p["index"]):
        for number, uri in sorted((part.get("staged_results") or {}).items(), key=lambda kv: int(kv[0])):
            src = S3Uri.parse(uri)
            key = results_key(model, run_id, int(number), Path(src.key).name, started_at)
            objects.s3.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": src.bucket, "Key": src.key})
            published["results"].append({"key": key, "version": int(number)})
        for field_name, kind, folder in (("staged_uri", "parts", ""), ("staged_shadow_uri", "shadow_parts", "shadow/")):
            if not part.get(field_name):
                continue
            src = S3Uri.parse(part[field_name])
            key = f"{final}/{folder}{Path(src.key).name}"
            objects.s3.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": src.bucket, "Key": src.key})
            published[kind].append({"key": key, "rows": int(part["rows_scored"])})
            failpoint("score.part-published")
    if review_queue is not None:
        key = f"{final}/review_queue.parquet"
        objects.put_bytes(bucket, key, review_queue.to_parquet(index=False), "application/vnd.apache.parquet")
        published["review_queue"] = {"key": key, "rows": len(review_queue)}  # type: ignore[assignment]
    manifest = {
        "schema": 1, "model": model, "run_id": run_id, "published_at": utc_now().isoformat(),
        "rows": sum(p["rows"] for p in published["parts"]), **published, "memo": memo, "summary": summary,
        "data": data,
    }
    if not objects.put_new(bucket, f"{final}/{MANIFEST}", json.dumps(manifest).encode(), "application/json"):
        discard_staged(objects, bucket, model, run_id)  # another attempt of the run published first
        return read_manifest(objects, bucket, model, run_id) or manifest
    failpoint("score.published")
    discard_staged(objects, bucket, model, run_id)
    return manifest


def discard_staged(objects: ObjectStore, bucket: str, model: str, run_id: str) -> int:
    """Delete what the run staged (after publishing); returns the number of objects deleted."""
    return objects.delete_keys(bucket, objects.keys(bucket, staging_prefix(model, run_id) + "/"))


def read_predictions(objects: ObjectStore, bucket: str, model: str, run_id: str, shadow: bool = False) -> pd.DataFrame:
    """A run's published predictions as one frame, in partition order: columns ``<id column>_hash``
    (str: ``stagewise.platform.runtime.idhash.hash_ids`` of the id), ``prediction`` (float64),
    ``model_version`` (int64); ``shadow=True`` reads the shadow challenger's parts instead.

    Raises:
        StorageError: the run has no manifest (it never finished scoring: nothing of it is
            published), or a listed part is missing.
    """
    manifest = read_manifest(objects, bucket, model, run_id)
    if manifest is None:
        raise StorageError(f"run {run_id} of model {model!r} has no published predictions "
                           f"(no s3://{bucket}/{published_prefix(model, run_id)}/{MANIFEST}); it did not finish scoring")
    parts = manifest["shadow_parts" if shadow else "parts"]
    frames = [pd.read_parquet(io.BytesIO(objects.get_bytes(bucket, p["key"]))) for p in parts]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["prediction", "model_version"])
