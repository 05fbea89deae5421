"""Drift: PSI and KS against hand-computed values and scipy, mergeable partitions, and a drifted
scoring run that alerts, publishes PSI per feature and holds the rollout as the spec says."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from scipy.stats import ks_2samp
from typer.testing import CliRunner

from conftest import REPO
from stagewise.monitoring import drift
from stagewise.pipeline.cli import app
from stagewise.pipeline.generator import generate_customers, with_drift, write_dataset
from stagewise.pipeline.modeling import baseline_statistics, feature_matrix
from stagewise.pipeline.spec import load_spec
from stagewise.platform.runtime.environment import connect


def test_psi_matches_a_hand_computed_value():
    # (0.5-0.25)*ln(0.5/0.25) + 0 + (0.25-0.5)*ln(0.25/0.5) = 0.5*ln 2
    assert drift.psi([0.25, 0.25, 0.5], [0.5, 0.25, 0.25]) == pytest.approx(0.5 * math.log(2))
    assert drift.psi([0.1] * 10, [0.1] * 10) == 0.0
    # an empty bin is floored at 1e-4, not infinite: (0-0.5)*ln(1e-4/0.5) + (1-0.5)*ln(1/0.5)
    assert drift.psi([0.5, 0.5], [0.0, 1.0]) == pytest.approx(0.5 * math.log(0.5 / 1e-4) + 0.5 * math.log(2), rel=1e-3)


def test_bins_come_from_the_baseline_deciles_plus_a_null_bin():
    edges = drift.numeric_edges([0, 1, 2, 2, 3, 10])  # min and max dropped, duplicates merged
    assert edges.tolist() == [1.0, 2.0, 3.0]
    assert drift.bin_counts(np.array([0.5, 1.0, 1.5, 2.5, 99, np.nan]), edges).tolist() == [2, 1, 1, 1, 1]


@pytest.fixture(scope="module")
def spec():
    return load_spec("engagement")


@pytest.fixture(scope="module")
def baseline(spec):
    return baseline_statistics(feature_matrix(generate_customers(20_000, seed=41), spec), spec)


def test_same_population_does_not_drift_and_a_shift_does(spec, baseline):
    same = drift.evaluate(drift.collect(generate_customers(20_000, seed=42), baseline), baseline, version=1)
    assert same.drifted == [] and max(f.psi for f in same.features) < 0.05
    shifted = with_drift(generate_customers(20_000, seed=42), {"avg_session_minutes": 1.0, "device_os": 0.4})
    report = drift.evaluate(drift.collect(shifted, baseline), baseline, version=1)
    top = [f.feature for f in report.features[:2]]
    assert set(top) == {"avg_session_minutes", "device_os"} and all(f.drifted for f in report.features[:2])
    assert report.drifted_share == pytest.approx(2 / 33)
    assert next(f for f in report.features if f.feature == "device_os").ks is None  # categorical: PSI only


def test_ks_is_scipys_two_sample_statistic(baseline):
    frame = generate_customers(1_500, seed=43)  # fewer rows than the sample cap: every value is kept
    counts = drift.collect(frame, baseline)
    report = drift.evaluate(counts, baseline, version=1)
    ks = next(f.ks for f in report.features if f.feature == "avg_session_minutes")
    expected = ks_2samp(baseline["features"]["avg_session_minutes"]["sample"], frame["avg_session_minutes"]).statistic
    assert ks == pytest.approx(expected, abs=1e-6)
    # and scipy itself agrees with a hand computation: ECDFs of [1,2,3] and [2,3,4,5] differ most at 3 (1 - 1/2)
    assert ks_2samp([1, 2, 3], [2, 3, 4, 5]).statistic == pytest.approx(0.5)


def test_partitions_merge_to_the_whole(baseline):
    frame = generate_customers(10_000, seed=44)
    whole = drift.collect(frame, baseline)
    parts = [frame.iloc[rows] for rows in np.array_split(np.arange(len(frame)), 3)]
    merged = drift.merge([drift.collect(part, baseline) for part in parts])
    assert merged["rows"] == whole["rows"]
    for name, entry in whole["features"].items():
        assert merged["features"][name]["counts"] == entry["counts"], name
    a = drift.evaluate(whole, baseline, 1)
    b = drift.evaluate(merged, baseline, 1)
    assert {f.feature: f.psi for f in a.features} == pytest.approx({f.feature: f.psi for f in b.features})


runner = CliRunner()


def _steps(*args: str) -> tuple[dict, dict]:
    result = runner.invoke(app, [*args, "--env", "test", "--project-dir", str(REPO), "--json"])
    assert result.stdout.strip().startswith("{"), result.output
    doc = json.loads(result.stdout)
    assert result.exit_code == 0, doc.get("error")
    return doc, {s["name"]: s["summary"] for s in doc["steps"]}


def test_drifted_scoring_run_alerts_publishes_psi_and_holds_the_rollout(embedded, tmp_path):
    """test env (plan 50 -> 100), a copy of the engagement spec baking 3 runs per step: v1 champion,
    v2 challenger at 50%, then drifted data: the drift alert names the features and PSI,
    FeaturePSI reaches CloudWatch, the rollout holds (spec: on_rollout hold)."""
    import yaml
    from importlib import resources

    doc = yaml.safe_load((resources.files("stagewise.pipeline.specs") / "engagement.yaml").read_text())
    doc.pop("views")  # SQL files beside the built-in spec, over engagement_results
    doc["name"] = "engagement-drift"
    doc["rollout"]["bake"] = {"min_minutes": 0, "min_scoring_runs": 3}
    spec_path = tmp_path / "engagement-drift.yaml"
    spec_path.write_text(yaml.safe_dump(doc))
    paths = {}
    for seed in (51, 52, 53):
        df = generate_customers(20_000, seed=seed)
        if seed == 53:
            df = with_drift(df, {"sessions_per_week": 0.8, "device_os": 0.3}, seed)
        paths[seed] = tmp_path / f"d{seed}.parquet"
        write_dataset(df, paths[seed])
    _steps("run", "--data", str(paths[51]), "--model", str(spec_path))
    _, second = _steps("run", "--data", str(paths[52]), "--model", str(spec_path))
    assert second["rollout"]["serving"]["weight"] == 50 and second["monitor"]["alert"] is False

    conn = connect("test", project_dir=REPO)
    sqs = conn.clients.client("sqs")
    queue = sqs.create_queue(QueueName="drift-alerts")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    conn.clients.client("sns").subscribe(TopicArn=conn.resources.alert_topic_arn, Protocol="sqs", Endpoint=arn)

    doc, third = _steps("score", "--data", str(paths[53]), "--model", str(spec_path))
    assert third["monitor"]["alert"] is True
    for version in third["monitor"]["versions"].values():
        assert set(version["drifted"]) == {"sessions_per_week", "device_os"}
        assert version["top"][0][0] == "sessions_per_week" and version["top"][0][1] > 0.2
    assert third["rollout"]["outcome"] == "held" and "data drift" in third["rollout"]["reason"]
    assert third["rollout"]["serving"]["weight"] == 50  # nothing served changed

    bodies = [json.loads(m["Body"]) for m in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=2)["Messages"]]
    alert = next(b for b in bodies if "Data drift" in b["Subject"])
    assert "sessions_per_week PSI" in alert["Message"] and "device_os PSI" in alert["Message"]
    assert "Environment: test" in alert["Message"] and "hold" in alert["Message"]

    cw = conn.clients.client("cloudwatch")
    now = datetime.now(timezone.utc)
    dims = [{"Name": "Environment", "Value": "test"}, {"Name": "Model", "Value": "engagement-drift"},
            {"Name": "Version", "Value": "1"}, {"Name": "Feature", "Value": "sessions_per_week"}]
    points = cw.get_metric_statistics(Namespace="Stagewise", MetricName="FeaturePSI", Dimensions=dims,
                                      StartTime=now - timedelta(hours=1), EndTime=now + timedelta(minutes=5),
                                      Period=3600, Statistics=["Maximum"])["Datapoints"]
    assert points and points[0]["Maximum"] > 0.2
