"""IAM on the embedded AWS for the stack's own principals: the task roles and the state machine role.

moto authorises every call unless IAM authentication is switched on for all of them (then the
embedded AWS's dummy base credentials are refused too), and its evaluator matches a policy's
``Resource`` against ``*`` for most services, so least-privilege documents would deny everything.
Installed in the embedded AWS's server process (``moto_server``), this evaluates, for every call
signed by a session of a role whose name matches ``ENFORCED`` (``stagewise-<env>-validate-task``,
``-train-task``, ``-score-task``, ``-state-machine``: the local Fargate tasks and the Step Functions
engine act as them; ``-trigger``, as which EventBridge starts executions; ``-reader``, as which
``stagewise fleet`` reads), the role's inline and attached policies, as IAM does:

- an explicit ``Deny`` whose action (and resource) matches refuses the call;
- else an ``Allow`` whose ``Action`` matches (wildcards as IAM reads them, service prefix without
  case) permits it, if its ``Resource`` matches the call's resource where the embedded AWS knows it
  (S3: ``arn:aws:s3:::bucket`` and ``arn:aws:s3:::bucket/key``); for other services moto gives no
  resource, so the action alone decides;
- otherwise the call is refused: ``AccessDenied`` naming the principal, the action and the resource.

**Not evaluated**: ``Condition`` blocks (a conditional Allow counts as an Allow), resource-level
scope outside S3 (a DynamoDB action on another table would pass), resource-based policies (bucket
policies, the topic policy), permission boundaries, SCPs, ``iam:PassRole``. Every other principal
(the CLI, the promoter, the deployer) is authorised as moto does: always.

Every decision is appended once per (role, action, resource pattern, outcome) to
``iam/decisions.jsonl`` in the local state folder (``Env.HOME``); ``usage_report`` turns it and the roles' documents into the
least-privilege table: per role, the actions granted, the actions used, and the granted ones no
call used.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any, Callable, Iterable

ENFORCED = re.compile(r"^stagewise-[a-z0-9]+-(validate-task|train-task|score-task|state-machine|trigger|reader)$")
"""Role names whose sessions the embedded AWS authorises."""
ALWAYS_ALLOWED = frozenset({"sts:GetCallerIdentity"})
"""Calls IAM never refuses (no policy can deny ``GetCallerIdentity``)."""
DECISIONS = Path("iam") / "decisions.jsonl"
"""Where decisions are recorded, under the local state folder."""


def _matches(pattern: str, value: str, ignore_case: bool = False) -> bool:
    regex = "^" + re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".") + "$"
    return re.match(regex, value, re.IGNORECASE if ignore_case else 0) is not None


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def _statements(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """A policy document's statements (IAM allows one statement object instead of a list)."""
    found = doc.get("Statement") or []
    return found if isinstance(found, list) else [found]


def action_matches(pattern: str, action: str) -> bool:
    """``s3:Get*`` matches ``s3:GetObject``; the service prefix and the action name ignore case, as IAM's do."""
    return _matches(pattern, action, ignore_case=True)


def evaluate(documents: Iterable[dict[str, Any]], action: str, resource: str) -> str:
    """``allow``, ``deny`` (an explicit Deny) or ``implicit-deny`` for ``action`` on ``resource``
    (``*``: unknown, the action alone decides) under the policy ``documents``."""
    allowed = False
    for doc in documents:
        for st in _statements(doc):
            if "Action" in st:
                concerned = any(action_matches(p, action) for p in _as_list(st["Action"]))
            else:
                concerned = not any(action_matches(p, action) for p in _as_list(st.get("NotAction")))
            if not concerned:
                continue
            on_resource = resource == "*" or any(_matches(p, resource) for p in _as_list(st.get("Resource", "*")))
            if not on_resource:
                continue
            if st.get("Effect") == "Deny":
                return "deny"
            allowed = True
    return "allow" if allowed else "implicit-deny"


