"""The results catalog and `stagewise query` (issue 9): after a run, its rows are in
``<model>_results`` (hashed id, prediction, features, label; partitioned by run date and model
version) and the repo's views answer with DuckDB what Athena answers on AWS.

Runs the built-in ``engagement`` model in the ``test`` environment (its own account on the
embedded AWS), so the views, written for ``engagement_results``, have their table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import REPO
from stagewise.pipeline import splitting
from stagewise.pipeline.cli import app
from stagewise.pipeline.generator import generate_customers, write_dataset
from stagewise.platform.runtime.environment import connect
from stagewise.platform.runtime.idhash import hash_ids, read_id_salt
from stagewise.registry.dynamodb import registry_of

runner = CliRunner()


@pytest.fixture(scope="module")
def run(embedded, tmp_path_factory):
    folder = tmp_path_factory.mktemp("catalog")
    df = generate_customers(3_000, seed=57)
    data = folder / "customers.parquet"
    write_dataset(df, data)
    result = runner.invoke(app, ["run", "--env", "test", "--project-dir", str(REPO), "--data", str(data), "--json"])
    assert result.exit_code == 0, result.output
    return {"frame": df, "doc": json.loads(result.stdout), "env": connect("test", project_dir=REPO)}


def _query(sql: str) -> tuple[int, dict]:
    result = runner.invoke(app, ["query", sql, "--env", "test", "--project-dir", str(REPO), "--json"])
    return result.exit_code, json.loads(result.stdout)


def test_a_run_adds_its_rows_partitioned_by_run_date_and_version(run):
    code, doc = _query("SELECT * FROM engagement_results")
    assert code == 0
    rows = pd.DataFrame(doc["rows"])
    run_id = run["doc"]["run_id"]
    assert len(rows) == 3_000 and set(rows["run_id"]) == {run_id}
    assert set(rows["run_date"]) == {f"{run_id[:4]}-{run_id[4:6]}-{run_id[6:8]}"} and set(rows["model_version"]) == {1}
    assert not {"customer_id", "name", "email"} & set(rows.columns)  # PII masked, id only hashed
    salt = read_id_salt(run["env"].clients, run["env"].resources).key
    version = registry_of(run["env"]).get_version("engagement", 1)
    holdout = splitting.holdout_mask(splitting.SplitDefinition.from_lineage(version.lineage), run["frame"])
    frame = run["frame"].assign(customer_id_hash=hash_ids(run["frame"]["customer_id"], salt), holdout=holdout)
    joined = rows.merge(frame, on="customer_id_hash", suffixes=("", "_input"))
    assert len(joined) == 3_000  # every customer once, joinable back with the salt
    assert (joined["in_training"] == ~joined["holdout"]).all() and 0 < joined["holdout"].sum() < 3_000  # v1's own split
    assert (joined["transaction_revenue_month"] == joined["transaction_revenue_month_input"]).all()
    assert np.allclose(joined["engagement_score"], joined["engagement_score_input"])


def test_views_answer_as_their_sql_says(run):
    code, doc = _query("SELECT * FROM at_risk LIMIT 5")
    assert code == 0 and 0 < len(doc["rows"]) <= 5
    code, doc = _query("SELECT * FROM at_risk")
    at_risk = pd.DataFrame(doc["rows"])
    code, doc = _query("SELECT customer_id_hash, prediction, days_active_last_30 FROM engagement_results")
    everything = pd.DataFrame(doc["rows"])
    expected = everything[(everything["days_active_last_30"] >= 10) & (everything["prediction"] < 0.3)]
    assert set(at_risk["customer_id_hash"]) == set(expected["customer_id_hash"])
    assert at_risk["prediction"].is_monotonic_increasing

    code, doc = _query("SELECT * FROM model_performance")
    (perf,) = doc["rows"]
    scored = next(s for s in run["doc"]["steps"] if s["name"] == "score")["summary"]["versions"]["1"]
    # measured only on the rows v1 did not train on: its holdout customers by its recorded split
    version = registry_of(run["env"]).get_version("engagement", 1)
    holdout = splitting.holdout_mask(splitting.SplitDefinition.from_lineage(version.lineage), run["frame"])
    assert perf["rows_scored"] == scored["rows"] == 3_000
    assert perf["labeled"] == scored["labeled"] == int(holdout.sum()) == 3_000 - scored["in_training"]
    for metric in ("mae", "rmse", "r2"):  # the SQL's metrics are the pipeline's
        assert perf[metric] == pytest.approx(scored[metric], rel=1e-9)
    code, doc = _query("SELECT * FROM high_value")
    assert code == 0 and all(r["prediction"] >= 0.7 and r["transaction_revenue_month"] >= 100 for r in doc["rows"])


def test_bad_sql_exits_4_naming_what_there_is(run):
    code, doc = _query("SELECT * FROM nope")
    assert code == 4 and "nope" in doc["error"] and "engagement_results" in doc["error"]


def test_run_date_comes_from_the_run_id_or_the_run_start():
    from stagewise.pipeline.catalog import run_date

    assert run_date("20261122T041500Z-1a2b3c") == "2026-11-22"
    assert run_date("a3f0c2-execution", "2026-11-23T00:00:01+00:00") == "2026-11-23"
    with pytest.raises(ValueError, match="cannot partition"):
        run_date("a3f0c2-execution")
