"""The DynamoDB implementation of the registry store: one table, conditional writes, transactions.

Item layout (key schema from ``stagewise.platform.resources.registry_table_spec``)::

    pk               sk                          what
    MODEL#<name>     MODEL                       model record (revision, aliases, rollout)
    MODEL#<name>     VERSION#<000001>            immutable version record
    MODEL#<name>     EVENT#<revision 000000000001>  audit event (append-only, one per revision)
    MODEL#<name>     TOKEN#<token>               idempotency marker: what the token produced
    MODEL#<name>     LOCK                        the run lock (``RunLock``), taken, renewed and
                                                 released with conditional puts (released:
                                                 ``expires_epoch`` 0; the task roles may not
                                                 delete registry items)

The model record also carries ``gsi1pk = "KIND#<kind>"`` and ``gsi1sk = <name>`` so models are
listed from the ``by-kind`` index without a scan.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from stagewise.registry.errors import AlreadyExists, Conflict, Locked, NotFound, RegistryError
from stagewise.registry.records import AuditEvent, ModelRecord, RunLock, VersionRecord
from stagewise.registry.service import Registry
from stagewise.registry.store import RegistryStore

_ser = TypeSerializer()
_de = TypeDeserializer()
KINDS = ("model", "agent")


def _pk(name: str) -> str:
    return f"MODEL#{name}"


def _vsk(version: int) -> str:
    return f"VERSION#{version:06d}"


def _to_item(record: Any, **keys: str | int) -> dict[str, Any]:
    """A pydantic record as a DynamoDB item: JSON types, floats as Decimal, plus the key attributes."""
    plain = json.loads(record.model_dump_json(), parse_float=Decimal)
    plain.update(keys)
    return {k: _ser.serialize(v) for k, v in plain.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _from_item(item: dict[str, Any]) -> dict[str, Any]:
    data = {k: _plain(_de.deserialize(v)) for k, v in item.items()}
    for key in ("pk", "sk", "gsi1pk", "gsi1sk", "result_version"):
        data.pop(key, None)
    return data


class DynamoDBRegistryStore(RegistryStore):
    """``RegistryStore`` on one DynamoDB table, through an injected boto3 DynamoDB client.

    Args:
        client: a boto3 ``dynamodb`` client (from ``AwsClients.client("dynamodb")``).
        table: the registry table name.
    """

    def __init__(self, client: Any, table: str) -> None:
        self._ddb = client
        self.table = table

    # -- reads -----------------------------------------------------------------------------------
    def get_model(self, name: str) -> ModelRecord:
        item = self._get(_pk(name), "MODEL")
        if item is None:
            raise NotFound(f"no model called {name!r} in registry table {self.table}")
        return ModelRecord.model_validate(_from_item(item))

    def list_models(self) -> list[ModelRecord]:
        out: list[ModelRecord] = []
        for kind in KINDS:
            for item in self._query(
                IndexName="by-kind",
                KeyConditionExpression="gsi1pk = :k",
                ExpressionAttributeValues={":k": {"S": f"KIND#{kind}"}},
            ):
                out.append(ModelRecord.model_validate(_from_item(item)))
        return sorted(out, key=lambda m: m.name)

    def get_version(self, name: str, version: int) -> VersionRecord:
        item = self._get(_pk(name), _vsk(version))
        if item is None:
            self.get_model(name)  # NotFound for the model first, if that is what is missing
            raise NotFound(f"model {name!r} has no version {version}")
        return VersionRecord.model_validate(_from_item(item))

    def list_versions(self, name: str) -> list[VersionRecord]:
        return [VersionRecord.model_validate(_from_item(i)) for i in self._query_prefix(name, "VERSION#")]

    def list_events(self, name: str) -> list[AuditEvent]:
        return [AuditEvent.model_validate(_from_item(i)) for i in self._query_prefix(name, "EVENT#")]

    # -- writes ----------------------------------------------------------------------------------
    def create_model(self, model: ModelRecord, event: AuditEvent) -> ModelRecord:
        items = [
            {
                "Put": {
                    "TableName": self.table,
                    "Item": _to_item(model, pk=_pk(model.name), sk="MODEL", gsi1pk=f"KIND#{model.kind}", gsi1sk=model.name),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            self._put_event(event),
        ]
        reasons = self._transact(items)
        if reasons is not None:
            raise AlreadyExists(f"model {model.name!r} exists already")
        return model

    def commit_version(
        self, version: VersionRecord, model: ModelRecord, expected_revision: int, event: AuditEvent, token: str
    ) -> tuple[VersionRecord, bool]:
        pk = _pk(model.name)
        items = [
            self._put_token(pk, token, version.version),
            {
                "Put": {
                    "TableName": self.table,
                    "Item": _to_item(version, pk=pk, sk=_vsk(version.version)),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            self._put_model(model, expected_revision),
            self._put_event(event),
        ]
        reasons = self._transact(items)
        if reasons is None:
            return version, True
        if reasons[0] == "ConditionalCheckFailed":
            return self.get_version(model.name, self._token_version(pk, token)), False
        if "ConditionalCheckFailed" in (reasons[2], reasons[3]):  # head moved, or its revision's event exists
            self.get_model(model.name)
            raise Conflict(
                f"model {model.name!r} changed since revision {expected_revision} was read; re-read and retry"
            )
        if reasons[1] == "ConditionalCheckFailed":
            raise AlreadyExists(f"model {model.name!r} already has version {version.version}")
        raise RegistryError(f"registry write cancelled: {reasons}")

    def update_model(self, model: ModelRecord, expected_revision: int, event: AuditEvent, token: str) -> tuple[ModelRecord, bool]:
        pk = _pk(model.name)
        items = [self._put_token(pk, token, 0), self._put_model(model, expected_revision), self._put_event(event)]
        reasons = self._transact(items)
        if reasons is None:
            return model, True
        if reasons[0] == "ConditionalCheckFailed":
            return self.get_model(model.name), False
        if "ConditionalCheckFailed" in (reasons[1], reasons[2]):
            self.get_model(model.name)
            raise Conflict(f"model {model.name!r} changed since revision {expected_revision} was read; re-read and retry")
        raise RegistryError(f"registry write cancelled: {reasons}")

    # -- the run lock ----------------------------------------------------------------------------
    def acquire_run_lock(self, lock: RunLock, now_epoch: float) -> RunLock:
        """Take or renew the model's run lock with one conditional put (see
        ``RegistryStore.acquire_run_lock``).

        Raises:
            Locked: another run holds an unexpired lock.
        """
        try:
            self._ddb.put_item(
                TableName=self.table, Item=_to_item(lock, pk=_pk(lock.model), sk="LOCK"),
                ConditionExpression="attribute_not_exists(pk) OR expires_epoch <= :now OR run_id = :run",
                ExpressionAttributeValues={":now": {"N": repr(float(now_epoch))}, ":run": {"S": lock.run_id}},
            )
            return lock
        except ClientError as e:
            if e.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise self._error("write", e) from e
        current = self.get_run_lock(lock.model)
        if current is None:  # released between the put and the read: try once more
            return self.acquire_run_lock(lock, now_epoch)
        raise Locked(f"model {lock.model!r} is locked by run {current.run_id}", current)

    def release_run_lock(self, name: str, run_id: str) -> bool:
        """Release the run lock if ``run_id`` holds it: a conditional put of it with
        ``expires_epoch`` 0 (no ``DeleteItem``: the task roles may not delete registry items).
        False if that run does not hold it (nothing changes)."""
        held = self.get_run_lock(name)
        if held is None or held.run_id != run_id:
            return False
        try:
            self._ddb.put_item(
                TableName=self.table, Item=_to_item(held.model_copy(update={"expires_epoch": 0.0}), pk=_pk(name), sk="LOCK"),
                ConditionExpression="run_id = :run AND expires_epoch > :zero",
                ExpressionAttributeValues={":run": {"S": run_id}, ":zero": {"N": "0"}},
            )
            return True
        except ClientError as e:
            if e.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise self._error("write", e) from e

    def get_run_lock(self, name: str) -> RunLock | None:
        """The run lock of model ``name`` as stored (perhaps expired), or None (never taken, or released)."""
        item = self._get(_pk(name), "LOCK")
        lock = None if item is None else RunLock.model_validate(_from_item(item))
        return None if lock is None or lock.expires_epoch <= 0 else lock

    # -- helpers ---------------------------------------------------------------------------------
    def _put_model(self, model: ModelRecord, expected_revision: int) -> dict[str, Any]:
        return {
            "Put": {
                "TableName": self.table,
                "Item": _to_item(model, pk=_pk(model.name), sk="MODEL", gsi1pk=f"KIND#{model.kind}", gsi1sk=model.name),
                "ConditionExpression": "revision = :expected",
                "ExpressionAttributeValues": {":expected": {"N": str(expected_revision)}},
            }
        }

    def _put_event(self, event: AuditEvent) -> dict[str, Any]:
        sk = f"EVENT#{event.revision:012d}"
        return {
            "Put": {
                "TableName": self.table,
                "Item": _to_item(event, pk=_pk(event.model), sk=sk),
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }

    def _put_token(self, pk: str, token: str, version: int) -> dict[str, Any]:
        return {
            "Put": {
                "TableName": self.table,
                "Item": {"pk": {"S": pk}, "sk": {"S": f"TOKEN#{token}"}, "result_version": {"N": str(version)}},
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }

    def has_token(self, name: str, token: str) -> bool:
        return self._get(_pk(name), f"TOKEN#{token}") is not None

    def token_result(self, name: str, token: str) -> int:
        return self._token_version(_pk(name), token)

    def _token_version(self, pk: str, token: str) -> int:
        item = self._get(pk, f"TOKEN#{token}")
        if item is None:
            raise NotFound(f"idempotency token {token} was never used")
        return int(item["result_version"]["N"])

    def _transact(self, items: list[dict[str, Any]]) -> list[str] | None:
        """Run a transaction; None on success, else the per-item cancellation reason codes."""
        try:
            self._ddb.transact_write_items(TransactItems=items)
            return None
        except ClientError as e:
            code = e.response["Error"]["Code"]
            if code == "TransactionCanceledException":
                reasons = e.response.get("CancellationReasons") or []
                codes = [r.get("Code", "None") for r in reasons]
                return codes + ["None"] * (len(items) - len(codes))
            if code == "ResourceNotFoundException":
                raise NotFound(f"registry table {self.table} does not exist; deploy the stack or run `stagewise run`") from e
            raise RegistryError(f"registry write failed: {e}") from e

    def _error(self, what: str, e: ClientError) -> RegistryError:
        """A DynamoDB error as a registry error: a missing table is ``NotFound`` with the fix."""
        if e.response["Error"]["Code"] == "ResourceNotFoundException":
            return NotFound(f"registry table {self.table} does not exist; deploy the stack or run `stagewise run`")
        return RegistryError(f"registry {what} failed: {e}")

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        try:
            resp = self._ddb.get_item(TableName=self.table, Key={"pk": {"S": pk}, "sk": {"S": sk}}, ConsistentRead=True)
        except ClientError as e:
            raise self._error("read", e) from e
        return resp.get("Item")

    def _query_prefix(self, name: str, prefix: str) -> list[dict[str, Any]]:
        return self._query(
            KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
            ExpressionAttributeValues={":pk": {"S": _pk(name)}, ":p": {"S": prefix}},
            ConsistentRead=True,
        )

    def _query(self, **kwargs: Any) -> list[dict[str, Any]]:
        try:
            pages = self._ddb.get_paginator("query").paginate(TableName=self.table, **kwargs)
            return [item for page in pages for item in page["Items"]]
        except ClientError as e:
            raise self._error("read", e) from e


def registry_of(env: Any) -> Registry:
    """The registry of a connected environment (anything with ``clients`` and ``resources``: an
    ``Environment`` from ``connect``, a run's context): the service on the environment's DynamoDB
    table. The one place a registry is built for an environment.
    """
    return Registry(DynamoDBRegistryStore(env.clients.client("dynamodb"), env.resources.registry_table.name))