class LocalIam:
    """The enforcer: which role a request's access key belongs to, its decision, the record.

    Args:
        home: the local state folder (decisions go to ``DECISIONS`` under it).
    """

    def __init__(self, home: Path) -> None:
        self.path = home / DECISIONS
        self._seen: set[tuple[str, str, str, str]] = set()
        self._lock = threading.Lock()

    @staticmethod
    def role_of(account_id: str, partition: str, access_key_id: str) -> tuple[str, str] | None:
        """``(role name, session ARN)`` of the assumed-role session holding ``access_key_id``, or None."""
        from moto.sts.models import sts_backends

        for session in sts_backends[account_id][partition].assumed_roles:
            if session.access_key_id == access_key_id:
                name = session.role_arn.split("/")[-1]
                return name, f"arn:{partition}:sts::{account_id}:assumed-role/{name}/{session.session_name}"
        return None

    @staticmethod
    def documents(account_id: str, partition: str, role: str) -> list[dict[str, Any]]:
        """The role's inline and attached (customer managed) policy documents."""
        from moto.iam.models import iam_backends

        iam = iam_backends[account_id][partition]
        docs = [json.loads(iam.get_role_policy(role, name)[1]) for name in iam.list_role_policies(role)]
        attached, _ = iam.list_attached_role_policies(role)
        for policy in attached:
            version = getattr(policy, "default_version", None) or getattr(policy, "document", None)
            text = getattr(version, "document", version)
            if isinstance(text, str):
                docs.append(json.loads(text))
        return docs

    def decide(self, account_id: str, partition: str, role: str, action: str, resource: str) -> str:
        """The decision for ``role`` (module docstring), recorded."""
        outcome = evaluate(self.documents(account_id, partition, role), action, resource)
        self.record(account_id, role, action, resource, outcome)
        return outcome

    def record(self, account_id: str, role: str, action: str, resource: str, outcome: str) -> None:
        key = (f"{account_id}/{role}", action, resource, outcome)
        with self._lock:
            if key in self._seen:
                return
            self._seen.add(key)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(json.dumps({"account": account_id, "role": role, "action": action, "resource": resource,
                                    "outcome": outcome}) + "\n")


IAM_PREFIX = {"monitoring": "cloudwatch"}
"""SigV4 signing names whose IAM action prefix differs (CloudWatch signs as ``monitoring``)."""


_DYNAMODB_ITEM_ACTIONS = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                          "ConditionCheck": "ConditionCheckItem", "Get": "GetItem"}


