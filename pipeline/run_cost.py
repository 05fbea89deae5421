"""What a run costs: its Fargate tasks, its Step Functions state transitions, its S3 and DynamoDB requests.

``run_cost`` finds the run's ECS tasks (their command names the run id: ``--run-id <id>``), and
prices each one's vCPU-seconds and GB-seconds (task-level ``cpu`` units / 1024 and ``memory``
MiB / 1024, over ``startedAt`` -> ``stoppedAt``, at least 60 s as Fargate bills) at on-demand
(``FARGATE``) or the Spot estimate (``FARGATE_SPOT``), and the execution's state transitions (one
per state entered in its history) at the Standard workflow price, from ``specs/aws_prices.json``
(source, date and region inside; a stack's ``stagewise:prices`` overrides any of them). On the
embedded AWS the tasks are local processes, so the figure is what the run would cost on Fargate.
An in-process run (``in_process_cost``) is priced as if each task group had been one Fargate Spot
task for its steps' time. S3 and DynamoDB requests are those the CLI's clients made
(``AwsClients.requests``). Not counted: CloudWatch metrics, data transfer, storage, a Distributed
Map's child transitions on the state-machine path, and the tasks' own requests there (each task is
its own process).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from importlib import resources as package_files
from typing import Any

from stagewise.monitoring import metrics as m
from stagewise.monitoring.alerts import Alert, publish_alert
from stagewise.monitoring.metrics import Datum, publish

MIN_BILLED_SECONDS = 60.0
S3_PUT_CLASS = ("Put", "Copy", "Post", "List", "Create", "Upload", "Complete")
"""S3 operations billed as PUT-class requests (by name prefix); ``Get``/``Head``/``Select`` are
GET-class; ``Delete``/``Abort`` are free."""
DYNAMODB_WRITES = ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems")
DYNAMODB_READS = ("GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems")


@dataclass(frozen=True)
class AwsPrices:
    """Fargate per vCPU-hour and GB-hour (on-demand; Spot = on-demand x (1 - discount)), Step
    Functions Standard per 1,000 state transitions, S3 per 1,000 PUT- and GET-class requests,
    DynamoDB on-demand per million write and read request units; USD. Keys as ``stacks.settings.PriceKey``."""

    fargate_vcpu_hour: float
    fargate_gb_hour: float
    fargate_spot_discount: float
    step_functions_per_1k_transitions: float
    s3_per_1k_put: float
    s3_per_1k_get: float
    dynamodb_per_million_write: float
    dynamodb_per_million_read: float
    source: str
    as_of: str
    region: str

    @classmethod
    def load(cls, overrides: Mapping[str, float] | None = None) -> "AwsPrices":
        """The table shipped with the package, with a stack's ``stagewise:prices`` ``overrides``.

        Raises:
            TypeError: an override names no price of the table.
        """
        doc = json.loads(package_files.files("stagewise.pipeline.specs").joinpath("aws_prices.json").read_text())
        source = doc["source"] + ("; overridden by the stack: " + ", ".join(sorted(overrides)) if overrides else "")
        return cls(**{**doc["prices"], **(overrides or {})}, source=source, as_of=doc["as_of"], region=doc["region"])


@dataclass(frozen=True)
class RequestCost:
    """A run's S3 and DynamoDB requests by billing class, and their USD."""

    s3_put: int
    s3_get: int
    dynamodb_write: int
    dynamodb_read: int
    usd: float


def request_cost(requests: Mapping[str, int], prices: AwsPrices) -> RequestCost:
    """Price ``requests`` (``"<service>:<Operation>"`` -> calls, as ``AwsClients.requests`` counts
    them; a transactional write counted per item, billed twice)."""
    def total(service: str, keep: Any) -> int:
        return sum(n for k, n in requests.items() if k.startswith(service + ":") and keep(k.split(":", 1)[1]))

    put = total("s3", lambda op: op.startswith(S3_PUT_CLASS))
    get = total("s3", lambda op: op.startswith(("Get", "Head", "Select")))
    write = total("dynamodb", lambda op: op in DYNAMODB_WRITES) + total("dynamodb", lambda op: op == "TransactWriteItems")
    read = total("dynamodb", lambda op: op in DYNAMODB_READS)
    usd = (put * prices.s3_per_1k_put + get * prices.s3_per_1k_get) / 1000 + (
        write * prices.dynamodb_per_million_write + read * prices.dynamodb_per_million_read) / 1e6
    return RequestCost(put, get, write, read, usd)


