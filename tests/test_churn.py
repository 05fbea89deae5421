"""The churn model (issue 9): binary classification on the generated customers, side by side with
engagement in one registry. Its gate is PR-AUC >= 0.70; its decision threshold is the best
precision at recall >= 0.70 on the holdout, stored with the version; scoring measures precision
and recall at that threshold; explanations are in log-odds.

``churn`` (the built-in spec; no other module runs it) and the engagement spec under its own name
run side by side in the dev registry."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import precision_recall_curve
from typer.testing import CliRunner

from conftest import REPO, engagement_spec
from stagewise.pipeline import modeling, scoring, splitting
from stagewise.pipeline.cli import app
from stagewise.pipeline.generator import generate_customers, write_dataset
from stagewise.pipeline.spec import load_spec
from stagewise.platform.runtime.objects import ObjectStore
from stagewise.platform.runtime.environment import connect

runner = CliRunner()
ROWS = 8_000


PEER = "engagement-churn-peer"


def _run(*args: str):
    return runner.invoke(app, [*args, "--env", "dev", "--project-dir", str(REPO), "--json"])


@pytest.fixture(scope="module")
def runs(embedded, tmp_path_factory):
    folder = tmp_path_factory.mktemp("churn")
    df = generate_customers(ROWS, seed=71)
    data = folder / "customers.parquet"
    write_dataset(df, data)
    churn = _run("run", "--model", "churn", "--data", str(data))
    peer = engagement_spec(folder, PEER)
    engagement = _run("run", "--model", str(peer), "--data", str(data))  # the same file: each ignores the other's label
    return {"frame": df, "data": data, "folder": folder, "churn": churn, "engagement": engagement,
            "env": connect("dev", project_dir=REPO)}


def _steps(result) -> dict:
    return {s["name"]: s for s in json.loads(result.stdout)["steps"]}


def test_churn_passes_its_gate_beside_engagement_in_one_registry(runs):
    assert runs["churn"].exit_code == 0, runs["churn"].output[-3000:]
    assert runs["engagement"].exit_code == 0, runs["engagement"].output[-3000:]
    ev = _steps(runs["churn"])["evaluate"]["summary"]
    assert ev["gates_passed"] and [g["metric"] for g in ev["gates"]] == ["pr_auc"]
    assert ev["metrics"]["pr_auc"] >= 0.70 and ev["best_achievable"]["pr_auc"] >= ev["metrics"]["pr_auc"] - 0.05
    listed = runner.invoke(app, ["registry", "list", "--env", "dev", "--json"])
    models = {m["name"]: m for m in json.loads(listed.stdout)["models"]}
    assert {"churn", PEER} <= set(models)
    assert models["churn"]["serving"]["champion"] == models[PEER]["serving"]["champion"] == 1
    assert set(models["churn"]["versions"][0]["metrics"]) >= {"pr_auc", "threshold", "precision", "recall"}
    assert "r2" in models[PEER]["versions"][0]["metrics"]


def test_threshold_is_the_best_precision_at_recall_070_and_scoring_uses_it(runs):
    spec = load_spec("churn")
    env = runs["env"]
    objects = ObjectStore(env.clients.client("s3"))
    from stagewise.registry.dynamodb import DynamoDBRegistryStore
    from stagewise.registry.service import Registry

    version = Registry(DynamoDBRegistryStore(env.clients.client("dynamodb"), env.resources.registry_table.name)).get_version("churn", 1)
    assert version.lineage["task"] == "classification"
    model = scoring.load_artifact(objects, version, {})
    frame = runs["frame"]
    hold = splitting.holdout_mask(splitting.SplitDefinition.from_lineage(version.lineage), frame)  # the version's own split
    y = frame["churned_30d"].to_numpy()[hold]
    p = modeling.predict(model, modeling.feature_matrix(frame.iloc[hold], spec), spec)
    precision, recall, thresholds = precision_recall_curve(y, p)
    eligible = recall[:-1] >= 0.70
    t = version.metrics["threshold"]
    assert t in thresholds and recall[:-1][thresholds == t][0] >= 0.70
    assert precision[:-1][thresholds == t][0] == precision[:-1][eligible].max()  # none better at that recall
    tp, fp, fn, _ = modeling.confusion(y, p, t)
    assert version.metrics["recall"] == pytest.approx(tp / (tp + fn)) and version.metrics["precision"] == pytest.approx(tp / (tp + fp))

    # scoring measures the version only on rows it did not train on: here exactly its holdout rows
    scored = _steps(runs["churn"])["score"]["summary"]["versions"]["1"]
    tp, fp, fn, tn = modeling.confusion(y, p, t)
    assert (scored["tp"], scored["fp"], scored["fn"], scored["tn"]) == (tp, fp, fn, tn)
    assert scored["recall"] == pytest.approx(tp / (tp + fn)) and scored["labeled"] == int(hold.sum()) < ROWS
    assert scored["in_training"] == ROWS - int(hold.sum()) and scored["rows"] == ROWS


def test_churn_explanations_are_log_odds(runs):
    customer = runs["frame"]["customer_id"].iloc[11]
    result = _run("explain", "churn", customer)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    raw = doc["bias"] + sum(c["contribution"] for c in doc["contributions"])
    assert raw == pytest.approx(doc["raw"], abs=1e-4)
    assert doc["prediction"] == pytest.approx(1 / (1 + np.exp(-doc["raw"])), abs=1e-6)


def test_a_label_that_is_not_0_or_1_fails_validation(runs):
    bad = runs["frame"].copy()
    bad["churned_30d"] = bad["churned_30d"].astype("float64")
    bad.loc[:9, "churned_30d"] = 0.5
    path = runs["folder"] / "bad.parquet"
    bad.to_parquet(path, index=False)
    result = _run("run", "--model", "churn", "--data", str(path))
    assert result.exit_code == 2
    failed = _steps(result)["validate"]["summary"]["failed_expectations"]
    assert any("churned_30d" in f for f in failed), failed
