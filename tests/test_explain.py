"""`stagewise explain MODEL CUSTOMER_ID` (issue 9): the version and prediction a customer got in the
newest published run, and XGBoost's TreeSHAP contributions, which with the bias add up to the
model's raw output (the prediction is that output clipped to the target's range)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import REPO, engagement_spec, run_engagement_copy
from stagewise.pipeline import scoring
from stagewise.pipeline.cli import app
from stagewise.platform.runtime.objects import ObjectStore
from stagewise.platform.runtime.idhash import hash_ids, read_id_salt

MODEL = "engagement-explain"
runner = CliRunner()


@pytest.fixture(scope="module")
def run(dev, tmp_path_factory):
    spec, df, result = run_engagement_copy(tmp_path_factory.mktemp("explain"), MODEL, 31, "--json")
    objects = ObjectStore(dev.clients.client("s3"))
    doc = json.loads(result.stdout)
    published = scoring.read_predictions(objects, dev.resources.data_bucket.name, MODEL, doc["run_id"])
    return {"spec": spec, "frame": df, "run_id": doc["run_id"], "published": published}


def _explain(run, customer_id: str, *args: str):
    return runner.invoke(app, ["explain", str(run["spec"]), customer_id, "--project-dir", str(REPO), "--json", *args])


def test_contributions_plus_bias_are_the_prediction(dev, run):
    salt = read_id_salt(dev.clients, dev.resources).key
    published = run["published"].set_index("customer_id_hash")
    frame = run["frame"]
    # a customer with an ordinary prediction, and the ones with the lowest and highest
    hashes = hash_ids(frame["customer_id"], salt)
    preds = published.loc[hashes, "prediction"].to_numpy()
    picks = [int(np.argsort(np.abs(preds - np.median(preds)))[0]), int(np.argmin(preds)), int(np.argmax(preds))]
    for i in picks:
        customer = frame["customer_id"].iloc[i]
        result = _explain(run, customer)
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        row = published.loc[hashes[i]]
        assert doc["run_id"] == run["run_id"] and doc["version"] == int(row["model_version"]) == 1
        assert doc["prediction"] == float(row["prediction"])  # what was published for this customer
        contributions = doc["contributions"]
        assert [c["feature"] for c in contributions] != [] and len(contributions) == 33
        total = doc["bias"] + sum(c["contribution"] for c in contributions)
        assert total == pytest.approx(doc["raw"], abs=1e-4)  # float32 sums inside XGBoost
        assert doc["prediction"] == pytest.approx(min(max(doc["raw"], 0.0), 1.0), abs=1e-6)
        assert [abs(c["contribution"]) for c in contributions] == sorted((abs(c["contribution"]) for c in contributions), reverse=True)
        values = {c["feature"]: c for c in contributions}
        assert values["age"]["value"] == int(frame["age"].iloc[i]) and 0 <= values["age"]["percentile"] <= 100
        assert values["country"]["value"] == frame["country"].iloc[i] and 0 < values["country"]["training_share"] < 1


def test_unknown_customer_or_model_without_runs_exit_4(run):
    result = _explain(run, "cus_does_not_exist")
    assert result.exit_code == 4 and "cus_does_not_exist" in json.loads(result.stdout)["error"]
    unscored = engagement_spec(run["spec"].parent, "engagement-unscored")
    other = runner.invoke(app, ["explain", str(unscored), "cus_x", "--project-dir", str(REPO), "--json"])
    assert other.exit_code == 4 and "has no published predictions yet" in json.loads(other.stdout)["error"]
