"""Partitioned scoring: the same predictions whatever the partitioning.

The model is the engagement spec under its own name (``engagement-partitions``) with a dev rollout
plan of [30, 100], so after two training runs v1 (champion) and v2 (challenger at 30%) both serve.
The input, 24,000 customers in 8 row groups of 3,000 rows, is scored by the score step three ways:

* one partition, in-process, from the validated frame in memory (the local runner's default);
* 4 partitions in a local process pool (2 worker processes), each reading its row groups;
* 8 partitions scored one at a time as the AWS Map tasks do (``ctx.partition = (i, 8)``, no
  frame), each reading its own row groups: from the local input file, and again from the
  ingested object in S3 by ranged reads (``inputs.RangedReader``; nothing is downloaded).

The concatenated parts must be equal row for row, and the per-version statistics the rollout
gates see must agree.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import engagement_spec
from stagewise.pipeline import scoring, steps
from stagewise.pipeline.definition import TRAINING
from stagewise.pipeline.generator import generate_customers
from stagewise.pipeline.runner import new_run_id, run_pipeline
from stagewise.pipeline.spec import load_spec
from stagewise.platform.runtime.idhash import hash_ids, read_id_salt
from stagewise.platform.contract import Env

MODEL = "engagement-partitions"
ROWS, GROUP = 24_000, 3_000


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    return load_spec(engagement_spec(tmp_path_factory.mktemp("spec"), MODEL, plan="{dev: [30, 100]}"))


def _write(df: pd.DataFrame, path: Path) -> Path:
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=GROUP)
    return path


def _context(dev, spec, data: Path, tmp_path: Path, run_id: str | None = None):
    run_id = run_id or new_run_id()
    return steps.RunContext(run_id=run_id, settings=dev.settings, resources=dev.resources, clients=dev.clients, spec=spec,
                            data_source=str(data), workdir=tmp_path / run_id, actor="test")


@pytest.fixture(scope="module")
def rollout(dev, spec, tmp_path_factory):
    """v1 champion, v2 challenger at 30% (two training runs on different data)."""
    folder = tmp_path_factory.mktemp("partitions")
    for seed in (41, 42):
        data = _write(generate_customers(ROWS, seed=seed), folder / f"train-{seed}.parquet")
        result = run_pipeline(_context(dev, spec, data, folder), TRAINING)  # no rollout step: v2 stays at 30%
        assert result.exit_code == 0, result.error
    ctx = _context(dev, spec, data, folder)
    serving = ctx.registry.get_model(MODEL).serving()
    assert (serving["champion"], serving["challenger"], serving["weight"]) == (1, 2, 30.0)
    return _write(generate_customers(ROWS, seed=43), folder / "score.parquet")


def _score(dev, spec, data: Path, tmp_path: Path, monkeypatch, per_partition: int | None, partition=None, frame=True,
           run_id: str | None = None):
    if per_partition is None:
        monkeypatch.delenv(Env.ROWS_PER_PARTITION, raising=False)
    else:
        monkeypatch.setenv(Env.ROWS_PER_PARTITION, str(per_partition))
    ctx = _context(dev, spec, data, tmp_path, run_id)
    ctx.results.ingest = steps.ingest(ctx)
    if frame:
        ctx.results.validate = steps.validate(ctx)
    else:
        ctx.work.data_file = None  # as a Map task: only the input's URI and sha256 are handed over
    ctx.partition = partition
    ctx.results.score = steps.score(ctx)
    return ctx, ctx.results.score.summary()


def _parts(dev, ctx) -> tuple[pd.DataFrame, list[str]]:
    """The run's published predictions (read through its manifest) and the keys of its parts."""
    bucket = dev.resources.data_bucket.name
    manifest = scoring.read_manifest(ctx.objects, bucket, MODEL, ctx.run_id)
    assert manifest is not None, f"run {ctx.run_id} published nothing"
    return scoring.read_predictions(ctx.objects, bucket, MODEL, ctx.run_id), [p["key"] for p in manifest["parts"]]


