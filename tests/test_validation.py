"""Tests for stagewise.pipeline.validation: the GX 1.x suite from a spec, and validate_frame."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from stagewise.pipeline.spec import ModelSpec, RowCountSpec, load_spec
from stagewise.pipeline.validation import (
    TYPE_LISTS,
    FailedExpectation,
    ValidationReport,
    build_suite,
    validate_frame,
)

N_ROWS = 300


def make_valid_frame(spec: ModelSpec, n_rows: int = N_ROWS, seed: int = 0) -> pd.DataFrame:
    """A frame that satisfies any spec: values inside ranges, nulls under half the budget."""
    rng = np.random.default_rng(seed)
    data: dict[str, object] = {spec.id_column: [f"cust-{i:06d}" for i in range(n_rows)]}
    for col in spec.pii_columns:
        data[col] = [f"{col}-{i}" for i in range(n_rows)]
    for f in spec.features:
        lo = 0.0 if f.min is None else f.min
        hi = lo + 100.0 if f.max is None else f.max
        if f.type == "integer":
            data[f.name] = rng.integers(int(np.ceil(lo)), int(np.floor(hi)) + 1, n_rows)
        elif f.type == "float":
            values = rng.uniform(lo, hi, n_rows)
            if f.max_null_fraction > 0:
                values[rng.random(n_rows) < f.max_null_fraction / 2] = np.nan
            data[f.name] = values
        elif f.type == "categorical":
            data[f.name] = rng.choice(list(f.categories), n_rows).tolist()
        else:
            data[f.name] = rng.random(n_rows) < 0.5
    t = spec.target
    t_lo = 0.0 if t.min is None else t.min
    data[t.name] = rng.uniform(t_lo, t_lo + 1.0 if t.max is None else t.max, n_rows)
    return pd.DataFrame(data)[spec.columns]


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    """The built-in engagement spec with a row-count floor small test frames can meet."""
    base = load_spec("engagement")
    row_count = RowCountSpec(min=100, max=1_000_000)
    return base.model_copy(
        update={"expectations": base.expectations.model_copy(update={"row_count": row_count})}
    )


@pytest.fixture
def frame(spec: ModelSpec) -> pd.DataFrame:
    return make_valid_frame(spec)


def failures(report: ValidationReport, etype: str, column: str | None) -> list[FailedExpectation]:
    return [f for f in report.failed if f.expectation_type == etype and f.column == column]


def one_failure(report: ValidationReport, etype: str, column: str | None) -> FailedExpectation:
    found = failures(report, etype, column)
    assert len(found) == 1, report.summary()
    return found[0]


def test_build_suite_follows_the_spec() -> None:
    spec = load_spec("engagement")
    suite = build_suite(spec)
    by_type: dict[str, list] = {}
    for e in suite.expectations:
        by_type.setdefault(e.expectation_type, []).append(e)

    assert suite.name == "engagement"
    (cols,) = by_type["expect_table_columns_to_match_set"]
    assert list(cols.column_set) == spec.columns and cols.exact_match is True
    (rows,) = by_type["expect_table_row_count_to_be_between"]
    assert (rows.min_value, rows.max_value) == (1000, 50_000_000)
    assert [e.column for e in by_type["expect_column_values_to_be_unique"]] == ["customer_id"]

    not_null = {e.column: e.mostly for e in by_type["expect_column_values_to_not_be_null"]}
    assert set(not_null) == {"customer_id", "name", "email", "engagement_score"} | set(
        spec.feature_names
    )
    assert not_null["age"] == 1.0 and not_null["customer_id"] == 1.0
    assert not_null["app_rating"] == pytest.approx(0.2)
    assert not_null["avg_job_completion_rating"] == pytest.approx(0.1)

    type_checks = by_type["expect_column_values_to_be_in_type_list"]
    types = {e.column: list(e.type_list) for e in type_checks}
    assert types["age"] == list(TYPE_LISTS["integer"])
    assert types["gender"] == ["str", "StringDtype"]
    assert types["push_notifications_enabled"] == list(TYPE_LISTS["boolean"])
    assert "float64" in types["engagement_score"] and "int64" in types["engagement_score"]

    range_checks = by_type["expect_column_values_to_be_between"]
    ranges = {e.column: (e.min_value, e.max_value) for e in range_checks}
    assert ranges["engagement_score"] == (0.0, 1.0) and ranges["age"] == (18, 90)
    assert "gender" not in ranges and "push_notifications_enabled" not in ranges
    sets = {e.column: list(e.value_set) for e in by_type["expect_column_values_to_be_in_set"]}
    assert sets["city_tier"] == ["tier_1", "tier_2", "tier_3"] and len(sets) == 7
    assert len(suite.expectations) == 107


def test_valid_frame_passes_and_writes_data_docs(spec, frame, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # GX must not scaffold anything (a gx/ folder) in the cwd
    dtypes_before = frame.dtypes.copy()
    docs = tmp_path / "docs"

    report = validate_frame(frame, spec, docs, run_name="test-run")

    assert report.success, report.summary()
    assert report.failed == ()
    assert report.evaluated == len(build_suite(spec).expectations)
    assert report.row_count == N_ROWS
    assert report.suite_name == "engagement"
    assert report.docs_index == docs.resolve() / "index.html"
    assert report.docs_index.is_file()
    assert any((docs / "validations").rglob("*.html"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs"]
    json.dumps(report.result)  # JSON-serialisable
    assert report.result["success"] is True
    assert "passed" in report.summary()
    pd.testing.assert_series_equal(frame.dtypes, dtypes_before)  # caller's frame untouched


def test_missing_column_and_out_of_range_target(spec, frame, tmp_path) -> None:
    bad = frame.drop(columns=["age"])
    bad.loc[:6, "engagement_score"] = 1.5  # rows 0..6: 7 values above max
    bad.loc[7, "engagement_score"] = -0.25  # and one below min

    report = validate_frame(bad, spec, tmp_path)

    assert not report.success
    cols = one_failure(report, "expect_table_columns_to_match_set", None)
    assert cols.description == "missing columns: ['age']"
    # every column-level expectation on the missing column fails with a clear line, no crash
    on_age = [f for f in report.failed if f.column == "age"]
    assert {f.expectation_type for f in on_age} == {
        "expect_column_values_to_be_in_type_list",
        "expect_column_values_to_be_between",
        "expect_column_values_to_not_be_null",
    }
    assert sorted(f.description for f in on_age) == [
        "column 'age' is missing (check 'be between' could not run)",
        "column 'age' is missing (check 'be in type list' could not run)",
        "column 'age' is missing (check 'not be null' could not run)",
    ]
    target = one_failure(report, "expect_column_values_to_be_between", "engagement_score")
    assert target.unexpected_count == 8
    assert target.unexpected_percent == pytest.approx(100 * 8 / N_ROWS)
    assert target.description == "engagement_score: 8 values (2.7%) outside [0.0, 1.0]"
    assert set(target.partial_unexpected) == {1.5, -0.25}
    assert len(report.failed) == 5  # column set, 3 on age, target range


def test_extra_column_fails(spec, frame, tmp_path) -> None:
    report = validate_frame(frame.assign(referrer_code="abc"), spec, tmp_path)
    assert not report.success
    (failed,) = report.failed
    assert failed.description.startswith("unexpected columns: ['referrer_code']")
    assert "ignored_columns" in failed.description  # the message says how to keep such a column out of the model


def test_duplicate_customer_id_fails_with_count(spec, frame, tmp_path) -> None:
    bad = frame.copy()
    bad.loc[[10, 11, 12], "customer_id"] = bad.loc[0, "customer_id"]  # 4 rows share one id

    report = validate_frame(bad, spec, tmp_path)

    dup = one_failure(report, "expect_column_values_to_be_unique", "customer_id")
    assert dup.unexpected_count == 4
    assert "cust-000000" in dup.partial_unexpected
    assert len(report.failed) == 1


def test_unknown_category_fails(spec, frame, tmp_path) -> None:
    bad = frame.copy()
    bad.loc[:4, "country"] = "XX"

    report = validate_frame(bad, spec, tmp_path)

    cat = one_failure(report, "expect_column_values_to_be_in_set", "country")
    assert cat.unexpected_count == 5
    assert cat.partial_unexpected == ["XX"] * 5
    assert cat.description.startswith("country: 5 values (1.7%) not in the allowed set")
    assert len(report.failed) == 1


def test_null_budget(spec, frame, tmp_path) -> None:
    def with_null_share(share: float) -> pd.DataFrame:
        out = frame.assign(app_rating=3.5)
        out.loc[: int(N_ROWS * share) - 1, "app_rating"] = np.nan
        return out

    assert validate_frame(with_null_share(0.75), spec, tmp_path).success  # budget is 80%

    bad = with_null_share(0.9)
    bad.loc[3, "sessions_per_week"] = np.nan  # no nulls allowed at all
    report = validate_frame(bad, spec, tmp_path)

    rating = one_failure(report, "expect_column_values_to_not_be_null", "app_rating")
    assert rating.unexpected_count == int(N_ROWS * 0.9)
    assert rating.description == "app_rating: 270 nulls (90.0%), at most 80.0% allowed"
    sessions = one_failure(report, "expect_column_values_to_not_be_null", "sessions_per_week")
    assert sessions.unexpected_count == 1
    assert sessions.description.endswith("none allowed")
    assert len(report.failed) == 2


def test_strings_in_integer_column_fail_the_type_check(spec, frame, tmp_path) -> None:
    bad = frame.assign(age=frame["age"].astype(str))  # pandas 3: dtype "str"

    report = validate_frame(bad, spec, tmp_path)

    typ = one_failure(report, "expect_column_values_to_be_in_type_list", "age")
    # a string dtype can only hold strings: checked at the dtype level, no per-row count
    assert typ.unexpected_count is None
    assert typ.description == "age: dtype str, expected integer"
    assert not report.success


def test_mixed_objects_in_categorical_column_are_counted_per_value(spec, frame, tmp_path) -> None:
    gender = frame["gender"].astype(object)
    gender.iloc[:7] = 3  # ints among the strings: an object column, checked value by value
    report = validate_frame(frame.assign(gender=gender), spec, tmp_path)

    typ = one_failure(report, "expect_column_values_to_be_in_type_list", "gender")
    assert typ.unexpected_count == 7
    assert typ.description.startswith("gender: 7 values") and typ.description.endswith("not of type categorical")
    assert 3 in typ.partial_unexpected


def test_empty_frame_fails_without_raising(spec, frame, tmp_path) -> None:
    report = validate_frame(frame.iloc[:0], spec, tmp_path)

    assert not report.success
    assert report.row_count == 0
    rows = one_failure(report, "expect_table_row_count_to_be_between", None)
    assert rows.description == "row count 0 outside [100, 1000000]"
    assert len(report.failed) == 1


def test_summary_names_every_failed_expectation(spec, frame, tmp_path) -> None:
    bad = frame.drop(columns=["age"]).assign(extra=1)
    bad.loc[:2, "engagement_score"] = 2.0

    report = validate_frame(bad, spec, tmp_path)
    text = report.summary()

    assert text.splitlines()[0] == (
        f"suite 'engagement': FAILED, {len(report.failed)} of {report.evaluated} "
        f"expectations failed on {N_ROWS} rows"
    )
    for f in report.failed:
        assert f.expectation_type in text and f.description in text
    assert "missing columns: ['age']" in text and "unexpected columns: ['extra']" in text
    assert "engagement_score: 3 values (1.0%) outside [0.0, 1.0] (unexpected 3)" in text
    assert str(report.docs_index) in text


def test_parquet_round_trip_passes(spec, frame, tmp_path) -> None:
    path = tmp_path / "customers.parquet"
    frame.to_parquet(path)
    back = pd.read_parquet(path)
    assert back["gender"].dtype == frame["gender"].dtype  # str dtype survives the round trip

    report = validate_frame(back, spec, tmp_path / "docs")

    assert report.success, report.summary()


def test_other_accepted_representations_pass(spec, frame, tmp_path) -> None:
    """Category dtypes, an integer column for a float feature, Arrow-backed dtypes."""
    alt = frame.copy()
    for f in spec.features:
        if f.type == "categorical":
            alt[f.name] = alt[f.name].astype(pd.CategoricalDtype(list(f.categories)))
    alt["sessions_per_week"] = alt["sessions_per_week"].round().astype("int64")
    assert validate_frame(alt, spec, tmp_path).success

    path = tmp_path / "customers.parquet"
    frame.to_parquet(path)
    arrow = pd.read_parquet(path, dtype_backend="pyarrow")
    assert validate_frame(arrow, spec, tmp_path).success


def test_not_a_frame_is_a_programming_error(spec, tmp_path) -> None:
    with pytest.raises(TypeError, match="pandas DataFrame"):
        validate_frame({"customer_id": [1]}, spec, tmp_path)  # type: ignore[arg-type]


def test_a_run_id_that_looks_like_a_date_does_not_break_validation(spec, frame, tmp_path) -> None:
    # GX used to parse the run name as a date: this run id's suffix parsed into a UTC offset
    # beyond 24 hours and the validation raised instead of reporting
    report = validate_frame(frame, spec, tmp_path, run_name="20261122T071512Z-2769ad")
    assert report.success
