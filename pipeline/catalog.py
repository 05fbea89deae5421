"""The results catalog: every scoring run's rows, partitioned by run date and model version, for SQL.

Each published run adds its rows (the id's keyed hash, never the id or PII; the run id; the
prediction; whether the serving version trained on the row; a classifier's decision; the spec's
features and, when present, the label) to one table per model::

    s3://<data bucket>/results/<model>/run_date=YYYY-MM-DD/model_version=N/run=<run id>-part-<i>.parquet

They are written with the predictions (staged, then published by the manifest: a run that died
half-way adds nothing). Table ``<model>_results`` (``-`` becomes ``_``): columns ``<id>_hash``
(string), ``run_id`` (string), ``prediction`` (double), ``in_training`` (boolean: the row is on
the serving version's training side of its split, ``stagewise.pipeline.splitting``; measure a
model only where it is false), ``decision`` (boolean, classifiers: prediction >= the version's
threshold), the features (integer -> bigint, float -> double, boolean -> boolean, categorical
-> string), the target (double); partition columns ``run_date`` (string ``yyyy-MM-dd``, from the
run id) and ``model_version`` (int).

Views are part of a model's spec (``views:`` in its YAML, e.g. the engagement spec's
``high_value``, ``at_risk``, ``model_performance``): SQL over that model's table. On AWS the stack
registers each built-in model's table in the Glue Data Catalog with partition projection (no
crawler, no ``MSCK REPAIR``), so Athena queries a run as soon as it is published, and its views
as Athena named queries. Locally ``stagewise query "SQL"`` copies the results objects to a cache
and runs the same SQL with DuckDB over the same Parquet files, the same tables and the views of
every model whose spec it knows (``stagewise.pipeline.spec_store.catalog_specs``).

SQL from users and models is sandboxed (``stagewise.pipeline.sql_sandbox``): one read-only SELECT,
no file access, bounded memory, threads, time, length and rows. On AWS the analyst agent's SQL
goes to Athena in the stack's workgroup (``Athena``), whose bytes-scanned cutoff bounds each query.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from stagewise.pipeline.spec import ModelSpec
from stagewise.pipeline.sql_sandbox import DEFAULT_LIMITS, Limits, QueryError, check_select, open_connection, run, sql_string
from stagewise.platform.runtime.objects import ObjectStore

RESULTS = "results"
GLUE_TYPES = {"integer": "bigint", "float": "double", "boolean": "boolean", "categorical": "string"}
_RUN_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})T")


def glue_database(env: str) -> str:
    """The stack's Glue database of the results tables, ``stagewise_<env>``."""
    return f"stagewise_{env}"


def athena_workgroup(env: str) -> str:
    """The stack's Athena workgroup, ``stagewise-<env>`` (its bytes-scanned cutoff bounds each query)."""
    return f"stagewise-{env}"


def table_name(model: str) -> str:
    """``engagement`` -> ``engagement_results`` (SQL identifiers take no ``-``)."""
    return f"{model.replace('-', '_')}_results"


def run_date(run_id: str, started_at: str | None = None) -> str:
    """The run's date partition, ``YYYY-MM-DD`` (UTC): from its id when it starts with its time
    (``20261122T041500Z-1a2b3c``, as ``runner.new_run_id`` makes), else from ``started_at`` (ISO
    8601; a state machine execution's name can be anything, its ``state.json`` has the time).
    Either is fixed for the run, so a re-run publishes to the same keys.

    Raises:
        ValueError: neither gives a date.
    """
    m = _RUN_DATE.match(run_id)
    if m:
        return f"{m.group(1)}-{m.group(2)}-{m.group(3)}"
    if started_at and re.match(r"^\d{4}-\d{2}-\d{2}", started_at):
        return started_at[:10]
    raise ValueError(f"run id {run_id!r} does not start with its UTC time and no start time was given: "
                     "cannot partition its results")


