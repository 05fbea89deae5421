"""Validate a DataFrame against the expectation suite a model spec implies (Great Expectations 1.x).

The spec (``pipeline/specs/*.yaml``) says which columns a dataset has, their types, ranges,
categories and null budgets, the row-count bounds and the unique columns. ``build_suite`` turns
that into a GX ``ExpectationSuite``; ``validate_frame`` runs it over a pandas DataFrame with the
current GX 1.x objects and writes HTML Data Docs to a folder the caller chooses:

    ephemeral context (in-memory stores, no ``gx/`` folder anywhere)
      -> pandas Data Source -> dataframe Data Asset -> whole-dataframe Batch Definition
      -> ExpectationSuite (from the spec) -> ValidationDefinition
      -> Checkpoint(actions=[UpdateDataDocsAction]) -> Data Docs site on the local filesystem
         (``TupleFilesystemStoreBackend``, ``base_directory=docs_dir``)

Bad data never raises: every problem, including a missing column (whose column-level
expectations error inside GX) and an empty frame, comes back as a failed ``ValidationReport``.

Types under pandas 3. GX's type expectation compares a column's dtype with a list of type names
and, only for an ``object`` column, checks each value's Python type in a Python loop (slow: ~1 s
per million rows and column). pandas 3's default string dtype (``str``, i.e.
``StringDtype(na_value=nan)``) matches none of GX's names, but the NA-valued ``StringDtype()``
matches the name ``StringDtype``. So before validating, string columns are viewed as
``StringDtype()`` (same values, same Arrow storage, nulls as ``<NA>``; the caller's frame is
untouched) and checked at the dtype level: a string dtype can hold nothing but strings. Categorical
and other ``object`` columns are viewed as ``object`` and GX checks each non-null value's type. The
type lists per spec type are in ``TYPE_LISTS``; ``float`` features (and the target) also accept
integer dtypes, because an integer-valued column (a CSV of whole numbers, a parquet column written
as int) is exactly representable as float and is what the model receives either way; the range and
null checks still apply to it.

Analytics: ``GX_ANALYTICS_ENABLED=false`` is set when this module is imported (before GX is) and
every context is also created with ``analytics_enabled=False``; nothing here uses the network.
"""

from __future__ import annotations

import math
import os
from datetime import datetime, timezone
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from stagewise.pipeline.spec import ModelSpec

# Must be set before great_expectations is imported anywhere in the process.
os.environ["GX_ANALYTICS_ENABLED"] = "false"

if TYPE_CHECKING:  # GX takes ~2 s to import; only pay for it when validating.
    import great_expectations as gx

__all__ = [
    "FailedExpectation",
    "TYPE_LISTS",
    "ValidationReport",
    "add_validation_definition",
    "build_report",
    "build_suite",
    "new_context",
    "prepare_frame",
    "run_identifier",
    "validate_frame",
]

_INTEGER_TYPES = (
    "int",  # numpy int64 for the dtype check; Python int for values in an object column
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "Int8Dtype",  # pandas nullable integers (never null here: integer features allow no nulls)
    "Int16Dtype",
    "Int32Dtype",
    "Int64Dtype",
    "UInt8Dtype",
    "UInt16Dtype",
    "UInt32Dtype",
    "UInt64Dtype",
)
_FLOAT_TYPES = ("float", "float16", "float32", "float64", "Float32Dtype", "Float64Dtype")

#: GX ``type_list`` per spec feature type (see the module docstring: string columns match
#: ``StringDtype`` at the dtype level; ``object`` and category columns are checked value by value
#: against ``str``).
TYPE_LISTS: dict[str, tuple[str, ...]] = {
    "integer": _INTEGER_TYPES,
    "float": _FLOAT_TYPES + _INTEGER_TYPES,
    "categorical": ("str", "StringDtype"),
    "boolean": ("bool", "BooleanDtype"),
}
_TARGET_TYPE = "float"  # the target is numeric: float or integer dtypes

