"""The review queue (issue 9): after scoring, the rows most worth a human look, with the reason per
row, published beside the predictions (``review_queue.parquet``, listed in the manifest).

v1 champion and v2 challenger at 30% (dev plan [30, 100]; v2 trained on a table whose US customers'
labels are reversed, so the versions disagree there); the scored input has a few customers with
features far outside anything the versions were trained on. Checked: their rows are in the
queue as ``uncertain`` naming the feature; the largest champion/challenger disagreement is the one
found by predicting every row with both artifacts; the queue is the same whatever the partitioning.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import engagement_spec
from stagewise.pipeline import modeling, scoring, steps
from stagewise.pipeline.definition import TRAINING
from stagewise.pipeline.generator import generate_customers
from stagewise.pipeline.runner import new_run_id, run_pipeline
from stagewise.pipeline.spec import load_spec
from stagewise.platform.runtime.idhash import hash_ids, read_id_salt
from stagewise.platform.contract import Env

MODEL = "engagement-review"
ROWS, GROUP, SIZE = 6_000, 1_500, 50
ODD = 5  # customers with out-of-range features


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = engagement_spec(tmp_path_factory.mktemp("spec"), MODEL, plan="{dev: [30, 100]}")
    path.write_text(path.read_text() + f"review:\n  size: {SIZE}\n")
    return load_spec(path)


def _context(dev, spec, data: Path, folder: Path):
    run_id = new_run_id()
    return steps.RunContext(run_id=run_id, settings=dev.settings, resources=dev.resources, clients=dev.clients, spec=spec,
                            data_source=str(data), workdir=folder / run_id, actor="test")


@pytest.fixture(scope="module")
def scored(dev, spec, tmp_path_factory):
    folder = tmp_path_factory.mktemp("review")
    for seed in (61, 62):  # v1 champion, v2 challenger at 30%
        train = folder / f"train-{seed}.parquet"
        df = generate_customers(ROWS, seed=seed)
        if seed == 62:  # v2 learns the opposite for US customers: the two versions disagree there
            us = df["country"] == "US"
            df.loc[us, "engagement_score"] = 1.0 - df.loc[us, "engagement_score"]
        df.to_parquet(train, index=False)
        assert run_pipeline(_context(dev, spec, train, folder), TRAINING).exit_code == 0
    df = generate_customers(ROWS, seed=63)
    df.loc[: ODD - 1, "sessions_per_week"] = 199.0  # training data tops out far below
    data = folder / "score.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), data, row_group_size=GROUP)
    return {"frame": df, "data": data, "folder": folder}


def _score(dev, spec, scored, monkeypatch, per_partition: int | None):
    if per_partition:
        monkeypatch.setenv(Env.ROWS_PER_PARTITION, str(per_partition))
    else:
        monkeypatch.delenv(Env.ROWS_PER_PARTITION, raising=False)
    ctx = _context(dev, spec, scored["data"], scored["folder"])
    ctx.results.ingest = steps.ingest(ctx)
    ctx.results.validate = steps.validate(ctx)
    summary = steps.score(ctx).summary()
    manifest = scoring.read_manifest(ctx.objects, ctx.data_bucket, MODEL, ctx.run_id)
    queue = pd.read_parquet(pd.io.common.BytesIO(ctx.objects.get_bytes(ctx.data_bucket, manifest["review_queue"]["key"])))
    return ctx, summary, manifest, queue


def test_the_queue_names_why_each_row_needs_a_look(dev, spec, scored, monkeypatch):
    ctx, summary, manifest, queue = _score(dev, spec, scored, monkeypatch, None)
    assert manifest["review_queue"]["key"] == f"predictions/{MODEL}/run={ctx.run_id}/review_queue.parquet"
    assert len(queue) == SIZE == manifest["review_queue"]["rows"] == summary["review_queue"]["rows"]
    assert list(queue.columns) == ["customer_id_hash", "priority", "reason", "detail", "prediction", "model_version",
                                   "other_prediction", "other_version"]
    assert queue["priority"].is_monotonic_decreasing and set(queue["reason"]) <= {"uncertain", "extreme", "disagreement"}

    salt = read_id_salt(dev.clients, dev.resources).key
    hashes = hash_ids(scored["frame"]["customer_id"], salt)
    odd = queue[queue["customer_id_hash"].isin(hashes[:ODD])]
    assert len(odd) == ODD and (odd["reason"] == "uncertain").all()
    assert odd["detail"].str.startswith("sessions_per_week=199 outside training").all()

    # the biggest disagreement: every row predicted by both artifacts
    registry = ctx.registry
    X = modeling.feature_matrix(scored["frame"], spec)
    both = {n: modeling.predict(scoring.load_artifact(ctx.objects, registry.get_version(MODEL, n), {}), X, spec) for n in (1, 2)}
    gap = np.abs(both[1] - both[2])
    published = scoring.read_predictions(ctx.objects, ctx.data_bucket, MODEL, ctx.run_id)
    served = published["model_version"].to_numpy()
    other = np.where(served == 1, both[2], both[1])
    assert np.allclose(np.abs(published["prediction"] - other), gap)  # each row's "other" is the other version
    disagree = queue[queue["reason"] == "disagreement"]
    assert len(disagree) > 0  # the versions disagree on US customers: those rows rank high
    top = disagree.iloc[0]
    i = int(np.flatnonzero(hashes == top["customer_id_hash"])[0])
    assert abs(top["prediction"] - top["other_prediction"]) == pytest.approx(gap[i])
    assert gap[i] == pytest.approx(gap.max())  # the largest disagreement of all rows tops them
    assert {int(top["model_version"]), int(top["other_version"])} == {1, 2}
    assert queue["other_prediction"].notna().all()  # a challenger is rolling out: every row has both


def test_the_queue_is_the_same_whatever_the_partitioning(dev, spec, scored, monkeypatch):
    *_, whole = _score(dev, spec, scored, monkeypatch, None)
    ctx, summary, _, parts = _score(dev, spec, scored, monkeypatch, GROUP)
    assert summary["partitions"]["count"] == 4
    pd.testing.assert_frame_equal(parts, whole, check_exact=True)
