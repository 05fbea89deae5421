"""The in-memory registry store: the ``RegistryStore`` contract in plain Python, without AWS.

What it is for:

* **Fast rule tests.** ``Registry(InMemoryRegistryStore(), clock=...)`` runs the registry's rules
  (numbering, champion, rollout, aliases, idempotency, audit) in milliseconds, with no embedded AWS.
* **A reference for the store contract.** It keeps what ``DynamoDBRegistryStore`` keeps, keyed the
  same way (the model head; versions under ``VERSION#<000001>``; one audit event per revision under
  ``EVENT#<000000000001>``; idempotency tokens and what they produced), checks the same conditions
  and answers a failed write the same way, in the same order: a used token replays, then a moved
  revision (or a taken event revision) is ``Conflict``, then a taken version number is
  ``AlreadyExists``. ``tests/test_store_contract.py`` runs one suite against both stores.

One lock serializes every call, as DynamoDB serializes conditional writes on an item: a write
checks all its conditions and then applies all of its items, or none. As with DynamoDB, what a
failed write reads afterwards (the replayed result, the model for ``NotFound``) is read after the
write, not inside it.

Records are stored as JSON data with numbers as DynamoDB gives them back (a float that is a whole
number comes back as an int, e.g. in ``lineage``), and every read validates a fresh record, so a
caller can never change what is stored, and a record read here equals one read from DynamoDB.

Nothing is persisted or shared between processes: it is for tests and experiments.
"""

from __future__ import annotations

import json
import threading
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from stagewise.registry.errors import AlreadyExists, Conflict, Locked, NotFound
from stagewise.registry.records import AuditEvent, ModelRecord, RunLock, VersionRecord
from stagewise.registry.store import RegistryStore


def _number(text: str) -> int | float:
    """A JSON number as DynamoDB returns it: an int when it is whole, else a float."""
    value = Decimal(text)
    return int(value) if value == value.to_integral_value() else float(value)


def _stored(record: BaseModel) -> dict[str, Any]:
    """``record`` as stored: JSON data, numbers as DynamoDB returns them; shares nothing with it."""
    return json.loads(record.model_dump_json(), parse_float=_number)


def _version_key(version: int) -> str:
    return f"{version:06d}"  # the sort key's digits in DynamoDB: versions list in this order


def _event_key(revision: int) -> str:
    return f"{revision:012d}"  # the sort key's digits in DynamoDB: events list in this order


