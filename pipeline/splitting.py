"""Repeatable train/holdout splits: a row's membership is a function of the row, not of its position.

A version's **split definition** (recorded in its lineage as ``lineage["split"]``) says which rows
it trained on, for every dataset it will ever meet, so that no metric that decides a rollout is
computed on rows the model trained on:

* ``hash`` (the default): a row is holdout when ``BLAKE2b-64(key=salt, value of the key column)``,
  read as a fraction of 2**64, is below ``holdout_fraction``. The key column is the entity id by
  default, so an entity is holdout for every version trained with the same definition, whatever
  the order, sample or export of the table ("repeatable splitting": Lakshmanan, Robinson & Munn,
  *Machine Learning Design Patterns*, O'Reilly 2020, ch. 5). The salt is part of the definition,
  not a secret: it only decorrelates this split from other uses of the same ids.
* ``time``: the rows after a cut-off time are holdout (train on the past, hold out the latest
  period); the cut-off is computed from the training data (the latest ``holdout_period``, or the
  latest ``holdout_fraction`` of rows by time) and recorded, so membership of a later row is
  ``time > cutoff``.

``in_training(definition, frame)`` answers "did the version with this definition train on this
row?" for any frame that has the definition's column. Membership is conservative by design: a row
the definition puts on the training side counts as trained on even if that version never saw it
(its entity was not in the training data), so evidence is never in-sample, at the price of fewer
rows of evidence (about ``holdout_fraction`` of an entity-keyed dataset).

Values are hashed as canonical strings, so the same entity maps to the same side whether its id
was read from Parquet or CSV: strings as they are, integers and whole floats in decimal (``7``,
``7.0`` -> ``"7"``), other floats by ``repr``, booleans ``true``/``false``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from stagewise.pipeline.spec import ModelSpec

HASH_ALGORITHM = "blake2b-64-keyed"
_SCALE = float(2**64)


class SplitError(ValueError):
    """The data cannot be split as the spec says (a missing or unreadable key or time column, an
    empty train or holdout side); the message names the column and what to change."""


@dataclass(frozen=True)
class SplitDefinition:
    """Which rows a version trained on, as recorded in its lineage (``to_lineage``).

    Attributes:
        method: ``hash`` or ``time``.
        holdout_fraction: share of rows held out (hash: of entities; time: of rows by time, when
            no ``holdout_period`` is given).
        column: the hashed key column (hash) or the time column (time).
        salt: the hash key (hash only; UTF-8, at most 64 bytes).
        cutoff: the last training time (time only): an ISO 8601 UTC timestamp for a date/time
            column, a number for a numeric one. Rows with a later time are holdout.
        holdout_period: the period held out, e.g. ``"30d"`` (time only; None: by fraction).
        algorithm: the hash (``blake2b-64-keyed``) or ``time-cutoff``.
    """

    method: Literal["hash", "time"]
    holdout_fraction: float
    column: str
    salt: str | None = None
    cutoff: str | float | None = None
    holdout_period: str | None = None
    algorithm: str = HASH_ALGORITHM

    def to_lineage(self) -> dict[str, Any]:
        """JSON-ready form kept in the version's lineage (``from_lineage`` reads it back)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_lineage(cls, lineage: dict[str, Any]) -> "SplitDefinition | None":
        """The definition a version recorded, or None for a version registered without one (before
        repeatable splits, or by hand): nothing is known about which rows it trained on."""
        doc = lineage.get("split")
        if not isinstance(doc, dict) or doc.get("method") not in ("hash", "time"):
            return None
        known = {k: doc[k] for k in cls.__dataclass_fields__ if k in doc}
        return cls(**known)

    def describe(self) -> str:
        """One line for humans, e.g. ``hash of customer_id (salt 'engagement'), 20% holdout``."""
        if self.method == "hash":
            return f"hash of {self.column} (salt {self.salt!r}), {self.holdout_fraction:.0%} holdout"
        return f"time: {self.column} after {self.cutoff} is holdout"


