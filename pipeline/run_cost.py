"""What a state-machine run costs: its Fargate tasks and its Step Functions state transitions.

``run_cost`` finds the run's ECS tasks (their command names the run id: ``--run-id <id>``), and
prices each one's vCPU-seconds and GB-seconds (task-level ``cpu`` units / 1024 and ``memory``
MiB / 1024, over ``startedAt`` -> ``stoppedAt``, at least 60 s as Fargate bills) at on-demand
(``FARGATE``) or the Spot estimate (``FARGATE_SPOT``), and the execution's state transitions (one
per state entered in its history) at the Standard workflow price, from ``specs/aws_prices.json``
(source, date and region inside). On the embedded AWS the tasks are local processes, so the figure
is what the run would cost on Fargate. Not counted: S3 and DynamoDB requests, CloudWatch metrics,
data transfer, and the transitions of a Distributed Map's child executions (their history is not
the parent's).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from importlib import resources as package_files
from typing import Any

MIN_BILLED_SECONDS = 60.0


@dataclass(frozen=True)
class AwsPrices:
    """Fargate per vCPU-hour and GB-hour (on-demand; Spot = on-demand x (1 - discount)) and Step
    Functions Standard per 1,000 state transitions, in USD."""

    vcpu_hour: float
    gb_hour: float
    spot_discount: float
    per_1k_transitions: float
    source: str
    as_of: str
    region: str

    @classmethod
    def load(cls) -> "AwsPrices":
        """The table shipped with the package."""
        doc = json.loads(package_files.files("stagewise.pipeline.specs").joinpath("aws_prices.json").read_text())
        return cls(doc["fargate"]["vcpu_hour"], doc["fargate"]["gb_hour"], doc["fargate_spot_discount"],
                   doc["step_functions_standard_per_1k_transitions"], doc["source"], doc["as_of"], doc["region"])


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
    """A run's cost: its tasks, state transitions and the USD of each part and in total."""

    tasks: list[TaskCost]
    transitions: int
    fargate_usd: float
    transitions_usd: float
    total_usd: float
    estimated: bool
    prices: str
    not_counted: list[str] = field(default_factory=lambda: [
        "S3 and DynamoDB requests", "CloudWatch metrics", "data transfer", "Distributed Map child transitions"])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {**asdict(self), "vcpu_seconds": sum(t.vcpu_seconds for t in self.tasks),
                "gb_seconds": sum(t.gb_seconds for t in self.tasks)}


def task_cost(task: dict[str, Any], prices: AwsPrices) -> TaskCost | None:
    """The cost of one ``DescribeTasks`` task, or None if it never started or has not stopped."""
    started, stopped = task.get("startedAt"), task.get("stoppedAt")
    if not started or not stopped:
        return None
    seconds = max((stopped - started).total_seconds(), MIN_BILLED_SECONDS)
    vcpu, gb = int(task.get("cpu") or 0) / 1024, int(task.get("memory") or 0) / 1024
    provider = task.get("capacityProviderName") or "FARGATE"
    factor = 1 - prices.spot_discount if provider == "FARGATE_SPOT" else 1.0
    usd = (vcpu * seconds * prices.vcpu_hour + gb * seconds * prices.gb_hour) / 3600 * factor
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
             prices: AwsPrices | None = None) -> RunCost:
    """The run's cost from its tasks (``run_tasks``) and its execution's history ``events``;
    ``estimated``: the tasks ran on the embedded AWS (what they would cost on Fargate)."""
    prices = prices or AwsPrices.load()
    costs = [c for c in (task_cost(t, prices) for t in tasks) if c is not None]
    transitions = sum(1 for e in events if e["type"].endswith("StateEntered"))
    fargate, steps = sum(c.usd for c in costs), transitions * prices.per_1k_transitions / 1000
    return RunCost(costs, transitions, fargate, steps, fargate + steps, estimated,
                   f"{prices.region} list prices as of {prices.as_of}")
