"""Declarative model specs: the YAML that says what a model is, how it is validated and gated.

A spec is the single description a model needs: its features and their types, the target, the task,
the XGBoost hyperparameters, the expectation suite the input must pass, the offline gates a new
version must pass, and the rollout defaults. The built-in specs live in ``pipeline/specs/*.yaml``;
``load_spec`` also accepts a path to a user's own file.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator

from stagewise.pipeline.sql_sandbox import QueryError, check_select
from stagewise.platform.contract import ExitCode, StagewiseError
from stagewise.platform.strict import StrictModel

FeatureType = Literal["integer", "float", "categorical", "boolean"]
Comparator = Literal[">=", ">", "<=", "<"]


class SpecError(StagewiseError, ValueError):
    """A model spec could not be found or is invalid; the message names the file and the field.
    Exit 4."""

    exit_code = ExitCode.BAD_INPUT


class FeatureSpec(StrictModel):
    """One model input column.

    Attributes:
        name: column name in the dataset.
        type: ``integer`` (int64), ``float`` (float64), ``categorical`` (strings from ``categories``)
            or ``boolean`` (bool).
        min, max: inclusive value range for numeric features (None: unbounded on that side).
        categories: the allowed values of a categorical feature, in a fixed order that also fixes
            XGBoost's category codes, so training and scoring encode identically. Numbers are
            allowed (a survey's occupation codes ``[1, 2, 3]``) and kept as their canonical
            strings (``"1"``); a number-coded column in the data is read the same way
            (``modeling.conform``).
        max_null_fraction: the largest share of nulls accepted (0.0: no nulls at all). Only
            ``float`` and ``categorical`` columns can hold nulls.
        description: what the column means, for humans and Data Docs.
    """

    name: str
    type: FeatureType
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] | None = None
    max_null_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    description: str = ""

    @field_validator("categories", mode="before")
    @classmethod
    def _category_strings(cls, value: object) -> object:
        if isinstance(value, (list, tuple)):
            return tuple(category_string(v) for v in value)
        return value

    @model_validator(mode="after")
    def _check(self) -> "FeatureSpec":
        if self.type == "categorical" and not self.categories:
            raise ValueError(f"feature {self.name!r}: a categorical feature needs 'categories'")
        if self.type != "categorical" and self.categories:
            raise ValueError(f"feature {self.name!r}: only categorical features take 'categories'")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"feature {self.name!r}: min {self.min} is above max {self.max}")
        if self.categories and len(set(self.categories)) != len(self.categories):
            raise ValueError(f"feature {self.name!r}: categories listed twice: {sorted({c for c in self.categories if self.categories.count(c) > 1})}")
        if self.max_null_fraction > 0 and self.type in ("integer", "boolean"):
            raise ValueError(
                f"feature {self.name!r}: {self.type} columns cannot hold nulls; use type float"
            )
        return self


class TargetSpec(StrictModel):
    """The label column: its name and inclusive valid range."""

    name: str
    min: float | None = None
    max: float | None = None
    description: str = ""


def category_string(value: object) -> str:
    """The canonical string of a category value: strings as they are, whole numbers without a
    decimal point (``1``, ``1.0`` -> ``"1"``), other numbers by ``repr`` (``2.5`` -> ``"2.5"``).

    Raises:
        ValueError: the value is None, a boolean or not a scalar.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        raise ValueError(f"a category is a string or a number, not {value!r}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    raise ValueError(f"a category is a string or a number, not {value!r}")


class SplitSpec(StrictModel):
    """How rows are split into train and holdout (``stagewise.pipeline.splitting``); the split
    definition is recorded with every version so each row's membership is known later.

    Attributes:
        method: ``hash`` (default): a row is holdout when the keyed hash of its ``key`` column
            falls below ``holdout_fraction``, so an entity is holdout for every version with the
            same definition ("repeatable splitting"); ``time`` (the default when ``time_column``
            is set): train on the past, hold out the latest period.
        holdout_fraction: share held out (hash: of entities; time: of rows by time, unless
            ``holdout_period`` is given), in (0, 1).
        key: the column hashed (default: the spec's ``id_column``); rows sharing a key (e.g. a
            household) always fall on the same side.
        salt: the hash's key (a string, at most 64 bytes; default: the model's name). Part of the
            split definition, not a secret: changing it changes which rows are holdout. Older
            specs' ``seed`` is read as the salt.
        time_column: a date/time (or numeric, e.g. a year) column of the input; not a feature
            unless also listed under ``features``.
        holdout_period: the latest period held out, e.g. ``30d``, ``12h``, ``8w`` (pandas
            Timedelta text); default: the latest ``holdout_fraction`` of rows by time.
    """

    method: Literal["hash", "time"] = "hash"
    holdout_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2
    key: str | None = None
    salt: str | None = Field(default=None, validation_alias=AliasChoices("salt", "seed"))
    time_column: str | None = None
    holdout_period: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _time_by_default(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("time_column") and "method" not in data:
            return {**data, "method": "time"}
        return data

    @field_validator("salt", mode="before")
    @classmethod
    def _salt_text(cls, value: object) -> object:
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _check(self) -> "SplitSpec":
        if self.salt is not None and not 0 < len(self.salt.encode()) <= 64:
            raise ValueError("split.salt is 1 to 64 bytes of text")
        if self.method == "time":
            if not self.time_column:
                raise ValueError("split method 'time' needs split.time_column: the column whose latest period is held out")
            if self.key:
                raise ValueError("split.key is for the hash split; a time split uses split.time_column")
            if self.holdout_period is not None:
                import pandas as pd  # only for specs that hold out a period

                try:
                    period = pd.Timedelta(self.holdout_period)
                except ValueError as e:
                    raise ValueError(f"split.holdout_period {self.holdout_period!r} is not a period such as 30d, 12h or 8w") from e
                if period <= pd.Timedelta(0):
                    raise ValueError(f"split.holdout_period {self.holdout_period!r} must be positive")
        elif self.time_column or self.holdout_period:
            raise ValueError("split.time_column and split.holdout_period need method: time")
        return self


class RowCountSpec(StrictModel):
    """Inclusive bounds on the number of rows an input dataset may have."""

    min: Annotated[int, Field(ge=1)] = 1
    max: int | None = None


class ExpectationsSpec(StrictModel):
    """Table-level expectations beyond the per-column ones derived from the features.

    The per-column expectations (presence, type, range, nulls, category set) come from ``features``
    and ``target``; this adds the row-count bounds and the columns that must be unique.
    """

    row_count: RowCountSpec = RowCountSpec()
    unique: tuple[str, ...] = ()


class GateSpec(StrictModel):
    """An offline or online gate declared as data.

    A gate passes when ``metric comparator threshold`` holds on at least ``min_samples`` rows;
    with fewer rows it is inconclusive.
    """

    metric: str
    comparator: Comparator
    threshold: float
    min_samples: Annotated[int, Field(ge=0)] = 0


class BakeSpec(StrictModel):
    """How long a rollout step must run before it may advance (minutes and scoring runs)."""

    min_minutes: Annotated[float, Field(ge=0)] = 0
    min_scoring_runs: Annotated[int, Field(ge=0)] = 1


class RolloutSpec(StrictModel):
    """How a new version of the model rolls out.

    Attributes:
        plan: per-environment traffic steps in percent (e.g. ``{"prod": [5, 25, 100]}``) overriding
            the stack's ``stagewise:rolloutPlan`` for this model; environments not listed use the
            stack's plan. Each plan strictly increases and ends at 100.
        bake: how long each step runs before it may advance (None: the stack's ``stagewise:bake``).
        gates: online gates evaluated on the challenger after each scoring run; metrics are
            ``r2``, ``rmse``, ``mae`` (on scored rows that carry the target) and
            ``r2_delta_vs_champion`` (challenger R² minus champion R² in the same run).
        champion_tolerance: how far a new version's primary metric may trail the champion's on
            the rows neither of them trained on.
        champion_min_samples: the fewest such rows the champion comparison needs; with fewer it
            is inconclusive and the new version is registered but not rolled out automatically.
        routing_key: the column whose value sticks a record to champion or challenger.
    """

    plan: dict[Literal["dev", "test", "prod"], tuple[Annotated[int, Field(gt=0, le=100)], ...]] = Field(default_factory=dict)
    bake: BakeSpec | None = None
    gates: tuple[GateSpec, ...] = ()
    champion_tolerance: Annotated[float, Field(ge=0)] = 0.01
    champion_min_samples: Annotated[int, Field(ge=1)] = 200
    routing_key: str | None = None

    @model_validator(mode="after")
    def _plans(self) -> "RolloutSpec":
        for env, steps in self.plan.items():
            if not steps or steps[-1] != 100 or any(b <= a for a, b in zip(steps, steps[1:])):
                raise ValueError(f"rollout plan for {env} must strictly increase and end at 100, got {list(steps)}")
        return self

    def plan_for(self, environment: str, stack_plan: tuple[int, ...]) -> tuple[int, ...]:
        """The traffic steps for ``environment``: this spec's override, else the stack's plan."""
        return self.plan.get(environment, stack_plan)  # type: ignore[call-overload]


class DriftSpec(StrictModel):
    """Drift thresholds and what drift does to a rollout in progress.

    Attributes:
        psi_threshold: a feature drifts when its PSI exceeds this (0.2: significant shift,
            Siddiqi, *Credit Risk Scorecards*, 2006).
        ks_threshold: ... or when its two-sample KS statistic D exceeds this.
        max_drifted_share: the run is "drifted" when more than this share of features drift
            (0.0: any drifted feature).
        on_rollout: ``hold`` (the challenger stays where it is, the run does not count toward the
            bake) or ``rollback`` (drift counts as a failed gate).
    """

    psi_threshold: Annotated[float, Field(gt=0)] = 0.2
    ks_threshold: Annotated[float, Field(gt=0, le=1)] = 0.1
    max_drifted_share: Annotated[float, Field(ge=0, lt=1)] = 0.0
    on_rollout: Literal["hold", "rollback"] = "hold"


class DecisionSpec(StrictModel):
    """How a classifier's probability becomes a decision: the threshold is chosen on the holdout
    split as the one with the best precision among those with recall >= ``min_recall`` (stored
    with the version as the metric ``threshold``)."""

    min_recall: Annotated[float, Field(gt=0, le=1)] = 0.7


class ReviewSpec(StrictModel):
    """The review queue after scoring (``stagewise.pipeline.review``): the ``size`` rows most worth
    a human look, published beside the predictions; 0 turns it off."""

    size: Annotated[int, Field(ge=0, le=100_000)] = 400


class TrainingSpec(StrictModel):
    """How the train step holds its data (``stagewise.pipeline.training_data``); the version's
    lineage records which mode was used and why (``lineage["training"]``).

    Attributes:
        mode: ``auto`` (in memory when the estimate fits the train task's memory, else
            ``beyond_memory``), or always ``in_memory``, ``external_memory`` or ``sample``.
        beyond_memory: what ``auto`` does when the data does not fit: ``external_memory``
            (XGBoost external memory: every training row, streamed by partition) or ``sample``.
        sample_rows: training rows ``sample`` keeps (about: a hash sample of the split key).
        seed: the sample's hash salt (``sample-<seed>``): change it for another sample.
    """

    mode: Literal["auto", "in_memory", "external_memory", "sample"] = "auto"
    beyond_memory: Literal["external_memory", "sample"] = "external_memory"
    sample_rows: Annotated[int, Field(ge=1_000)] = 1_000_000
    seed: Annotated[int, Field(ge=0)] = 0


PIPELINE_XGBOOST_KEYS = {
    "enable_categorical": "the pipeline always sets it (categorical features need it)",
    "callbacks": "the pipeline sets its own (training progress)",
    "early_stopping_rounds": "the pipeline fits without a validation set: the holdout is kept for evaluation only",
    "feature_types": "the pipeline derives them from the spec's feature types",
    "feature_names": "the pipeline takes them from the spec's features",
}
"""XGBoost parameters the pipeline sets itself: a spec that names one is refused at load (exit 4).
``n_jobs`` (or its alias ``nthread``) is not among them: it is honoured as the training thread limit."""

VIEW_NAME = r"^[a-z_][a-z0-9_]{0,62}$"


class ModelSpec(StrictModel):
    """A whole model spec, as loaded from YAML. See ``pipeline/specs/engagement.yaml``."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{1,62}$")]
    description: str = ""
    entity: Annotated[str, Field(min_length=1, max_length=40)]
    """What one row is about, in words (``customer``, ``house``): used in messages and help.
    Default: the id column without its ``_id``/``_ref``/``_key`` suffix (``customer_id`` ->
    ``customer``)."""
    task: Literal["regression", "classification"]
    """``regression`` (XGBoost regressor; R², RMSE, MAE) or ``classification`` (binary: XGBoost
    classifier on a 0/1 target; PR-AUC, ROC-AUC, log loss, Brier score, and precision and recall
    at the decision threshold)."""
    id_column: str
    pii_columns: tuple[str, ...] = ()
    target: TargetSpec
    features: tuple[FeatureSpec, ...]
    split: SplitSpec = SplitSpec()
    xgboost: dict[str, int | float | str | bool] = Field(default_factory=dict)
    expectations: ExpectationsSpec = ExpectationsSpec()
    gates: tuple[GateSpec, ...] = ()
    rollout: RolloutSpec = RolloutSpec()
    drift: DriftSpec = DriftSpec()
    review: ReviewSpec = ReviewSpec()
    decision: DecisionSpec = DecisionSpec()
    ignored_columns: tuple[str, ...] = ()
    """Columns an input may carry that this model never reads (e.g. another model's label in a
    shared customer table): dropped before validation, never trained on, never published."""
    training: TrainingSpec = TrainingSpec()
    reference: Annotated[str | None, Field(pattern=r"^[\w.]+:\w+$")] = None
    """Optional ``module:function`` giving the true E[target | features] of synthetic data; when
    set, runs report the best achievable holdout metrics beside the model's (``generator`` data)."""
    views: dict[Annotated[str, Field(pattern=VIEW_NAME)], Annotated[str, Field(min_length=1)]] = Field(default_factory=dict)
    """SQL views over this model's results table (``<model>_results``): name -> one SELECT. In
    YAML a value ending in ``.sql`` is a file, relative to the spec's folder, read at load."""

    @model_validator(mode="before")
    @classmethod
    def _default_entity(cls, data: object) -> object:
        if isinstance(data, dict) and not data.get("entity") and isinstance(data.get("id_column"), str):
            return {**data, "entity": entity_from_id(data["id_column"])}
        return data

    @model_validator(mode="after")
    def _check(self) -> "ModelSpec":
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"features listed twice: {dupes}")
        reserved = {self.id_column, self.target.name, *self.pii_columns}
        clash = sorted(reserved & set(names))
        if clash:
            raise ValueError(f"id, target and PII columns cannot be features: {clash}")
        used = sorted(set(self.ignored_columns) & (reserved | set(names)))
        if used:
            raise ValueError(f"ignored_columns cannot be the id, the target, PII or features: {used}")
        if self.task == "classification" and (self.target.min, self.target.max) != (0, 1):
            raise ValueError("a classification target is 0/1: declare target min: 0 and max: 1")
        for key in self.xgboost:
            if key in PIPELINE_XGBOOST_KEYS:
                raise ValueError(f"xgboost.{key}: set by the pipeline ({PIPELINE_XGBOOST_KEYS[key]}); remove it from the spec")
        if {"n_jobs", "nthread"} <= set(self.xgboost):
            raise ValueError("xgboost: give the thread limit once, as n_jobs (nthread is its alias)")
        threads = self.xgboost.get("n_jobs", self.xgboost.get("nthread"))
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"xgboost.n_jobs (the training thread limit) is a whole number >= 1, got {threads!r}")
        split_cols = [c for c in (self.split.key, self.split.time_column) if c]
        if self.target.name in split_cols or set(self.pii_columns) & set(split_cols):
            raise ValueError(f"split columns cannot be the target or PII: {split_cols}")
        return self

    @property
    def split_columns(self) -> list[str]:
        """The columns the split reads (the hash key, or the time column)."""
        if self.split.method == "time":
            return [self.split.time_column or ""]
        return [self.split.key or self.id_column]

    @property
    def primary_metric(self) -> str:
        """The holdout metric a new version is compared with the champion on: ``r2`` (regression)
        or ``pr_auc`` (classification)."""
        return "r2" if self.task == "regression" else "pr_auc"

    @property
    def feature_names(self) -> list[str]:
        """Feature column names in spec order (the model's input order)."""
        return [f.name for f in self.features]

    @property
    def threads(self) -> int | None:
        """The training thread limit (``xgboost.n_jobs`` or ``nthread``; None: all cores)."""
        value = self.xgboost.get("n_jobs", self.xgboost.get("nthread"))
        return int(value) if value is not None else None

    @property
    def columns(self) -> list[str]:
        """Every column an input dataset must have: id, PII, features, target, and the split's
        key or time column when it is none of those."""
        cols = [self.id_column, *self.pii_columns, *self.feature_names, self.target.name]
        return cols + [c for c in self.split_columns if c not in cols]

    def feature(self, name: str) -> FeatureSpec:
        """The feature called ``name``; raises KeyError if there is none."""
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def digest(self) -> str:
        """sha256 of the spec's canonical JSON: identifies the spec in lineage and idempotency keys."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def entity_from_id(id_column: str) -> str:
    """What a row is about, from its id column: ``customer_id`` -> ``customer``, ``listing_ref``
    -> ``listing``, ``respondent`` -> ``respondent`` (underscores become spaces; ``row`` if
    nothing is left)."""
    name = id_column.strip()
    for suffix in ("_id", "_ref", "_key", "_uuid", "Id", "ID", "_no", "_number"):
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    name = name.replace("_", " ").strip()
    return name[:40] if name and name.lower() != "id" else "row"


def builtin_spec_names() -> list[str]:
    """Names of the specs shipped in ``pipeline/specs`` (e.g. ``["engagement"]``)."""
    files = resources.files("stagewise.pipeline.specs").iterdir()
    return sorted(p.name[: -len(".yaml")] for p in files if p.name.endswith(".yaml"))


def load_spec(name_or_path: str | Path) -> ModelSpec:
    """Load a model spec by built-in name (``engagement``) or from a YAML file path.

    Raises:
        SpecError: the name is unknown, the file is missing or not YAML, or a field is invalid
            (the message names the field).
    """
    text, origin, folder = _read_spec_text(str(name_or_path))
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpecError(f"{origin}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise SpecError(f"{origin}: a model spec is a YAML mapping, got {type(raw).__name__}")
    if isinstance(raw.get("views"), dict):
        raw = {**raw, "views": {k: _view_sql(v, folder, origin) for k, v in raw["views"].items()}}
        _check_views(raw["views"], origin)
    return parse_spec(raw, origin)


def _check_views(views: dict, origin: str) -> None:
    """Each view must be one read-only SELECT, the SQL sandbox's rule for any SQL over the catalog.

    Raises:
        SpecError: naming the view and why (e.g. ``COPY statements are not allowed``).
    """
    for name, sql in views.items():
        if isinstance(sql, str) and sql.strip():
            try:
                check_select(sql)
            except QueryError as e:
                raise SpecError(f"{origin}: view {name!r} must be one SELECT (or WITH ... SELECT) over the "
                                f"catalog: {e}") from e


def parse_spec(raw: dict, origin: str = "model spec") -> ModelSpec:
    """A ``ModelSpec`` from its YAML or JSON form (a spec stored with a version, say).

    Raises:
        SpecError: a field is invalid; the message names it (a feature by its name, e.g.
            ``features[6] (occupation).categories``).
    """
    try:
        return ModelSpec.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"{_where(raw, err['loc'])}: {_message(err['msg'])}" for err in e.errors())
        raise SpecError(f"{origin}: invalid model spec: {problems}") from e


def _where(raw: dict, loc: tuple) -> str:
    """A pydantic error location in spec terms: list positions of features (and gates) carry the
    item's name, ``features[6] (occupation).categories``."""
    parts: list[str] = []
    node: object = raw
    for p in loc:
        if isinstance(p, int) and parts:
            item = node[p] if isinstance(node, list) and p < len(node) else None
            label = item.get("name") or item.get("metric") if isinstance(item, dict) else None
            parts[-1] += f"[{p}]" + (f" ({label})" if label else "")
        else:
            parts.append(str(p))
        node = node.get(p) if isinstance(node, dict) else node[p] if isinstance(node, list) and isinstance(p, int) and p < len(node) else None
    return ".".join(parts) or "<root>"


def _message(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def _view_sql(value: object, folder: Path | None, origin: str) -> object:
    """A view's SQL: the text itself, or the file it names (``*.sql``, relative to the spec)."""
    if not isinstance(value, str) or not value.strip().endswith(".sql") or "\n" in value.strip():
        return value
    path = Path(value.strip())
    if not path.is_absolute() and folder is not None:
        path = folder / path
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"{origin}: view file {value!r} cannot be read ({path}): {e}. View files are relative to the "
                        "spec's folder: copy the file there, or remove the view from the spec's views") from e


def _read_spec_text(name_or_path: str) -> tuple[str, str, Path | None]:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise SpecError(f"model spec file {path} does not exist")
        try:
            return path.read_text(encoding="utf-8"), str(path), path.resolve().parent
        except UnicodeDecodeError as e:
            raise SpecError(f"{path}: a model spec is UTF-8 text: {e}") from e
    if name_or_path in builtin_spec_names():
        res = resources.files("stagewise.pipeline.specs") / f"{name_or_path}.yaml"
        return res.read_text(encoding="utf-8"), f"built-in spec {name_or_path!r}", Path(str(resources.files("stagewise.pipeline.specs")))
    raise SpecError(
        f"no model spec called {name_or_path!r}; built-in specs: {builtin_spec_names()}, "
        "or pass a path to a .yaml file"
    )