def _checks(action: str, resource: str, body: bytes | str | None) -> list[tuple[str, str]]:
    """The ``(action, resource)`` pairs IAM checks for a call: the call's own, except where IAM
    checks the parts: S3's multi-object delete (a ``DeleteObject`` on the bucket: each key in the
    body) and DynamoDB's transactions and batches (``TransactWriteItems``: each item's
    ``PutItem``/``UpdateItem``/``DeleteItem``/``ConditionCheckItem``; ``TransactGetItems`` and
    ``BatchGetItem``: ``GetItem``; ``BatchWriteItem``: ``PutItem``/``DeleteItem``)."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else (body or "")
    if action == "s3:DeleteObject" and resource.startswith("arn:") and "/" not in resource.split(":::", 1)[-1]:
        keys = re.findall(r"<Key>(.*?)</Key>", text)
        return [(action, f"{resource}/{k}") for k in keys] or [(action, resource)]
    if action in ("dynamodb:TransactWriteItems", "dynamodb:TransactGetItems"):
        items = json.loads(text or "{}").get("TransactItems", [])
        kinds = {kind for item in items for kind in item}
        return [(f"dynamodb:{_DYNAMODB_ITEM_ACTIONS[k]}", resource) for k in sorted(kinds) if k in _DYNAMODB_ITEM_ACTIONS] \
            or [(action, resource)]
    if action == "dynamodb:BatchGetItem":
        return [("dynamodb:GetItem", resource)]
    if action == "dynamodb:BatchWriteItem":
        requests = [r for rs in json.loads(text or "{}").get("RequestItems", {}).values() for r in rs]
        kinds = sorted({"dynamodb:PutItem" if "PutRequest" in r else "dynamodb:DeleteItem" for r in requests})
        return [(k, resource) for k in kinds] or [(action, resource)]
    return [(action, resource)]


def _credential(headers: Any) -> tuple[str, str, str] | None:
    """``(access key id, region, service)`` from a SigV4 ``Authorization`` header, or None."""
    auth = headers.get("Authorization") or ""
    found = re.search(r"Credential=([^/]+)/[^/]+/([^/]+)/([^/]+)/", auth)
    return (found.group(1), found.group(2), found.group(3)) if found else None


def install(iam: LocalIam) -> Callable[[], None]:
    """Hook ``iam`` into moto's request authorisation; returns a function undoing it."""
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.core.exceptions import AccessDeniedError
    from moto.iam.access_control import S3IAMRequest
    from moto.s3.exceptions import S3ClientError
    from moto.utilities.utils import get_partition

    original = ActionAuthenticatorMixin._authenticate_and_authorize_action

    def authorize(self: Any, iam_request_cls: type, resource: str = "*") -> None:
        credential = _credential(self.headers)
        if credential is not None:
            key, region, service = credential
            partition, account = get_partition(region), self.current_account
            found = iam.role_of(account, partition, key)
            if found is not None and ENFORCED.match(found[0]):
                name = self._get_action()
                action = f"{IAM_PREFIX.get(service, service)}:{name[0] if isinstance(name, list) else name}"
                if action in ALWAYS_ALLOWED:
                    return
                for action, resource in _checks(action, resource, getattr(self, "raw_body", b"")):
                    if iam.decide(account, partition, found[0], action, resource) == "allow":
                        continue
                    message = f"User: {found[1]} is not authorized to perform: {action} on resource: {resource}"
                    if iam_request_cls is S3IAMRequest:
                        raise S3ClientError("AccessDenied", message)
                    error = AccessDeniedError(user_arn=found[1], action=action)
                    error.description = message
                    raise error
                return
        return original(self, iam_request_cls, resource)

    ActionAuthenticatorMixin._authenticate_and_authorize_action = authorize  # type: ignore[method-assign]

    def undo() -> None:
        ActionAuthenticatorMixin._authenticate_and_authorize_action = original  # type: ignore[method-assign]

    return undo


def read_decisions(home: Path) -> list[dict[str, str]]:
    """The recorded decisions (``DECISIONS`` under ``home``), oldest first."""
    path = home / DECISIONS
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def granted_actions(documents: Iterable[dict[str, Any]]) -> list[str]:
    """The action patterns the ``Allow`` statements of ``documents`` grant, sorted."""
    found: set[str] = set()
    for doc in documents:
        for st in _statements(doc):
            if st.get("Effect") == "Allow":
                found.update(_as_list(st.get("Action")))
    return sorted(found)


def usage_report(decisions: list[dict[str, str]], documents_by_role: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per role: ``granted`` (action patterns), ``used`` (actions allowed to a call), ``denied``
    (actions refused), ``unused`` (granted patterns no allowed call matched: the least-privilege gap)."""
    rows = []
    for role, docs in sorted(documents_by_role.items()):
        granted = granted_actions(docs)
        used = sorted({d["action"] for d in decisions if d["role"] == role and d["outcome"] == "allow"})
        denied = sorted({d["action"] for d in decisions if d["role"] == role and d["outcome"] != "allow"})
        unused = [g for g in granted if not any(action_matches(g, a) for a in used)]
        rows.append({"role": role, "granted": granted, "used": used, "denied": denied, "unused": unused})
    return rows
