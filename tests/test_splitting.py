"""Repeatable splits (issue 14): a row's side of the split is a function of the row, never of its
position, so a row is holdout for every version trained with the same definition.

The hash is re-computed here with ``hashlib`` from its written definition (BLAKE2b-64 keyed with
the salt, read as a fraction of 2**64), not through ``stagewise.pipeline.splitting``.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stagewise.pipeline import splitting
from stagewise.pipeline.spec import ModelSpec, SpecError, parse_spec

BASE = {
    "name": "split-test", "task": "regression", "id_column": "user_id", "target": {"name": "y"},
    "features": [{"name": "x", "type": "float"}],
}


def _spec(**split) -> ModelSpec:
    return parse_spec({**BASE, "split": split})


def _holdout_by_hand(ids, salt: str, fraction: float) -> np.ndarray:
    """The written definition: BLAKE2b-64(key=salt, str(id)) / 2**64 < fraction."""
    return np.array([int.from_bytes(hashlib.blake2b(str(i).encode(), key=salt.encode(), digest_size=8).digest(), "big") / 2**64
                     < fraction for i in ids])


def _frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"user_id": [f"u-{i:06d}" for i in range(n)], "x": rng.normal(size=n), "y": rng.normal(size=n)})


def test_hash_split_is_the_written_keyed_hash_of_the_id():
    df = _frame(20_000)
    definition = splitting.define(_spec(salt="s1", holdout_fraction=0.25), df)
    hold = splitting.holdout_mask(definition, df)
    assert (hold == _holdout_by_hand(df["user_id"], "s1", 0.25)).all()
    assert abs(hold.mean() - 0.25) < 0.015  # ~25% of entities
    assert definition.to_lineage() == {"method": "hash", "holdout_fraction": 0.25, "column": "user_id", "salt": "s1",
                                       "algorithm": "blake2b-64-keyed"}
    other = splitting.holdout_mask(splitting.define(_spec(salt="s2", holdout_fraction=0.25), df), df)
    assert 0.04 < (hold & other).mean() < 0.085  # another salt: an independent split (~0.25 * 0.25)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=200, unique=True), st.randoms(use_true_random=False),
       st.floats(min_value=0.05, max_value=0.95))
def test_membership_is_a_function_of_the_key_alone(ids, rnd, fraction):
    df = pd.DataFrame({"user_id": ids, "x": 0.0, "y": 0.0})
    definition = splitting.define(_spec(salt="k", holdout_fraction=fraction), df)
    whole = dict(zip(ids, splitting.holdout_mask(definition, df)))
    shuffled = list(ids)
    rnd.shuffle(shuffled)
    sample = shuffled[: max(1, len(shuffled) // 2)]
    part = pd.DataFrame({"user_id": sample, "x": 1.0, "y": 2.0})  # another order, a subset, other values
    assert dict(zip(sample, splitting.holdout_mask(definition, part))) == {i: whole[i] for i in sample}


def test_csv_and_parquet_ids_of_one_entity_fall_on_the_same_side():
    ints = pd.Series(np.arange(1, 5001, dtype="int64"), name="user_id")
    floats = ints.astype("float64")  # a CSV column with a null elsewhere reads as float
    strings = ints.astype(str)
    a, b, c = (splitting.unit_hash(s, "salt") for s in (ints, floats, strings))
    assert (a == b).all() and (a == c).all()


def test_a_null_key_is_an_error_naming_the_column():
    df = pd.DataFrame({"user_id": ["a", None, "c"], "x": 0.0, "y": 0.0})
    with pytest.raises(splitting.SplitError, match="user_id"):
        splitting.holdout_mask(splitting.define(_spec(), df), df)


def test_in_training_is_conservative_when_nothing_is_known():
    df = _frame(100)
    assert splitting.in_training(None, df).all()  # no recorded definition: every row counts as trained on
    defined = splitting.define(_spec(key="account"), df.assign(account=df["user_id"]))
    assert splitting.in_training(defined, df).all()  # the key column is missing: no row can be evidence


def test_time_split_holds_out_the_latest_period_and_records_the_cutoff():
    days = pd.date_range("2024-01-01", periods=100, freq="D")
    df = pd.DataFrame({"user_id": [f"u{i}" for i in range(1000)], "x": 0.0, "y": 0.0,
                       "event_date": np.repeat(days, 10)})
    definition = splitting.define(_spec(time_column="event_date", holdout_period="20D"), df)
    assert definition.method == "time" and definition.cutoff == "2024-03-20T00:00:00+00:00"
    hold = splitting.holdout_mask(definition, df)
    assert hold.sum() == 200 and (df.loc[hold, "event_date"] > pd.Timestamp("2024-03-20")).all()
    # a later table: the same cutoff decides, so every newer row is outside that version's training
    later = pd.DataFrame({"user_id": ["n1", "n2", "n3"], "x": 0.0, "y": 0.0,
                          "event_date": ["2024-02-01", "2024-03-20", "2024-06-01T12:00:00Z"]})
    assert splitting.in_training(definition, later).tolist() == [True, True, False]
    by_share = splitting.define(_spec(time_column="event_date", holdout_fraction=0.1), df)
    assert splitting.holdout_mask(by_share, df).sum() == 100  # the latest 10% of rows by time


def test_time_split_of_one_instant_cannot_hold_out_a_period():
    df = pd.DataFrame({"user_id": ["a", "b"], "x": 0.0, "y": 0.0, "t": ["2024-01-01", "2024-01-01"]})
    with pytest.raises(splitting.SplitError, match="one side of the cut-off"):
        splitting.define(_spec(time_column="t"), df)


@pytest.mark.parametrize(("split", "message"), [
    ({"method": "time"}, "needs split.time_column"),
    ({"time_column": "t", "key": "user_id"}, "split.key is for the hash split"),
    ({"holdout_period": "30d"}, "need method: time"),
    ({"time_column": "t", "holdout_period": "soon"}, "not a period"),
    ({"salt": "x" * 65}, "1 to 64 bytes"),
])
def test_bad_split_sections_are_refused(split, message):
    with pytest.raises(SpecError, match=message):
        _spec(**split)


def test_an_older_specs_seed_is_read_as_the_salt():
    assert _spec(seed=42).split.salt == "42"