SITE_NAME = "stagewise"
"""Name of the Data Docs site every context here builds."""
RESULT_FORMAT = "BASIC"
"""Counts and up to 20 sample values per expectation; SUMMARY adds per-row index lists (slow)."""
_GX_STRING = pd.StringDtype()  # NA-valued: what GX's type name "StringDtype" resolves to
_SAMPLE_SIZE = 10  # partial_unexpected values kept per failure
_META_KEY = "stagewise"


@dataclass(frozen=True)
class FailedExpectation:
    """One expectation of the suite that did not pass.

    Attributes:
        expectation_type: GX snake-case type, e.g. ``"expect_column_values_to_be_between"``.
        column: the column it is about, or None for table-level expectations.
        unexpected_count: rows that broke it (None for table-level, dtype-level or errored ones).
        unexpected_percent: those rows as a percent 0..100, as GX reports it (value checks count
            against the column's non-null values, null checks against all rows).
        description: one human line, e.g. ``"engagement_score: 312 values (1.6%) outside
            [0.0, 1.0]"`` or ``"missing columns: ['age']"``.
        partial_unexpected: up to 10 sample offending values, JSON-native (may be empty).
    """

    expectation_type: str
    column: str | None
    unexpected_count: int | None
    unexpected_percent: float | None
    description: str
    partial_unexpected: list


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of validating one DataFrame against a spec's suite.

    Attributes:
        success: True when every expectation passed.
        evaluated: number of expectations evaluated (the size of the suite).
        failed: the expectations that failed, in suite order.
        row_count: rows in the validated frame.
        docs_index: the Data Docs ``index.html`` written under ``docs_dir`` (None if absent).
        result: the full GX suite validation result as JSON-native data
            (``ExpectationSuiteValidationResult.to_json_dict()``).
        suite_name: name of the expectation suite (the spec's name).
    """

    success: bool
    evaluated: int
    failed: tuple[FailedExpectation, ...]
    row_count: int
    docs_index: Path | None
    result: dict
    suite_name: str

    def summary(self) -> str:
        """Multi-line human summary: verdict, counts, then one line per failed expectation.

        Returns:
            Text such as::

                suite 'engagement': FAILED, 5 of 107 expectations failed on 300 rows
                  - expect_table_columns_to_match_set: missing columns: ['age']
                  - expect_column_values_to_be_in_type_list [age]: column 'age' is missing
                  - ... (one line each, never wrapped)
                  - expect_column_values_to_be_between [engagement_score]: engagement_score: 3 values (1.0%) outside [0.0, 1.0] (unexpected 3) e.g. [1.5, -0.2, 2.0]
                Data Docs: /path/to/docs/index.html

            Each failure line is ``  - <expectation type> [<column>]: <description>``, then
            ``(unexpected N)`` and up to five sample values when GX reported them.
        """
        verdict = "passed" if self.success else "FAILED"
        lines = [
            f"suite {self.suite_name!r}: {verdict}, {len(self.failed)} of {self.evaluated} "
            f"expectations failed on {self.row_count} rows"
        ]
        for f in self.failed:
            where = f" [{f.column}]" if f.column else ""
            count = f" (unexpected {f.unexpected_count})" if f.unexpected_count else ""
            sample = f" e.g. {f.partial_unexpected[:5]}" if f.partial_unexpected else ""
            lines.append(f"  - {f.expectation_type}{where}: {f.description}{count}{sample}")
        if self.docs_index is not None:
            lines.append(f"Data Docs: {self.docs_index}")
        return "\n".join(lines)


def build_suite(spec: ModelSpec) -> "gx.ExpectationSuite":
    """Build the GX expectation suite a model spec implies.

    The suite (named ``spec.name``) holds, in this order:

    - ``ExpectTableColumnsToMatchSet(spec.columns, exact_match=True)``: no missing or extra column;
    - ``ExpectTableRowCountToBeBetween`` with ``expectations.row_count`` min/max;
    - ``ExpectColumnValuesToBeUnique`` for each column in ``expectations.unique``;
    - ``ExpectColumnValuesToNotBeNull`` for the id column, each PII column and the split's key or
      time column (``spec.split_columns``; a row without one has no side of the split);
    - per feature: ``ExpectColumnValuesToBeInTypeList`` (``TYPE_LISTS[feature.type]``),
      ``ExpectColumnValuesToBeBetween`` when min or max is given, ``ExpectColumnValuesToBeInSet``
      for categoricals, and ``ExpectColumnValuesToNotBeNull(mostly=1 - max_null_fraction)``;
    - target: not null, between min and max, numeric type (float or integer dtypes).

    Each expectation's ``meta["stagewise"]`` records what it checks (``kind``) and, for types,
    the spec type, so failures can be described in spec terms.

    Args:
        spec: a loaded model spec.

    Returns:
        An unsaved ``gx.ExpectationSuite`` (not bound to any Data Context); for the built-in
        ``engagement`` spec (37 columns, 33 features) it holds 107 expectations.
    """
    import great_expectations as gx

    E = gx.expectations
    exps: list[Any] = [
        E.ExpectTableColumnsToMatchSet(
            column_set=list(spec.columns), exact_match=True, meta=_meta("columns")
        ),
        E.ExpectTableRowCountToBeBetween(
            min_value=spec.expectations.row_count.min,
            max_value=spec.expectations.row_count.max,
            meta=_meta("row_count"),
        ),
    ]
    for col in dict.fromkeys(spec.expectations.unique):
        exps.append(E.ExpectColumnValuesToBeUnique(column=col, meta=_meta("unique")))
    listed = {*spec.feature_names, spec.target.name}
    for col in dict.fromkeys([spec.id_column, *spec.pii_columns, *(c for c in spec.split_columns if c not in listed)]):
        exps.append(E.ExpectColumnValuesToNotBeNull(column=col, meta=_meta("nulls")))

    for f in spec.features:
        exps.append(
            E.ExpectColumnValuesToBeInTypeList(
                column=f.name,
                type_list=list(TYPE_LISTS[f.type]),
                meta=_meta("type", spec_type=f.type),
            )
        )
        if f.min is not None or f.max is not None:
            exps.append(
                E.ExpectColumnValuesToBeBetween(
                    column=f.name, min_value=f.min, max_value=f.max, meta=_meta("range")
                )
            )
        if f.type == "categorical":
            exps.append(
                E.ExpectColumnValuesToBeInSet(
                    column=f.name, value_set=list(f.categories or ()), meta=_meta("categories")
                )
            )
        mostly = round(1.0 - f.max_null_fraction, 12)
        exps.append(
            E.ExpectColumnValuesToNotBeNull(
                column=f.name,
                mostly=mostly,
                meta=_meta("nulls", max_null_fraction=f.max_null_fraction),
            )
        )

    t = spec.target
    exps.append(E.ExpectColumnValuesToNotBeNull(column=t.name, meta=_meta("nulls")))
    if t.min is not None or t.max is not None:
        exps.append(
            E.ExpectColumnValuesToBeBetween(
                column=t.name, min_value=t.min, max_value=t.max, meta=_meta("range")
            )
        )
    if spec.task == "classification":  # a binary label: 0 or 1, nothing in between
        exps.append(E.ExpectColumnValuesToBeInSet(column=t.name, value_set=[0, 1], meta=_meta("categories")))
    exps.append(
        E.ExpectColumnValuesToBeInTypeList(
            column=t.name,
            type_list=list(TYPE_LISTS[_TARGET_TYPE]),
            meta=_meta("type", spec_type="numeric"),
        )
    )
    return gx.ExpectationSuite(name=spec.name, expectations=exps)


def validate_frame(
    df: pd.DataFrame, spec: ModelSpec, docs_dir: Path, run_name: str = "stagewise", suite: Any = None
) -> ValidationReport:
    """Validate a DataFrame against the spec's suite and write HTML Data Docs to ``docs_dir``.

    Every call builds its own ephemeral GX context (in-memory stores), so calls are independent
    and nothing but the Data Docs site is written to disk. The caller's frame is not modified.

    Args:
        df: the dataset, shape (n_rows, n_columns); expected to hold exactly ``spec.columns``.
            Any content is accepted: missing, extra or duplicated columns, wrong dtypes, nulls
            and an empty frame all become failures in the report.
        spec: the model spec whose suite (``build_suite(spec)``) is run.
        docs_dir: folder of the Data Docs site; created if needed. Gets ``index.html`` plus
            ``expectations/`` and ``validations/`` pages and a ``static/`` folder (~4 MB, mostly
            fonts and images). The site shows this call's run only: GX rebuilds it from the
            call's in-memory stores and deletes the ``expectations/`` and ``validations/`` pages
            of earlier runs in the same folder (other files are left alone), so give each run
            its own folder to keep them.
        run_name: GX run name, part of the validation page's path in the Data Docs.
        suite: a ``gx.ExpectationSuite`` to run instead of ``build_suite(spec)``.

    Returns:
        A ``ValidationReport``; ``success`` is False if any expectation failed or errored.

    Raises:
        TypeError: ``df`` is not a pandas DataFrame.
        OSError: ``docs_dir`` cannot be created or written.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"validate_frame needs a pandas DataFrame, got {type(df).__name__}")
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    docs_dir = Path(docs_dir).resolve()
    frame = prepare_frame(df)
    context = new_context(docs_dir)
    validation_definition = add_validation_definition(context, spec, suite)
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"{spec.name}-checkpoint",
            validation_definitions=[validation_definition],
            actions=[UpdateDataDocsAction(name="update_data_docs", site_names=[SITE_NAME])],
            result_format=RESULT_FORMAT,
        )
    )
    checkpoint_result = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=run_identifier(run_name))
    (suite_result,) = checkpoint_result.run_results.values()
    return build_report(suite_result.to_json_dict(), validation_definition.suite, set(frame.columns), len(frame), docs_dir)


