"""The abstract registry store: one method per storage operation.

The store knows nothing of rollout rules; ``stagewise.registry.service.Registry`` decides what
changes and the store writes it atomically. Every mutating call is conditional (on the model
record's ``revision``) and carries an idempotency token: a call retried with the same token returns
the first call's result instead of acting twice.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from stagewise.registry.records import AuditEvent, ModelRecord, RunLock, VersionRecord


class RegistryStore(ABC):
    """Storage of model records, immutable versions and audit events."""

    @abstractmethod
    def create_model(self, model: ModelRecord, event: AuditEvent) -> ModelRecord:
        """Write a new model record (revision 0) and its creation event.

        Raises:
            AlreadyExists: a model of that name exists.
        """

    @abstractmethod
    def get_model(self, name: str) -> ModelRecord:
        """The model record.

        Raises:
            NotFound: no model of that name.
        """

    @abstractmethod
    def list_models(self) -> list[ModelRecord]:
        """Every model and agent record, sorted by name."""

    @abstractmethod
    def commit_version(
        self, version: VersionRecord, model: ModelRecord, expected_revision: int, event: AuditEvent, token: str
    ) -> tuple[VersionRecord, bool]:
        """Atomically write a new version, the updated model head, an audit event and the token.

        Args:
            version: the new immutable version (its number must be unused).
            model: the model record after the change (``revision == expected_revision + 1``).
            expected_revision: the revision the caller read; the write fails if it moved.
            event: the audit event describing the change.
            token: idempotency token; if it was used before for this model, nothing is written.

        Returns:
            ``(version, True)`` when written, or ``(the version the token created earlier, False)``.

        Raises:
            Conflict: the model's revision moved since the caller read it.
            AlreadyExists: the version number is taken.
            NotFound: the model does not exist.
        """

    @abstractmethod
    def update_model(self, model: ModelRecord, expected_revision: int, event: AuditEvent, token: str) -> tuple[ModelRecord, bool]:
        """Atomically replace the model head (aliases, rollout) and append an audit event.

        Returns:
            ``(model, True)`` when written, ``(current model, False)`` on an idempotent replay.

        Raises:
            Conflict: the revision moved.
            NotFound: the model does not exist.
        """

    @abstractmethod
    def has_token(self, name: str, token: str) -> bool:
        """True if a change of model ``name`` was already made with idempotency token ``token``."""

    @abstractmethod
    def token_result(self, name: str, token: str) -> int:
        """The version number the change made with ``token`` produced (0 for non-version changes).

        Raises:
            NotFound: the token was never used.
        """

    @abstractmethod
    def get_version(self, name: str, version: int) -> VersionRecord:
        """One version.

        Raises:
            NotFound: no such model or version.
        """

    @abstractmethod
    def list_versions(self, name: str) -> list[VersionRecord]:
        """Every version of the model, oldest first."""

    @abstractmethod
    def list_events(self, name: str) -> list[AuditEvent]:
        """The model's audit events, oldest first."""

    # -- the run lock (``stagewise.registry.runlock``) -----------------------------------------
    @abstractmethod
    def acquire_run_lock(self, lock: RunLock, now_epoch: float) -> RunLock:
        """Write ``lock`` as the model's run lock if there is none, the current one expired
        (``expires_epoch <= now_epoch``) or it is held by the same ``run_id`` (a renewal).

        Returns:
            ``lock``.

        Raises:
            Locked: another run holds an unexpired lock (``Locked.lock`` is its record).
        """

    @abstractmethod
    def release_run_lock(self, name: str, run_id: str) -> bool:
        """Release model ``name``'s run lock if run ``run_id`` holds it (free to take at once).

        Returns:
            True if it was released, False if that run did not hold it (nothing changes).
        """

    @abstractmethod
    def get_run_lock(self, name: str) -> RunLock | None:
        """Model ``name``'s run lock as stored (it may have expired), or None if it was never
        taken or was released."""