def define(spec: ModelSpec, frame: pd.DataFrame) -> SplitDefinition:
    """The split definition of a version trained by ``spec`` on ``frame`` (a time split's cut-off
    comes from the data).

    Raises:
        SplitError: the key or time column is missing or unreadable, or the time column has too
            few distinct times to hold out a latest period.
    """
    s = spec.split
    if s.method == "hash":
        return SplitDefinition("hash", s.holdout_fraction, s.key or spec.id_column, salt=s.salt or spec.name)
    column = s.time_column or ""
    times, kind = time_values(frame, column)
    finite = times[np.isfinite(times)]
    if finite.size == 0:
        raise SplitError(f"split.time_column {column!r} has no values: nothing to split on")
    if s.holdout_period:
        if kind != "datetime":
            raise SplitError(f"split.holdout_period needs a date/time column; {column!r} is numeric: use split.holdout_fraction")
        cut = finite.max() - pd.Timedelta(s.holdout_period).value
    else:
        # the latest holdout_fraction of rows by time; ties at the cut-off stay on the training side
        cut = float(np.quantile(finite, 1.0 - s.holdout_fraction, method="lower"))
    if not (finite > cut).any() or not (finite <= cut).any():
        raise SplitError(
            f"split.time_column {column!r}: every row falls on one side of the cut-off {_format_cut(cut, kind)} "
            "(too few distinct times): use more data, a shorter holdout_period or a larger holdout_fraction")
    return SplitDefinition("time", s.holdout_fraction, column, cutoff=_format_cut(cut, kind),
                           holdout_period=s.holdout_period, algorithm="time-cutoff")


def holdout_mask(definition: SplitDefinition, frame: pd.DataFrame) -> np.ndarray:
    """True where the row is holdout under ``definition``; shape (len(frame),), bool.

    Raises:
        SplitError: ``frame`` lacks the definition's column, or its times cannot be read.
    """
    if definition.method == "hash":
        return unit_hash(_column(frame, definition.column), definition.salt or "") < definition.holdout_fraction
    times, kind = time_values(frame, definition.column)
    cut = _parse_cut(definition.cutoff, kind)
    return np.isfinite(times) & (times > cut)


def in_training(definition: SplitDefinition | None, frame: pd.DataFrame) -> np.ndarray:
    """True where the version with ``definition`` trained on the row (conservatively: every row on
    its training side); all True when the definition is unknown (None) or its column is missing
    from ``frame``: such rows can never be evidence. Shape (len(frame),), bool."""
    if definition is None or definition.column not in frame.columns:
        return np.ones(len(frame), dtype=bool)
    return ~holdout_mask(definition, frame)


def memberships(definitions: dict[int, SplitDefinition | None], frame: pd.DataFrame) -> dict[int, np.ndarray]:
    """``in_training`` for several versions at once (version -> bool array, shape (len(frame),)),
    hashing each key column once per salt. A definition that cannot be applied to ``frame`` (an
    unreadable time column, a null key) marks every row as trained on: no evidence, never a
    guess."""
    hashes: dict[tuple[str, str], np.ndarray] = {}
    out: dict[int, np.ndarray] = {}
    for number, d in definitions.items():
        try:
            if d is not None and d.method == "hash" and d.column in frame.columns:
                key = (d.column, d.salt or "")
                if key not in hashes:
                    hashes[key] = unit_hash(frame[d.column], d.salt or "")
                out[number] = hashes[key] >= d.holdout_fraction
            else:
                out[number] = in_training(d, frame)
        except SplitError:
            out[number] = np.ones(len(frame), dtype=bool)
    return out


