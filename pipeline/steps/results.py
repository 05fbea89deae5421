"""What each step hands to the steps after it, typed: one pydantic model per step.

A step returns its result; the runner keeps it in ``RunContext.results`` (``StepResults``), where
later steps read it; the container entrypoint serialises the same objects into the run's
``state.json`` to hand them to the next ECS task (``StepResults.to_json`` / ``from_json``). A
result knows its one-line summary for the run table (``line``) and its JSON summary for
``--json`` (``summary``: the fields that were set, without the fields only later steps need).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from stagewise.registry.records import GateResult


class StepResult(BaseModel):
    """Base of every step's result. ``HANDOVER_ONLY``: fields later steps read but ``--json``
    does not print (large or internal: drift counts, the challenger's observations)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    HANDOVER_ONLY: ClassVar[frozenset[str]] = frozenset()

    def summary(self) -> dict[str, Any]:
        """The step's JSON summary (``stagewise run --json``'s ``steps[].summary``)."""
        return self.model_dump(mode="json", exclude_unset=True, exclude=set(self.HANDOVER_ONLY))

    def handover(self) -> dict[str, Any]:
        """Everything set, as JSON (what the next container reads back with ``model_validate``)."""
        return self.model_dump(mode="json", exclude_unset=True)

    def line(self) -> str:
        """One line for the run table."""
        return ""


class Ingested(StepResult):
    """The input, content-addressed in the data bucket (``raw/<model>/<sha256>/<name>``), or an
    ``s3://`` input where it is, with the ETag of the bytes that were hashed (``data_etag``: what
    its partitions' ranged reads are pinned to)."""

    data_uri: str
    data_sha256: str
    data_name: str
    bytes: int
    uploaded: bool
    data_etag: str | None = None

    def line(self) -> str:
        return f"{self.bytes / 1e6:.1f} MB, sha256 {self.data_sha256[:12]}…"


class Validated(StepResult):
    """The expectation suite's verdict (``success``), counts, the failures in words, and where
    the result and Data Docs are; ``partitions``: how many Parquet partitions it was validated
    in (1: the whole frame). ``pending``: no verdict yet, only the plan: an AWS run's first
    validate task left the partitions to a Distributed Map (``RunContext.fan_out``), or this is
    one Map task's partition (its counts are that partition's); the merge task gives the verdict."""

    success: bool
    rows: int = 0
    evaluated: int = 0
    failed: int = 0
    failed_expectations: list[str] = []
    result_uri: str | None = None
    data_docs_uri: str | None = None
    data_docs_local: str | None = None
    partitions: int = 1
    pending: bool = False

    def line(self) -> str:
        if self.pending:
            return f"{self.rows:,} rows: validation by {self.partitions} partition task(s), merged after"
        return f"{self.rows:,} rows, {self.evaluated} expectations, {self.failed} failed"


class Trained(StepResult):
    """The fitted model's artifact (UBJSON, sha256), its split (``split``: the definition kept in
    lineage), the rows on each side, and how the data was held (``training``: the mode, why, and
    its figures, ``training_data.TrainingPlan.to_lineage``; kept in lineage)."""

    HANDOVER_ONLY: ClassVar[frozenset[str]] = frozenset({"artifact_prefix"})
    fit_seconds: float
    train_rows: int
    holdout_rows: int
    split: dict[str, Any]
    artifact_uri: str
    artifact_sha256: str
    artifact_prefix: str
    baseline_uri: str
    baseline_sha256: str | None = None
    top_features: list[str]
    training: dict[str, Any] = {}

    def line(self) -> str:
        mode = self.training.get("mode", "in_memory")
        how = "" if mode == "in_memory" else f" ({mode.replace('_', ' ')}, {self.training.get('batches', 1)} batches)"
        return f"{self.train_rows:,} train / {self.holdout_rows:,} holdout rows{how}"


class Evaluated(StepResult):
    """Holdout metrics on ``samples`` rows, every offline gate's result (the champion comparison
    among them), the best achievable metrics (synthetic data) and the comparison's record."""

    metrics: dict[str, float]
    samples: int
    gates: list[GateResult]
    gates_passed: bool
    gates_held: list[str] = []
    best_achievable: dict[str, float] | None = None
    champion: dict[str, Any] | None = None

    def line(self) -> str:
        failed = [g.metric for g in self.gates if g.outcome == "fail" or (g.outcome == "inconclusive" and g.on_inconclusive == "reject")]
        if failed:
            return "gates failed: " + ", ".join(failed)
        return f"inconclusive: {', '.join(self.gates_held)}" if self.gates_held else "gates passed"


class Registered(StepResult):
    """The version registered (or replayed), its status and stage, what serves after, and the
    gates that held or failed it."""

    version: int
    status: str
    stage: str
    held: list[str] = []
    failed_gates: list[str] = []
    created: bool
    champion: int | None
    serving: dict[str, Any]
    plan: list[int]
    artifact_uri: str
    artifact_sha256: str

    def line(self) -> str:
        if self.status == "rejected":
            return f"version {self.version} rejected"
        return f"version {self.version} held (not rolled out)" if self.held else f"version {self.version} registered as {self.stage}"


class Scored(StepResult):
    """What was scored and how: rows, routing (``serving``), each version's statistics
    (``versions``: rows, labelled rows outside its training, realised metrics), the partitions,
    where the published predictions and review queue are; for a Map task its staged parts. Handed
    over: the traffic weights, the challenger's observations (the online gates' inputs), drift
    counts, the rollout id and a partition's review candidates."""

    HANDOVER_ONLY: ClassVar[frozenset[str]] = frozenset(
        {"weights", "observations", "drift_counts", "rollout_id", "review_candidates"})
    rows_scored: int
    serving: dict[str, Any]
    versions: dict[str, dict[str, Any]]
    partitions: dict[str, Any] = {}
    predict_seconds: float = 0.0
    id_hash: dict[str, Any] | None = None
    predictions_uri: str | None = None
    shadow_predictions_uri: str | None = None
    manifest_uri: str | None = None
    review_queue: dict[str, Any] | None = None
    already_published: bool = False
    staged_uri: str | None = None
    staged_shadow_uri: str | None = None
    staged_results: dict[str, str] = {}
    weights: dict[int, float] = {}
    observations: dict[str, tuple[float | None, int]] = {}
    drift_counts: dict[str, Any] = {}
    rollout_id: str | None = None
    review_candidates: list[dict[str, Any]] = []

    def line(self) -> str:
        parts = [f"{v['rows']:,} v{k}" + (" (shadow)" if v.get("shadow") else "") for k, v in self.versions.items()]
        queue = f"; {self.review_queue['rows']} to review" if self.review_queue else ""
        return f"{self.rows_scored:,} rows: " + ", ".join(parts) + queue


class Monitored(StepResult):
    """Drift per scoring version (``versions``: drifted share, top PSI, drifted features) and
    whether an alert went out; ``reports`` (handed over) has every feature's PSI and KS."""

    HANDOVER_ONLY: ClassVar[frozenset[str]] = frozenset({"reports"})
    versions: dict[str, Any]
    alert: bool
    reports: dict[str, Any] = {}

    def line(self) -> str:
        drifted = sorted({f for v in self.versions.values() for f in v["drifted"]})
        return f"drift in {', '.join(drifted)} (alert sent)" if drifted else "no drift"


class RolledOut(StepResult):
    """The rollout controller's decision on this run: outcome, reason, the gates' results, what
    serves after (and before)."""

    outcome: str
    reason: str = ""
    gates: list[dict[str, Any]] = []
    serving: dict[str, Any] | None = None
    before: dict[str, Any] | None = None

    def line(self) -> str:
        return self.outcome.replace("_", " ")


class Published(StepResult):
    """The CloudWatch data points sent (namespace, count, dropped, calls); ``already_sent`` when an
    earlier attempt of the run sent them (a resumed run sends none)."""

    namespace: str
    datapoints: int
    dropped: int
    calls: int
    already_sent: bool = False

    def line(self) -> str:
        if self.already_sent:
            return f"metrics already sent to {self.namespace} by an earlier attempt of this run"
        return f"{self.datapoints} datapoints to {self.namespace}"


@dataclass
class StepResults:
    """The results of a run's steps so far, one typed slot per step (None until it ran)."""

    ingest: Ingested | None = None
    validate: Validated | None = None
    train: Trained | None = None
    evaluate: Evaluated | None = None
    register: Registered | None = None
    score: Scored | None = None
    monitor: Monitored | None = None
    rollout: RolledOut | None = None
    publish: Published | None = None

    TYPES: ClassVar[dict[str, type[StepResult]]] = {
        "ingest": Ingested, "validate": Validated, "train": Trained, "evaluate": Evaluated, "register": Registered,
        "score": Scored, "monitor": Monitored, "rollout": RolledOut, "publish": Published,
    }

    def set(self, step: str, result: StepResult) -> None:
        """Keep ``result`` as step ``step``'s.

        Raises:
            TypeError: the result is not the type that step returns.
        """
        if not isinstance(result, self.TYPES[step]):
            raise TypeError(f"step {step} returned a {type(result).__name__}, not a {self.TYPES[step].__name__}")
        setattr(self, step, result)

    def to_json(self) -> dict[str, Any]:
        """Every result so far as JSON (the run's ``state.json`` ``results``)."""
        return {f.name: getattr(self, f.name).handover() for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "StepResults":
        """The results ``to_json`` wrote."""
        return cls(**{name: cls.TYPES[name].model_validate(value) for name, value in doc.items()})