def results_key(model: str, run_id: str, version: int, part: str, started_at: str | None = None) -> str:
    """Key of one published results part (``started_at``: see ``run_date``)."""
    return f"{RESULTS}/{model}/run_date={run_date(run_id, started_at)}/model_version={version}/run={run_id}-{part}"


def glue_columns(spec: ModelSpec) -> list[dict[str, str]]:
    """The table's data columns for the Glue Data Catalog (``name``, ``type``), in file order."""
    cols = [{"name": f"{spec.id_column}_hash", "type": "string"}, {"name": "run_id", "type": "string"},
            {"name": "prediction", "type": "double"}, {"name": "in_training", "type": "boolean"}]
    if spec.task == "classification":
        cols.append({"name": "decision", "type": "boolean"})
    cols += [{"name": f.name, "type": GLUE_TYPES[f.type]} for f in spec.features]
    return cols + [{"name": spec.target.name, "type": "double"}]


def views(specs: dict[str, ModelSpec] | list[ModelSpec]) -> dict[str, tuple[str, str]]:
    """The catalog's views from the models' specs: view name -> ``(model, SELECT statement)``.
    A name two models declare keeps the first model's (by model name).

    Args:
        specs: model name -> spec (``spec_store.catalog_specs``), or a list of specs.
    """
    listed = sorted(specs.values() if isinstance(specs, dict) else specs, key=lambda sp: sp.name)
    out: dict[str, tuple[str, str]] = {}
    for spec in listed:
        for name, sql in spec.views.items():
            out.setdefault(name, (spec.name, sql))
    return out


def sync(objects: ObjectStore, bucket: str, cache: Path) -> dict[str, Path]:
    """Copy the results objects not yet in ``cache`` (objects are immutable: a key is written
    once per run and part); returns model -> its local folder."""
    models: dict[str, Path] = {}
    for page in objects.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{RESULTS}/"):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            if not key.endswith(".parquet"):
                continue
            path = cache / key
            models.setdefault(key.split("/")[1], cache / RESULTS / key.split("/")[1])
            if path.is_file() and path.stat().st_size == obj["Size"]:
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".part")
            objects.s3.download_file(bucket, key, str(tmp))
            tmp.replace(path)
    return models


AGENT_CALLS = "agent_calls"
"""The table of audited agent calls (``stagewise.pipeline.agent_serving.CallRecord``, one row per
call: agent, version, role, latency_ms, tokens, cost_usd, tool_calls, error_class, hashes)."""
AGENT_CALLS_PREFIX = "agents/calls/"


def sync_agent_calls(objects: ObjectStore, bucket: str, cache: Path) -> list[Path]:
    """Copy the agent call records (JSON lines, immutable objects) not yet in ``cache``; returns
    every local file."""
    files = []
    for page in objects.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=AGENT_CALLS_PREFIX):
        for obj in page.get("Contents", []):
            if not obj["Key"].endswith(".jsonl"):
                continue
            path = cache / obj["Key"]
            files.append(path)
            if path.is_file() and path.stat().st_size == obj["Size"]:
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            objects.s3.download_file(bucket, obj["Key"], str(path))
    return sorted(files)


@dataclass
class Catalog:
    """A sandboxed DuckDB connection over the synced results (``sql_sandbox``): one
    ``<model>_results`` view per model folder with Parquet files, and the spec views whose model
    has results.

    Attributes:
        db: the DuckDB connection (external access off but for the tables' files, locked).
        tables: model -> its table name.
        views: view name -> model, for the views created.
        waiting: view name -> model, for views of models with no results yet (their table is
            missing): what a query that names one is told.
        refused: view name -> why its SQL was refused (not one SELECT): what a query that names
            one is told. A spec with such a view is refused when loaded; this catches one stored
            with a version before the sandbox existed.
        limits: what one query may use.
    """

    db: Any
    tables: dict[str, str] = field(default_factory=dict)
    views: dict[str, str] = field(default_factory=dict)
    waiting: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)

    def names(self) -> list[str]:
        """The tables and views a query can read, sorted."""
        return sorted([*self.tables.values(), *self.views])


