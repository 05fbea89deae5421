"""The SQL sandbox (issue 16): `stagewise query` and the analyst agent's `query_results` run one
read-only SELECT over the results catalog and nothing else; no SQL reads or writes a file.

A corpus of hostile statements runs against a real catalog: the engagement spec under its own model
name (``sql-sandbox``) run in dev on the embedded AWS, its results synced to a cache folder beside
the run's input (raw ids, names, e-mails: what must stay unreadable). Every test runs in a scratch
working directory, so a relative path that got written would be found. After the corpus the
catalog is unchanged and legitimate SELECTs still answer.

On AWS the agent's SQL goes to Athena: botocore's Stubber on a real ``athena`` client (every
request validated against the service model); the workgroup's bytes-scanned cutoff is checked
under Pulumi's mocks."""

from __future__ import annotations

import json
import time
from pathlib import Path

import boto3
import duckdb
import pulumi
import pytest
from botocore.stub import Stubber
from typer.testing import CliRunner

from conftest import REPO, run_engagement_copy
from stagewise.pipeline import analyst, catalog
from stagewise.pipeline.cli import app
from stagewise.pipeline.spec import load_spec
from stagewise.pipeline.sql_sandbox import MAX_SQL_CHARS, Limits, QueryError
from stagewise.platform.components.results_catalog import ResultsCatalog, ResultsCatalogArgs
from stagewise.platform.runtime.objects import ObjectStore

MODEL = "sql-sandbox"
TABLE = "sql_sandbox_results"
runner = CliRunner()