def new_context(docs_dir: Path) -> Any:
    """An ephemeral GX Data Context (in-memory stores, analytics off, no progress bars) whose one
    Data Docs site (``SITE_NAME``) is written under ``docs_dir`` (created if needed).

    Raises:
        OSError: ``docs_dir`` cannot be created.
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    docs_dir = Path(docs_dir).resolve()
    docs_dir.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(
        mode="ephemeral",
        project_config=DataContextConfig(
            # in-memory stores and no default temp docs site: the only files GX writes are ours
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
        ),
    )
    context.add_data_docs_site(
        site_name=SITE_NAME,
        site_config={
            "class_name": "SiteBuilder",
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_dir),
            },
        },
    )
    return context


def add_validation_definition(context: Any, spec: ModelSpec, suite: Any = None) -> "gx.ValidationDefinition":
    """Add to ``context`` a pandas data source, a dataframe asset with a whole-dataframe batch
    definition, the suite (``suite``, else ``build_suite(spec)``) and a validation definition
    binding them; run it with ``batch_parameters={"dataframe": prepare_frame(df)}``.

    Returns:
        The added ``gx.ValidationDefinition`` (its ``suite`` is the suite as added, with ids).
    """
    import great_expectations as gx

    batch_definition = (
        context.data_sources.add_pandas(name="stagewise")
        .add_dataframe_asset(name=spec.name)
        .add_batch_definition_whole_dataframe(name="whole_frame")
    )
    suite = context.suites.add(build_suite(spec) if suite is None else suite)
    return context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{spec.name}-validation", data=batch_definition, suite=suite)
    )


def run_identifier(run_name: str) -> Any:
    """A GX ``RunIdentifier`` named ``run_name``, timed now (UTC).

    An explicit run_time: without one GX tries to parse the run name as a date, and some run ids
    (e.g. ``"20261122T071512Z-2769ad"``) parse into an impossible UTC offset that GX then fails on.
    """
    from great_expectations.core.run_identifier import RunIdentifier

    return RunIdentifier(run_name=run_name, run_time=datetime.now(timezone.utc))


def build_report(result: dict, suite: Any, present: set[str], row_count: int, docs_dir: Path) -> ValidationReport:
    """A ``ValidationReport`` from a suite validation result.

    Args:
        result: ``ExpectationSuiteValidationResult.to_json_dict()`` (JSON-native).
        suite: the suite as added to the context (its expectation ids order the failures).
        present: the validated columns (column-level failures on other columns say "missing").
        row_count: rows validated.
        docs_dir: the Data Docs site folder (``docs_index`` if its ``index.html`` exists).
    """
    # GX returns results grouped by how it computed them; report failures in suite order.
    order = {e.id: i for i, e in enumerate(suite.expectations)}
    failures = [r for r in result.get("results", []) if not r.get("success", False)]
    failures.sort(
        key=lambda r: order.get((r.get("expectation_config") or {}).get("id"), len(order))
    )
    failed = tuple(_failure(r, present) for r in failures)
    index = Path(docs_dir).resolve() / "index.html"
    return ValidationReport(
        success=bool(result.get("success", False)),
        evaluated=int(result.get("statistics", {}).get("evaluated_expectations", 0)),
        failed=failed,
        row_count=row_count,
        docs_index=index if index.is_file() else None,
        result=result,
        suite_name=suite.name,
    )


def _meta(kind: str, **extra: Any) -> dict:
    return {_META_KEY: {"kind": kind, **extra}}


def prepare_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A shallow copy GX can type-check (dtypes per ``_gx_checkable_dtype``), names as unique str.

    Duplicated column names get a ``__duplicate_N`` suffix so the column-set expectation reports
    them as unexpected columns instead of GX failing on an ambiguous column.
    """
    frame = df.copy(deep=False)
    names = [str(c) for c in frame.columns]
    seen: dict[str, int] = {}
    unique_names = []
    for n in names:
        k = seen.get(n, 0)
        seen[n] = k + 1
        unique_names.append(n if k == 0 else f"{n}__duplicate_{k}")
    frame.columns = unique_names
    for i, dtype in enumerate(frame.dtypes):
        target = _gx_checkable_dtype(dtype)
        if target is not None:
            frame.isetitem(i, frame.iloc[:, i].astype(target))
    return frame