@dataclass(frozen=True)
class TaskCost:
    """One task: its group, capacity provider, billed seconds, vCPU-seconds, GB-seconds and USD."""

    group: str
    capacity_provider: str
    seconds: float
    vcpu_seconds: float
    gb_seconds: float
    usd: float


@dataclass(frozen=True)
class RunCost:
    """A run's cost: its tasks, state transitions and requests, the USD of each part and in total.
    ``estimated``: what the run would cost on Fargate (it ran on a laptop)."""

    tasks: list[TaskCost]
    transitions: int
    requests: RequestCost
    fargate_usd: float
    transitions_usd: float
    total_usd: float
    estimated: bool
    prices: str
    not_counted: list[str] = field(default_factory=lambda: [
        "CloudWatch metrics", "data transfer", "S3 storage", "the tasks' own S3/DynamoDB requests on the state-machine path"])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {**asdict(self), "vcpu_seconds": sum(t.vcpu_seconds for t in self.tasks),
                "gb_seconds": sum(t.gb_seconds for t in self.tasks)}

    def line(self) -> str:
        """One line for the run table, e.g. ``would cost on Fargate Spot $0.0042: 4 tasks ...``."""
        spot = bool(self.tasks) and all(t.capacity_provider == "FARGATE_SPOT" for t in self.tasks)
        would = ("would cost on Fargate Spot" if spot else "would cost on Fargate") if self.estimated else "cost"
        r = self.requests
        return (f"{would} ${self.total_usd:.4f}: {len(self.tasks)} tasks, {sum(t.vcpu_seconds for t in self.tasks):,.0f} vCPU-s, "
                f"{sum(t.gb_seconds for t in self.tasks):,.0f} GB-s (${self.fargate_usd:.4f}); {self.transitions} state "
                f"transitions (${self.transitions_usd:.5f}); S3 {r.s3_put} PUT + {r.s3_get} GET, DynamoDB {r.dynamodb_write} "
                f"write + {r.dynamodb_read} read units (${r.usd:.5f}); {self.prices}")


def task_cost(task: dict[str, Any], prices: AwsPrices) -> TaskCost | None:
    """The cost of one ``DescribeTasks`` task, or None if it never started or has not stopped."""
    started, stopped = task.get("startedAt"), task.get("stoppedAt")
    if not started or not stopped:
        return None
    seconds = max((stopped - started).total_seconds(), MIN_BILLED_SECONDS)
    vcpu, gb = int(task.get("cpu") or 0) / 1024, int(task.get("memory") or 0) / 1024
    provider = task.get("capacityProviderName") or "FARGATE"
    factor = 1 - prices.fargate_spot_discount if provider == "FARGATE_SPOT" else 1.0
    usd = (vcpu * seconds * prices.fargate_vcpu_hour + gb * seconds * prices.fargate_gb_hour) / 3600 * factor
    command = (task.get("overrides", {}).get("containerOverrides") or [{}])[0].get("command") or ["?"]
    return TaskCost(command[0], provider, seconds, vcpu * seconds, gb * seconds, usd)