class InMemoryRegistryStore(RegistryStore):
    """``RegistryStore`` in process memory, safe to share between threads.

    Every method takes one lock for the whole of its check-and-write, so concurrent conditional
    writes on one model behave as on DynamoDB: of the writers that read the same revision, exactly
    one wins and every other gets ``Conflict``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[str, dict[str, Any]] = {}
        self._versions: dict[str, dict[str, dict[str, Any]]] = {}  # model -> version key -> version
        self._events: dict[str, dict[str, dict[str, Any]]] = {}  # model -> event key -> event
        self._tokens: dict[str, dict[str, int]] = {}  # model -> token -> version it made (0: none)
        self._run_locks: dict[str, dict[str, Any]] = {}  # model -> its run lock

    # -- reads -----------------------------------------------------------------------------------
    def get_model(self, name: str) -> ModelRecord:
        """The model record.

        Raises:
            NotFound: no model of that name.
        """
        with self._lock:
            data = self._models.get(name)
        if data is None:
            raise NotFound(f"no model called {name!r} in the in-memory registry")
        return ModelRecord.model_validate(data)

    def list_models(self) -> list[ModelRecord]:
        """Every model and agent record, sorted by name."""
        with self._lock:
            stored = [self._models[name] for name in sorted(self._models)]
        return [ModelRecord.model_validate(data) for data in stored]

    def get_version(self, name: str, version: int) -> VersionRecord:
        """One version.

        Raises:
            NotFound: no such model (checked first) or version.
        """
        with self._lock:
            data = self._versions.get(name, {}).get(_version_key(version))
        if data is None:
            self.get_model(name)  # NotFound for the model first, if that is what is missing
            raise NotFound(f"model {name!r} has no version {version}")
        return VersionRecord.model_validate(data)

    def list_versions(self, name: str) -> list[VersionRecord]:
        """Every version of the model, oldest first (none for an unknown model)."""
        with self._lock:
            stored = sorted(self._versions.get(name, {}).items())
        return [VersionRecord.model_validate(data) for _, data in stored]

    def list_events(self, name: str) -> list[AuditEvent]:
        """The model's audit events in revision order, oldest first (none for an unknown model)."""
        with self._lock:
            stored = sorted(self._events.get(name, {}).items())
        return [AuditEvent.model_validate(data) for _, data in stored]

    def has_token(self, name: str, token: str) -> bool:
        """True if a change of model ``name`` was already made with idempotency token ``token``."""
        with self._lock:
            return token in self._tokens.get(name, {})

    def token_result(self, name: str, token: str) -> int:
        """The version number the change made with ``token`` produced (0 for non-version changes).

        Raises:
            NotFound: the token was never used.
        """
        with self._lock:
            result = self._tokens.get(name, {}).get(token)
        if result is None:
            raise NotFound(f"idempotency token {token} was never used")
        return result

    # -- writes ----------------------------------------------------------------------------------
    def create_model(self, model: ModelRecord, event: AuditEvent) -> ModelRecord:
        """Write a new model record and its creation event, both or neither.

        Returns:
            ``model``.

        Raises:
            AlreadyExists: a model of that name exists (or an event at the creation event's
                revision does).
        """
        with self._lock:
            if model.name in self._models or self._event_taken(event):
                raise AlreadyExists(f"model {model.name!r} exists already")
            self._write_head_and_event(model, event)
        return model

    def commit_version(
        self, version: VersionRecord, model: ModelRecord, expected_revision: int, event: AuditEvent, token: str
    ) -> tuple[VersionRecord, bool]:
        """Atomically write a new version, the updated model head, an audit event and the token.

        Args:
            version: the new immutable version (its number must be unused).
            model: the model record after the change.
            expected_revision: the revision the caller read; the write fails if it moved.
            event: the audit event describing the change (its revision must have no event yet).
            token: idempotency token; if it was used before for this model, nothing is written.

        Returns:
            ``(version, True)`` when written, or ``(the version the token created earlier, False)``.

        Raises:
            Conflict: the model's revision moved since the caller read it.
            AlreadyExists: the version number is taken.
            NotFound: the model does not exist (or the token was used by a change that made no
                version).
        """
        with self._lock:
            token_used = token in self._tokens.get(model.name, {})
            version_taken = _version_key(version.version) in self._versions.get(model.name, {})
            head_moved = self._head_moved(model.name, expected_revision) or self._event_taken(event)
            if not (token_used or version_taken or head_moved):
                self._tokens.setdefault(model.name, {})[token] = version.version
                self._versions.setdefault(model.name, {})[_version_key(version.version)] = _stored(version)
                self._write_head_and_event(model, event)
                return version, True
        if token_used:
            return self.get_version(model.name, self.token_result(model.name, token)), False
        if head_moved:
            self.get_model(model.name)
            raise Conflict(f"model {model.name!r} changed since revision {expected_revision} was read; re-read and retry")
        raise AlreadyExists(f"model {model.name!r} already has version {version.version}")

    def update_model(self, model: ModelRecord, expected_revision: int, event: AuditEvent, token: str) -> tuple[ModelRecord, bool]:
        """Atomically replace the model head (aliases, rollout) and append an audit event.

        Returns:
            ``(model, True)`` when written, ``(current model, False)`` on an idempotent replay.

        Raises:
            Conflict: the revision moved (or the event's revision has an event already).
            NotFound: the model does not exist.
        """
        with self._lock:
            token_used = token in self._tokens.get(model.name, {})
            head_moved = self._head_moved(model.name, expected_revision) or self._event_taken(event)
            if not (token_used or head_moved):
                self._tokens.setdefault(model.name, {})[token] = 0
                self._write_head_and_event(model, event)
                return model, True
        if token_used:
            return self.get_model(model.name), False
        self.get_model(model.name)
        raise Conflict(f"model {model.name!r} changed since revision {expected_revision} was read; re-read and retry")

    # -- the run lock ----------------------------------------------------------------------------
    def acquire_run_lock(self, lock: RunLock, now_epoch: float) -> RunLock:
        """Take or renew the model's run lock (see ``RegistryStore.acquire_run_lock``).

        Raises:
            Locked: another run holds an unexpired lock.
        """
        with self._lock:
            held = self._run_locks.get(lock.model)
            if held is None or held["expires_epoch"] <= now_epoch or held["run_id"] == lock.run_id:
                self._run_locks[lock.model] = _stored(lock)
                return lock
        current = RunLock.model_validate(held)
        raise Locked(f"model {lock.model!r} is locked by run {current.run_id}", current)

    def release_run_lock(self, name: str, run_id: str) -> bool:
        """Delete the run lock if ``run_id`` holds it; False (nothing changed) otherwise."""
        with self._lock:
            held = self._run_locks.get(name)
            if held is None or held["run_id"] != run_id:
                return False
            del self._run_locks[name]
            return True

    def get_run_lock(self, name: str) -> RunLock | None:
        """The stored run lock of model ``name`` (perhaps expired), or None."""
        with self._lock:
            held = self._run_locks.get(name)
        return None if held is None else RunLock.model_validate(held)

    # -- helpers (called with the lock held) -----------------------------------------------------
    def _head_moved(self, name: str, expected_revision: int) -> bool:
        """True unless model ``name`` exists at ``expected_revision`` (DynamoDB: ``revision = :expected``)."""
        head = self._models.get(name)
        return head is None or head["revision"] != expected_revision

    def _event_taken(self, event: AuditEvent) -> bool:
        """True if the model of ``event`` has an event at its revision already."""
        return _event_key(event.revision) in self._events.get(event.model, {})

    def _write_head_and_event(self, model: ModelRecord, event: AuditEvent) -> None:
        self._models[model.name] = _stored(model)
        self._events.setdefault(event.model, {})[_event_key(event.revision)] = _stored(event)