def _gx_checkable_dtype(dtype: Any) -> Any:
    """The dtype to view a column as so GX's type check understands it; None: keep as is.

    String dtypes (pandas 3's ``str``, Arrow-backed strings) become the NA-valued
    ``StringDtype()``, which GX's type list name ``StringDtype`` matches at the dtype level.
    Categorical dtypes become ``object`` (checked value by value). Arrow-backed numbers and
    booleans (``pd.read_parquet(..., dtype_backend="pyarrow")``) become the pandas nullable
    dtypes, which the type lists name.
    """
    if isinstance(dtype, pd.StringDtype):
        return None if dtype == _GX_STRING else _GX_STRING
    if isinstance(dtype, pd.CategoricalDtype):
        return object
    if not isinstance(dtype, pd.ArrowDtype):
        return None
    import pyarrow as pa

    t = dtype.pyarrow_dtype
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return _GX_STRING
    if pa.types.is_dictionary(t):
        return object
    if pa.types.is_integer(t):
        return f"{'UInt' if pa.types.is_unsigned_integer(t) else 'Int'}{t.bit_width}"
    if pa.types.is_floating(t):
        return "Float64" if t.bit_width == 64 else "Float32"
    if pa.types.is_boolean(t):
        return "boolean"
    return None


def _failure(r: dict, present: set[str]) -> FailedExpectation:
    """Turn one failed entry of ``ExpectationSuiteValidationResult.to_json_dict()['results']``."""
    config = r.get("expectation_config") or {}
    etype = str(config.get("type", "unknown_expectation"))
    kwargs = config.get("kwargs") or {}
    meta = (config.get("meta") or {}).get(_META_KEY) or {}
    res = r.get("result") or {}
    column = kwargs.get("column")
    column = str(column) if column is not None else None

    count = res.get("unexpected_count")
    pct = res.get("unexpected_percent")
    count = int(count) if isinstance(count, (int, float)) else None
    pct = float(pct) if isinstance(pct, (int, float)) and not math.isnan(pct) else None
    sample = list(res.get("partial_unexpected_list") or [])[:_SAMPLE_SIZE]

    if column is not None and column not in present:
        check = etype.removeprefix("expect_column_values_to_").replace("_", " ")
        desc = f"column {column!r} is missing (check '{check}' could not run)"
        count = pct = None
        sample = []
    elif raised(r.get("exception_info")):
        where = f"{column}: " if column else ""
        desc = f"{where}{etype} could not be evaluated: {_exception_message(r['exception_info'])}"
    else:
        desc = _describe(etype, column, kwargs, meta, res, count, pct)
    return FailedExpectation(
        expectation_type=etype,
        column=column,
        unexpected_count=count,
        unexpected_percent=pct,
        description=desc,
        partial_unexpected=sample,
    )


