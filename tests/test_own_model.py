"""Bringing your own model (issue 14's rough edges), as a user does from the README: a survey-like
table (number-coded occupations, whole numbers stored as floats, an interview date), a spec written
by hand, and every command used by the registered model's name.

The table is made here: a binary label from a logistic function of the answers, ~6,000 rows like
the public "affairs" survey the issue's user tried.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import REPO
from stagewise.pipeline import catalog, modeling
from stagewise.pipeline.cli import app
from stagewise.pipeline.spec import SpecError, load_spec, parse_spec
from stagewise.registry.dynamodb import registry_of

MODEL = "survey-affairs"
ROWS = 6_000
runner = CliRunner()
SPEC = f"""
name: {MODEL}
description: did the respondent have an affair (survey)
task: classification
id_column: respondent
target: {{name: had_affair, min: 0, max: 1}}
ignored_columns: [affairs]
features:
  - {{name: rate_marriage, type: integer, min: 1, max: 5}}
  - {{name: age, type: float, min: 15, max: 70}}
  - {{name: yrs_married, type: float, min: 0, max: 45}}
  - {{name: children, type: integer, min: 0, max: 10}}
  - {{name: religious, type: integer, min: 1, max: 4}}
  - {{name: occupation, type: categorical, categories: [1, 2, 3, 4, 5, 6]}}
  - {{name: occupation_husb, type: categorical, categories: [1, 2, 3, 4, 5, 6]}}
expectations:
  row_count: {{min: 500}}
  unique: [respondent]
xgboost: {{n_estimators: 150, max_depth: 4, learning_rate: 0.1, n_jobs: 1}}
gates:
  - {{metric: pr_auc, comparator: ">=", threshold: 0.3, min_samples: 200}}
review:
  size: 30
views:
  flagged_wives: views/flagged.sql
