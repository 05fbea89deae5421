"""End to end: `stagewise run` on a 20,000-customer dataset against the embedded AWS over HTTPS.

Asserts what a user would see: the registry record and its lineage, the objects in S3, the
CloudWatch datapoints, every customer scored without PII; and that an invalid dataset is rejected
with an alert and no trace in the registry.
"""

from __future__ import annotations

import hashlib
import io
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import REPO
from stagewise.pipeline.cli import app
from stagewise.pipeline.generator import generate_customers, write_dataset
from stagewise.platform.runtime.objects import S3Uri, sha256_file
from stagewise.platform.runtime.idhash import hash_ids, read_id_salt
from stagewise.registry.dynamodb import DynamoDBRegistryStore
from stagewise.registry.errors import NotFound
from stagewise.registry.service import Registry

ROWS = 20_000
runner = CliRunner()


def _run(*args: str):
    result = runner.invoke(app, ["run", "--env", "dev", "--project-dir", str(REPO), "--json", *args])
    doc = json.loads(result.stdout) if result.stdout.strip().startswith("{") else None
    return result, doc


def _registry(dev) -> Registry:
    return Registry(DynamoDBRegistryStore(dev.clients.client("dynamodb"), dev.resources.registry_table.name))


def _versions(dev) -> list[int]:
    try:
        return [v.version for v in _registry(dev).list_versions("engagement")]
    except NotFound:
        return []


def _step(doc, name):
    return next(s for s in doc["steps"] if s["name"] == name)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "customers.parquet"
    write_dataset(generate_customers(ROWS, seed=11), path)
    return path


@pytest.fixture(scope="module")
def good_run(dev, dataset):
    result, doc = _run("--data", str(dataset))
    assert result.exit_code == 0, result.output
    return doc


