"""The registry's operations: what may change and how, on top of a ``RegistryStore``.

Rules enforced here:
    * versions are immutable and numbered 1, 2, ... per model by the registry;
    * a version whose offline gates did not all pass is recorded as ``rejected`` and never served;
    * the first version of a model that passes its gates becomes ``champion`` directly;
    * every change is a conditional write with an idempotency token and an audit event.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from stagewise.platform.aws import utc_now
from stagewise.registry.errors import AlreadyExists, Conflict, NotFound
from stagewise.registry.records import AuditEvent, GateResult, Kind, ModelRecord, VersionRecord
from stagewise.registry.store import RegistryStore

CONFLICT_RETRIES = 5


@dataclass(frozen=True)
class Registration:
    """Result of ``Registry.register_version``.

    Attributes:
        version: the version record (new, or the one an earlier call with the same token made).
        created: False when the call was an idempotent replay and nothing was written.
        champion: the model's champion version after the call (None if it has none).
    """

    version: VersionRecord
    created: bool
    champion: int | None


class Registry:
    """Model and agent versions with aliases and audit, on an injected store."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store

    def ensure_model(self, name: str, actor: str, kind: Kind = "model", description: str = "") -> ModelRecord:
        """The model record, created (with an audit event) if it does not exist yet."""
        try:
            return self.store.get_model(name)
        except NotFound:
            pass
        now = utc_now()
        record = ModelRecord(name=name, kind=kind, description=description, created_at=now, updated_at=now)
        event = AuditEvent(
            model=name, event_id=uuid.uuid4().hex, at=now, actor=actor, action="model.create",
            after={"kind": kind},
        )
        try:
            return self.store.create_model(record, event)
        except AlreadyExists:  # created concurrently: fine, read it
            return self.store.get_model(name)

    def register_version(
        self,
        name: str,
        *,
        artifact_uri: str,
        artifact_sha256: str,
        metrics: dict[str, float],
        gates: list[GateResult],
        lineage: dict[str, Any],
        actor: str,
        token: str,
        baseline_uri: str | None = None,
        kind: Kind = "model",
        description: str = "",
    ) -> Registration:
        """Register a new immutable version; make it champion if it is the first to pass its gates.

        Args:
            name: model name.
            artifact_uri: ``s3://`` URI of the model artifact; ``artifact_sha256`` its content hash.
            metrics: holdout metrics (``{"r2": ..., "rmse": ..., "mae": ...}``).
            gates: offline gate results; any outcome other than ``pass`` makes the version ``rejected``.
            lineage: data hash/URI, validation result URI, spec digest, hyperparameters, package
                version, run id.
            actor: who registers (caller identity ARN or ``--actor``).
            token: idempotency token: a retried call with the same token returns the first result.

        Raises:
            Conflict: the model kept changing under us for ``CONFLICT_RETRIES`` attempts.
        """
        self.ensure_model(name, actor, kind, description)
        passed = bool(gates) and all(g.outcome == "pass" for g in gates)
        for _ in range(CONFLICT_RETRIES):
            model = self.store.get_model(name)
            number = model.latest_version + 1
            now = utc_now()
            version = VersionRecord(
                model=name, version=number, created_at=now, created_by=actor,
                status="registered" if passed else "rejected",
                artifact_uri=artifact_uri, artifact_sha256=artifact_sha256, metrics=metrics,
                gates=tuple(gates), lineage=lineage, baseline_uri=baseline_uri, description=description,
            )
            aliases = dict(model.aliases)
            if passed and "champion" not in aliases:
                aliases["champion"] = number
            head = model.model_copy(
                update={"revision": model.revision + 1, "latest_version": number, "aliases": aliases, "updated_at": now}
            )
            event = AuditEvent(
                model=name, event_id=uuid.uuid4().hex, at=now, actor=actor,
                action="version.register" if passed else "version.reject",
                version=number,
                reason="first version to pass its gates becomes champion"
                if aliases.get("champion") == number else
                ("offline gates passed" if passed else "offline gate failed: version rejected, nothing served changes"),
                evidence={"gates": [g.model_dump() for g in gates], "metrics": metrics},
                before={"aliases": model.aliases, "latest_version": model.latest_version},
                after={"aliases": aliases, "latest_version": number},
            )
            try:
                written, created = self.store.commit_version(version, head, model.revision, event, token)
            except (Conflict, AlreadyExists):
                continue
            current = self.store.get_model(name)
            return Registration(written, created, current.aliases.get("champion"))
        raise Conflict(f"model {name!r} kept changing; gave up after {CONFLICT_RETRIES} attempts")

    def get_model(self, name: str) -> ModelRecord:
        """The model record. Raises NotFound."""
        return self.store.get_model(name)

    def list_models(self) -> list[ModelRecord]:
        """Every model and agent, by name."""
        return self.store.list_models()

    def get_version(self, name: str, version: int) -> VersionRecord:
        """One version. Raises NotFound."""
        return self.store.get_version(name, version)

    def list_versions(self, name: str) -> list[VersionRecord]:
        """All versions of a model, oldest first. Raises NotFound for an unknown model."""
        self.store.get_model(name)
        return self.store.list_versions(name)

    def history(self, name: str) -> list[AuditEvent]:
        """The model's audit events, oldest first. Raises NotFound for an unknown model."""
        self.store.get_model(name)
        return self.store.list_events(name)

    def champion(self, name: str) -> VersionRecord | None:
        """The version aliased ``champion`` (None if the model has none). Raises NotFound."""
        model = self.store.get_model(name)
        number = model.aliases.get("champion")
        return None if number is None else self.store.get_version(name, number)
