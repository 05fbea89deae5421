"""Input claims: a file that lands is processed by one run, once.

A run started by data landing (S3 -> EventBridge -> Step Functions) or by the schedule first claims
its input: one conditional ``PutItem`` of an ``InputClaim`` item in the registry table, keyed by
the model and the sha256 of the object's content (``MODEL#<name>`` / ``CLAIM#<sha256>``). The put
succeeds if nobody claimed that content yet, or if the same execution claims it again (a retried
claim task); otherwise the existing claim names the execution that owns it and the new execution
ends without running (``AlreadyProcessed``). So the same file put twice, a redelivered event, or
the schedule firing on a file already processed starts no second run. Keyed by content, not by
key or version id: a re-upload of identical bytes under another name is the same input.

Claims are never deleted by the runtime (the task roles may not delete registry items); to process
the same content again on purpose, run it by hand (``stagewise run``, which does not claim).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from botocore.exceptions import ClientError

from stagewise.platform.strict import StrictModel
from stagewise.registry.errors import RegistryError


class InputClaim(StrictModel):
    """Who processes one input content of one model.

    Attributes:
        model: the model name.
        data_sha256: sha256 (hex) of the object's bytes.
        data_uri: the ``s3://`` URI it was claimed from.
        owner: the Step Functions execution ARN that claimed it.
        run_id: that execution's run id.
        trigger: what started it: ``s3`` (an object landed) or ``schedule``.
        claimed_at: when (UTC).
    """

    model: str
    data_sha256: str
    data_uri: str
    owner: str
    run_id: str
    trigger: str
    claimed_at: datetime


def _key(model: str, sha256: str) -> dict[str, Any]:
    return {"pk": {"S": f"MODEL#{model}"}, "sk": {"S": f"CLAIM#{sha256}"}}


def claim_input(ddb: Any, table: str, claim: InputClaim) -> tuple[bool, InputClaim]:
    """Claim ``claim.data_sha256`` for ``claim.owner``: one conditional put (free, or already this
    owner's). Returns ``(True, claim)`` if this owner holds it now, else ``(False, the existing
    claim)``.

    Raises:
        RegistryError: DynamoDB refused the write or read for another reason.
    """
    item = {**_key(claim.model, claim.data_sha256), **{k: {"S": str(v)} for k, v in claim.model_dump(mode="json").items()}}
    try:
        ddb.put_item(TableName=table, Item=item, ConditionExpression="attribute_not_exists(pk) OR #o = :owner",
                     ExpressionAttributeNames={"#o": "owner"}, ExpressionAttributeValues={":owner": {"S": claim.owner}})
        return True, claim
    except ClientError as e:
        if e.response["Error"]["Code"] != "ConditionalCheckFailedException":
            raise RegistryError(f"claiming input {claim.data_sha256[:12]}… of {claim.model}: {e}") from e
    existing = get_claim(ddb, table, claim.model, claim.data_sha256)
    if existing is None:  # cannot happen: claims are never deleted
        raise RegistryError(f"the claim of {claim.data_sha256[:12]}… of {claim.model} was refused but does not exist")
    return False, existing


def get_claim(ddb: Any, table: str, model: str, sha256: str) -> InputClaim | None:
    """The claim of ``model``'s input content ``sha256``, or None.

    Raises:
        RegistryError: DynamoDB refused the read.
    """
    try:
        item = ddb.get_item(TableName=table, Key=_key(model, sha256), ConsistentRead=True).get("Item")
    except ClientError as e:
        raise RegistryError(f"reading the claim of {sha256[:12]}… of {model}: {e}") from e
    if item is None:
        return None
    return InputClaim.model_validate({k: v["S"] for k, v in item.items() if k not in ("pk", "sk")})


def new_claim(model: str, sha256: str, data_uri: str, owner: str, run_id: str, trigger: str) -> InputClaim:
    """An ``InputClaim`` made now."""
    return InputClaim(model=model, data_sha256=sha256, data_uri=data_uri, owner=owner, run_id=run_id, trigger=trigger,
                      claimed_at=datetime.now(timezone.utc))