def unit_hash(values: pd.Series | np.ndarray, salt: str) -> np.ndarray:
    """``BLAKE2b-64(key=salt, canonical string of each value)`` as a fraction in [0, 1); float64,
    shape (n,). (RFC 7693 keyed BLAKE2b; the same value and salt always give the same number.)

    Raises:
        SplitError: a value is null (a key column may hold none).
    """
    keyed = hashlib.blake2b(key=salt.encode(), digest_size=8).copy  # the key absorbed once (as ``idhash.hash_ids``)
    digests = []
    for s in key_strings(values):
        h = keyed()
        h.update(s.encode())
        digests.append(h.digest())
    return np.frombuffer(b"".join(digests), dtype=">u8").astype("float64") / _SCALE  # big-endian, as int.from_bytes(d, "big")


def key_strings(values: pd.Series | np.ndarray) -> list[str]:
    """Canonical strings of key values (see the module docstring), so Parquet and CSV agree.

    Raises:
        SplitError: a value is null.
    """
    s = values if isinstance(values, pd.Series) else pd.Series(values)
    if s.isna().any():
        raise SplitError(f"the split key column {s.name!r} has {int(s.isna().sum())} null value(s): every row needs a key")
    if pd.api.types.is_bool_dtype(s):
        return ["true" if v else "false" for v in s.tolist()]
    if pd.api.types.is_integer_dtype(s):
        return [str(int(v)) for v in s.tolist()]
    if pd.api.types.is_float_dtype(s):
        return [str(int(v)) if float(v).is_integer() else repr(float(v)) for v in s.tolist()]
    if isinstance(s.dtype, pd.StringDtype):  # strings already (pandas' str dtype): as they are
        return s.tolist()
    return [_canonical(v) for v in s.tolist()]


def _canonical(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return str(int(v)) if float(v).is_integer() else repr(float(v))
    return str(v)


def time_values(frame: pd.DataFrame, column: str) -> tuple[np.ndarray, Literal["datetime", "number"]]:
    """The time column as float64 (nanoseconds since the epoch, UTC, for dates and times; the
    numbers themselves for a numeric column such as a year); nulls are NaN.

    Raises:
        SplitError: the column is missing or holds values that are not dates/times or numbers.
    """
    col = _column(frame, column)
    if pd.api.types.is_bool_dtype(col):
        raise SplitError(f"split.time_column {column!r} holds booleans, not times")
    if pd.api.types.is_numeric_dtype(col):
        return col.to_numpy(dtype="float64", na_value=np.nan), "number"
    try:
        parsed = pd.to_datetime(col, utc=True, format="mixed") if not pd.api.types.is_datetime64_any_dtype(col) else (
            col.dt.tz_localize("UTC") if getattr(col.dt, "tz", None) is None else col.dt.tz_convert("UTC"))
    except (ValueError, TypeError) as e:
        raise SplitError(f"split.time_column {column!r} holds values that are not dates or times: {e}") from e
    parsed = parsed.dt.as_unit("ns")  # pandas may keep s/ms/us resolution: count nanoseconds
    ns = parsed.astype("int64").to_numpy(dtype="float64")  # NaT -> the minimum int64
    ns[parsed.isna().to_numpy()] = np.nan
    return ns, "datetime"


def _column(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame.columns:
        raise SplitError(f"the split column {column!r} is not in the data (columns: {list(frame.columns)[:12]}...)")
    return frame[column]


def _format_cut(cut: float, kind: str) -> str | float:
    return pd.Timestamp(int(cut), tz="UTC").isoformat() if kind == "datetime" else float(cut)


def _parse_cut(cutoff: str | float | None, kind: str) -> float:
    if cutoff is None:
        raise SplitError("a time split definition without a cut-off")
    if kind == "datetime":
        if not isinstance(cutoff, str):
            raise SplitError(f"the split's cut-off {cutoff!r} is a number, but the time column now holds dates")
        return float(pd.Timestamp(cutoff).tz_convert("UTC").value)
    if isinstance(cutoff, str):
        raise SplitError(f"the split's cut-off {cutoff!r} is a date, but the time column now holds numbers")
    return float(cutoff) if math.isfinite(float(cutoff)) else math.inf
