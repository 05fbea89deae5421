"""Training beyond memory (``stagewise.pipeline.training_data``): the train step streams a Parquet
input by partitions, with XGBoost's external memory or a seeded sample, and the version's lineage
says which.

The runs are the CLI's ``stagewise run`` (in-process) on 3,000 generated customers in 6 row groups
of 500 rows, at 1,000 rows per partition (3 partitions), with the engagement spec under a model
name of its own and a ``training`` section.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import REPO, engagement_spec
from stagewise.pipeline import modeling, splitting, training_data
from stagewise.pipeline.cli import app
from stagewise.pipeline.generator import generate_customers
from stagewise.pipeline.spec import load_spec
from stagewise.platform.contract import Env

ROWS, GROUP, PER_PARTITION = 3_000, 500, 1_000


def _input(folder: Path, seed: int = 11):
    df = generate_customers(ROWS, seed=seed)
    path = folder / "customers.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=GROUP)
    return df, path


def _spec(folder: Path, name: str, training: str) -> Path:
    path = engagement_spec(folder, name)
    path.write_text(path.read_text() + f"training: {training}\n")
    return path


def _run(monkeypatch, spec: Path, data: Path) -> dict:
    monkeypatch.setenv(Env.ROWS_PER_PARTITION, str(PER_PARTITION))
    result = CliRunner().invoke(app, ["run", "--project-dir", str(REPO), "--model", str(spec), "--data", str(data), "--json"])
    assert result.exit_code == 0, result.output[-3000:]
    return json.loads(result.output)


def _step(out: dict, name: str) -> dict:
    return next(s for s in out["steps"] if s["name"] == name)["summary"]


def _lineage(dev, name: str) -> dict:
    from stagewise.registry.dynamodb import registry_of

    return registry_of(dev).get_version(name, 1).lineage


def _train_split(spec_path: Path, df):
    spec = load_spec(spec_path)
    frame = modeling.conform(df.drop(columns=list(spec.ignored_columns)), spec)
    hold = splitting.holdout_mask(splitting.define(spec, frame), frame)
    return spec, frame, hold


def test_external_memory_trains_on_every_training_row_by_partitions_and_says_so(dev, tmp_path, monkeypatch):
    df, data = _input(tmp_path)
    spec_path = _spec(tmp_path, "beyond-extmem", "{mode: external_memory}")
    out = _run(monkeypatch, spec_path, data)
    spec, frame, hold = _train_split(spec_path, df)

    training = _lineage(dev, "beyond-extmem")["training"]
    assert training["mode"] == "external_memory"
    assert training["reason"] == "the spec's training.mode is external_memory"
    assert training["partitions"] == 3 and training["batches"] >= 3  # three partitions streamed to XGBoost in batches
    assert training["fitted_rows"] == training["training_split_rows"] == int((~hold).sum())
    trained = _step(out, "train")
    assert trained["train_rows"] == int((~hold).sum()) and trained["holdout_rows"] == int(hold.sum())
    score = _step(out, "score")
    assert score["rows_scored"] == ROWS

    # the streamed model is as good as the in-memory fit of the same split and hyperparameters
    X, y = modeling.feature_matrix(frame, spec), frame[spec.target.name].to_numpy(dtype="float64")
    in_memory = modeling.train_model(X[~hold], y[~hold], spec)
    r2_memory = modeling.holdout_metrics(y[hold], modeling.predict(in_memory, X[hold], spec))["r2"]
    r2_streamed = _step(out, "evaluate")["metrics"]["r2"]
    assert r2_memory > 0.7 and abs(r2_streamed - r2_memory) < 0.03, (r2_streamed, r2_memory)


def test_a_seeded_sample_keeps_the_rows_its_key_hash_picks_whatever_the_file_order(dev, tmp_path, monkeypatch):
    df, data = _input(tmp_path, seed=12)
    spec_path = _spec(tmp_path, "beyond-sample", "{mode: sample, sample_rows: 1000, seed: 7}")
    _run(monkeypatch, spec_path, data)
    spec, frame, hold = _train_split(spec_path, df)

    training = _lineage(dev, "beyond-sample")["training"]
    assert (training["mode"], training["sample_rows"], training["seed"]) == ("sample", 1000, 7)
    p = 1000 / (ROWS * (1 - spec.split.holdout_fraction))
    assert training["sample_fraction"] == pytest.approx(p, abs=1e-6)
    train_ids = frame.loc[~hold, spec.id_column]
    expected = int((splitting.unit_hash(train_ids, "sample-7") < p).sum())
    assert training["fitted_rows"] == expected and 800 <= expected <= 1200
    assert training["training_split_rows"] == int((~hold).sum())

    # the same customers shuffled into other row groups: the same rows are sampled
    shuffled = tmp_path / "shuffled.parquet"
    pq.write_table(pa.Table.from_pandas(df.sample(frac=1.0, random_state=3), preserve_index=False), shuffled, row_group_size=700)
    plan = training_data.input_plan(shuffled, shuffled.name, PER_PARTITION)
    how = training_data.decide(spec, plan.rows, None, 4096, streamable=True)
    split = training_data.split_definition(shuffled, shuffled.name, spec)
    again = training_data.train_streaming(shuffled, shuffled.name, spec, plan, how, split, tmp_path)
    assert again.fitted_rows == expected and plan.count == 3 and again.batches >= 3


def test_auto_trains_in_memory_when_the_estimate_fits_the_train_task_else_beyond_memory():
    spec = load_spec("engagement")
    small = training_data.decide(spec, 100_000, 800.0, 4096, streamable=True)
    assert small.mode == "in_memory" and "fits" in small.reason
    large = training_data.decide(spec, 10_000_000, 800.0, 4096, streamable=True)
    assert large.mode == "external_memory"
    assert large.estimated_bytes == training_data.estimate(800.0, 10_000_000, 33) > large.budget_bytes == (4096 * 3 // 4 - 512) * 2**20
    assert "exceeds the train task's 4,096 MiB (budget 2.50 GiB)" in large.reason
    sampled = training_data.decide(spec.model_copy(update={"training": spec.training.model_copy(update={"beyond_memory": "sample"})}),
                                   10_000_000, 800.0, 4096, streamable=True)
    assert (sampled.mode, sampled.to_lineage()["sample_rows"]) == ("sample", 1_000_000)
    csv = training_data.decide(spec, 10_000_000, 800.0, 4096, streamable=False)
    assert csv.mode == "in_memory" and "CSV" in csv.reason
    tiny = training_data.decide(spec, 1_000, 800.0, 512, streamable=True)  # 512 MiB: less than the libraries' share
    assert tiny.mode == "external_memory" and tiny.budget_bytes == 0


def test_a_large_local_input_is_uploaded_as_a_streamed_multipart_upload_with_its_sha256(dev, tmp_path, monkeypatch):
    from stagewise.platform.runtime import objects

    monkeypatch.setattr(objects, "STREAM_UPLOAD_BYTES", 5 * 2**20)  # S3's smallest part: a 12 MiB file is "large"
    path = tmp_path / "big.bin"
    path.write_bytes(np.random.default_rng(0).bytes(12 * 2**20))
    store = objects.ObjectStore(dev.clients.client("s3"))
    digest = store.put_file(dev.resources.data_bucket.name, "tests/big.bin", path)
    assert digest == objects.sha256_file(path) == store.head_sha256(dev.resources.data_bucket.name, "tests/big.bin")
    head = dev.clients.client("s3").head_object(Bucket=dev.resources.data_bucket.name, Key="tests/big.bin")
    assert "-" in head["ETag"]  # a multipart upload's ETag: "<md5 of the parts' md5s>-<parts>"
    assert store.get_bytes(dev.resources.data_bucket.name, "tests/big.bin") == path.read_bytes()


def test_a_local_input_replaced_after_ingest_is_refused_not_read(tmp_path):
    from stagewise.pipeline.steps.context import Workspace

    path = tmp_path / "customers.parquet"
    path.write_bytes(b"PAR1 first version")
    st = path.stat()
    work = Workspace(data_file=path, data_file_stamp=(st.st_size, st.st_mtime_ns))
    assert work.data == path
    path.write_bytes(b"PAR1 a longer second version")
    with pytest.raises(RuntimeError, match="changed after it was ingested"):
        _ = work.data
