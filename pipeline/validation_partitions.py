"""Validate a Parquet input partition by partition, with the result whole-file validation gives.

``validation.validate_frame`` holds the whole input in one pandas frame while Great Expectations
checks it (about 1 KB a row for the engagement spec, several times that at GX's peak). Here the
input is cut along its Parquet row groups exactly as scoring cuts it (``scoring.plan_source``,
``rows_per_partition()`` rows a partition); each partition is read alone, run through the same
suite by GX itself (one context, one validation definition, ``result_format=BASIC``), and folded
into per-expectation accumulators before the next is read, so memory holds one partition's frame.

How each expectation's result is merged (exact, or refused with ``UnsupportedForPartitions``):

* **row-wise** (every ``ColumnMapExpectation`` but uniqueness: not null, between, in set, regex,
  ...): element, missing and unexpected counts add up; the sample values are the partitions'
  samples in row order, cut to GX's 20 (the first 20 of the file); then the expectation's own
  ``_validate`` computes success (its ``mostly``), the percents and the result dict from the
  merged counts, as GX does for a whole frame.
* **types** (``expect_column_values_to_be_in_type_list``/``_of_type``): checked per dtype (``str``,
  numbers) the verdict is every partition's and the result the first failing partition's; checked
  per value (``object`` columns) as row-wise. (A column checked per dtype in some partitions and
  per value in others: exact verdict, the first failing partition's result.)
* **schema** (column set, ordered list, column count, column exists): the same file schema in
  every partition; the first failing partition's result, else the first's.
* **min / max** (``expect_column_min|max_to_be_between``): the extremum of the partitions'.
* **distinct values** (``..._distinct_values_to_be_in_set|contain_set|equal_set``): the values
  outside the set are the union of the partitions', those missing from the column the
  intersection; exact while each partition listed all of its (at most 20), else refused.
* **whole column** (uniqueness, table row count, distinct count, unique proportion): counted by
  DuckDB streaming over the Parquet file (``read_parquet``; a file object or bytes are streamed to
  DuckDB as Arrow batches of that one column), a few scans of one column each: rows, nulls (and
  NaN, as pandas counts them), distinct values, rows whose value occurs more than once and the
  first 20 of them in file order; then the expectation's own ``_validate``. Never estimated: the
  hash aggregate spills to disk past DuckDB's ``memory_limit``.

An expectation that raised in any partition (e.g. its column is missing) keeps that partition's
errored result. Ordering expectations (increasing/decreasing), compound uniqueness, column pairs,
means, medians, quantiles and the like are refused before any row is read: the caller validates
the whole frame instead. One merged ``ExpectationSuiteValidationResult`` is rendered as Data Docs
(one validation page) and returned as the same ``ValidationReport`` ``validate_frame`` returns.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd

from stagewise.pipeline.inputs import is_parquet, read_table
from stagewise.pipeline.scoring.plan import PartitionPlan, plan_source
from stagewise.pipeline.spec import ModelSpec
from stagewise.pipeline.validation import (
    RESULT_FORMAT, SITE_NAME, ValidationReport, add_validation_definition, build_report, new_context, prepare_frame, raised,
    run_identifier, validate_frame,
)

__all__ = ["PARTIAL_VALUES", "Source", "UnsupportedForPartitions", "partition_kinds", "validate_partitions"]

PARTIAL_VALUES = 20
"""Sample values GX keeps per expectation in ``BASIC`` (``partial_unexpected_count``, and
``MAX_DISTINCT_VALUES`` for distinct-value lists)."""

Source = Path | str | bytes | BinaryIO
"""A Parquet (or CSV) input: a local path, its bytes, or a seekable binary file object (e.g.
``inputs.RangedReader`` over S3)."""


class UnsupportedForPartitions(ValueError):
    """The suite holds an expectation whose whole-file result cannot be merged from partitions
    exactly (validate the whole frame instead); ``expectations`` names them."""

    def __init__(self, message: str, expectations: list[str]) -> None:
        super().__init__(message)
        self.expectations = expectations


def partition_kinds(suite: Any) -> dict[str, str]:
    """How each expectation of a GX suite is merged: expectation id -> ``"rows"``, ``"type"``,
    ``"schema"``, ``"min"``, ``"max"``, ``"distinct"`` or ``"whole"`` (see the module docstring).

    Raises:
        UnsupportedForPartitions: an expectation has no exact merge (named with its column).
    """
    kinds, refused = {}, []
    for e in suite.expectations:
        kind = _kind(e)
        if kind is None:
            refused.append(f"{e.expectation_type}({getattr(e, 'column', '') or ''})")
        kinds[e.id] = kind
    if refused:
        raise UnsupportedForPartitions(
            f"{len(refused)} expectation(s) need the whole frame at once: {', '.join(refused)}", refused)
    return kinds


def validate_partitions(
    source: Source,
    name: str,
    spec: ModelSpec,
    docs_dir: Path,
    *,
    per_partition: int | None = None,
    prepare: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    run_name: str = "stagewise",
    progress: Callable[[int, int, str], None] | None = None,
    memory_limit: str = "1GB",
    temp_dir: Path | None = None,
    suite: Any = None,
) -> ValidationReport:
    """Validate ``source`` against the spec's suite one partition at a time and merge exactly.

    Args:
        source: the input (``Source``); a file object is read from where it stands and must
            stay open for the call.
        name: the input's file name (``.csv`` and non-Parquet bytes are validated whole).
        spec: the model spec whose suite (``validation.build_suite``) is run.
        docs_dir: folder of the Data Docs site (as ``validate_frame``): one validation page, the
            merged result.
        per_partition: rows per partition (default ``scoring.rows_per_partition()``). A plan of
            one partition (or a CSV) is validated by ``validate_frame`` on the whole frame.
        prepare: applied to each partition's frame before validation (e.g. drop ignored columns,
            ``modeling.conform``). It sees one partition: ``conform`` turns a float column of
            whole numbers into int64 per partition, and a null or fraction fails the type check
            in its partition as in the whole file (same verdict and observed dtype). The
            whole-column DuckDB pass reads the raw file columns (a conform that maps values one
            to one keeps uniqueness).
        run_name: GX run name (the validation page's path).
        progress: called ``(partitions done, partitions, message)`` after each partition.
        memory_limit: DuckDB's memory limit for the whole-column pass (it spills beyond it).
        temp_dir: where DuckDB spills (default: a temporary folder, removed afterwards).
        suite: a ``gx.ExpectationSuite`` to run instead of ``build_suite(spec)``.

    Returns:
        The merged ``ValidationReport`` (``row_count``: rows of the file; ``result``: one suite
        validation result whose ``meta["partitions"]`` gives ``count`` and ``rows`` per partition).

    Raises:
        UnsupportedForPartitions: the suite holds an expectation with no exact merge, or a
            distinct-values expectation listed more than 20 values in one partition.
        ValueError: the input is not readable Parquet or CSV (footer or any row group).
        OSError: ``docs_dir`` cannot be written.
    """
    import pyarrow.parquet as pq

    try:
        plan = plan_source(source if not isinstance(source, str) else Path(source), name, per_partition)
    except Exception as e:  # pyarrow raises several types for a corrupt footer
        raise ValueError(f"{name} is not a readable parquet or CSV file: {e}") from e
    prepare = prepare or (lambda df: df)
    if plan.count <= 1 or not _parquet(source, name):
        return validate_frame(prepare(_read_whole(source, name)), spec, docs_dir, run_name=run_name, suite=suite)

    context = new_context(docs_dir)
    definition = add_validation_definition(context, spec, suite)
    suite = definition.suite
    kinds = partition_kinds(suite)
    run_id = run_identifier(run_name)
    fold = _Fold(suite, kinds)
    pf = pq.ParquetFile(_arrow_source(source), pre_buffer=True)  # a file object over S3: few, coalesced reads
    present: set[str] = set()
    for i in range(plan.count):
        try:
            frame = pf.read_row_groups(plan.row_groups(i)).to_pandas()
        except Exception as e:  # pyarrow raises several types for corrupt pages
            raise ValueError(f"{name} is not a readable parquet file (partition {i + 1}/{plan.count}): {e}") from e
        frame = prepare_frame(prepare(frame))
        present = present or set(frame.columns)
        fold.add(definition.run(batch_parameters={"dataframe": frame}, result_format=RESULT_FORMAT, run_id=run_id))
        del frame
        if progress:
            progress(i + 1, plan.count, f"validated partition {i + 1}/{plan.count}")
    columns = fold.whole_columns()
    stats = _column_stats(source, pf, columns, memory_limit, temp_dir) if columns is not None else {}
    merged = fold.result(plan, stats)
    _write_docs(context, merged, suite.name, run_id)
    return build_report(merged.to_json_dict(), suite, present, plan.rows, docs_dir)


# ------------------------------------------------------------------------------- kinds
def _kind(e: Any) -> str | None:
    import great_expectations.expectations as E
    from great_expectations.expectations.expectation import ColumnMapExpectation

    if isinstance(e, (E.ExpectColumnValuesToBeUnique, E.ExpectTableRowCountToBeBetween, E.ExpectTableRowCountToEqual,
                      E.ExpectColumnUniqueValueCountToBeBetween, E.ExpectColumnProportionOfUniqueValuesToBeBetween)):
        return "whole"
    if isinstance(e, (E.ExpectColumnValuesToBeInTypeList, E.ExpectColumnValuesToBeOfType)):
        return "type"
    if isinstance(e, (E.ExpectTableColumnsToMatchSet, E.ExpectTableColumnsToMatchOrderedList, E.ExpectTableColumnCountToEqual,
                      E.ExpectTableColumnCountToBeBetween, E.ExpectColumnToExist)):
        return "schema"
    if isinstance(e, E.ExpectColumnMinToBeBetween):
        return "min"
    if isinstance(e, E.ExpectColumnMaxToBeBetween):
        return "max"
    if isinstance(e, (E.ExpectColumnDistinctValuesToBeInSet, E.ExpectColumnDistinctValuesToContainSet,
                      E.ExpectColumnDistinctValuesToEqualSet)):
        return "distinct"
    if isinstance(e, (E.ExpectColumnValuesToBeIncreasing, E.ExpectColumnValuesToBeDecreasing)):
        return None  # an order across partitions boundaries
    if isinstance(e, ColumnMapExpectation):
        return "rows"
    return None


# ------------------------------------------------------------------------------- folding
@dataclass
class _Acc:
    """What one expectation's results in the partitions so far add up to."""

    first: Any  # its ExpectationValidationResult in partition 0 (config, meta, order)
    raised: Any = None  # the first partition result that raised
    failing: Any = None  # the first partition result that failed
    elements: int = 0
    missing: int = 0
    unexpected: int = 0
    sample: list = field(default_factory=list)
    per_value: bool = False  # a type check that GX ran value by value (object columns)
    per_dtype: bool = False
    extremum: Any = None
    outside: set | None = None  # distinct values outside the set (union)
    absent: set | None = None  # set values missing from the column (intersection)
    complete: bool = True


class _Fold:
    """Per-expectation accumulators over the partitions' suite results, then the merged result."""

    def __init__(self, suite: Any, kinds: dict[str, str]) -> None:
        self.suite, self.kinds = suite, kinds
        self.by_id = {e.id: e for e in suite.expectations}
        self.accs: dict[str, _Acc] = {}
        self.order: list[str] = []
        self.template: Any = None

    def add(self, suite_result: Any) -> None:
        if self.template is None:
            self.template = suite_result
        for r in suite_result.results:
            eid = r.expectation_config.id
            acc = self.accs.get(eid)
            if acc is None:
                acc = self.accs[eid] = _Acc(first=r)
                self.order.append(eid)
            if raised(r.exception_info):
                acc.raised = acc.raised or r
                continue
            if not r.success:
                acc.failing = acc.failing or r
            res = r.result or {}
            kind = self.kinds[eid]
            if kind in ("rows", "type") and "element_count" in res:
                acc.per_value = acc.per_value or kind == "type"
                acc.elements += int(res.get("element_count") or 0)
                acc.missing += int(res.get("missing_count") or 0)
                acc.unexpected += int(res.get("unexpected_count") or 0)
                if len(acc.sample) < PARTIAL_VALUES:
                    acc.sample.extend(list(res.get("partial_unexpected_list") or [])[: PARTIAL_VALUES - len(acc.sample)])
            elif kind == "type":
                acc.per_dtype = True
            elif kind in ("min", "max"):
                value = res.get("observed_value")
                if value is not None and not (isinstance(value, float) and math.isnan(value)):
                    better = acc.extremum is None or (value < acc.extremum if kind == "min" else value > acc.extremum)
                    acc.extremum = value if better else acc.extremum
            elif kind == "distinct":
                self._add_distinct(acc, res)

    @staticmethod
    def _add_distinct(acc: _Acc, res: dict) -> None:
        if "unexpected_count" in res:
            values = list(res.get("partial_unexpected_list") or [])
            acc.complete &= int(res["unexpected_count"] or 0) == len(values)
            acc.outside = (acc.outside or set()) | set(values)
        if "missing_count" in res:
            values = list(res.get("partial_missing_list") or [])
            acc.complete &= int(res["missing_count"] or 0) == len(values)
            acc.absent = set(values) if acc.absent is None else acc.absent & set(values)

    def whole_columns(self) -> list[str] | None:
        """Columns the DuckDB pass must count (those of whole-column expectations that ran; an
        empty list: the row count only), or None when no whole-column expectation needs it."""
        whole = [eid for eid, acc in self.accs.items() if self.kinds[eid] == "whole" and acc.raised is None]
        if not whole:
            return None
        return list(dict.fromkeys(c for eid in whole if (c := getattr(self.by_id[eid], "column", None)) is not None))

    def result(self, plan: PartitionPlan, stats: dict[str, Any]) -> Any:
        """The merged ``ExpectationSuiteValidationResult`` (partition 0's order, config and meta)."""
        from great_expectations.core import ExpectationSuiteValidationResult, ExpectationValidationResult
        from great_expectations.validator.validation_statistics import calc_validation_statistics

        results = []
        for eid in self.order:
            acc, exp = self.accs[eid], self.by_id[eid]
            if acc.raised is not None:
                results.append(acc.raised)
                continue
            out = self._merge(exp, self.kinds[eid], acc, stats)
            results.append(ExpectationValidationResult(
                success=bool(out["success"]), expectation_config=acc.first.expectation_config, result=out.get("result") or {},
                meta=acc.first.meta, exception_info=acc.first.exception_info))
        st = calc_validation_statistics(results)
        t = self.template
        meta = dict(t.meta)
        meta["batch_markers"] = {k: v for k, v in (meta.get("batch_markers") or {}).items() if k != "pandas_data_fingerprint"}
        meta["partitions"] = {"count": plan.count, "rows": [plan.bounds(i)[1] - plan.bounds(i)[0] for i in range(plan.count)]}
        return ExpectationSuiteValidationResult(
            success=st.success, results=results, suite_name=t.suite_name, suite_parameters=t.suite_parameters,
            statistics={"evaluated_expectations": st.evaluated_expectations, "successful_expectations": st.successful_expectations,
                        "unsuccessful_expectations": st.unsuccessful_expectations, "success_percent": st.success_percent},
            meta=meta, batch_id=t.batch_id)

    def _merge(self, exp: Any, kind: str, acc: _Acc, stats: dict[str, Any]) -> dict:
        from great_expectations.expectations.expectation import ColumnMapExpectation
        from great_expectations.expectations.expectation_configuration import parse_result_format

        rc = {"result_format": parse_result_format(RESULT_FORMAT)}  # as GX hands it to _validate
        if kind == "rows" or (kind == "type" and acc.per_value and not acc.per_dtype):
            m = exp.map_metric
            metrics = {"table.row_count": acc.elements, "column_values.nonnull.unexpected_count": acc.missing,
                       f"{m}.unexpected_count": acc.unexpected, f"{m}.unexpected_values": acc.sample}
            validate = ColumnMapExpectation._validate if kind == "type" else type(exp)._validate
            return validate(exp, metrics=metrics, runtime_configuration=rc)
        if kind in ("type", "schema"):
            r = acc.failing or acc.first
            return {"success": r.success, "result": r.result}
        if kind in ("min", "max"):
            return exp._validate(metrics={f"column.{kind}": acc.extremum}, runtime_configuration=rc)
        if kind == "distinct":
            if not acc.complete:
                raise UnsupportedForPartitions(
                    f"{exp.expectation_type}({exp.column}): a partition has more than {PARTIAL_VALUES} distinct values "
                    "outside (or missing from) the set, so their union cannot be counted exactly", [exp.expectation_type])
            outside, absent = _sorted(acc.outside or set()), _sorted(acc.absent or set())
            metrics = {"column.distinct_values.not_in_set.count": len(outside), "column.distinct_values.not_in_set": outside,
                       "column.distinct_values.missing_from_column.count": len(absent),
                       "column.distinct_values.missing_from_column": absent}
            return exp._validate(metrics=metrics, runtime_configuration=rc)
        return self._merge_whole(exp, stats, rc)

    @staticmethod
    def _merge_whole(exp: Any, stats: dict[str, Any], rc: dict) -> dict:
        import great_expectations.expectations as E

        if isinstance(exp, (E.ExpectTableRowCountToBeBetween, E.ExpectTableRowCountToEqual)):
            return exp._validate(metrics={"table.row_count": stats["rows"]}, runtime_configuration=rc)
        if exp.column not in stats["columns"]:  # validated by GX under a name the file does not have (``prepare``)
            raise UnsupportedForPartitions(f"{exp.expectation_type}({exp.column}): no such column in the file for DuckDB to count",
                                           [exp.expectation_type])
        s, rows = stats["columns"][exp.column], stats["rows"]
        nonnull = rows - s["nulls"]
        metrics = {"table.row_count": rows, "column_values.nonnull.unexpected_count": s["nulls"],
                   "column.distinct_values.count": s["distinct"],
                   "column.unique_proportion": s["distinct"] / nonnull if nonnull > 0 else 0}
        if isinstance(exp, E.ExpectColumnValuesToBeUnique):
            metrics |= {f"{exp.map_metric}.unexpected_count": s["duplicated_rows"], f"{exp.map_metric}.unexpected_values": s["sample"]}
        return exp._validate(metrics=metrics, runtime_configuration=rc)


def _sorted(values: set) -> list:
    try:
        return sorted(values)
    except TypeError:  # mixed types: GX leaves them unsorted too
        return list(values)


# ------------------------------------------------------------------------------- DuckDB pass
class _Scan:
    """DuckDB relations over the input: ``read_parquet`` of a local file (with DuckDB's
    ``file_row_number``), else a fresh Arrow stream of the asked columns and a
    ``file_row_number`` column per query (a registered stream is consumed by one scan)."""

    def __init__(self, con: Any, source: Source, pf: Any) -> None:
        self.con, self.source, self.pf, self.n = con, source, pf, 0
        self.path = _local_path(source)

    def __call__(self, columns: list[str]) -> str:
        if self.path is not None:
            return "read_parquet('" + str(self.path).replace("'", "''") + "', file_row_number = true)"
        import pyarrow as pa

        def batches() -> Iterator[pa.RecordBatch]:
            start = 0
            for b in self.pf.iter_batches(columns=columns, batch_size=65_536):
                yield b.append_column("file_row_number", pa.array(range(start, start + b.num_rows), pa.int64()))
                start += b.num_rows

        fields = [self.pf.schema_arrow.field(c) for c in columns] + [pa.field("file_row_number", pa.int64())]
        self.n += 1
        self.con.register(f"stream_{self.n}", pa.RecordBatchReader.from_batches(pa.schema(fields), batches()))
        return f"stream_{self.n}"


def _column_stats(source: Source, pf: Any, columns: list[str], memory_limit: str,
                  temp_dir: Path | None) -> dict[str, Any]:
    """``{"rows": rows of the file, "columns": {column: stats}}`` counted by DuckDB, where a
    column's stats are ``nulls`` (null, or NaN in a float column: pandas' nulls), ``distinct``
    (distinct non-null values), ``duplicated_rows`` (non-null rows whose value occurs more than
    once) and ``sample`` (the first ``PARTIAL_VALUES`` of those rows' values, in file order).
    Columns absent from the file are left out (their expectations raised in GX already)."""
    import duckdb
    import pyarrow as pa

    names = set(pf.schema_arrow.names)
    with tempfile.TemporaryDirectory(dir=temp_dir, prefix="stagewise-duckdb-") as spill:
        con = duckdb.connect(config={"memory_limit": memory_limit, "temp_directory": spill, "threads": 2})
        try:
            scan = _Scan(con, source, pf)
            rows = con.execute(f"SELECT count(*) FROM {scan([])}").fetchall()[0][0]
            out: dict[str, Any] = {"rows": int(rows), "columns": {}}
            for col in (c for c in columns if c in names):
                q = '"' + col.replace('"', '""') + '"'
                valid = f"{q} IS NOT NULL" + (f" AND NOT isnan({q})" if pa.types.is_floating(pf.schema_arrow.field(col).type) else "")
                nulls = con.execute(f"SELECT count(*) FILTER (WHERE NOT ({valid})) FROM {scan([col])}").fetchall()[0][0]
                distinct, duplicated = con.execute(
                    f"SELECT count(*), coalesce(sum(n) FILTER (WHERE n > 1), 0) "
                    f"FROM (SELECT count(*) AS n FROM {scan([col])} WHERE {valid} GROUP BY {q})").fetchall()[0]
                sample: list = []
                if duplicated:
                    sample = [v for (v,) in con.execute(
                        f"SELECT {q} FROM {scan([col])} WHERE {valid} AND {q} IN "
                        f"(SELECT {q} FROM {scan([col])} WHERE {valid} GROUP BY {q} HAVING count(*) > 1) "
                        f"ORDER BY file_row_number LIMIT {PARTIAL_VALUES}").fetchall()]
                out["columns"][col] = {"nulls": int(nulls), "distinct": int(distinct), "duplicated_rows": int(duplicated),
                                       "sample": sample}
            return out
        finally:
            con.close()


# ------------------------------------------------------------------------------- sources
def _local_path(source: Source) -> Path | None:
    if isinstance(source, (str, Path)):
        return Path(source).resolve()
    return None


def _parquet(source: Source, name: str) -> bool:
    return is_parquet(Path(source) if isinstance(source, str) else source, name)


def _arrow_source(source: Source) -> Any:
    """What ``pyarrow.parquet.ParquetFile`` reads: a path, a zero-copy buffer, or the file object."""
    import pyarrow as pa

    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, bytes):
        return pa.BufferReader(source)
    return source


def _read_whole(source: Source, name: str) -> pd.DataFrame:
    if isinstance(source, (str, Path)):
        data = Path(source).read_bytes()
    elif isinstance(source, bytes):
        data = source
    else:
        source.seek(0)
        data = source.read()
    return read_table(data, name)


def _write_docs(context: Any, merged: Any, suite_name: str, run_id: Any) -> None:
    """Render ``merged`` as the site's only validation page (the partitions' runs, stored under
    the same key, are replaced by it) with the suite's page."""
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier, ValidationResultIdentifier,
    )

    suite_id = ExpectationSuiteIdentifier(name=suite_name)
    key = ValidationResultIdentifier(expectation_suite_identifier=suite_id, run_id=run_id, batch_identifier=merged.batch_id)
    store = context.validation_results_store
    for old in store.list_keys():
        store.remove_key(old)
    store.set(key, merged)
    context.build_data_docs(site_names=[SITE_NAME], resource_identifiers=[key, suite_id])