"""
VIEW = f"""-- the respondents the newest run flags, with their answers
SELECT respondent_hash, prediction, occupation, rate_marriage
FROM {MODEL.replace('-', '_')}_results
WHERE run_id = (SELECT max(run_id) FROM {MODEL.replace('-', '_')}_results) AND decision
"""


def survey(n: int, seed: int, first_id: int = 1) -> pd.DataFrame:
    """Survey answers as the public data stores them: floats even for whole numbers and codes."""
    rng = np.random.default_rng(seed)
    rate = rng.integers(1, 6, n).astype("float64")
    age = rng.choice([17.5, 22.0, 27.0, 32.0, 37.0, 42.0], n)
    yrs = np.minimum(rng.choice([0.5, 2.5, 6.0, 9.0, 13.0, 16.5, 23.0], n), age - 16)
    children = rng.integers(0, 6, n).astype("float64")
    religious = rng.integers(1, 5, n).astype("float64")
    occupation = rng.integers(1, 7, n).astype("float64")
    husband = rng.integers(1, 7, n).astype("float64")
    logit = -0.2 - 0.7 * (rate - 3) + 0.05 * yrs - 0.35 * (religious - 2.5) + 0.15 * (occupation == 5) - 0.02 * (age - 30)
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int64")
    return pd.DataFrame({
        "respondent": np.arange(first_id, first_id + n), "rate_marriage": rate, "age": age, "yrs_married": yrs,
        "children": children, "religious": religious, "occupation": occupation, "occupation_husb": husband,
        "affairs": np.where(label == 1, rng.gamma(2.0, 0.5, n), 0.0).round(3), "had_affair": label,
    })


def cli(*args: str, as_json: bool = True):
    result = runner.invoke(app, [*args, "--project-dir", str(REPO), *(["--json"] if as_json else [])])
    return result, (json.loads(result.stdout) if as_json and result.stdout.strip().startswith("{") else None)


@pytest.fixture(scope="module")
def world(dev, tmp_path_factory):
    folder = tmp_path_factory.mktemp("own-model")
    (folder / "views").mkdir()
    (folder / "views" / "flagged.sql").write_text(VIEW)
    spec = folder / "survey.yaml"
    spec.write_text(SPEC)
    data = folder / "survey.csv"
    frame = survey(ROWS, seed=3)
    frame.to_csv(data, index=False)  # whole numbers written as 1.0, 2.0 ...
    result, doc = cli("run", "--model", str(spec), "--data", str(data))
    assert result.exit_code == 0, result.output[-3000:]
    return {"folder": folder, "spec": spec, "data": data, "frame": frame, "run": doc}


def test_number_coded_categories_and_whole_floats_run_as_declared(world):
    steps = {s["name"]: s["summary"] for s in world["run"]["steps"]}
    assert steps["validate"]["failed"] == 0 and steps["register"]["version"] == 1
    result, doc = cli("query", f"SELECT occupation, count(*) AS n FROM {MODEL.replace('-', '_')}_results GROUP BY 1 ORDER BY 1")
    assert result.exit_code == 0, result.output
    assert [r["occupation"] for r in doc["rows"]] == ["1", "2", "3", "4", "5", "6"]  # the spec's categories, as text
    assert sum(r["n"] for r in doc["rows"]) == ROWS


def test_a_whole_number_column_with_a_fraction_still_fails_validation(world):
    bad = world["frame"].copy()
    bad.loc[7, "children"] = 2.5  # not a whole number: no longer an integer column
    path = world["folder"] / "bad.csv"
    bad.to_csv(path, index=False)
    result, doc = cli("run", "--model", str(world["spec"]), "--data", str(path))
    assert result.exit_code == 2 and "children" in json.dumps(doc)


def test_explain_and_review_take_the_registered_name_and_speak_of_respondents(world):
    respondent = str(int(world["frame"]["respondent"].iloc[42]))
    result, _ = cli("explain", MODEL, respondent, as_json=False)  # the name, not the spec's path
    assert result.exit_code == 0, result.output
    assert f"respondent {respondent}" in result.output and "customer" not in result.output.lower()
    assert re.search(r"decision (yes|no) \(threshold 0\.\d+: 0\.\d+ (>=|<) 0\.\d+\)", result.output)  # a classifier's
    result, doc = cli("explain", MODEL, respondent)
    assert doc["respondent"] == doc["id"] == respondent and doc["entity"] == "respondent"
    assert doc["decision"] == (doc["prediction"] >= doc["threshold"])

    result, doc = cli("review", MODEL)
    assert result.exit_code == 0, result.output
    assert doc["rows"] == len(doc["queue"]) == 30 and set(doc["reasons"]) <= {"extreme", "uncertain", "disagreement"}
    priorities = [q["priority"] for q in doc["queue"]]
    assert priorities == sorted(priorities, reverse=True)
    result, _ = cli("review", MODEL, "--top", "5", as_json=False)
    assert result.exit_code == 0 and "30 respondent(s) to review" in result.output and "25 more not shown" in result.output

    result, doc = cli("explain", "no-such-model", "1")
    assert result.exit_code == 4 and MODEL in doc["error"]  # the models there are


def test_a_spec_declares_its_own_views_and_query_fits_the_terminal(world):
    result, doc = cli("query", "SELECT * FROM flagged_wives")
    assert result.exit_code == 0, result.output
    assert doc["rows"] and all(set(r) == {"respondent_hash", "prediction", "occupation", "rate_marriage"} for r in doc["rows"])
    result, _ = cli("query", f"SELECT * FROM {MODEL.replace('-', '_')}_results LIMIT 3", as_json=False)
    assert result.exit_code == 0
    assert max(len(line) for line in result.stdout.splitlines()) <= 80  # the test terminal's width
    assert "more column(s) not shown" in result.stderr and "--json" in result.stderr


def test_a_view_of_a_model_without_results_says_whose_it_is():
    db = catalog.connect({}, catalog.views([load_spec("engagement")]))
    with pytest.raises(catalog.QueryError, match="at_risk belongs to model engagement, which has no published results"):
        catalog.query(db, "SELECT * FROM at_risk LIMIT 5")


def test_a_rejected_version_prints_the_gate_that_failed(world):
    weak = world["folder"] / "weak.yaml"
    weak.write_text(SPEC.replace("n_estimators: 150, max_depth: 4", "n_estimators: 2, max_depth: 1"))
    result, _ = cli("run", "--model", str(weak), "--data", str(world["data"]), as_json=False)
    assert result.exit_code == 3, result.output
    out = result.stdout
    assert "v2 rejected" in out and re.search(r"✗ pr_auc_vs_champion = -0\.\d+ needs >= -0\.01 \([\d,]+ rows, min 200\): fail", out)
    assert re.search(r"pr_auc_vs_champion\s+│\s+-0\.\d+", out)  # in the gates table too
    assert "rejected as rejected" not in out


@pytest.mark.parametrize(("key", "reason"), [("enable_categorical", "always sets it"), ("callbacks", "sets its own"),
                                             ("early_stopping_rounds", "without a validation set")])
def test_xgboost_keys_the_pipeline_sets_are_refused_at_load_naming_the_key(world, key, reason):
    path = world["folder"] / f"bad-{key}.yaml"
    path.write_text(SPEC.replace("n_jobs: 1}", f"n_jobs: 1, {key}: 1}}"))
    result, doc = cli("run", "--model", str(path), "--data", str(world["data"]))
    assert result.exit_code == 4 and f"xgboost.{key}" in doc["error"] and reason in doc["error"]


def test_n_jobs_is_honoured_as_the_training_thread_limit(world):
    spec = load_spec(world["spec"])
    frame = modeling.conform(world["frame"].head(300), spec)
    model = modeling.train_model(modeling.feature_matrix(frame, spec), frame["had_affair"].to_numpy("float64"), spec, n_jobs=8)
    assert spec.threads == 1 and model.get_params()["n_jobs"] == 1
    with pytest.raises(SpecError, match="n_jobs .* whole number >= 1"):
        parse_spec({**load_spec(world["spec"]).model_dump(mode="json"), "xgboost": {"n_jobs": 0}})


def test_spec_errors_name_the_feature_and_the_file(world):
    doc = load_spec(world["spec"]).model_dump(mode="json")
    doc["features"][5] = {"name": "occupation", "type": "categorical"}
    with pytest.raises(SpecError, match=r"features\[5\] \(occupation\): .*needs 'categories'"):
        parse_spec(doc)
    doc["features"][5] = {"name": "occupation", "type": "categorical", "categories": [1, 2, None]}
    with pytest.raises(SpecError, match=r"features\[5\] \(occupation\)\.categories"):
        parse_spec(doc)
    broken = Path(world["folder"]) / "broken.yaml"
    broken.write_text("name: x\nfeatures: [\n")
    result, doc = cli("run", "--model", str(broken), "--data", str(world["data"]))
    assert result.exit_code == 4 and str(broken) in doc["error"] and "not valid YAML" in doc["error"]


def test_a_time_split_holds_out_the_latest_period_and_later_data_is_compared_after_the_cutoff(world):
    folder = world["folder"]
    spec = folder / "survey-time.yaml"
    spec.write_text(SPEC.replace(f"name: {MODEL}", "name: survey-by-date").replace("views:\n  flagged_wives: views/flagged.sql\n", "")
                    + "split: {time_column: interview_date, holdout_period: 30d}\n")
    first = world["frame"].assign(interview_date=pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(ROWS) % 120, "D"))
    later = survey(ROWS, seed=4, first_id=ROWS + 1).assign(
        interview_date=pd.Timestamp("2024-03-01") + pd.to_timedelta(np.arange(ROWS) % 120, "D"))
    runs = []
    for i, frame in enumerate((first, later)):
        path = folder / f"dated-{i}.csv"
        frame.to_csv(path, index=False)
        result, doc = cli("run", "--model", str(spec), "--data", str(path))
        assert result.exit_code == 0, result.output[-2000:]
        runs.append({s["name"]: s["summary"] for s in doc["steps"]})
    split = runs[0]["train"]["split"]
    assert split["method"] == "time" and split["cutoff"] == "2024-03-30T00:00:00+00:00"  # the last 30 days are holdout
    assert runs[0]["train"]["holdout_rows"] == int((first["interview_date"] > "2024-03-30").sum())
    # v2 holds out its own last 30 days, all after v1's cutoff: every one of them is outside v1's training
    assert runs[1]["evaluate"]["champion"]["rows"] == runs[1]["train"]["holdout_rows"] > 1_000


def test_score_takes_the_registered_name_and_an_unknown_name_lists_what_there_is(world):
    later = world["folder"] / "later.csv"
    survey(2_000, seed=9, first_id=100_001).to_csv(later, index=False)
    result, doc = cli("score", "--model", MODEL, "--data", str(later))  # the spec comes from the registry
    assert result.exit_code == 0, result.output[-2000:]
    assert doc["model"] == MODEL and {s["name"]: s["summary"] for s in doc["steps"]}["score"]["rows_scored"] == 2_000
    result, doc = cli("score", "--model", "no-such-model", "--data", str(later))
    assert result.exit_code == 4 and MODEL in doc["error"] and "built-in specs" in doc["error"]


def test_too_few_rows_outside_both_training_splits_hold_the_new_version_for_a_person(world, dev):
    import hashlib

    def holdout(ids, salt):  # the hash split's written definition
        return np.array([int.from_bytes(hashlib.blake2b(str(i).encode(), key=salt.encode(), digest_size=8).digest(), "big")
                         / 2**64 < 0.2 for i in ids])

    spec = world["folder"] / "resalted.yaml"  # another salt: only ~20% of v2's holdout is outside v1's training
    spec.write_text(SPEC.replace("review:\n", "split: {salt: resalted}\nrollout: {champion_min_samples: 500}\nreview:\n"))
    before = registry_of(dev).get_model(MODEL)
    result, _ = cli("run", "--model", str(spec), "--data", str(world["data"]), as_json=False)
    assert result.exit_code == 0, result.output[-2000:]
    assert "held (not rolled out)" in result.stdout and f"stagewise registry promote {MODEL}" in result.stdout
    after = registry_of(dev).get_model(MODEL)
    number = after.latest_version
    assert after.serving() == before.serving() and after.stages[number] == "registered"  # nothing served changed
    version = registry_of(dev).get_version(MODEL, number)
    gate = next(g for g in version.gates if g.metric == "pr_auc_vs_champion")
    ids = world["frame"]["respondent"]
    assert gate.outcome == "inconclusive" and gate.samples == int((holdout(ids, "resalted") & holdout(ids, MODEL)).sum()) < 500
    result = runner.invoke(app, ["registry", "promote", MODEL, str(number), "--json"])  # a person looked
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["serving"]["champion"] == number  # dev's plan [100] crowns it
