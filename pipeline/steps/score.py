"""The ``score`` step: every row routed champion/challenger and scored, partition by partition
(``stagewise.pipeline.scoring``), then published through a manifest; and what the rollout gates
see of it (``challenger_observations``).

Which partitions: ``ctx.partition = (index, count)`` (an AWS Map task) scores that one and leaves
its part staged (the report group publishes them all); otherwise all of them, in a process pool
of ``min(partitions, cores, scoringConcurrency)`` workers when there is more than one, else
in-process (reusing the validated frame in memory), and then publishes them. Without the frame,
partitions read their row groups from the local input file or, for a Parquet input in S3 that
carries the ingested sha256, by ranged reads of that object, pinned by its ETag
(``inputs.RangedReader``): no partition downloads the whole file. A CSV, or an object without that sha256 recorded, is
downloaded once and verified (``inputs.local_input``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from stagewise.pipeline import review, scoring
from stagewise.pipeline.inputs import ObjectPin, RangedReader
from stagewise.pipeline.spec import ModelSpec
from stagewise.pipeline.steps.context import RunContext
from stagewise.pipeline.steps.intake import input_source
from stagewise.pipeline.steps.results import Ingested, Scored
from stagewise.platform.runtime.idhash import read_id_salt

SCORED_KEYS = ("r2", "rmse", "mae", "precision", "recall", "logloss", "brier")
"""Metrics measured on scored rows that carry the label and that the version did not train on
(regression: R², RMSE, MAE; classification: precision and recall at the version's threshold, log
loss, Brier score): the online gates' inputs."""


def score(ctx: RunContext) -> Scored:
    """Score every record as the registry says (one registry read: routing is frozen for the run),
    each key routed by its sticky hash (shadow mode: the challenger scores every record into
    separate parts but serves none), artifacts' sha256 verified; stage a part per partition and
    publish them (``scoring.publish_predictions``: parts to their final keys, the manifest last).
    With labels present, measures each version on the rows it scored and did not train on.

    Idempotent per run id: if the run's predictions are already published (an earlier attempt
    died later on), nothing is scored again; the manifest's result is returned, routed as it was.

    Raises:
        RuntimeError: the model has no champion.
        PartitionError: the given count differs from the input's plan (the input changed).
    """
    spec, given = ctx.spec, ctx.partition
    ingested: Ingested = ctx.needs("ingest")
    if given is None and (done := scoring.read_manifest(ctx.objects, ctx.data_bucket, spec.name, ctx.run_id)):
        # an earlier attempt of this run published: report that scoring, routed as it was then
        # (the rollout controller may have moved since), instead of scoring again
        scoring.discard_staged(ctx.objects, ctx.data_bucket, spec.name, ctx.run_id)  # if it died before it did
        return Scored.model_validate({**done["memo"], "already_published": True})
    record = ctx.registry.get_model(spec.name)
    if record.champion is None:
        raise RuntimeError(f"model {spec.name!r} has no champion to score with; run `stagewise run` to train one")
    r = record.rollout
    numbers = sorted({record.champion, *([r.challenger] if r else [])})
    versions = {n: ctx.version(n) for n in numbers}
    frame = ctx.work.frame
    source, pin = _input_source(ctx, ingested)
    footer = RangedReader(ctx.objects.s3, pin) if pin is not None else None  # the plan reads only the footer
    plan = scoring.plan_source(footer or source or ctx.work.data or b"", ingested.data_name,
                               scoring.rows_per_partition(ctx.settings.rows_per_partition))
    indices = list(range(plan.count)) if given is None else [given[0]]
    if given is not None and given[1] != plan.count:
        raise scoring.PartitionError(
            f"asked for partition {given[0]} of {given[1]}, but the input {ingested.data_uri} has {plan.count} "
            "partition(s); it changed after validation: start a new run")
    workers = min(len(indices), os.cpu_count() or 1, ctx.settings.scoring_concurrency)
    if workers > 1 and source is None and pin is None:  # worker processes read their row groups from a file or S3
        source, pin = _input_source(ctx, ingested)
    if workers > 1:
        ctx.work.release_rows()  # the workers read the input themselves; its rows here would only add to their memory
        frame = None
    salt = read_id_salt(ctx.clients, ctx.resources)
    job = scoring.ScoringJob(
        target=ctx.clients.target, data_bucket=ctx.data_bucket, spec=spec, run_id=ctx.run_id, record=record,
        versions=versions, baselines={n: ctx.baseline_of(versions[n]) for n in numbers},
        source=str(source or ctx.data_source), source_name=ingested.data_name, plan=plan, workdir=str(ctx.workdir / "score"),
        id_salt=salt.key, source_pin=pin,
    )
    ctx.progress(0, len(indices), f"scoring {plan.rows:,} rows in {plan.count} partition(s)"
                 + (f", {r.weight:g}% to v{r.challenger}" if r else ""))
    if workers > 1:
        results = scoring.score_partitions(job, indices, workers, progress=ctx.progress)
    else:
        results = [scoring.score_partition(job, i, ctx.objects, ctx.model_of, frame=frame,
                                           features=ctx.work.features if frame is not None else None,
                                           progress=ctx.progress) for i in indices]
    merged = scoring.merge_partitions(results)
    per_version = merged["per_version"]
    weights = {record.champion: 100.0 - (r.weight if r else 0.0)}
    if r is not None:
        weights[r.challenger] = r.weight
    fields: dict[str, Any] = {
        "rows_scored": merged["rows_scored"], "serving": record.serving(), "versions": per_version,
        "partitions": {"count": plan.count, "scored": indices, "processes": max(1, workers)},
        "predict_seconds": round(merged["predict_seconds"], 3), "id_hash": {"column": job.id_hash_column, **salt.describe()},
        "weights": weights, "observations": challenger_observations(per_version, record.serving()),
        "drift_counts": merged["drift_counts"], "rollout_id": r.id if r else None,
    }
    if given is not None:  # a Map task stages its part; the report group publishes them all
        return Scored(**fields, review_candidates=results[0]["review"],
                      **{k: results[0][k] for k in ("staged_uri", "staged_shadow_uri", "staged_results")})
    fields |= predictions_summary(ctx.data_bucket, spec.name, ctx.run_id, plan.count, bool(merged["staged_shadow_parts"]))
    queue = review_queue(spec, [r["review"] for r in results])
    if queue is not None:
        fields["review_queue"] = {"rows": len(queue), "uri": fields["manifest_uri"].rsplit("/", 1)[0] + "/review_queue.parquet",
                                  "reasons": queue["reason"].value_counts().to_dict()}
    result = Scored(**fields)
    scoring.publish_predictions(ctx.objects, ctx.data_bucket, spec.name, ctx.run_id, results, result.handover(), result.summary(),
                                data=input_reference(ingested), review_queue=queue)
    return result


