"""A corpus of bad datasets (issue 8): each is rejected by `stagewise run` with exit code 2, a message
naming the problem, an alert on the environment's topic, and no trace in the registry or the outputs.

The model is the engagement spec under its own name (``engagement-corpus``), so "no trace" is exact:
the registry has no record of the model, and the data bucket has no predictions and the artifact
bucket no model of it. (The input itself is archived under ``raw/`` by the ingest step, and the
validation result under ``validation/``: that is the record of the rejection, not an output.)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import REPO, engagement_spec
from stagewise.pipeline.cli import app
from stagewise.pipeline.generator import generate_customers
from stagewise.registry.dynamodb import DynamoDBRegistryStore
from stagewise.registry.errors import NotFound
from stagewise.registry.service import Registry

MODEL = "engagement-corpus"
ROWS = 2_000
runner = CliRunner()


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory) -> Path:
    return engagement_spec(tmp_path_factory.mktemp("spec"), MODEL)


@pytest.fixture(scope="module")
def base() -> pd.DataFrame:
    return generate_customers(ROWS, seed=77)


@pytest.fixture(scope="module")
def alerts(dev):
    """An SQS queue subscribed to the dev alert topic; returns a reader of the alerts of one run."""
    sqs, sns = dev.clients.client("sqs"), dev.clients.client("sns")
    url = sqs.create_queue(QueueName="bad-input-corpus-alerts")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=dev.resources.alert_topic_arn, Protocol="sqs", Endpoint=arn)
    seen: list[dict] = []

    def of_run(run_id: str) -> list[dict]:
        for _ in range(5):
            found = [m for m in seen if run_id in m["Message"]]
            if found:
                return found
            for msg in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", []):
                seen.append(json.loads(msg["Body"]))
                sqs.delete_message(QueueUrl=url, ReceiptHandle=msg["ReceiptHandle"])
        return [m for m in seen if run_id in m["Message"]]

    return of_run


def _parquet(df: pd.DataFrame, path: Path) -> Path:
    df.to_parquet(path, index=False)
    return path


def _with(df: pd.DataFrame, column: str, rows: slice | list, value) -> pd.DataFrame:
    out = df.copy()
    col = out[column].astype(object) if isinstance(value, str) or value is None else out[column]
    col.iloc[rows] = value
    out[column] = col
    return out


# name -> (builder(base, folder) -> file, text the rejection must contain)
CORPUS = {
    "missing column": (lambda b, d: _parquet(b.drop(columns=["age"]), d / "x.parquet"), "missing columns: ['age']"),
    "extra column": (lambda b, d: _parquet(b.assign(favourite_colour="blue"), d / "x.parquet"),
                     "unexpected columns: ['favourite_colour']"),
    "wrong dtype": (lambda b, d: _parquet(b.assign(age=b["age"].astype(str)), d / "x.parquet"),
                    "age: dtype str, expected integer"),
    "NaN target": (lambda b, d: _parquet(_with(b, "engagement_score", slice(0, 12), np.nan), d / "x.parquet"),
                   "engagement_score: 12 nulls (0.6%), none allowed"),
    "target out of range": (lambda b, d: _parquet(_with(b, "engagement_score", slice(0, 30), 1.5), d / "x.parquet"),
                            "engagement_score: 30 values (1.5%) outside [0.0, 1.0]"),
    "negative counts": (lambda b, d: _parquet(_with(b, "messages_sent_week", slice(0, 7), -3), d / "x.parquet"),
                        "messages_sent_week: 7 values (0.4%) outside [0.0, 5000.0]"),
    "duplicate customer_id": (lambda b, d: _parquet(b.assign(customer_id=[b["customer_id"].iloc[0]] * 4
                                                             + b["customer_id"].iloc[4:].tolist()), d / "x.parquet"),
                              "customer_id: 4 values"),
    "half-null feature": (lambda b, d: _parquet(_with(b, "avg_session_minutes", slice(0, ROWS // 2), np.nan), d / "x.parquet"),
                          "avg_session_minutes: 1000 nulls (50.0%), none allowed"),
    "unknown category": (lambda b, d: _parquet(_with(b, "device_os", slice(0, 9), "windows"), d / "x.parquet"),
                         "device_os: 9 values (0.4%) not in the allowed set"),
    "empty file": (lambda b, d: _parquet(b.iloc[:0], d / "x.parquet"), "row count 0 outside [1000, 50000000]"),
    "zero-byte file": (lambda b, d: _touch(d / "x.parquet"), "is empty (0 bytes)"),
    "not a parquet file": (lambda b, d: _bytes(d / "x.parquet", b"PK\x03\x04 this is a zip, not parquet" * 50),
                           "is not a readable parquet or CSV file"),
    "CSV with a wrong delimiter": (lambda b, d: _csv(b, d / "x.csv", sep=";"), "missing columns"),
    "non-UTF-8 text": (lambda b, d: _bytes(d / "x.csv", b.head(50).to_csv(index=False).replace(",US,", ",Sp\xe4in,")
                                           .encode("latin-1") + "caf\xe9,\xff\xfe\n".encode("latin-1")),
                       "is not a readable parquet or CSV file"),
    "single row": (lambda b, d: _parquet(b.iloc[:1], d / "x.parquet"), "row count 1 outside [1000, 50000000]"),
}


def _touch(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _csv(df: pd.DataFrame, path: Path, sep: str) -> Path:
    df.to_csv(path, index=False, sep=sep)
    return path


def _objects(dev, bucket: str, prefix: str) -> int:
    return dev.clients.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix).get("KeyCount", 0)


@pytest.mark.parametrize("case", list(CORPUS))
def test_bad_dataset_is_rejected_named_alerted_and_leaves_no_trace(case, dev, spec_path, base, alerts, tmp_path):
    build, expected = CORPUS[case]
    data = build(base, tmp_path)

    result = runner.invoke(app, ["run", "--env", "dev", "--project-dir", str(REPO), "--model", str(spec_path),
                                 "--data", str(data), "--json"])

    assert result.exit_code == 2, result.output
    doc = json.loads(result.stdout)
    validate = next(s for s in doc["steps"] if s["name"] == "validate")
    assert validate["status"] == "stopped"
    problems = " | ".join(validate["summary"]["failed_expectations"])
    assert expected in problems, problems
    assert [s["status"] for s in doc["steps"][2:]] == ["skipped"] * (len(doc["steps"]) - 2)

    (alert,) = [a for a in alerts(doc["run_id"]) if "Validation failed" in a["Subject"]]
    assert expected in alert["Message"]
    assert "nothing was trained" in alert["Message"] or "could not be read" in alert["Message"]

    with pytest.raises(NotFound):
        Registry(DynamoDBRegistryStore(dev.clients.client("dynamodb"), dev.resources.registry_table.name)).get_model(MODEL)
    assert _objects(dev, dev.resources.data_bucket.name, f"predictions/{MODEL}/") == 0
    assert _objects(dev, dev.resources.artifact_bucket.name, f"models/{MODEL}/") == 0
