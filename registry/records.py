"""Registry records: the model (or agent) record, immutable versions, append-only audit events.

All times are timezone-aware UTC datetimes; metrics are plain floats; artifacts are addressed by
their sha256 (64 lowercase hex characters).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from stagewise.platform.strict import StrictModel

AGENT_EVALUATION = "agent.evaluation"
"""Audit action of an agent version's offline evaluation (``stagewise agent evaluate``); its evidence
holds ``passed``, ``gates``, ``failed_cases``, ``summary``, ``dataset`` and the result's ``uri``.
``registry promote`` refuses a version whose latest one did not pass."""

Kind = Literal["model", "agent"]
VersionStatus = Literal["registered", "rejected"]
GateOutcome = Literal["pass", "fail", "inconclusive"]
OnInconclusive = Literal["reject", "hold"]
Comparator = Literal[">=", ">", "<=", "<"]
Stage = Literal["champion", "challenger", "candidate", "registered", "retired", "rolled_back"]


class GateResult(StrictModel):
    """One gate evaluated: ``value comparator threshold`` on ``samples`` rows gave ``outcome``.

    ``on_inconclusive`` says what an inconclusive offline gate does to a new version at
    registration (see ``Gate``); ``note`` says why, when the samples alone do not (e.g. "v1 has no
    split definition")."""

    metric: str
    comparator: str
    threshold: float
    value: float | None
    samples: int
    min_samples: int
    outcome: GateOutcome
    on_inconclusive: OnInconclusive = "reject"
    note: str = ""

    def describe(self) -> str:
        """One line, e.g. ``r2_vs_champion = -0.075 needs >= -0.01 (1,273 rows, min 200): fail``."""
        value = "no value" if self.value is None else f"{self.value:.4g}"
        why = f"; {self.note}" if self.note else ""
        return (f"{self.metric} = {value} needs {self.comparator} {self.threshold:g} "
                f"({self.samples:,} rows, min {self.min_samples:,}): {self.outcome}{why}")


class Gate(StrictModel):
    """A gate declared as data: passes when ``metric comparator threshold`` holds on at least
    ``min_samples`` samples; with fewer samples (or no value) it is inconclusive.

    ``on_inconclusive`` (offline gates, at registration): ``reject`` (the default: a version that
    cannot be shown to meet the gate never serves) or ``hold`` (it is registered but not rolled
    out: it waits for a person to promote it, as the champion comparison does when too few rows
    are outside both versions' training data). Online, an inconclusive gate always holds."""

    metric: str
    comparator: Comparator
    threshold: float
    min_samples: int = Field(default=0, ge=0)
    on_inconclusive: OnInconclusive = "reject"


class RolloutState(StrictModel):
    """A rollout in progress: the challenger's place in the plan and what it has proven so far.

    Attributes:
        id: rollout id; part of the routing hash, so assignments are stable for its whole life.
        challenger: the version rolling out; ``baseline`` the champion it started against.
        plan: traffic steps in percent, e.g. ``(10, 50, 100)``; reaching 100 makes it champion.
        step: index into ``plan``; -1 while in shadow mode.
        weight: share of keys routed to the challenger, percent (0 in shadow mode).
        shadow: the challenger scores every record but serves none.
        paused: the controller holds while paused (manual ``pause``/``resume``).
        step_started_at: when the current step began; ``step_runs`` scoring runs seen in it.
        bake_minutes, bake_runs: what a step must run before it may advance.
        gates: the online gates evaluated after each scoring run (or feedback, for agents).
        evaluated_runs: tokens of runs already counted (a retried run is not counted twice).
    """

    id: str
    challenger: int
    baseline: int | None
    plan: tuple[int, ...]
    step: int
    weight: float
    shadow: bool = False
    paused: bool = False
    started_at: datetime
    started_by: str
    step_started_at: datetime
    step_runs: int = 0
    bake_minutes: float = 0
    bake_runs: int = 0
    gates: tuple[Gate, ...] = ()
    evaluated_runs: tuple[str, ...] = ()


class FeedbackTally(StrictModel):
    """Human or judge verdicts on an agent version: counts and the sum of optional scores."""

    approved: int = 0
    rejected: int = 0
    scored: int = 0
    score_sum: float = 0.0

    @property
    def verdicts(self) -> int:
        return self.approved + self.rejected

    @property
    def approval_rate(self) -> float | None:
        """approved / (approved + rejected), None before any verdict."""
        return self.approved / self.verdicts if self.verdicts else None

    @property
    def mean_score(self) -> float | None:
        """Mean of the scores given, None before any."""
        return self.score_sum / self.scored if self.scored else None


class ModelRecord(StrictModel):
    """The mutable head of a model or agent: what serves, guarded by ``revision``.

    Attributes:
        name: model name (``engagement``).
        kind: ``model`` or ``agent``.
        revision: incremented by every change; every write is conditional on it.
        latest_version: highest version number issued (0 before the first).
        aliases: alias -> version: ``champion``, ``challenger`` and user aliases.
        stages: version -> stage (champion, challenger, candidate, registered, retired, rolled_back).
        champion_history: versions that were champion, oldest first (the last known-good chain).
        rollout: the rollout in progress (None when none is).
        gates: the online gates a rollout of this model is held to (from the model spec, or given
            when an agent is registered).
        feedback: verdict tallies per version (agents).
    """

    name: str
    kind: Kind = "model"
    description: str = ""
    created_at: datetime
    updated_at: datetime
    revision: int = 0
    latest_version: int = 0
    aliases: dict[str, int] = Field(default_factory=dict)
    stages: dict[int, Stage] = Field(default_factory=dict)
    champion_history: tuple[int, ...] = ()
    rollout: RolloutState | None = None
    gates: tuple[Gate, ...] = ()
    feedback: dict[int, FeedbackTally] = Field(default_factory=dict)

    @property
    def champion(self) -> int | None:
        """The champion version, if any."""
        return self.aliases.get("champion")

    def serving(self) -> dict[str, Any]:
        """What serves, compactly: champion, challenger, challenger weight (percent), shadow, paused."""
        r = self.rollout
        return {
            "champion": self.champion,
            "challenger": r.challenger if r else None,
            "weight": r.weight if r else 0.0,
            "shadow": r.shadow if r else False,
            "paused": r.paused if r else False,
            "rollout_id": r.id if r else None,
            "step": (list(r.plan)[r.step] if r.step >= 0 else "shadow") if r else None,
        }


class AgentConfig(StrictModel):
    """What makes an agent version: its prompt template (in S3, by sha256), the model it calls and
    how (e.g. a Bedrock model id), and the tools it may use."""

    prompt_uri: str
    prompt_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    model_id: str
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(default=1024, ge=1)
    tools: tuple[str, ...] = ()


class VersionRecord(StrictModel):
    """An immutable model version.

    Attributes:
        version: 1, 2, ... numbered per model by the registry.
        status: ``registered`` (offline gates passed) or ``rejected`` (a gate failed: kept for the
            record, never served).
        artifact_uri: ``s3://bucket/key`` of the model file; ``artifact_sha256`` its content hash.
        metrics: holdout metrics, e.g. ``{"r2": 0.81, "rmse": 0.07, "mae": 0.05}``.
        gates: each offline gate's evaluation.
        lineage: where the version came from: data sha256 and URI, validation result URI, spec
            digest, hyperparameters, package version, run id.
    """

    model: str
    version: int
    created_at: datetime
    created_by: str
    status: VersionStatus
    artifact_uri: str
    artifact_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    metrics: dict[str, float] = Field(default_factory=dict)
    gates: tuple[GateResult, ...] = ()
    lineage: dict[str, Any] = Field(default_factory=dict)
    baseline_uri: str | None = None
    description: str = ""
    agent: AgentConfig | None = None


class AuditEvent(StrictModel):
    """An append-only record of one state change: who, why, on what evidence, before and after.

    ``revision`` is the model revision the change produced (0 for the model's creation): exactly
    one event per revision, so the trail has no gaps and no duplicates.
    """

    model: str
    event_id: str
    revision: int = 0
    at: datetime
    actor: str
    action: str
    reason: str = ""
    version: int | None = None
    evidence: dict[str, Any] = Field(default_factory=dict)
    before: dict[str, Any] = Field(default_factory=dict)
    after: dict[str, Any] = Field(default_factory=dict)


class RunLock(StrictModel):
    """The lock a run (``stagewise run``/``score``, or a Step Functions execution's tasks) holds on
    one model in one environment while it reads and changes the model's registry record, so two
    runs never interleave registration and rollout counting.

    ``expires_epoch`` is seconds since the Unix epoch (UTC): after it the lock is free to take (the
    holder renews it every ``ttl / 3`` seconds while it lives; a killed holder's lock lapses). A
    run re-entering with the same ``run_id`` (a resumed run, a later task group, a parallel score
    partition) renews the lock instead of being refused. ``host`` and ``pid`` name the holding
    process, so a lock left by a dead process on the same machine can be broken at once.
    """

    model: str
    run_id: str
    command: str = "run"
    holder: str = ""
    host: str = ""
    pid: int = 0
    acquired_at: datetime
    expires_epoch: float
