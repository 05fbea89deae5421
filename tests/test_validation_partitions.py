"""Partitioned validation (``stagewise.pipeline.validation_partitions``) gives whole-file validation's result.

Each dataset is 3,000 generated customers in 12 row groups of 250 rows; at 1,000 rows per
partition the plan is 3 partitions (rows 0-999, 1000-1999, 2000-2999). The same file is validated
whole (``validate_frame`` on the frame the validate step reads) and by partitions, and every
expectation's success and result dict (element, missing and unexpected counts, percents, sample
values, observed values) must be equal:

* a customer id duplicated in partitions 0 and 2 (each partition alone has unique ids): the
  uniqueness check (DuckDB over the file, or over an Arrow stream of the bytes) fails with 2;
* nulls and out-of-range values spread over the partitions, among them a null budget that the
  first partition alone breaks but the file keeps, and 25 out-of-range ages whose first 20 (the
  sample GX keeps) straddle two partitions;
* a clean file, which passes;
* the same with min/max, distinct-value, unique-count, row-count and regex expectations added;
* as an AWS run does it: each partition validated alone (its own GX context, as its own Map task
  would), its partial result through JSON, merged by another call over the file's bytes, in any
  order; a partial set, or a plan that no longer matches the input, is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stagewise.pipeline import modeling
from stagewise.pipeline.generator import generate_customers
from stagewise.pipeline.spec import load_spec
from stagewise.pipeline.validation import build_suite, validate_frame
from stagewise.pipeline.validation_partitions import (
    UnsupportedForPartitions, merge_partials, partition_kinds, validate_partition, validate_partitions,
)

ROWS, GROUP, PER_PARTITION = 3_000, 250, 1_000


@pytest.fixture(scope="module")
def spec():
    return load_spec("engagement")


def _prepare(spec):
    """What the validate step does to the input before GX: ignored columns out, then conform."""
    def prepare(df: pd.DataFrame) -> pd.DataFrame:
        return modeling.conform(df.drop(columns=[c for c in spec.ignored_columns if c in df.columns]), spec)
    return prepare


def _write(df: pd.DataFrame, path: Path) -> Path:
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=GROUP)
    assert pq.ParquetFile(path).metadata.num_row_groups == ROWS // GROUP
    return path


def _by_expectation(result: dict) -> dict[tuple[str, str], dict]:
    out = {}
    for r in result["results"]:
        config = r["expectation_config"]
        kwargs = {k: v for k, v in config["kwargs"].items() if k != "batch_id"}
        out[(config["type"], json.dumps(kwargs, sort_keys=True, default=str))] = {
            "success": r["success"], "result": r["result"], "raised": r["exception_info"].get("raised_exception")}
    return out


def _both(spec, path: Path, tmp_path: Path, suite_factory=None, source=None):
    """Whole-file and partitioned reports of ``path`` (``source``: what the partitions read)."""
    prepare = _prepare(spec)
    whole = validate_frame(prepare(pd.read_parquet(path)), spec, tmp_path / "whole-docs",
                           suite=suite_factory() if suite_factory else None)
    seen = []
    partitioned = validate_partitions(source if source is not None else path, path.name, spec, tmp_path / "docs",
                                      per_partition=PER_PARTITION, prepare=prepare, progress=lambda d, n, m: seen.append((d, n)),
                                      suite=suite_factory() if suite_factory else None)
    assert seen == [(1, 3), (2, 3), (3, 3)]  # three partitions, validated one after the other
    return whole, partitioned


def _assert_same(whole, partitioned) -> dict[tuple[str, str], dict]:
    w, p = _by_expectation(whole.result), _by_expectation(partitioned.result)
    assert set(w) == set(p)
    different = {k: (w[k], p[k]) for k in w if w[k] != p[k]}
    assert not different, json.dumps(different, indent=1, default=str)[:4000]
    assert partitioned.result["statistics"] == whole.result["statistics"]
    assert (partitioned.success, partitioned.evaluated, partitioned.row_count) == (whole.success, whole.evaluated, whole.row_count)
    assert [f.description for f in partitioned.failed] == [f.description for f in whole.failed]
    assert partitioned.result["meta"]["partitions"] == {"count": 3, "rows": [1_000, 1_000, 1_000]}
    return p


def _one(found: dict, etype: str, column: str) -> dict:
    (hit,) = [v for (t, kw), v in found.items() if t == etype and json.loads(kw).get("column") == column]
    return hit


def test_an_id_duplicated_across_two_partitions_fails_uniqueness_with_its_exact_count(spec, tmp_path):
    df = generate_customers(ROWS, seed=11)
    dup = df.loc[10, "customer_id"]
    df.loc[2_900, "customer_id"] = dup  # partition 0 and partition 2
    path = _write(df, tmp_path / "dup.parquet")
    for lo in range(0, ROWS, PER_PARTITION):  # no partition alone holds a duplicate
        assert df["customer_id"].iloc[lo:lo + PER_PARTITION].is_unique

    whole, partitioned = _both(spec, path, tmp_path, source=path)
    found = _assert_same(whole, partitioned)
    unique = _one(found, "expect_column_values_to_be_unique", "customer_id")
    assert unique["success"] is False
    assert unique["result"]["unexpected_count"] == 2 and unique["result"]["partial_unexpected_list"] == [dup, dup]
    assert unique["result"]["unexpected_percent"] == pytest.approx(100 * 2 / ROWS)
    assert [f.expectation_type for f in partitioned.failed] == ["expect_column_values_to_be_unique"]

    # the bytes (no file for DuckDB to open: an Arrow stream of the id column) give the same
    streamed = validate_partitions(path.read_bytes(), path.name, spec, tmp_path / "docs-bytes", per_partition=PER_PARTITION,
                                   prepare=_prepare(spec))
    assert _by_expectation(streamed.result) == found

    # one Data Docs site with one validation page: the merged result
    pages = list((tmp_path / "docs" / "validations").rglob("*.html"))
    assert len(pages) == 1 and partitioned.docs_index == (tmp_path / "docs" / "index.html").resolve()
    assert dup in pages[0].read_text()


def test_nulls_and_out_of_range_values_spread_over_partitions_add_up(spec, tmp_path):
    df = generate_customers(ROWS, seed=12)
    rng = np.random.default_rng(12)
    df.loc[[5, 1_500], "customer_id"] = None  # the id: no nulls allowed (and nulls are not duplicates)
    df.loc[[3, 1_003, 2_003], "sessions_per_week"] = np.nan  # a float feature allowing no nulls
    df["app_rating"] = 3.0  # null budget 80%: partition 0 is all null (alone it fails), the file 76.7% (passes)
    df.loc[:999, "app_rating"] = np.nan
    for lo in (1_000, 2_000):
        df.loc[rng.choice(np.arange(lo, lo + 1_000), 650, replace=False), "app_rating"] = np.nan
    ages = np.r_[np.arange(980, 995), np.arange(2_100, 2_110)]  # 25 out of range; the first 20 straddle p0/p2
    df["age"] = df["age"].astype("float64")
    df.loc[ages, "age"] = np.arange(100, 125)
    df.loc[1_234, "age"] = np.nan  # a null integer: partition 1 (and the file) stay float, failing the type check
    df.loc[[7, 2_999], "engagement_score"] = [1.5, -0.5]
    df.loc[rng.choice(ROWS, 40, replace=False), "country"] = "XX"
    path = _write(df, tmp_path / "dirty.parquet")

    whole, partitioned = _both(spec, path, tmp_path)
    found = _assert_same(whole, partitioned)

    app = _one(found, "expect_column_values_to_not_be_null", "app_rating")
    assert app["success"] is True and app["result"]["unexpected_count"] == 2_300
    age = _one(found, "expect_column_values_to_be_between", "age")
    assert age["result"]["unexpected_count"] == 25 and age["result"]["missing_count"] == 1
    assert age["result"]["partial_unexpected_list"] == list(range(100, 120))  # file order, 15 + 5
    assert _one(found, "expect_column_values_to_be_in_type_list", "age")["result"] == {"observed_value": "float64"}
    assert _one(found, "expect_column_values_to_not_be_null", "customer_id")["result"]["unexpected_count"] == 2
    unique = _one(found, "expect_column_values_to_be_unique", "customer_id")
    assert unique["success"] is True and unique["result"]["missing_count"] == 2
    assert _one(found, "expect_column_values_to_not_be_null", "sessions_per_week")["result"]["unexpected_count"] == 3
    assert _one(found, "expect_column_values_to_be_in_set", "country")["result"]["unexpected_count"] == 40
    assert _one(found, "expect_column_values_to_be_between", "engagement_score")["result"]["unexpected_count"] == 2
    assert not partitioned.success


def test_a_clean_file_passes_the_same(spec, tmp_path):
    path = _write(generate_customers(ROWS, seed=13), tmp_path / "clean.parquet")
    whole, partitioned = _both(spec, path, tmp_path)
    _assert_same(whole, partitioned)
    assert partitioned.success and partitioned.failed == () and partitioned.row_count == ROWS


def test_aggregate_set_and_whole_column_expectations_merge_exactly(spec, tmp_path):
    import great_expectations as gx

    E = gx.expectations
    countries = ["US", "GB", "DE", "FR", "ES", "BR", "MX", "IN", "CA", "AU"]

    def suite():  # built without a Data Context (the one a test makes is added to the context it validates in)
        return gx.ExpectationSuite(name=spec.name, expectations=[*build_suite(spec).expectations,
            E.ExpectColumnMinToBeBetween(column="age", min_value=20),
            E.ExpectColumnMaxToBeBetween(column="age", max_value=90),
            E.ExpectColumnMaxToBeBetween(column="app_rating", max_value=5),
            E.ExpectColumnDistinctValuesToBeInSet(column="country", value_set=countries[:8]),
            E.ExpectColumnDistinctValuesToContainSet(column="country", value_set=[*countries, "ZZ"]),
            E.ExpectColumnDistinctValuesToEqualSet(column="city_tier", value_set=["tier_1", "tier_2"]),
            E.ExpectColumnUniqueValueCountToBeBetween(column="customer_id", min_value=2_990),
            E.ExpectColumnProportionOfUniqueValuesToBeBetween(column="app_rating", max_value=0.5),
            E.ExpectTableRowCountToEqual(value=ROWS),
            E.ExpectColumnValuesToMatchRegex(column="customer_id", regex="^cus_[0-9a-f]{10}$", mostly=0.999),
        ])

    df = generate_customers(ROWS, seed=14)
    df.loc[[1, 2_500], "customer_id"] = "not-an-id"  # a duplicate and two regex misses (0.067% <= 0.1%)
    df.loc[1_700, "age"] = 19
    path = _write(df, tmp_path / "more.parquet")

    whole, partitioned = _both(spec, path, tmp_path, suite_factory=suite)
    found = _assert_same(whole, partitioned)
    assert _one(found, "expect_column_min_to_be_between", "age")["result"]["observed_value"] == df["age"].min()
    assert _one(found, "expect_column_max_to_be_between", "app_rating")["result"]["observed_value"] == df["app_rating"].max()
    assert _one(found, "expect_column_values_to_match_regex", "customer_id")["success"] is True
    assert _one(found, "expect_column_distinct_values_to_be_in_set", "country")["result"]["partial_unexpected_list"] == ["AU", "CA"]
    assert _one(found, "expect_column_distinct_values_to_contain_set", "country")["result"]["partial_missing_list"] == ["ZZ"]
    assert _one(found, "expect_column_unique_value_count_to_be_between", "customer_id")["result"]["observed_value"] == ROWS - 1


def test_what_cannot_be_merged_exactly_is_refused_before_any_data_is_read(spec):
    import great_expectations as gx

    suite = gx.ExpectationSuite(name=spec.name, expectations=[
        *build_suite(spec).expectations, gx.expectations.ExpectColumnValuesToBeIncreasing(column="account_age_days"),
        gx.expectations.ExpectColumnMeanToBeBetween(column="age", min_value=18, max_value=90)])
    with pytest.raises(UnsupportedForPartitions) as err:
        partition_kinds(suite)
    assert err.value.expectations == ["expect_column_values_to_be_increasing(account_age_days)",
                                      "expect_column_mean_to_be_between(age)"]


def test_partitions_validated_apart_and_merged_elsewhere_give_the_whole_file_result(spec, tmp_path):
    """The Distributed Map's way: one call per partition (a Map task each, with GX ids of its own),
    partials as JSON (the run's partition documents), one merge over the input's bytes."""
    df = generate_customers(ROWS, seed=15)
    dup = df.loc[20, "customer_id"]
    df.loc[1_990, "customer_id"] = dup  # partitions 0 and 1
    df.loc[[30, 2_030], "sessions_per_week"] = np.nan
    path = _write(df, tmp_path / "apart.parquet")
    prepare = _prepare(spec)
    whole = validate_frame(prepare(pd.read_parquet(path)), spec, tmp_path / "whole-docs")

    partials = [json.loads(json.dumps(validate_partition(path, path.name, spec, i, 3, per_partition=PER_PARTITION, prepare=prepare)))
                for i in (2, 0, 1)]
    assert [(p["index"], p["count"], p["rows"]) for p in partials] == [(2, 3, 1_000), (0, 3, 1_000), (1, 3, 1_000)]
    merged = merge_partials(partials, path.read_bytes(), path.name, spec, tmp_path / "docs")
    found = _assert_same(whole, merged)
    unique = _one(found, "expect_column_values_to_be_unique", "customer_id")
    assert unique["result"]["unexpected_count"] == 2 and unique["result"]["partial_unexpected_list"] == [dup, dup]
    assert _one(found, "expect_column_values_to_not_be_null", "sessions_per_week")["result"]["unexpected_count"] == 2
    assert [f.expectation_type for f in merged.failed] == ["expect_column_values_to_be_unique",
                                                           "expect_column_values_to_not_be_null"]
    pages = list((tmp_path / "docs" / "validations").rglob("*.html"))
    assert len(pages) == 1 and dup in pages[0].read_text()

    with pytest.raises(ValueError, match="not one complete set"):
        merge_partials(partials[:2], path, path.name, spec, tmp_path / "docs-2")
    with pytest.raises(ValueError, match="asked for partition 1 of 4"):
        validate_partition(path, path.name, spec, 1, 4, per_partition=PER_PARTITION, prepare=prepare)