def run_tasks(ecs: Any, cluster: str, run_id: str, wait_seconds: float = 60.0) -> list[dict[str, Any]]:
    """The cluster's tasks whose command carries ``--run-id <run_id>``, once all of them stopped
    (a task reports its result before its process exits: at most ``wait_seconds`` are given for
    that), with their task-level ``cpu`` and ``memory`` (from the task definition when the task
    does not show them)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        found = _tasks_of(ecs, cluster, run_id)
        if all(t.get("lastStatus") == "STOPPED" for t in found) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    sizes: dict[str, dict[str, Any]] = {}
    for task in found:  # the task's own sizes, else its task definition's (moto's tasks carry none)
        if not task.get("cpu") or not task.get("memory"):
            arn = task["taskDefinitionArn"]
            sizes.setdefault(arn, ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"])
            task["cpu"] = task.get("cpu") or sizes[arn].get("cpu")
            task["memory"] = task.get("memory") or sizes[arn].get("memory")
    return found


def _tasks_of(ecs: Any, cluster: str, run_id: str) -> list[dict[str, Any]]:
    arns: list[str] = []
    for status in ("RUNNING", "STOPPED"):
        for page in ecs.get_paginator("list_tasks").paginate(cluster=cluster, desiredStatus=status):
            arns += page["taskArns"]
    arns, found = list(dict.fromkeys(arns)), []  # a task stopping between the two listings is in both
    for start in range(0, len(arns), 100):
        for task in ecs.describe_tasks(cluster=cluster, tasks=arns[start:start + 100])["tasks"]:
            commands = [c.get("command") or [] for c in task.get("overrides", {}).get("containerOverrides", [])]
            if any(run_id in cmd[i + 1] for cmd in commands for i, arg in enumerate(cmd[:-1]) if arg == "--run-id"):
                found.append(task)
    return found


def run_cost(tasks: list[dict[str, Any]], events: list[dict[str, Any]], estimated: bool,
             prices: AwsPrices | None = None, requests: Mapping[str, int] | None = None) -> RunCost:
    """The run's cost from its tasks (``run_tasks``), its execution's history ``events`` and the
    ``requests`` counted; ``estimated``: the tasks ran on the embedded AWS (what they would cost
    on Fargate)."""
    prices = prices or AwsPrices.load()
    costs = [c for c in (task_cost(t, prices) for t in tasks) if c is not None]
    transitions = sum(1 for e in events if e["type"].endswith("StateEntered"))
    return _total(costs, transitions, request_cost(requests or {}, prices), estimated, prices)


def _total(costs: list[TaskCost], transitions: int, requests: RequestCost, estimated: bool, prices: AwsPrices) -> RunCost:
    fargate, steps = sum(c.usd for c in costs), transitions * prices.step_functions_per_1k_transitions / 1000
    return RunCost(costs, transitions, requests, fargate, steps, fargate + steps + requests.usd, estimated,
                   f"{prices.region} list prices as of {prices.as_of}")


def in_process_cost(step_seconds: Mapping[str, float], groups: Mapping[str, str], sizes: Mapping[str, tuple[int, int]],
                    partitions: int, requests: Mapping[str, int], prices: AwsPrices) -> RunCost:
    """What an in-process run would cost on Fargate Spot: each task group (``groups``: step name ->
    group) as one task of its size (``sizes``: group -> (cpu units, memory MiB)) for its steps'
    summed seconds (at least a minute each; the score group once per partition, its time shared),
    the state transitions a clean execution enters (Triggered, one per group, one per partition,
    Done), and the S3 and DynamoDB ``requests`` the run made.

    Raises:
        KeyError: a group has no size.
    """
    seconds: dict[str, float] = {}
    for step, s in step_seconds.items():
        if step in groups:
            seconds[groups[step]] = seconds.get(groups[step], 0.0) + s
    costs = []
    for group, total in seconds.items():
        copies = partitions if group == "score" else 1
        cpu, memory = sizes[group]
        fake = {"startedAt": _T0, "stoppedAt": _T0 + timedelta(seconds=total / copies), "cpu": cpu, "memory": memory,
                "capacityProviderName": "FARGATE_SPOT", "overrides": {"containerOverrides": [{"command": [group]}]}}
        costs += [c for c in [task_cost(fake, prices)] * copies if c is not None]
    transitions = 2 + len(seconds) + partitions
    return _total(costs, transitions, request_cost(requests, prices), True, prices)


_T0 = datetime(2000, 1, 1, tzinfo=timezone.utc)


def publish_cost(cloudwatch: Any, sns: Any, namespace: str, topic_arn: str, environment: str, model: str, run_id: str,
                 cost: RunCost, budget_usd: float) -> dict[str, Any] | None:
    """Publish ``RunCostUSD`` (dimensions Environment, Model) for the run and, when it cost more
    than ``budget_usd`` (``stagewise:costBudgetPerRunUsd``), an alert (event ``run.over_budget``)
    to the alert topic, as the environment's ``run-cost`` alarm does on AWS (the embedded AWS
    evaluates no alarms). Returns the alert's summary (``{"topic_arn", "subject", "message_id"}``)
    or None.

    Raises:
        botocore.exceptions.ClientError: CloudWatch or SNS refused.
    """
    publish(cloudwatch, [Datum(m.RUN_COST_USD, cost.total_usd, "None", m.model_dimensions(environment, model))], namespace)
    if cost.total_usd <= budget_usd:
        return None
    alert = Alert(
        event="run.over_budget", title=f"Run cost {cost.total_usd:.4f} USD, over the budget of {budget_usd:g} USD",
        environment=environment, model=model, run_id=run_id, severity="warning",
        details=f"Run {run_id} of {model} in {environment} {cost.line()}.",
        numbers={"cost_usd": round(cost.total_usd, 6), "budget_usd": budget_usd, "tasks": len(cost.tasks)},
        next_steps="Check the task sizes (stagewise:taskSizes), retries and on-demand fallbacks, and the data volume; "
                   "raise stagewise:costBudgetPerRunUsd if the cost is expected.",
    )
    return {"topic_arn": topic_arn, "subject": alert.subject, "message_id": publish_alert(sns, topic_arn, alert),
            "event": alert.event}
