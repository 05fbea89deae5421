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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

FeatureType = Literal["integer", "float", "categorical", "boolean"]
Comparator = Literal[">=", ">", "<=", "<"]


class SpecError(ValueError):
    """A model spec could not be found or is invalid; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureSpec(_Strict):
    """One model input column.

    Attributes:
        name: column name in the dataset.
        type: ``integer`` (int64), ``float`` (float64), ``categorical`` (strings from ``categories``)
            or ``boolean`` (bool).
        min, max: inclusive value range for numeric features (None: unbounded on that side).
        categories: the allowed values of a categorical feature, in a fixed order that also fixes
            XGBoost's category codes, so training and scoring encode identically.
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

    @model_validator(mode="after")
    def _check(self) -> "FeatureSpec":
        if self.type == "categorical" and not self.categories:
            raise ValueError(f"feature {self.name!r}: a categorical feature needs 'categories'")
        if self.type != "categorical" and self.categories:
            raise ValueError(f"feature {self.name!r}: only categorical features take 'categories'")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"feature {self.name!r}: min {self.min} is above max {self.max}")
        if self.max_null_fraction > 0 and self.type in ("integer", "boolean"):
            raise ValueError(
                f"feature {self.name!r}: {self.type} columns cannot hold nulls; use type float"
            )
        return self


class TargetSpec(_Strict):
    """The label column: its name and inclusive valid range."""

    name: str
    min: float | None = None
    max: float | None = None
    description: str = ""


class SplitSpec(_Strict):
    """How rows are split into train and holdout: share of rows held out and the RNG seed."""

    holdout_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2
    seed: int = 42


class RowCountSpec(_Strict):
    """Inclusive bounds on the number of rows an input dataset may have."""

    min: Annotated[int, Field(ge=1)] = 1
    max: int | None = None


class ExpectationsSpec(_Strict):
    """Table-level expectations beyond the per-column ones derived from the features.

    The per-column expectations (presence, type, range, nulls, category set) come from ``features``
    and ``target``; this adds the row-count bounds and the columns that must be unique.
    """

    row_count: RowCountSpec = RowCountSpec()
    unique: tuple[str, ...] = ()


class GateSpec(_Strict):
    """An offline or online gate declared as data.

    A gate passes when ``metric comparator threshold`` holds on at least ``min_samples`` rows;
    with fewer rows it is inconclusive.
    """

    metric: str
    comparator: Comparator
    threshold: float
    min_samples: Annotated[int, Field(ge=0)] = 0


class BakeSpec(_Strict):
    """How long a rollout step must run before it may advance (minutes and scoring runs)."""

    min_minutes: Annotated[float, Field(ge=0)] = 0
    min_scoring_runs: Annotated[int, Field(ge=0)] = 1


class RolloutSpec(_Strict):
    """How a new version of the model rolls out.

    Attributes:
        plan: per-environment traffic steps in percent (e.g. ``{"prod": [5, 25, 100]}``) overriding
            the stack's ``stagewise:rolloutPlan`` for this model; environments not listed use the
            stack's plan. Each plan strictly increases and ends at 100.
        bake: how long each step runs before it may advance (None: the stack's ``stagewise:bake``).
        gates: online gates evaluated on the challenger after each scoring run; metrics are
            ``r2``, ``rmse``, ``mae`` (on scored rows that carry the target) and
            ``r2_delta_vs_champion`` (challenger R² minus champion R² in the same run).
        champion_tolerance: how far a challenger's holdout metric may trail the champion's.
        routing_key: the column whose value sticks a record to champion or challenger.
    """

    plan: dict[Literal["dev", "test", "prod"], tuple[Annotated[int, Field(gt=0, le=100)], ...]] = Field(default_factory=dict)
    bake: BakeSpec | None = None
    gates: tuple[GateSpec, ...] = ()
    champion_tolerance: Annotated[float, Field(ge=0)] = 0.01
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


class DriftSpec(_Strict):
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


class DecisionSpec(_Strict):
    """How a classifier's probability becomes a decision: the threshold is chosen on the holdout
    split as the one with the best precision among those with recall >= ``min_recall`` (stored
    with the version as the metric ``threshold``)."""

    min_recall: Annotated[float, Field(gt=0, le=1)] = 0.7


class ReviewSpec(_Strict):
    """The review queue after scoring (``stagewise.pipeline.review``): the ``size`` rows most worth
    a human look, published beside the predictions; 0 turns it off."""

    size: Annotated[int, Field(ge=0, le=100_000)] = 400


class ModelSpec(_Strict):
    """A whole model spec, as loaded from YAML. See ``pipeline/specs/engagement.yaml``."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{1,62}$")]
    description: str = ""
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
    reference: Annotated[str | None, Field(pattern=r"^[\w.]+:\w+$")] = None
    """Optional ``module:function`` giving the true E[target | features] of synthetic data; when
    set, runs report the best achievable holdout metrics beside the model's (``generator`` data)."""

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
        return self

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
    def columns(self) -> list[str]:
        """Every column an input dataset must have: id, PII, features, target."""
        return [self.id_column, *self.pii_columns, *self.feature_names, self.target.name]

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
    text, origin = _read_spec_text(str(name_or_path))
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpecError(f"{origin}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise SpecError(f"{origin}: a model spec is a YAML mapping, got {type(raw).__name__}")
    try:
        return ModelSpec.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in e.errors()
        )
        raise SpecError(f"{origin}: invalid model spec: {problems}") from e


def _read_spec_text(name_or_path: str) -> tuple[str, str]:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise SpecError(f"model spec file {path} does not exist")
        return path.read_text(encoding="utf-8"), str(path)
    if name_or_path in builtin_spec_names():
        res = resources.files("stagewise.pipeline.specs") / f"{name_or_path}.yaml"
        return res.read_text(encoding="utf-8"), f"built-in spec {name_or_path!r}"
    raise SpecError(
        f"no model spec called {name_or_path!r}; built-in specs: {builtin_spec_names()}, "
        "or pass a path to a .yaml file"
    )
