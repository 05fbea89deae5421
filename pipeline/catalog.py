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
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stagewise.pipeline.spec import ModelSpec
from stagewise.platform.contract import ExitCode, StagewiseError
from stagewise.platform.runtime.objects import ObjectStore

RESULTS = "results"
GLUE_TYPES = {"integer": "bigint", "float": "double", "boolean": "boolean", "categorical": "string"}
_RUN_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})T")


class QueryError(StagewiseError, ValueError):
    """The SQL failed (the message has DuckDB's reason; the hint, the tables and views there are). Exit 4."""

    exit_code = ExitCode.BAD_INPUT


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


@dataclass
class Catalog:
    """A DuckDB connection over the synced results: one ``<model>_results`` view per model folder,
    and the spec views whose model has results.

    Attributes:
        db: the DuckDB connection.
        tables: model -> its table name.
        views: view name -> model, for the views created.
        waiting: view name -> model, for views of models with no results yet (their table is
            missing): what a query that names one is told.
    """

    db: Any
    tables: dict[str, str] = field(default_factory=dict)
    views: dict[str, str] = field(default_factory=dict)
    waiting: dict[str, str] = field(default_factory=dict)

    def names(self) -> list[str]:
        """The tables and views a query can read, sorted."""
        return sorted([*self.tables.values(), *self.views])


def connect(models: dict[str, Path], view_sql: dict[str, tuple[str, str]] | None = None) -> Catalog:
    """A ``Catalog`` over the model folders ``sync`` returned and the views (``views(specs)``); a
    view whose model has no folder, or whose SQL fails, is listed as waiting instead."""
    import duckdb

    db = duckdb.connect()
    catalog = Catalog(db)
    for model, folder in sorted(models.items()):
        pattern = str(folder / "**" / "*.parquet").replace("'", "''")
        db.execute(
            f"CREATE VIEW {table_name(model)} AS SELECT * FROM read_parquet('{pattern}', hive_partitioning = true, "
            "union_by_name = true, hive_types = {'run_date': VARCHAR, 'model_version': INTEGER})"
        )
        catalog.tables[model] = table_name(model)
    for name, (model, sql) in (view_sql or {}).items():
        if model not in models:
            catalog.waiting[name] = model
            continue
        try:
            db.execute(f"CREATE VIEW {name} AS {sql}")
        except duckdb.Error:
            catalog.waiting[name] = model  # e.g. a column that no published run has yet
            continue
        catalog.views[name] = model
    return catalog


def query(catalog: Catalog, sql: str, max_rows: int | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run ``sql``; returns the column names and up to ``max_rows`` rows.

    Raises:
        QueryError: DuckDB refused the SQL. The message has DuckDB's reason and the tables and
            views there are; when the SQL names a view of a model that has no published results
            (here, in this environment), it says that instead.
    """
    import duckdb

    try:
        cursor = catalog.db.execute(sql)
        rows = cursor.fetchmany(max_rows) if max_rows else cursor.fetchall()
    except duckdb.Error as e:
        there = ", ".join(catalog.names()) or "none: no run has published results yet"
        named = [v for v in catalog.waiting if re.search(rf"\b{re.escape(v)}\b", sql, re.IGNORECASE)]
        if named:
            models = sorted({catalog.waiting[v] for v in named})
            error = QueryError(
                f"{', '.join(named)} belong{'s' if len(named) == 1 else ''} to model {', '.join(models)}, which has no published "
                f"results here yet (the view reads {', '.join(table_name(m) for m in models)}): run or score that model first. "
                f"Tables and views there are: {there}")
        else:
            error = QueryError(f"{e}\n(tables and views: {there})")
        error.hint = f"tables and views: {there}"
        raise error from e
    return [d[0] for d in cursor.description], rows