def _describe(
    etype: str,
    column: str | None,
    kwargs: dict,
    meta: dict,
    res: dict,
    count: int | None,
    pct: float | None,
) -> str:
    if count is None:
        share = "values"
    elif pct is None:
        share = f"{count} values"
    else:
        share = f"{count} values ({pct:.1f}%)"
    if etype == "expect_table_columns_to_match_set":
        mismatched = (res.get("details") or {}).get("mismatched") or {}
        parts = []
        if mismatched.get("missing"):
            parts.append(f"missing columns: {sorted(mismatched['missing'])}")
        if mismatched.get("unexpected"):
            parts.append(f"unexpected columns: {sorted(mismatched['unexpected'])} (if the model should not read them, "
                         "list them under ignored_columns in the spec; if it should, add them as features)")
        return "; ".join(parts) or f"columns {res.get('observed_value')} do not match the spec"
    if etype == "expect_table_row_count_to_be_between":
        lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
        hi_s = "inf" if hi is None else hi
        return f"row count {res.get('observed_value')} outside [{lo}, {hi_s}]"
    if etype == "expect_column_values_to_be_between":
        lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
        lo_s = "-inf" if lo is None else lo
        hi_s = "inf" if hi is None else hi
        return f"{column}: {share} outside [{lo_s}, {hi_s}]"
    if etype == "expect_column_values_to_be_in_set":
        return f"{column}: {share} not in the allowed set {list(kwargs.get('value_set') or [])}"
    if etype == "expect_column_values_to_be_unique":
        return f"{column}: {share} are duplicates (rows sharing a value with another row)"
    if etype == "expect_column_values_to_not_be_null":
        nulls = f"{count} nulls ({pct:.1f}%)" if count is not None and pct is not None else "nulls"
        max_frac = meta.get("max_null_fraction", 1.0 - float(kwargs.get("mostly", 1.0)))
        allowed = "none allowed" if max_frac <= 0 else f"at most {max_frac * 100:.1f}% allowed"
        return f"{column}: {nulls}, {allowed}"
    if etype == "expect_column_values_to_be_in_type_list":
        wanted = meta.get("spec_type") or kwargs.get("type_list")
        if "observed_value" in res:  # dtype-level check
            return f"{column}: dtype {res['observed_value']}, expected {wanted}"
        return f"{column}: {share} not of type {wanted}"
    observed = res.get("observed_value")
    where = f"{column}: " if column else ""
    tail = f" (observed {observed})" if observed is not None else ""
    return f"{where}{etype} failed{tail}"


def raised(info: Any) -> bool:
    """GX puts either one exception dict or a dict of them (keyed by metric id) here."""
    if not isinstance(info, dict):
        return False
    if "raised_exception" in info:
        return bool(info.get("raised_exception"))
    return any(isinstance(v, dict) and v.get("raised_exception") for v in info.values())


def _exception_message(info: dict) -> str:
    if "raised_exception" in info:
        return str(info.get("exception_message"))
    for v in info.values():
        if isinstance(v, dict) and v.get("raised_exception"):
            return str(v.get("exception_message"))
    return "unknown error"
