"""Tests of the synthetic engagement data generator (pipeline/generator/).

They check what a user of the dataset would notice: the spec's columns, dtypes, ranges,
categories and null limits; unique ids and e-mails; determinism; the documented target and its
R^2 ceiling; the documented correlations; and the Parquet round-trip with its sha256.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from stagewise.pipeline import generator
from stagewise.pipeline.generator import (
    DEFAULT_SEED,
    best_achievable_r2,
    expected_engagement,
    generate_customers,
    theoretical_best_r2,
    write_dataset,
)
from stagewise.pipeline.spec import load_spec

N_ROWS = 20_000


@pytest.fixture(scope="module")
def spec():
    return load_spec("engagement")


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    return generate_customers(N_ROWS, seed=DEFAULT_SEED)


# --- schema --------------------------------------------------------------------------------


def test_columns_are_exactly_the_spec_columns_in_order(df, spec):
    assert list(df.columns) == [*spec.columns, "churned_30d"]  # the churn model's label last
    assert list(df.columns[:3]) == ["customer_id", "name", "email"]
    assert list(df.columns[-2:]) == ["engagement_score", "churned_30d"]
    assert set(df["churned_30d"]) == {0, 1} and 0.1 < df["churned_30d"].mean() < 0.3
    assert len(df) == N_ROWS
    assert isinstance(df.index, pd.RangeIndex)


def test_dtypes_follow_the_spec_types(df, spec):
    expected = {
        "integer": np.dtype("int64"),
        "float": np.dtype("float64"),
        "boolean": np.dtype(bool),
    }
    for feature in spec.features:
        dtype = df[feature.name].dtype
        if feature.type == "categorical":
            assert isinstance(dtype, pd.StringDtype), (feature.name, dtype)
            assert dtype == "str", (feature.name, dtype)  # pandas' default string dtype
        else:
            assert dtype == expected[feature.type], (feature.name, dtype)
    for column in (spec.id_column, *spec.pii_columns):
        assert df[column].dtype == "str", column
    assert df[spec.target.name].dtype == np.dtype("float64")


def test_every_value_is_inside_the_spec_bounds(df, spec):
    for feature in spec.features:
        if feature.type not in ("integer", "float"):
            continue
        values = df[feature.name].dropna()
        if feature.min is not None:
            assert values.min() >= feature.min, feature.name
        if feature.max is not None:
            assert values.max() <= feature.max, feature.name


def test_bounds_are_limits_not_the_distribution(df):
    """Realistic values sit far inside the validation limits (medians, not clipped piles)."""
    assert 25 <= df["age"].median() <= 35
    assert df["sessions_per_week"].quantile(0.99) < 100
    assert df["transaction_revenue_month"].median() < 50
    assert df["total_connections"].quantile(0.99) < 5_000
    for column in ("profile_views_received_week", "transaction_revenue_month", "total_connections"):
        values = df[column]
        assert values.max() > 5 * values.median() + 1, f"{column} should have a heavy right tail"


def test_categoricals_use_only_spec_categories_all_present_and_not_uniform(df, spec):
    for feature in spec.features:
        if feature.type != "categorical":
            continue
        shares = df[feature.name].value_counts(normalize=True)
        assert set(shares.index) == set(feature.categories), feature.name
        assert df[feature.name].notna().all(), feature.name
        assert shares.max() / shares.min() > 1.5, f"{feature.name} looks uniform: {shares}"


def test_null_fractions_respect_the_spec(df, spec):
    for feature in spec.features:
        fraction = df[feature.name].isna().mean()
        assert fraction <= feature.max_null_fraction, (feature.name, fraction)
    for column in (spec.id_column, *spec.pii_columns, spec.target.name):
        assert df[column].notna().all(), column
    # documented: app_rating null for the ~40% who never rated
    assert 0.3 <= df["app_rating"].isna().mean() <= 0.5
    # documented: no completed gig => no job rating; that is most pure-social customers
    job_null = df["avg_job_completion_rating"].isna().groupby(df["primary_intent"]).mean()
    assert job_null["social"] > 0.75
    assert job_null["gigs"] < job_null["both"] < job_null["social"]


# --- identifiers and PII -------------------------------------------------------------------


def test_customer_ids_are_unique_and_well_formed(df):
    assert df["customer_id"].is_unique
    assert df["customer_id"].str.fullmatch(r"cus_[0-9a-f]{10}").all()


def test_customer_id_integers_are_a_bijection_for_ten_million_rows():
    x = generator._id_integers(np.random.default_rng(123), 10_000_000)
    assert x.max() < 2**40
    assert (np.diff(np.sort(x)) > 0).all()  # no two rows share an id


def test_emails_are_unique_on_rfc2606_example_domains(df):
    emails = df["email"]
    assert emails.is_unique
    pattern = re.compile(r"[a-z0-9._+]+@example\.(com|org|net)")
    assert emails.map(lambda e: bool(pattern.fullmatch(e))).all()
    assert emails.str.split("@").str[1].nunique() == 3


def test_names_look_like_first_and_last_names(df):
    names = df["name"]
    assert names.str.contains(" ").all()
    assert names.nunique() > N_ROWS // 4
    assert not names.str.contains(r"\d").any()


# --- determinism and arguments -------------------------------------------------------------


def test_same_seed_gives_identical_frames_and_another_seed_differs():
    a = generate_customers(3_000, seed=11)
    b = generate_customers(3_000, seed=11)
    pdt.assert_frame_equal(a, b)
    c = generate_customers(3_000, seed=12)
    assert not a.equals(c)
    assert not set(a["customer_id"]) & set(c["customer_id"])
    assert (a["age"].to_numpy() != c["age"].to_numpy()).any()


def test_default_seed_is_used_by_default():
    assert DEFAULT_SEED == 7
    pdt.assert_frame_equal(generate_customers(500), generate_customers(500, seed=DEFAULT_SEED))


def test_a_single_row_works(spec):
    one = generate_customers(1)
    assert list(one.columns) == [*spec.columns, "churned_30d"] and len(one) == 1


@pytest.mark.parametrize("n_rows", [0, -1])
def test_n_rows_below_one_is_rejected(n_rows):
    with pytest.raises(ValueError, match="n_rows"):
        generate_customers(n_rows)


def test_non_integer_arguments_are_rejected():
    with pytest.raises(TypeError):
        generate_customers(10.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed"):
        generate_customers(10, seed=-1)


# --- target --------------------------------------------------------------------------------


def test_target_is_a_share_of_30_days(df):
    y = df["engagement_score"]
    assert y.between(0.0, 1.0).all()
    assert np.allclose(y * 30, np.round(y * 30))
    assert 0.3 < y.mean() < 0.6
    assert y.std() > 0.25  # spread out, U-shaped like real DAU/MAU


def test_best_achievable_r2_is_in_the_documented_band(df):
    best = best_achievable_r2(df)
    assert 0.80 <= best <= 0.92
    assert abs(theoretical_best_r2(df) - best) < 0.02


def test_expected_engagement_uses_only_feature_columns(df, spec):
    features_only = df[spec.feature_names]
    g = expected_engagement(features_only)
    assert g.shape == (N_ROWS,) and g.dtype == np.float64
    assert ((g > 0) & (g < 1)).all()
    np.testing.assert_allclose(g, expected_engagement(df))
    # the unbiasedness the docstring promises: mean residual ~ 0
    assert abs(float(np.mean(df["engagement_score"] - g))) < 0.01


def test_expected_engagement_accepts_model_ready_encodings(df, spec):
    encoded = df[spec.feature_names].copy()
    for feature in spec.features:
        if feature.type == "categorical":
            encoded[feature.name] = pd.Categorical(encoded[feature.name], list(feature.categories))
        elif feature.type == "boolean":
            encoded[feature.name] = encoded[feature.name].astype(int)
    np.testing.assert_allclose(expected_engagement(encoded), expected_engagement(df))


def test_expected_engagement_rejects_missing_or_unknown_inputs(df):
    with pytest.raises(ValueError, match="sessions_per_week"):
        expected_engagement(df.drop(columns=["sessions_per_week"]))
    bad = df.head(10).copy()
    bad.loc[0, "primary_intent"] = "dating"
    with pytest.raises(ValueError, match="primary_intent"):
        expected_engagement(bad)
    text = df.head(10).copy()
    text["push_notifications_enabled"] = text["push_notifications_enabled"].astype(str)
    np.testing.assert_allclose(expected_engagement(text), expected_engagement(df.head(10)))


def test_engagement_rises_with_the_documented_drivers(df):
    g = pd.Series(expected_engagement(df))
    assert g.corr(df["days_active_last_30"], method="spearman") > 0.5
    assert g.corr(df["days_since_last_login"], method="spearman") < -0.3
    by_tier = df.groupby("subscription_tier")["engagement_score"].mean()
    assert by_tier["free"] < by_tier["plus"] < by_tier["premium"]


# --- documented correlations ---------------------------------------------------------------


def test_documented_feature_correlations_have_the_expected_sign(df):
    def rho(a: str, b: str) -> float:
        return df[a].corr(df[b], method="spearman")

    assert rho("sessions_per_week", "days_active_last_30") > 0.5
    assert rho("sessions_per_week", "likes_given_week") > 0.3
    assert rho("messages_sent_week", "messages_received_week") > 0.5
    assert rho("days_since_last_login", "days_active_last_30") < -0.3
    assert rho("account_age_days", "total_connections") > 0.2
    # gig orientation follows primary_intent
    apps = df.groupby("primary_intent")["gig_applications_sent_month"].mean()
    assert apps["social"] < apps["both"] < apps["gigs"]
    # subscription tier goes with revenue and saved payment methods
    tier = df.groupby("subscription_tier")[["transaction_revenue_month", "payment_methods_saved"]]
    means = tier.mean()
    assert means.loc["free"].lt(means.loc["plus"]).all()
    assert means.loc["plus"].lt(means.loc["premium"]).all()
    # older customers lean to gigs and to the web app
    age_by_intent = df.groupby("primary_intent")["age"].mean()
    assert age_by_intent["social"] < age_by_intent["gigs"]
    age_by_os = df.groupby("device_os")["age"].mean()
    assert age_by_os["web"] > max(age_by_os["ios"], age_by_os["android"])


def test_recency_and_frequency_are_consistent(df):
    lapsed = df["days_since_last_login"] >= 30
    assert (df.loc[lapsed, "days_active_last_30"] == 0).all()
    assert (df.loc[~lapsed, "days_active_last_30"] >= 1).all()
    assert (df["days_since_last_login"] <= df["account_age_days"]).all()
    assert ((df["sessions_per_week"] == 0) == (df["days_active_last_30"] == 0)).all()
    assert (df.loc[~df["push_notifications_enabled"], "push_open_rate"] == 0).all()


# --- parquet -------------------------------------------------------------------------------


def test_write_dataset_round_trips_and_returns_the_file_sha256(df, tmp_path):
    path = tmp_path / "out" / "engagement.parquet"
    digest = write_dataset(df, path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    back = pd.read_parquet(path)
    pdt.assert_frame_equal(back, df)
    # same frame -> same bytes -> same digest (usable for lineage)
    assert write_dataset(df, tmp_path / "again.parquet") == digest