def test_run_succeeds_and_registers_version_1_as_champion(good_run, dev, dataset):
    assert good_run["status"] == "succeeded"
    assert [s["status"] for s in good_run["steps"]] == ["succeeded"] * 9
    reg = _registry(dev)
    model = reg.get_model("engagement")
    number = _step(good_run, "register")["summary"]["version"]
    assert model.aliases["champion"] == number
    version = reg.get_version("engagement", number)
    assert version.status == "registered"
    assert version.lineage["data_sha256"] == sha256_file(dataset)
    assert version.lineage["environment"] == "dev" and version.lineage["account_id"] == "314159265358"
    assert version.lineage["hyperparameters"]["tree_method"] == "hist"
    assert version.metrics["r2"] >= 0.70
    # the artifact in S3 is exactly the bytes the registry hashed
    uri = S3Uri.parse(version.artifact_uri)
    body = dev.clients.client("s3").get_object(Bucket=uri.bucket, Key=uri.key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == version.artifact_sha256
    assert [e.action for e in reg.history("engagement")][:2] == ["model.create", "version.register"]


def test_holdout_r2_passes_gate_and_is_near_the_best_achievable(good_run):
    ev = _step(good_run, "evaluate")["summary"]
    assert ev["gates_passed"] is True
    assert ev["gates"][0]["metric"] == "r2" and ev["gates"][0]["outcome"] == "pass"
    best = ev["best_achievable"]["r2"]
    assert 0.70 <= ev["metrics"]["r2"] <= best + 0.01
    assert ev["metrics"]["rmse"] > 0 and ev["metrics"]["mae"] > 0


def test_every_customer_is_scored_and_no_pii_leaves(good_run, dev, dataset):
    score = _step(good_run, "score")["summary"]
    uri = S3Uri.parse(score["predictions_uri"])
    raw = dev.clients.client("s3").get_object(Bucket=uri.bucket, Key=uri.key)["Body"].read()
    pred = pd.read_parquet(io.BytesIO(raw))
    source = pd.read_parquet(dataset)
    assert len(pred) == ROWS == score["rows_scored"]
    assert list(pred.columns) == ["customer_id_hash", "prediction", "model_version"]  # the id only as its keyed hash
    salt = read_id_salt(dev.clients, dev.resources).key
    assert set(pred["customer_id_hash"]) == set(hash_ids(source["customer_id"], salt))  # joins back with the salt
    assert not set(pred["customer_id_hash"]) & set(source["customer_id"])
    assert pred["prediction"].between(0, 1).all()
    assert (pred["model_version"] == score["serving"]["champion"]).all()
    text = raw.decode("latin-1")
    assert not any(email in text for email in source["email"].head(50))


def test_validation_result_and_data_docs_are_in_s3_and_local(good_run, dev):
    val = _step(good_run, "validate")["summary"]
    assert val["success"] and val["rows"] == ROWS and val["failed"] == 0 and val["evaluated"] > 40
    s3 = dev.clients.client("s3")
    for key in ("result_uri", "data_docs_uri"):
        uri = S3Uri.parse(val[key])
        assert s3.head_object(Bucket=uri.bucket, Key=uri.key)["ContentLength"] > 0
    uri = S3Uri.parse(val["result_uri"])
    result = json.loads(s3.get_object(Bucket=uri.bucket, Key=uri.key)["Body"].read())
    assert result["success"] is True
    assert Path(val["data_docs_local"]).is_file()


def test_cloudwatch_has_the_runs_datapoints(good_run, dev):
    cw = dev.clients.client("cloudwatch")
    version = str(_step(good_run, "register")["summary"]["version"])
    dims = [{"Name": "Environment", "Value": "dev"}, {"Name": "Model", "Value": "engagement"}, {"Name": "Version", "Value": version}]
    pages = cw.get_paginator("list_metrics").paginate(Namespace="Stagewise", Dimensions=[{"Name": "Model", "Value": "engagement"}])
    names = {m["MetricName"] for page in pages for m in page["Metrics"]}  # 500 metrics a page
    assert {"RowsValidated", "ExpectationsFailed", "HoldoutR2", "HoldoutRMSE", "HoldoutMAE", "RowsScored", "StepDurationSeconds"} <= names
    now = datetime.now(timezone.utc)
    stats = cw.get_metric_statistics(
        Namespace="Stagewise", MetricName="RowsScored", Dimensions=dims,
        StartTime=now - timedelta(hours=1), EndTime=now + timedelta(minutes=5), Period=3600, Statistics=["Sum"],
    )["Datapoints"]
    assert sum(d["Sum"] for d in stats) >= ROWS
    r2 = cw.get_metric_statistics(
        Namespace="Stagewise", MetricName="HoldoutR2", Dimensions=dims,
        StartTime=now - timedelta(hours=1), EndTime=now + timedelta(minutes=5), Period=3600, Statistics=["Maximum"],
    )["Datapoints"]
    assert r2 and abs(r2[0]["Maximum"] - _step(good_run, "evaluate")["summary"]["metrics"]["r2"]) < 1e-9


def test_rerun_on_the_same_data_does_not_duplicate_the_version(good_run, dev, dataset):
    before = _versions(dev)
    result, doc = _run("--data", str(dataset))
    assert result.exit_code == 0, result.output
    reg = _step(doc, "register")["summary"]
    assert reg["created"] is False and reg["version"] == _step(good_run, "register")["summary"]["version"]
    assert _versions(dev) == before


def test_registry_list_json_shows_the_version(good_run):
    result = runner.invoke(app, ["registry", "list", "--env", "dev", "--json"])
    assert result.exit_code == 0, result.output
    models = {m["name"]: m for m in json.loads(result.stdout)["models"]}
    assert models["engagement"]["aliases"]["champion"] == 1
    assert models["engagement"]["versions"][0]["version"] == 1


def test_invalid_dataset_is_rejected_with_alert_and_registry_unchanged(good_run, dev, dataset, tmp_path):
    bad = pd.read_parquet(dataset).drop(columns=["age"])
    rng = np.random.default_rng(0)
    out_of_range = rng.choice(len(bad), 500, replace=False)
    bad.loc[bad.index[out_of_range], "engagement_score"] = 1.7
    path = tmp_path / "bad.parquet"
    bad.to_parquet(path, index=False)

    sqs, sns = dev.clients.client("sqs"), dev.clients.client("sns")
    queue = sqs.create_queue(QueueName="test-alerts")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=dev.resources.alert_topic_arn, Protocol="sqs", Endpoint=queue_arn)
    before = _versions(dev)
    s3 = dev.clients.client("s3")
    preds_before = s3.list_objects_v2(Bucket=dev.resources.data_bucket.name, Prefix="predictions/").get("KeyCount", 0)

    result, doc = _run("--data", str(path))

    assert result.exit_code == 2
    val = _step(doc, "validate")
    assert val["status"] == "stopped"
    failed = " | ".join(val["summary"]["failed_expectations"])
    assert "age" in failed and "engagement_score" in failed and "500" in failed
    assert [s["status"] for s in doc["steps"][2:]] == ["skipped"] * 7
    assert _versions(dev) == before
    assert s3.list_objects_v2(Bucket=dev.resources.data_bucket.name, Prefix="predictions/").get("KeyCount", 0) == preds_before
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=2).get("Messages", [])
    bodies = [json.loads(msg["Body"]) for msg in messages]
    alert = next(b for b in bodies if "Validation failed" in b["Subject"])
    assert "engagement_score" in alert["Message"] and "age" in alert["Message"]
    assert "Environment: dev" in alert["Message"]