def test_predictions_are_identical_whatever_the_partitioning(dev, spec, rollout, tmp_path, monkeypatch):
    whole_ctx, whole = _score(dev, spec, rollout, tmp_path, monkeypatch, None)
    pool_ctx, pooled = _score(dev, spec, rollout, tmp_path, monkeypatch, 6_000)

    assert whole["partitions"] == {"count": 1, "scored": [0], "processes": 1}
    assert pooled["partitions"] == {"count": 4, "scored": [0, 1, 2, 3], "processes": 2}

    tasks, staged, map_run = [], [], new_run_id()
    for i in range(8):  # as the Distributed Map runs them: one task per partition, no frame in memory
        ctx, summary = _score(dev, spec, rollout, tmp_path, monkeypatch, GROUP, partition=(i, 8), frame=False, run_id=map_run)
        assert summary["partitions"] == {"count": 8, "scored": [i], "processes": 1}
        assert summary["rows_scored"] == GROUP  # one row group each: it read only its own rows
        assert "predictions_uri" not in summary and "/staging/" in summary["staged_uri"]  # staged, not published
        tasks.append(ctx)
        staged.append({"index": i, **summary})
    assert scoring.read_manifest(ctx.objects, dev.resources.data_bucket.name, MODEL, map_run) is None
    scoring.publish_predictions(ctx.objects, dev.resources.data_bucket.name, MODEL, map_run, staged, {}, {})  # the report group

    expected, keys = _parts(dev, whole_ctx)
    assert len(keys) == 1 and len(expected) == ROWS
    source = pd.read_parquet(rollout, columns=["customer_id"])
    salt = read_id_salt(dev.clients, dev.resources).key
    assert expected["customer_id_hash"].tolist() == hash_ids(source["customer_id"], salt).tolist()  # input order kept
    assert set(expected["model_version"]) == {1, 2}
    share = (expected["model_version"] == 2).mean()
    assert 0.27 < share < 0.33  # the challenger serves its 30%
    assert list(expected.columns) == ["customer_id_hash", "prediction", "model_version"]  # no PII, no features, no raw id

    pooled_parts, pool_keys = _parts(dev, pool_ctx)
    assert [k.rsplit("/", 1)[1] for k in pool_keys] == [f"part-{i:05d}.parquet" for i in range(4)]
    pd.testing.assert_frame_equal(pooled_parts, expected, check_exact=True)

    task_parts, task_keys = _parts(dev, tasks[0])
    assert len(task_keys) == 8
    pd.testing.assert_frame_equal(task_parts, expected, check_exact=True)

    ranged_run, uri, ranged = new_run_id(), whole_ctx.results.ingest.data_uri, []
    assert uri.startswith("s3://")
    monkeypatch.setenv(Env.ROWS_PER_PARTITION, str(GROUP))
    for i in range(8):  # as on AWS: the Map task's input is the ingested object, each task reads its row groups by ranges
        ctx = _context(dev, spec, uri, tmp_path, ranged_run)
        ctx.results.ingest, ctx.partition = whole_ctx.results.ingest, (i, 8)
        ctx.results.score = steps.score(ctx)
        assert ctx.results.score.rows_scored == GROUP
        ranged.append({"index": i, **ctx.results.score.summary()})
    assert not (tmp_path / ranged_run / "input").exists()  # no task downloaded the input (``inputs.local_input``)
    scoring.publish_predictions(ctx.objects, dev.resources.data_bucket.name, MODEL, ranged_run, ranged, {}, {})
    pd.testing.assert_frame_equal(_parts(dev, ctx)[0], expected, check_exact=True)
    s3, bucket = dev.clients.client("s3"), dev.resources.data_bucket.name
    assert s3.list_objects_v2(Bucket=bucket, Prefix=f"staging/predictions/{MODEL}/").get("KeyCount", 0) == 0  # staging emptied

    # what the rollout gates see is the same, merged from partitions or computed at once
    merged = scoring.merge_version_stats([ctx.results.score.versions for ctx in tasks])
    for number, stats in whole_ctx.results.score.versions.items():
        for other in (pool_ctx.results.score.versions[number], merged[number]):
            assert other["rows"] == stats["rows"] and other["labeled"] == stats["labeled"]
            for key in ("mean_prediction", "r2", "rmse", "mae"):
                assert other[key] == pytest.approx(stats[key], rel=1e-9)
    observed, pooled_obs = whole_ctx.results.score.observations, pool_ctx.results.score.observations
    assert set(observed) == set(pooled_obs) == {"r2", "rmse", "mae", "r2_delta_vs_champion"}
    for metric, (value, samples) in observed.items():
        assert pooled_obs[metric][1] == samples and pooled_obs[metric][0] == pytest.approx(value, rel=1e-9, abs=1e-12)


def test_a_partition_count_that_does_not_match_the_input_is_refused(dev, spec, rollout, tmp_path, monkeypatch):
    with pytest.raises(scoring.PartitionError, match="has 8 partition"):
        _score(dev, spec, rollout, tmp_path, monkeypatch, GROUP, partition=(0, 5), frame=False)


def test_partition_plans_follow_row_groups():
    plan = scoring.plan_partitions([3_000] * 8, 6_000)
    assert plan.count == 4 and plan.row_groups(1) == [2, 3] and plan.bounds(1) == (6_000, 12_000)
    assert scoring.plan_partitions([100_000], 10).count == 1  # never more partitions than row groups
    assert scoring.plan_partitions([5, 5, 5], 1_000_000).count == 1
    uneven = scoring.plan_partitions([10, 20, 30, 40, 50], 40)
    assert uneven.count == 4 and [uneven.bounds(i) for i in range(4)] == [(0, 30), (30, 60), (60, 100), (100, 150)]
    with pytest.raises(scoring.PartitionError):
        plan.row_groups(4)