def connect(models: dict[str, Path], view_sql: dict[str, tuple[str, str]] | None = None,
            limits: Limits = DEFAULT_LIMITS, agent_calls: list[Path] | tuple[Path, ...] = ()) -> Catalog:
    """A ``Catalog`` over the model folders ``sync`` returned, the views (``views(specs)``) and,
    when there are any, the agent call records ``sync_agent_calls`` returned (table
    ``agent_calls``); a view whose model has no results, or whose SQL fails, is listed as waiting
    instead; one whose SQL is not one SELECT is listed as refused, with the reason.

    The connection may read the folders' Parquet files as they are now and nothing else, and its
    configuration is locked before any view is created, so not even a spec's view SQL runs with
    file access (``sql_sandbox.open_connection``).
    """
    import duckdb  # deferred: DuckDB (~0.15 s) only for the commands that run SQL

    files = {model: sorted(folder.rglob("*.parquet")) for model, folder in sorted(models.items())}
    files = {model: found for model, found in files.items() if found}
    db = open_connection([f for found in files.values() for f in found] + list(agent_calls), limits)
    catalog = Catalog(db, limits=limits)
    if agent_calls:
        listed = ", ".join(sql_string(str(f)) for f in agent_calls)
        db.execute(f'CREATE VIEW "{AGENT_CALLS}" AS SELECT * FROM read_json([{listed}], format = \'newline_delimited\', '
                   "union_by_name = true)")
        catalog.tables[AGENT_CALLS] = AGENT_CALLS
    for model, found in files.items():
        listed = ", ".join(sql_string(str(f)) for f in found)
        db.execute(
            f'CREATE VIEW "{table_name(model)}" AS SELECT * FROM read_parquet([{listed}], hive_partitioning = true, '
            "union_by_name = true, hive_types = {'run_date': VARCHAR, 'model_version': INTEGER})"
        )
        catalog.tables[model] = table_name(model)
    for name, (model, sql) in (view_sql or {}).items():
        if model not in files:
            catalog.waiting[name] = model
            continue
        try:
            statement = check_select(sql, limits)
        except QueryError as e:  # whoever registers a model writes its views' SQL: held to the same one-SELECT rule
            catalog.refused[name] = f"view {name} of model {model} is not one SELECT, so it was not created: {e}"
            continue
        try:
            db.execute(f'CREATE VIEW "{name}" AS {statement.query}')
        except duckdb.Error:
            catalog.waiting[name] = model  # e.g. a column that no published run has yet
            continue
        catalog.views[name] = model
    return catalog


