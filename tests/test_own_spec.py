"""A user's own spec and data (issue 9): a dataset of another shape — other id, other columns,
another target, PII of its own — runs from its spec file alone, with no code change:
`stagewise run --model path/to/spec.yaml --data FILE` validates, trains, registers, scores,
publishes its results table and explains a prediction.

The dataset is made here: house prices in thousands from size, rooms, age and district, with noise.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import REPO
from stagewise.pipeline.cli import app

runner = CliRunner()
MODEL = "house-prices"
SPEC = f"""
name: {MODEL}
description: price of a house in thousands of EUR
task: regression
id_column: listing_ref
pii_columns: [seller_phone]
target: {{name: price_k, min: 0, max: 5000}}
features:
  - {{name: area_m2, type: float, min: 10, max: 1000}}
  - {{name: rooms, type: integer, min: 1, max: 20}}
  - {{name: age_years, type: integer, min: 0, max: 300}}
  - {{name: district, type: categorical, categories: [north, south, east, west, centre]}}
  - {{name: has_garden, type: boolean}}
expectations:
  row_count: {{min: 500}}
  unique: [listing_ref]
xgboost: {{n_estimators: 200, max_depth: 4, learning_rate: 0.1}}
gates:
  - {{metric: r2, comparator: ">=", threshold: 0.8, min_samples: 100}}
review:
  size: 25
"""


def houses(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    district = rng.choice(["north", "south", "east", "west", "centre"], n)
    area = rng.uniform(30, 250, n).round(1)
    rooms = np.clip((area / 30).round().astype(int) + rng.integers(-1, 2, n), 1, 20)
    age = rng.integers(0, 120, n)
    garden = rng.random(n) < 0.4
    premium = pd.Series(district).map({"centre": 1.6, "north": 1.2, "west": 1.1, "east": 0.9, "south": 0.8}).to_numpy()
    price = (3.2 * area * premium + 15 * rooms - 0.6 * age + 25 * garden + rng.normal(0, 20, n)).clip(1, 5000)
    return pd.DataFrame({
        "listing_ref": [f"L-{seed}-{i:06d}" for i in range(n)], "seller_phone": [f"+44 7700 9{i:05d}" for i in range(n)],
        "area_m2": area, "rooms": rooms, "age_years": age, "district": district, "has_garden": garden,
        "price_k": price.round(2),
    })


@pytest.fixture(scope="module")
def ran(dev, tmp_path_factory):
    folder = tmp_path_factory.mktemp("own-spec")
    spec = folder / "houses.yaml"
    spec.write_text(SPEC)
    data = folder / "houses.csv"  # a CSV export, as users have them
    frame = houses(3_000, seed=5)
    frame.to_csv(data, index=False)
    result = runner.invoke(app, ["run", "--model", str(spec), "--data", str(data), "--project-dir", str(REPO), "--json"])
    return {"spec": spec, "frame": frame, "result": result}


def test_a_spec_of_another_shape_runs_end_to_end(ran):
    result = ran["result"]
    assert result.exit_code == 0, result.output[-3000:]
    doc = json.loads(result.stdout)
    steps = {s["name"]: s for s in doc["steps"]}
    assert steps["validate"]["summary"]["rows"] == 3_000 and steps["validate"]["summary"]["failed"] == 0
    assert steps["evaluate"]["summary"]["metrics"]["r2"] >= 0.8 and steps["evaluate"]["summary"]["gates_passed"]
    assert steps["register"]["summary"]["version"] == 1 and steps["register"]["summary"]["stage"] == "champion"
    assert steps["score"]["summary"]["rows_scored"] == 3_000 and steps["score"]["summary"]["review_queue"]["rows"] == 25
    assert steps["score"]["summary"]["versions"]["1"]["r2"] > 0.8  # the label is in the scored file too
    listed = runner.invoke(app, ["registry", "list", "--json"])
    assert MODEL in {m["name"] for m in json.loads(listed.stdout)["models"]}


def test_its_results_table_and_explanations_work_too(ran):
    q = runner.invoke(app, ["query", "SELECT count(*) AS n, avg(price_k) AS mean_price FROM house_prices_results",
                            "--project-dir", str(REPO), "--json"])
    assert q.exit_code == 0, q.output
    (row,) = json.loads(q.stdout)["rows"]
    assert row["n"] == 3_000 and row["mean_price"] == pytest.approx(ran["frame"]["price_k"].mean())
    ref = ran["frame"]["listing_ref"].iloc[7]
    ex = runner.invoke(app, ["explain", str(ran["spec"]), ref, "--project-dir", str(REPO), "--json"])
    assert ex.exit_code == 0, ex.output
    doc = json.loads(ex.stdout)
    assert {c["feature"] for c in doc["contributions"]} == {"area_m2", "rooms", "age_years", "district", "has_garden"}
    assert doc["bias"] + sum(c["contribution"] for c in doc["contributions"]) == pytest.approx(doc["raw"], abs=1e-2)
    assert "seller_phone" not in ex.stdout and ran["frame"]["seller_phone"].iloc[7] not in q.stdout + ex.stdout