def review_queue(spec: ModelSpec, candidates: list[list[dict[str, Any]]]) -> pd.DataFrame | None:
    """The run's review queue from each partition's candidates (None when the spec turns it off)."""
    if not spec.review.size:
        return None
    return review.merge([pd.DataFrame.from_records(c) for c in candidates if c], spec.review.size)


def input_reference(ingested: Ingested) -> dict[str, Any]:
    """The run's input as a manifest records it: ``uri`` (``s3://``), ``sha256``, ``name``."""
    return {"uri": ingested.data_uri, "sha256": ingested.data_sha256, "name": ingested.data_name}


def predictions_summary(bucket: str, model: str, run_id: str, parts: int, shadow: bool) -> dict[str, Any]:
    """Where a run's published predictions are: ``predictions_uri`` (the part, or the run's
    prefix when there are several), ``shadow_predictions_uri`` (likewise, or None) and
    ``manifest_uri`` (the manifest that lists them; readers read through it)."""
    base = f"s3://{bucket}/{scoring.published_prefix(model, run_id)}"
    one = "part-00000.parquet"
    return {
        "predictions_uri": f"{base}/{one}" if parts == 1 else f"{base}/",
        "shadow_predictions_uri": (f"{base}/shadow/{one}" if parts == 1 else f"{base}/shadow/") if shadow else None,
        "manifest_uri": f"{base}/{scoring.MANIFEST}",
    }


def _input_source(ctx: RunContext, ingested: Ingested) -> tuple[Path | None, ObjectPin | None]:
    """``intake.input_source`` as ``(file, None)`` or ``(None, pin)``."""
    src = input_source(ctx, ingested)
    return (None, src) if isinstance(src, ObjectPin) else (src, None)


def challenger_observations(per_version: dict[Any, dict[str, Any]], serving: dict[str, Any]) -> dict[str, tuple[float | None, int]]:
    """What the rollout gates see for the challenger, as ``metric -> (value, samples)``: its
    realised ``SCORED_KEYS`` metrics on labelled rows it did not train on (``r2``, ``rmse``,
    ``mae``; or ``precision``, ``recall``, ``logloss``, ``brier``), and
    ``<r2|precision|recall>_delta_vs_champion`` (its value minus the champion's in the same run).
    Empty when no challenger scored. Keys of ``per_version`` may be ints or strings (JSON)."""
    stats = {str(k): v for k, v in per_version.items()}
    ch, champ = serving.get("challenger"), serving.get("champion")
    if ch is None or str(ch) not in stats:
        return {}
    c = stats[str(ch)]
    keys = [k for k in SCORED_KEYS if k in c]
    obs: dict[str, tuple[float | None, int]] = {k: (c.get(k), c["labeled"]) for k in keys}
    base = stats.get(str(champ), {})
    for k in ("r2", "precision", "recall"):
        if c.get(k) is not None and base.get(k) is not None:
            obs[f"{k}_delta_vs_champion"] = (c[k] - base[k], min(c["labeled"], base["labeled"]))
    return obs