def query(catalog: Catalog, sql: str, max_rows: int | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run ``sql``, one read-only SELECT, in the catalog's sandbox; returns the column names and up
    to ``max_rows`` rows (all without it, up to ``catalog.limits.max_rows``).

    Raises:
        QueryError: the sandbox refused the SQL (not one SELECT, too long, a limit reached: the
            message says which) or DuckDB did. The message has the reason and the tables and
            views there are; when the SQL names a view of a model that has no published results
            (here, in this environment), it says that instead.
    """
    import duckdb  # deferred: DuckDB (~0.15 s) only for the commands that run SQL

    there = ", ".join(catalog.names()) or "none: no run has published results yet"
    try:
        return run(catalog.db, check_select(sql, catalog.limits), catalog.limits, max_rows)
    except QueryError as e:
        e.hint = f"one SELECT (or WITH ... SELECT) over the tables and views: {there}"
        raise
    except duckdb.Error as e:
        named = [v for v in catalog.waiting if re.search(rf"\b{re.escape(v)}\b", sql, re.IGNORECASE)]
        refused = [why for v, why in catalog.refused.items() if re.search(rf"\b{re.escape(v)}\b", sql, re.IGNORECASE)]
        if refused:
            error = QueryError("; ".join(refused) + f". Tables and views there are: {there}")
        elif named:
            models = sorted({catalog.waiting[v] for v in named})
            error = QueryError(
                f"{', '.join(named)} belong{'s' if len(named) == 1 else ''} to model {', '.join(models)}, which has no published "
                f"results here yet (the view reads {', '.join(table_name(m) for m in models)}): run or score that model first. "
                f"Tables and views there are: {there}")
        else:
            error = QueryError(f"{e}\n(tables and views: {there})")
        error.hint = f"tables and views: {there}"
        raise error from e


ATHENA_TYPES = {"tinyint": int, "smallint": int, "integer": int, "bigint": int, "double": float, "float": float,
                "real": float, "boolean": lambda v: v == "true"}


@dataclass
class Athena:
    """The results catalog on AWS: one SELECT (the sandbox's parse check first) runs in Athena in
    the stack's workgroup (``athena_workgroup``: its bytes-scanned cutoff bounds the data a query
    reads) over the stack's Glue database (``glue_database``); nothing is downloaded.

    Attributes:
        client: a boto3 ``athena`` client.
        workgroup, database: the stack's (``athena_workgroup(env)``, ``glue_database(env)``).
        limits: the statement's length limit and the wall-clock time (then the query is stopped).
        poll_seconds: the wait between GetQueryExecution calls.
    """

    client: Any
    workgroup: str
    database: str
    limits: Limits = field(default_factory=lambda: Limits(seconds=120.0))
    poll_seconds: float = 1.0

    def query(self, sql: str, max_rows: int) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run ``sql`` in Athena; its column names and up to ``max_rows`` rows (numbers and
        booleans converted from Athena's strings, nulls as ``None``).

        Raises:
            QueryError: refused by the parse check, by Athena (a request it rejects, a query that
                failed or was cancelled, e.g. past the workgroup's bytes-scanned cutoff), or past
                the time limit (the query is stopped).
        """
        statement = check_select(sql, self.limits).query.strip().removesuffix(";")
        try:
            execution = self.client.start_query_execution(
                QueryString=statement, WorkGroup=self.workgroup,
                QueryExecutionContext={"Database": self.database})["QueryExecutionId"]
            self._wait(execution)
            return self._results(execution, max_rows)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") != "InvalidRequestException":
                raise
            raise QueryError(f"Athena refused the query: {e.response['Error'].get('Message', '')}") from e

    def _wait(self, execution: str) -> None:
        deadline = time.monotonic() + self.limits.seconds
        while True:
            status = self.client.get_query_execution(QueryExecutionId=execution)["QueryExecution"]["Status"]
            if status["State"] == "SUCCEEDED":
                return
            if status["State"] in ("FAILED", "CANCELLED"):
                raise QueryError(f"Athena query {status['State'].lower()}: {status.get('StateChangeReason', 'no reason given')}")
            if time.monotonic() >= deadline:
                self.client.stop_query_execution(QueryExecutionId=execution)
                raise QueryError(f"refused: the Athena query ran past the time limit ({self.limits.seconds:g} s) and was stopped")
            time.sleep(self.poll_seconds)

    def _results(self, execution: str, max_rows: int) -> tuple[list[str], list[tuple[Any, ...]]]:
        request: dict[str, Any] = {"QueryExecutionId": execution, "MaxResults": min(max_rows + 1, 1000)}  # + the header row
        columns: list[str] = []
        kinds: list[Any] = []
        rows: list[tuple[Any, ...]] = []
        while True:
            page = self.client.get_query_results(**request)
            if not columns:
                info = page["ResultSet"]["ResultSetMetadata"]["ColumnInfo"]
                columns, kinds = [c["Name"] for c in info], [ATHENA_TYPES.get(c["Type"].lower(), str) for c in info]
            data = page["ResultSet"]["Rows"][0 if "NextToken" in request else 1:]  # a SELECT's first row is its header
            rows += [tuple(None if "VarCharValue" not in d else kind(d["VarCharValue"]) for d, kind in zip(r["Data"], kinds))
                     for r in data]
            if len(rows) >= max_rows or "NextToken" not in page:
                return columns, rows[:max_rows]
            request.update(NextToken=page["NextToken"], MaxResults=min(max_rows - len(rows), 1000))