@pytest.fixture(scope="module")
def world(dev, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sandbox")
    run_engagement_copy(folder, MODEL, 67, "--json")
    cache = folder / "cache"
    models = catalog.sync(ObjectStore(dev.clients.client("s3")), dev.resources.data_bucket.name, cache)
    at_risk = (REPO / "pipeline" / "specs" / "views" / "at_risk.sql").read_text().replace("engagement_results", TABLE)
    view_sql = {"at_risk": (MODEL, at_risk)}
    cat = catalog.connect({MODEL: models[MODEL]}, view_sql)
    world = {"folder": folder, "cache": cache, "models": {MODEL: models[MODEL]}, "views": view_sql, "catalog": cat,
             "scratch": tmp_path_factory.mktemp("scratch")}
    world["before"] = _state(cat), _files(folder)
    assert cat.tables == {MODEL: TABLE} and cat.views == {"at_risk": MODEL}
    assert (folder / "customers.parquet").is_file()  # the raw input, beside the cache
    return world


@pytest.fixture(autouse=True)
def _in_scratch(request, monkeypatch):
    """Every test runs in the scratch folder: a relative path a statement wrote would land there."""
    if "world" in request.fixturenames:
        monkeypatch.chdir(request.getfixturevalue("world")["scratch"])


def _state(cat: catalog.Catalog) -> dict:
    """The catalog's tables and views (DuckDB's own listing) and each one's row count."""
    listed = cat.db.execute("SELECT table_name, table_type FROM information_schema.tables ORDER BY table_name").fetchall()
    counts = {name: catalog.query(cat, f'SELECT count(*) FROM "{name}"')[1][0][0] for name in cat.names()}
    return {"listed": listed, "counts": counts}


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def _query_cli(*args: str) -> tuple[int, dict]:
    result = runner.invoke(app, ["query", *args, "--env", "dev", "--project-dir", str(REPO), "--json"])
    return result.exit_code, json.loads(result.stdout)


def _corpus(world: dict | None = None) -> list[tuple[str, str, str]]:
    """``(id, SQL, what the refusal says)``: the hostile statements. Paths name the run's folder
    (the cache folder's parent: its raw input) when ``world`` is given."""
    folder = world["folder"] if world else Path("/tmp/sandbox")
    cache, scratch = (world["cache"], world["scratch"]) if world else (folder / "cache", Path("/tmp/scratch"))
    denied = "file system operations are disabled by configuration"
    return [
        # file functions inside a SELECT: external access is off
        ("read_csv-passwd", "SELECT * FROM read_csv('/etc/passwd', header=false) LIMIT 3", denied),
        ("read_csv_auto-passwd", "SELECT * FROM read_csv_auto('/etc/passwd')", denied),
        ("read_parquet-passwd", "SELECT * FROM read_parquet('/etc/passwd')", denied),
        ("read_json-passwd", "SELECT * FROM read_json('/etc/passwd')", denied),
        ("read_text-passwd", "SELECT content FROM read_text('/etc/passwd')", denied),
        ("read_blob-passwd", "SELECT content FROM read_blob('/etc/passwd')", denied),
        ("glob-etc", "SELECT * FROM glob('/etc/*')", denied),
        ("read_parquet-raw-input", f"SELECT name, email FROM read_parquet('{folder}/customers.parquet')", denied),
        ("read_text-run-folder", f"SELECT * FROM read_text('{folder}/*')", denied),
        ("glob-run-folder", f"SELECT * FROM glob('{folder}/**')", denied),
        ("glob-cache-results", f"SELECT count(*) FROM read_parquet('{cache}/results/**/*.parquet')", denied),
        ("read_csv-in-subquery", f"SELECT (SELECT count(*) FROM read_csv('{folder}/{MODEL}.yaml')) AS n FROM {TABLE}", denied),
        ("http", "SELECT * FROM read_parquet('https://example.com/x.parquet')", denied),
        ("query-function-copy", f"SELECT * FROM query('COPY (SELECT 1) TO ''{scratch}/q.csv''')", "single SELECT"),
        # statements other than SELECT: refused before they run
        ("copy-to", f"COPY (SELECT 1 AS x) TO '{scratch}/pwned.csv'", "refused: COPY statements"),
        ("copy-table-to", f"COPY {TABLE} TO 'pwned.parquet' (FORMAT parquet)", "refused: COPY statements"),
        ("copy-from", f"COPY {TABLE} FROM '/etc/passwd'", "refused: COPY statements"),
        ("attach-file", f"ATTACH '{scratch}/evil.duckdb' AS evil", "refused: ATTACH statements"),
        ("attach-memory", "ATTACH ':memory:' AS other", "refused: ATTACH statements"),
        ("detach", "DETACH memory", "refused: DETACH statements"),
        ("install", "INSTALL httpfs", "refused: LOAD statements"),
        ("load", "LOAD httpfs", "refused: LOAD statements"),
        ("pragma", "PRAGMA database_list", "refused: PRAGMA statements"),
        ("set-external-access", "SET enable_external_access = true", "refused: SET statements"),
        ("reset-lock", "RESET lock_configuration", "refused: SET statements"),
        ("set-variable", "SET VARIABLE x = 1", "refused: SET statements"),
        ("create-table", "CREATE TABLE loot AS SELECT 1 AS x", "refused: CREATE statements"),
        ("replace-view", "CREATE OR REPLACE VIEW at_risk AS SELECT 1 AS x", "refused: CREATE statements"),
        ("drop-view", "DROP VIEW at_risk", "refused: DROP statements"),
        ("insert", f"INSERT INTO {TABLE} SELECT * FROM {TABLE}", "refused: INSERT statements"),
        ("update", f"UPDATE {TABLE} SET prediction = 1", "refused: UPDATE statements"),
        ("delete", f"DELETE FROM {TABLE}", "refused: DELETE statements"),
        ("export", f"EXPORT DATABASE '{scratch}/dump'", "refused: EXPORT statements"),
        ("call", "CALL pragma_version()", "refused: CALL statements"),
        ("explain", f"EXPLAIN ANALYZE SELECT * FROM {TABLE}", "refused: EXPLAIN statements"),
        ("transaction", "BEGIN TRANSACTION", "refused: TRANSACTION statements"),
        ("alter-view", "ALTER VIEW at_risk RENAME TO gone", "refused: ALTER statements"),
        ("import", f"IMPORT DATABASE '{scratch}/dump'", "refused: PRAGMA statements"),
        ("use", "USE memory", "refused: SET statements"),
        ("create-secret", "CREATE SECRET leak (TYPE s3, KEY_ID 'x', SECRET 'y')", "refused: CREATE statements"),
        ("prepare", "PREPARE p AS SELECT 1", "refused: PREPARE statements"),
        ("checkpoint", "CHECKPOINT", "refused: CALL statements"),
        # a second statement, plain or hidden
        ("two-selects", "SELECT 1; SELECT 2", "refused: 2 statements"),
        ("select-then-copy", f"SELECT 1; COPY (SELECT 1) TO '{scratch}/pwned.csv'", "refused: 2 statements"),
        ("after-line-comment", f"SELECT 1 -- just one\n; COPY (SELECT 1) TO '{scratch}/pwned.csv'", "refused: 2 statements"),
        ("after-block-comment", "SELECT 1 /* ; */ ; DROP VIEW at_risk", "refused: 2 statements"),
        ("after-string", f"SELECT ';' AS s; COPY (SELECT 1) TO '{scratch}/pwned.csv'", "refused: 2 statements"),
        ("nothing", "-- only a comment ;", "refused: no statement"),
        ("not-sql", "SELEC * FROM at_risk", "refused: not valid SQL"),
        # length
        ("very-long", "SELECT " + "1 + " * (MAX_SQL_CHARS // 4) + "1", f"the limit is {MAX_SQL_CHARS:,}"),
    ]


CORPUS = _corpus()
REFUSED_BEFORE_RUNNING = [c for c in CORPUS if c[2].startswith("refused") or "the limit is" in c[2]]


def test_the_corpus_has_at_least_20_distinct_hostile_statements():
    assert len(CORPUS) >= 20 and len({i for i, _, _ in CORPUS}) == len(CORPUS)
    assert len(REFUSED_BEFORE_RUNNING) >= 20 and len(CORPUS) - len(REFUSED_BEFORE_RUNNING) >= 10  # both fences


@pytest.mark.parametrize("index", range(len(CORPUS)), ids=[i for i, _, _ in CORPUS])
def test_a_hostile_statement_is_refused_with_its_reason(world, index):
    name, sql, reason = _corpus(world)[index]
    with pytest.raises(QueryError) as refused:
        catalog.query(world["catalog"], sql)
    assert reason in str(refused.value), (name, str(refused.value))
    assert refused.value.exit_code == 4 and "at_risk" in refused.value.hint


def test_the_connection_is_locked_even_when_asked_directly(world):
    """Past the parse check, DuckDB itself refuses to reopen the sandbox."""
    db = world["catalog"].db
    for sql in ("SET enable_external_access = true", "RESET enable_external_access", "SET lock_configuration = false",
                "SET allowed_directories = ['/']", "SET temp_directory = '/tmp'", "SET memory_limit = '64GB'"):
        with pytest.raises(duckdb.Error, match="the configuration has been locked"):
            db.execute(sql)
    settings = dict(db.execute(
        "SELECT name, value FROM duckdb_settings() WHERE name IN ('enable_external_access', 'lock_configuration', "
        "'threads', 'temp_directory', 'autoload_known_extensions', 'autoinstall_known_extensions')").fetchall())
    assert settings == {"enable_external_access": "false", "lock_configuration": "true", "threads": "2", "temp_directory": "",
                        "autoload_known_extensions": "false", "autoinstall_known_extensions": "false"}
    assert catalog.query(world["catalog"], "SELECT current_setting('memory_limit')")[1] == [("953.6 MiB",)]  # 1 GB


def test_a_cross_join_is_stopped_by_the_memory_limit_within_seconds(world):
    start = time.monotonic()
    with pytest.raises(QueryError, match=r"memory limit \(1GB\)"):
        catalog.query(world["catalog"], f"SELECT list(a.prediction) FROM {TABLE} a, {TABLE} b, {TABLE} c")
    assert time.monotonic() - start < 10


def test_a_cross_join_is_stopped_by_the_time_limit(world):
    quick = catalog.connect(world["models"], world["views"], Limits(seconds=2))
    start = time.monotonic()
    with pytest.raises(QueryError, match=r"time limit \(2 s\)"):
        catalog.query(quick, f"SELECT count(*) FROM {TABLE} a, {TABLE} b, {TABLE} c "
                             "WHERE a.prediction < b.prediction + c.prediction")
    assert 1.5 < time.monotonic() - start < 6
    assert catalog.query(quick, f"SELECT count(*) FROM {TABLE}")[1] == [(3_000,)]  # the connection still answers


def test_more_rows_than_the_ceiling_are_refused_unless_only_the_first_are_asked_for(world):
    small = catalog.connect(world["models"], world["views"], Limits(max_rows=1_000))
    with pytest.raises(QueryError, match="more than 1,000 rows"):
        catalog.query(small, f"SELECT * FROM {TABLE}")
    assert len(catalog.query(small, f"SELECT * FROM {TABLE}", 50)[1]) == 50


def test_stagewise_query_refuses_the_issue_s_two_commands_with_exit_4(world):
    code, doc = _query_cli("SELECT * FROM read_csv('/etc/passwd', header=false) LIMIT 3")
    assert code == 4 and "file system operations are disabled by configuration" in doc["error"] and "root:" not in json.dumps(doc)
    code, doc = _query_cli("COPY (SELECT 1 AS x) TO 'pwned.csv'")
    assert code == 4 and "refused: COPY statements" in doc["error"] and TABLE in doc["hint"]
    assert not (world["scratch"] / "pwned.csv").exists() and not (REPO / "pwned.csv").exists()
    plain = runner.invoke(app, ["query", "SELECT 1; DROP VIEW at_risk", "--env", "dev", "--project-dir", str(REPO)])
    assert plain.exit_code == 4 and "refused: 2 statements" in plain.output


def test_after_the_corpus_the_catalog_is_unchanged_and_nothing_was_written(world):
    state, files = world["before"]
    assert _state(world["catalog"]) == state and state["counts"][TABLE] == 3_000
    assert _files(world["folder"]) == files  # the cache, the raw input and the spec: untouched
    assert list(world["scratch"].iterdir()) == []  # no relative path written


def test_legitimate_selects_still_answer(world):
    cat = world["catalog"]
    assert catalog.query(cat, f"SELECT count(*) AS n FROM {TABLE};") == (["n"], [(3_000,)])
    columns, rows = catalog.query(cat, f"""
        -- a question as an analyst writes it
        WITH unseen AS (SELECT * FROM {TABLE} WHERE in_training = false)
        SELECT subscription_tier, count(*) AS n, avg(prediction) AS mean FROM unseen GROUP BY ALL ORDER BY n DESC""")
    assert columns == ["subscription_tier", "n", "mean"] and 0 < sum(r[1] for r in rows) < 3_000
    columns, rows = catalog.query(cat, "SELECT * FROM at_risk LIMIT 5")
    assert 0 < len(rows) <= 5
    at_risk = [dict(zip(columns, r)) for r in rows]
    assert all(r["days_active_last_30"] >= 10 and r["prediction"] < 0.3 for r in at_risk)
    code, doc = _query_cli(f"WITH t AS (SELECT count(*) AS n FROM {TABLE}) SELECT n FROM t")
    assert code == 0 and doc["rows"] == [{"n": 3_000}]


def test_a_spec_view_that_is_not_one_select_is_left_out_and_a_query_naming_it_says_why(world):
    views = {**world["views"], "sneaky": (MODEL, f"SELECT 1 AS x; COPY (SELECT 1) TO '{world['scratch']}/v.csv'")}
    cat = catalog.connect(world["models"], views)
    assert "sneaky" not in cat.views and "sneaky" not in cat.waiting and cat.views == {"at_risk": MODEL}
    assert not (world["scratch"] / "v.csv").exists()
    with pytest.raises(QueryError, match=r"view sneaky of model .* is not one SELECT, so it was not created: refused: 2 statements"):
        catalog.query(cat, "SELECT * FROM sneaky")


def test_a_spec_file_with_a_view_that_is_not_one_select_is_refused_when_loaded(world, tmp_path):
    from stagewise.pipeline.spec import SpecError

    text = (REPO / "pipeline" / "specs" / "churn.yaml").read_text()
    assert "\nviews:" in text
    (tmp_path / "views").mkdir()
    (tmp_path / "views" / "evil.sql").write_text(f"COPY (SELECT 1 AS x) TO '{world['scratch']}/evil.csv'")
    spec = tmp_path / "churn.yaml"
    spec.write_text(text[: text.index("\nviews:")] + "\nviews:\n  evil: views/evil.sql\n")
    with pytest.raises(SpecError, match=r"view 'evil' must be one SELECT .*COPY statements are not allowed"):
        load_spec(spec)
    assert not (world["scratch"] / "evil.csv").exists()


# --- on AWS: Athena in the stack's workgroup --------------------------------------------------------

def _athena(seconds: float = 60.0) -> tuple[catalog.Athena, Stubber]:
    client = boto3.client("athena", region_name="eu-west-1")
    return catalog.Athena(client, catalog.athena_workgroup("dev"), catalog.glue_database("dev"), Limits(seconds=seconds),
                          poll_seconds=0), Stubber(client)


def _status(state: str, reason: str | None = None) -> dict:
    status = {"State": state, **({"StateChangeReason": reason} if reason else {})}
    return {"QueryExecution": {"QueryExecutionId": "q-1", "Status": status}}


def _results(rows: list[list[str | None]], next_token: str | None = None) -> dict:
    columns = [("customer_id_hash", "varchar"), ("prediction", "double"), ("model_version", "integer"), ("in_training", "boolean")]
    cells = [{"Data": [{} if v is None else {"VarCharValue": v} for v in r]} for r in rows]
    page = {"ResultSet": {"Rows": cells, "ResultSetMetadata": {"ColumnInfo": [
        {"Name": n, "Type": t, "CatalogName": "hive", "SchemaName": "", "TableName": "", "Label": n} for n, t in columns]}}}
    return {**page, **({"NextToken": next_token} if next_token else {})}


START = {"QueryExecutionId": "q-1"}


def test_on_aws_the_agent_s_select_runs_in_athena_in_the_stack_s_workgroup():
    athena, stub = _athena()
    sql = "SELECT customer_id_hash, prediction, model_version, in_training FROM at_risk LIMIT 2"
    stub.add_response("start_query_execution", START, {
        "QueryString": sql, "WorkGroup": "stagewise-dev", "QueryExecutionContext": {"Database": "stagewise_dev"}})
    stub.add_response("get_query_execution", _status("RUNNING"), START)
    stub.add_response("get_query_execution", _status("SUCCEEDED"), START)
    header = ["customer_id_hash", "prediction", "model_version", "in_training"]
    stub.add_response("get_query_results", _results([header, ["a1b2", "0.25", "1", "false"], ["c3d4", None, "2", "true"]]),
                      {"QueryExecutionId": "q-1", "MaxResults": analyst.MAX_ROWS + 1})
    # nothing to sync: the local path would fail on objects=None
    tools = analyst.AnalystTools(None, "no-bucket", lambda m, n: None, lambda m: None, b"salt", Path("/nonexistent"),
                                 athena=athena)
    with stub:
        out = tools.call("query_results", {"sql": sql + ";"})
        stub.assert_no_pending_responses()
    assert out == {"columns": header, "rows": [
        {"customer_id_hash": "a1b2", "prediction": 0.25, "model_version": 1, "in_training": False},
        {"customer_id_hash": "c3d4", "prediction": None, "model_version": 2, "in_training": True}]}


def test_athena_results_are_paged_up_to_the_row_cap():
    athena, stub = _athena()
    stub.add_response("start_query_execution", START, None)
    stub.add_response("get_query_execution", _status("SUCCEEDED"), START)
    header = ["customer_id_hash", "prediction", "model_version", "in_training"]
    stub.add_response("get_query_results", _results([header, ["a", "0.1", "1", "false"], ["b", "0.2", "1", "false"]], "t2"),
                      {"QueryExecutionId": "q-1", "MaxResults": 4})
    stub.add_response("get_query_results", _results([["c", "0.3", "1", "false"], ["d", "0.4", "1", "false"]], "t3"),
                      {"QueryExecutionId": "q-1", "MaxResults": 1, "NextToken": "t2"})
    with stub:
        columns, rows = athena.query("SELECT * FROM x", 3)
        stub.assert_no_pending_responses()
    assert columns == header and [r[0] for r in rows] == ["a", "b", "c"]


@pytest.mark.parametrize(("sql", "reason"), [(sql, reason) for _, sql, reason in REFUSED_BEFORE_RUNNING],
                         ids=[i for i, _, _ in REFUSED_BEFORE_RUNNING])
def test_a_refused_statement_never_reaches_athena(sql, reason):
    athena, stub = _athena()
    with stub, pytest.raises(QueryError) as refused:  # nothing stubbed: a request would raise botocore's StubResponseError
        athena.query(sql, 50)
    assert reason in str(refused.value)


def test_athena_failures_and_the_time_limit_become_query_errors():
    athena, stub = _athena()
    stub.add_response("start_query_execution", START, None)
    stub.add_response("get_query_execution", _status("CANCELLED", "Query cancelled! : Bytes scanned limit was exceeded"), START)
    with stub, pytest.raises(QueryError, match="Bytes scanned limit was exceeded"):
        athena.query("SELECT * FROM engagement_results", 50)

    stub.add_client_error("start_query_execution", "InvalidRequestException", "line 1:8: mismatched input")
    with stub, pytest.raises(QueryError, match="Athena refused the query: line 1:8"):
        athena.query("SELECT * FROM engagement_results", 50)

    athena, stub = _athena(seconds=0)
    stub.add_response("start_query_execution", START, None)
    stub.add_response("get_query_execution", _status("RUNNING"), START)
    stub.add_response("stop_query_execution", {}, START)
    with stub, pytest.raises(QueryError, match=r"time limit \(0 s\) and was stopped"):
        athena.query("SELECT * FROM engagement_results", 50)
    stub.assert_no_pending_responses()


class _Mocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: list[pulumi.runtime.MockResourceArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        self.resources.append(args)
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict:
        return {}


def test_the_stack_s_workgroup_cancels_a_query_past_1_gib_scanned():
    mocks = _Mocks()
    pulumi.runtime.set_mocks(mocks, project="stagewise", stack="dev", preview=False)

    @pulumi.runtime.test
    def build():
        results = ResultsCatalog("results", ResultsCatalogArgs("dev", "stagewise-dev-data-1", [load_spec("engagement")]))
        return pulumi.Output.all(results.workgroup.name, results.database.name).apply(lambda _: None)

    build()
    (wg,) = [r for r in mocks.resources if r.typ == "aws:athena/workgroup:Workgroup"]
    (db,) = [r for r in mocks.resources if r.typ == "aws:glue/catalogDatabase:CatalogDatabase"]
    config = wg.inputs["configuration"]
    assert config["bytesScannedCutoffPerQuery"] == 1024**3 and config["enforceWorkgroupConfiguration"] is True
    # the names the agent's Athena path uses are the stack's
    assert (wg.inputs["name"], db.inputs["name"]) == (catalog.athena_workgroup("dev"), catalog.glue_database("dev"))
