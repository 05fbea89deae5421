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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from stagewise.pipeline.inputs import is_parquet, read_table
from stagewise.pipeline.scoring.plan import PartitionPlan, plan_source
from stagewise.pipeline.spec import ModelSpec
from stagewise.pipeline.validation_columns import PARTIAL_VALUES, Source, column_stats
from stagewise.pipeline.validation import (
    RESULT_FORMAT, SITE_NAME, ValidationReport, add_validation_definition, build_report, new_context, prepare_frame, raised,
    run_identifier, validate_frame,
)

__all__ = ["PARTIAL", "PARTIAL_VALUES", "Source", "UnsupportedForPartitions", "merge_partials", "partition_kinds",
           "validate_partition", "validate_partitions"]


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
    """Validate ``source`` against the spec's suite one partition at a time and merge exactly:
    ``validate_partition`` for each partition in turn, then ``merge_partials`` (what an AWS run
    does across a Distributed Map and a merge task, here in one process and one GX context).

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
    plan = _plan(source, name, per_partition)
    prepare = prepare or (lambda df: df)
    if plan.count <= 1 or not _parquet(source, name):
        return validate_frame(prepare(_read_whole(source, name)), spec, docs_dir, run_name=run_name, suite=suite)
    run = _Partitions(source, name, spec, docs_dir, suite)
    partials = []
    for i in range(plan.count):
        partials.append(run.partition(plan, i, prepare, run_name))
        if progress:
            progress(i + 1, plan.count, f"validated partition {i + 1}/{plan.count}")
    return run.merge(partials, run_name, memory_limit, temp_dir)


def validate_partition(
    source: Source,
    name: str,
    spec: ModelSpec,
    index: int,
    count: int,
    *,
    per_partition: int | None = None,
    prepare: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    run_name: str = "stagewise",
    suite: Any = None,
) -> dict[str, Any]:
    """Validate partition ``index`` of ``count`` alone (one task of a Distributed Map on AWS):
    its row groups only (a ``RangedReader`` source fetches only those bytes), the same suite, and
    return what ``merge_partials`` needs, JSON-native (``PARTIAL`` documents its keys).

    Args:
        source, name, spec, per_partition, prepare, run_name, suite: as ``validate_partitions``.
        index: the partition (0-based).
        count: the partitions the plan had when the run fanned out; a different count now
            means the input changed.

    Returns:
        The partition's partial result, a few KB to ~100 KB (GX's ``BASIC`` result per
        expectation, at most 20 sample values each).

    Raises:
        UnsupportedForPartitions: the suite holds an expectation with no exact merge (before
            any row is read).
        ValueError: the input is not readable Parquet, or its plan no longer has ``count``
            partitions.
    """
    plan = _plan(source, name, per_partition)
    if plan.count != count or not 0 <= index < count or not _parquet(source, name):
        raise ValueError(f"{name}: asked for partition {index} of {count}, but the input has {plan.count} Parquet "
                         "partition(s); it changed after it was ingested: start a new run")
    return _Partitions(source, name, spec, None, suite).partition(plan, index, prepare or (lambda df: df), run_name)


def merge_partials(
    partials: list[dict[str, Any]],
    source: Source,
    name: str,
    spec: ModelSpec,
    docs_dir: Path,
    *,
    run_name: str = "stagewise",
    memory_limit: str = "1GB",
    temp_dir: Path | None = None,
    suite: Any = None,
) -> ValidationReport:
    """Merge every partition's ``validate_partition`` result into the whole file's, count the
    whole-column expectations (uniqueness, row count, ...) by DuckDB over ``source`` (one column
    at a time; a ``RangedReader`` streams just those column chunks), and write the Data Docs.

    Args:
        partials: one per partition, any order; all of one plan (same ``count``, each index once).
        source, name, spec, docs_dir, run_name, memory_limit, temp_dir, suite: as
            ``validate_partitions``.

    Returns:
        The merged ``ValidationReport``, equal to ``validate_partitions``' for the same file.

    Raises:
        ValueError: the partials are not one complete plan, or the input is not readable Parquet.
        UnsupportedForPartitions: as ``validate_partitions``.
    """
    return _Partitions(source, name, spec, docs_dir, suite).merge(partials, run_name, memory_limit, temp_dir)


PARTIAL = ("index", "count", "rows", "columns", "batch_id", "meta", "results")
"""Keys of a partial result (``validate_partition``): the partition ``index`` of ``count``, its
``rows``, its ``columns`` (after ``prepare``), GX's ``batch_id``, the suite result's ``meta``
(GX version, batch spec, validation time; no run id or data fingerprint) and ``results``: GX's
``ExpectationValidationResult.to_json_dict()`` per expectation, each with ``expectation_index``
(the expectation's position in the suite: GX's ids are new in every process)."""


class _Partitions:
    """One GX context with the suite, shared by the partitions validated in this process."""

    def __init__(self, source: Source, name: str, spec: ModelSpec, docs_dir: Path | None, suite: Any) -> None:
        self.source, self.name = source, name
        self._tmp = None if docs_dir is not None else tempfile.TemporaryDirectory(prefix="stagewise-gx-")
        self.docs_dir = Path(docs_dir) if docs_dir is not None else Path(self._tmp.name)
        self.context = new_context(self.docs_dir)
        self.definition = add_validation_definition(self.context, spec, suite)
        self.suite = self.definition.suite
        self.kinds = partition_kinds(self.suite)  # refused before any row is read
        self.position = {e.id: k for k, e in enumerate(self.suite.expectations)}  # GX ids -> place in the suite
        self._pf: Any = None

    @property
    def pf(self) -> Any:
        import pyarrow.parquet as pq

        if self._pf is None:
            self._pf = pq.ParquetFile(_arrow_source(self.source), pre_buffer=True)  # over S3: few, coalesced reads
        return self._pf

    def partition(self, plan: PartitionPlan, i: int, prepare: Callable[[pd.DataFrame], pd.DataFrame], run_name: str) -> dict:
        try:
            frame = self.pf.read_row_groups(plan.row_groups(i)).to_pandas()
        except Exception as e:  # pyarrow raises several types for corrupt pages
            raise ValueError(f"{self.name} is not a readable parquet file (partition {i + 1}/{plan.count}): {e}") from e
        frame = prepare_frame(prepare(frame))
        result = self.definition.run(batch_parameters={"dataframe": frame}, result_format=RESULT_FORMAT,
                                     run_id=run_identifier(run_name))
        doc = result.to_json_dict()  # JSON-native, serialised once
        for out in doc["results"]:
            out["expectation_index"] = self.position[out["expectation_config"]["id"]]
        meta = {k: v for k, v in doc["meta"].items() if k not in ("run_id", "batch_markers")}
        return {"index": i, "count": plan.count, "rows": len(frame), "columns": list(frame.columns),
                "batch_id": result.batch_id, "meta": meta, "results": doc["results"]}

    def merge(self, partials: list[dict], run_name: str, memory_limit: str, temp_dir: Path | None) -> ValidationReport:
        partials = sorted(partials, key=lambda d: d["index"])
        count = partials[0]["count"] if partials else 0
        if not partials or [d["index"] for d in partials] != list(range(count)) or {d["count"] for d in partials} != {count}:
            raise ValueError(f"{self.name}: the partial results are not one complete set of partitions "
                             f"(have {[(d['index'], d['count']) for d in partials]})")
        fold = _Fold(self.suite, self.kinds)
        for d in partials:
            fold.add(d)
        columns = fold.whole_columns()
        stats = column_stats(self.source, self.pf, columns, memory_limit, temp_dir) if columns is not None else {}
        run_id = run_identifier(run_name)
        merged = fold.result([d["rows"] for d in partials], stats, run_id, partials[0]["batch_id"], partials[0].get("meta") or {})
        _write_docs(self.context, merged, self.suite.name, run_id)
        return build_report(merged.to_json_dict(), self.suite, set(partials[0]["columns"]), sum(d["rows"] for d in partials),
                            self.docs_dir)


def _plan(source: Source, name: str, per_partition: int | None) -> PartitionPlan:
    try:
        return plan_source(source if not isinstance(source, str) else Path(source), name, per_partition)
    except Exception as e:  # pyarrow raises several types for a corrupt footer
        raise ValueError(f"{name} is not a readable parquet or CSV file: {e}") from e


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
    """What one expectation's results in the partitions so far add up to (results as JSON)."""

    first: dict  # its result in partition 0 (meta, exception info)
    raised: dict | None = None  # the first partition result that raised
    failing: dict | None = None  # the first partition result that failed
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
    """Per-expectation accumulators over the partitions' partial results (``PARTIAL``), in
    partition order, then the merged result."""

    def __init__(self, suite: Any, kinds: dict[str, str]) -> None:
        self.suite, self.kinds = suite, kinds
        self.expectations = list(suite.expectations)
        self.accs: dict[int, _Acc] = {}
        self.order: list[int] = []

    def add(self, partial: dict) -> None:
        for r in partial["results"]:
            k = r["expectation_index"]
            acc = self.accs.get(k)
            if acc is None:
                acc = self.accs[k] = _Acc(first=r)
                self.order.append(k)
            if raised(r.get("exception_info")):
                acc.raised = acc.raised or r
                continue
            if not r["success"]:
                acc.failing = acc.failing or r
            res = r.get("result") or {}
            kind = self.kinds[self.expectations[k].id]
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
        whole = [k for k, acc in self.accs.items() if self.kinds[self.expectations[k].id] == "whole" and acc.raised is None]
        if not whole:
            return None
        return list(dict.fromkeys(c for k in whole if (c := getattr(self.expectations[k], "column", None)) is not None))

    def result(self, rows: list[int], stats: dict[str, Any], run_id: Any, batch_id: str, meta: dict) -> Any:
        """The merged ``ExpectationSuiteValidationResult`` (partition 0's order and meta; each
        expectation's configuration from this process's suite)."""
        from great_expectations.core import ExpectationSuiteValidationResult, ExpectationValidationResult
        from great_expectations.validator.validation_statistics import calc_validation_statistics

        results = []
        for k in self.order:
            acc, exp = self.accs[k], self.expectations[k]
            if acc.raised is not None:
                r = acc.raised
                results.append(ExpectationValidationResult(
                    success=bool(r["success"]), expectation_config=exp.configuration, result=r.get("result") or {},
                    meta=r.get("meta") or {}, exception_info=r.get("exception_info")))
                continue
            out = self._merge(exp, self.kinds[exp.id], acc, stats)
            results.append(ExpectationValidationResult(
                success=bool(out["success"]), expectation_config=exp.configuration, result=out.get("result") or {},
                meta=acc.first.get("meta") or {}, exception_info=acc.first.get("exception_info")))
        st = calc_validation_statistics(results)
        meta = {**meta, "run_id": run_id, "partitions": {"count": len(rows), "rows": rows}}
        return ExpectationSuiteValidationResult(
            success=st.success, results=results, suite_name=self.suite.name, suite_parameters={},
            statistics={"evaluated_expectations": st.evaluated_expectations, "successful_expectations": st.successful_expectations,
                        "unsuccessful_expectations": st.unsuccessful_expectations, "success_percent": st.success_percent},
            meta=meta, batch_id=batch_id)

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
            return {"success": r["success"], "result": r.get("result") or {}}
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


# ------------------------------------------------------------------------------- sources
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
