"""Registry records: the model (or agent) record, immutable versions, append-only audit events.

All times are timezone-aware UTC datetimes; metrics are plain floats; artifacts are addressed by
their sha256 (64 lowercase hex characters).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Kind = Literal["model", "agent"]
VersionStatus = Literal["registered", "rejected"]
GateOutcome = Literal["pass", "fail", "inconclusive"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GateResult(_Record):
    """One gate evaluated: ``value comparator threshold`` on ``samples`` rows gave ``outcome``."""

    metric: str
    comparator: str
    threshold: float
    value: float | None
    samples: int
    min_samples: int
    outcome: GateOutcome


class ModelRecord(_Record):
    """The mutable head of a model: aliases and rollout state, guarded by ``revision``.

    Attributes:
        name: model name (``engagement``).
        kind: ``model`` or ``agent``.
        revision: incremented by every change; every write is conditional on it.
        latest_version: highest version number issued (0 before the first).
        aliases: alias -> version, e.g. ``{"champion": 1}``.
        rollout: the rollout in progress (None when none is).
    """

    name: str
    kind: Kind = "model"
    description: str = ""
    created_at: datetime
    updated_at: datetime
    revision: int = 0
    latest_version: int = 0
    aliases: dict[str, int] = Field(default_factory=dict)
    rollout: dict[str, Any] | None = None


class VersionRecord(_Record):
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


class AuditEvent(_Record):
    """An append-only record of one state change: who, why, on what evidence, before and after."""

    model: str
    event_id: str
    at: datetime
    actor: str
    action: str
    reason: str = ""
    version: int | None = None
    evidence: dict[str, Any] = Field(default_factory=dict)
    before: dict[str, Any] = Field(default_factory=dict)
    after: dict[str, Any] = Field(default_factory=dict)
