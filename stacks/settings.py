"""Typed per-environment settings, read from the Pulumi stack file ``Pulumi.<env>.yaml``.

The stack file is the only place where dev, test and prod differ. One model, ``EnvironmentSettings``,
reads it for both the Pulumi program and the runtime (``stagewise run``), so the account, region,
role, alert e-mails, rollout plan and task sizes can never disagree between what is deployed and
what runs.

Keys read (Pulumi config, ``<namespace>:<key>``):
    aws:region, aws:allowedAccountIds, aws:assumeRoles (list of {roleArn, sessionName}),
    aws:defaultTags ({tags: {...}}), and under ``stagewise:``: environment, accountId,
    toolingAccountId, alertEmails, rolloutPlan, bake, taskSizes, logRetentionDays, deletionProtection,
    schedule, scoringConcurrency, rowsPerPartition, taskHeartbeatSeconds, taskRetryIntervalSeconds,
    agentAlarms, costBudgetPerRunUsd, prices, observability.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from stagewise.platform.contract import ExitCode, StagewiseError
from stagewise.platform.strict import StrictModel

ENVIRONMENTS = ("dev", "test", "prod")
ACCOUNT_ID = r"^\d{12}$"
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
"""An e-mail address as the alert topic takes it: something@domain.tld, no spaces (stack files and
``stagewise alerts subscribe`` check it alike)."""
EMAIL_MAX_LENGTH = 254  # RFC 5321 path limit
_ROLE_ARN = re.compile(r"^arn:(aws|aws-cn|aws-us-gov):iam::(\d{12}):role/[\w+=,.@/-]+$")
# Fargate's valid (cpu units, memory MiB) pairs: https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task-cpu-memory-error.html
_FARGATE_MEMORY = {
    256: range(512, 2049, 512),
    512: range(1024, 4097, 1024),
    1024: range(2048, 8193, 1024),
    2048: range(4096, 16385, 1024),
    4096: range(8192, 30721, 1024),
    8192: range(16384, 61441, 4096),
    16384: range(32768, 122881, 8192),
}


class SettingsError(StagewiseError, ValueError):
    """A stack file is missing or a setting in it is invalid; the message names the file and key.
    Exit 4."""

    exit_code = ExitCode.BAD_INPUT


class AssumeRole(StrictModel):
    """The role the Pulumi AWS provider and the runtime assume in the environment's account."""

    role_arn: Annotated[str, Field(alias="roleArn")]
    session_name: Annotated[str, Field(alias="sessionName", min_length=2, max_length=64)] = (
        "stagewise"
    )

    @field_validator("role_arn")
    @classmethod
    def _arn(cls, v: str) -> str:
        if not _ROLE_ARN.match(v):
            raise ValueError(f"not an IAM role ARN: {v!r}")
        return v

    @property
    def account_id(self) -> str:
        """The 12-digit account id the role lives in."""
        m = _ROLE_ARN.match(self.role_arn)
        assert m is not None
        return m.group(2)

    @property
    def partition(self) -> str:
        """The ARN partition of the role (``aws``, ``aws-cn``, ``aws-us-gov``)."""
        return self.role_arn.split(":")[1]


class TaskSize(StrictModel):
    """Fargate task size: ``cpu`` in CPU units (1024 = 1 vCPU) and memory in MiB."""

    cpu: int
    memory_mib: Annotated[int, Field(alias="memoryMiB")]

    @model_validator(mode="after")
    def _fargate(self) -> "TaskSize":
        allowed = _FARGATE_MEMORY.get(self.cpu)
        if allowed is None:
            raise ValueError(f"cpu {self.cpu} is not a Fargate size; use one of {sorted(_FARGATE_MEMORY)}")
        if self.memory_mib not in allowed:
            raise ValueError(
                f"memoryMiB {self.memory_mib} is not valid with cpu {self.cpu}; "
                f"Fargate allows {allowed.start}..{allowed.stop - 1} in steps of {allowed.step}"
            )
        return self


class TaskSizes(StrictModel):
    """Task size of each heavy pipeline step."""

    validate_: Annotated[TaskSize, Field(alias="validate")]
    train: TaskSize
    score: TaskSize


class Bake(StrictModel):
    """What each rollout step must run before it may advance: minutes and scoring runs."""

    min_minutes: Annotated[float, Field(alias="minMinutes", ge=0)] = 0
    min_scoring_runs: Annotated[int, Field(alias="minScoringRuns", ge=0)] = 1


class AgentAlarms(StrictModel):
    """When an agent's alarms trip (per agent, over its calls): error rate above ``maxErrorRate``
    (0..1) over 15 minutes, p95 latency above ``p95LatencyMs`` (milliseconds) over 15 minutes, cost
    above ``dailyBudgetUsd`` (USD) in a day."""

    max_error_rate: Annotated[float, Field(alias="maxErrorRate", gt=0, le=1)] = 0.05
    p95_latency_ms: Annotated[float, Field(alias="p95LatencyMs", gt=0)] = 20_000
    daily_budget_usd: Annotated[float, Field(alias="dailyBudgetUsd", gt=0)] = 50.0


class Observability(StrictModel):
    """CloudWatch cross-account observability (OAM): one monitoring account sees the metrics and
    logs of dev, test and prod side by side.

    Attributes:
        monitoring_account_id: the account that holds the OAM sink and the fleet dashboard.
        create_sink: this stack creates the sink, its policy (the ``accounts`` may link) and the
            fleet dashboard in the monitoring account (through its ``stagewise-deployer`` role).
            Set it in one stack; deploy that one first.
        sink_arn: the sink's ARN (that stack's ``oam_sink_arn`` output): this environment links
            its metrics and logs to it. Unset: no link yet.
        accounts: environment -> account id of every environment that may link (for the sink
            policy and the dashboard's per-account lines).
    """

    monitoring_account_id: Annotated[str, Field(alias="monitoringAccountId", pattern=ACCOUNT_ID)]
    create_sink: Annotated[bool, Field(alias="createSink")] = False
    sink_arn: Annotated[str | None, Field(alias="sinkArn", pattern=r"^arn:aws[\w-]*:oam:[\w-]+:\d{12}:sink/[\w-]+$")] = None
    accounts: dict[str, Annotated[str, Field(pattern=ACCOUNT_ID)]] = {}


PriceKey = Literal["fargate_vcpu_hour", "fargate_gb_hour", "fargate_spot_discount", "step_functions_per_1k_transitions",
                   "s3_per_1k_put", "s3_per_1k_get", "dynamodb_per_million_write", "dynamodb_per_million_read"]
"""The prices a stack may override (``stagewise:prices``; USD, the discount a fraction 0..1): the
keys of ``pipeline/specs/aws_prices.json``'s ``prices``."""


class EnvironmentSettings(StrictModel):
    """Everything that differs between dev, test and prod, read from ``Pulumi.<env>.yaml``.

    Attributes:
        environment: ``dev``, ``test`` or ``prod``.
        account_id: the environment's 12-digit AWS account id.
        region: AWS region, e.g. ``eu-west-1``.
        allowed_account_ids: the provider refuses any other account (Pulumi ``aws:allowedAccountIds``).
        assume_roles: roles to assume, in order (Pulumi ``aws:assumeRoles``); the last one must be
            in ``account_id``.
        default_tags: tags applied to every resource (Project, Environment, CostCenter, ManagedBy).
        tooling_account_id: the account CI/CD and promoters come from (trusted by the stack's roles).
        alert_emails: addresses subscribed to the environment's SNS alert topic.
        rollout_plan: traffic steps in percent, strictly increasing, ending at 100 (e.g. ``[10, 50, 100]``).
        bake: what each step must run before it advances (batch scoring runs on the schedule, so
            ``minScoringRuns: 2`` on a daily schedule is two days).
        task_sizes: Fargate sizes of the validate, train and score tasks.
        log_retention_days: CloudWatch Logs retention of the job log groups, in days.
        deletion_protection: protect the registry table and buckets from deletion.
        schedule: EventBridge schedule expression of the pipeline (``cron(...)`` or ``rate(...)``).
        scoring_concurrency: how many scoring partitions run at once.
        rows_per_partition: rows of input per scoring partition (whole Parquet row groups; the
            in-process runner's default too, ``$STAGEWISE_ROWS_PER_PARTITION`` overrides it there).
        task_heartbeat_seconds: a job task that sends no ``SendTaskHeartbeat`` for this long fails
            with ``States.HeartbeatTimeout`` and is retried (a task killed outright, e.g. out of
            memory, is noticed only this way). The container beats every fifth of it.
        task_retry_interval_seconds: wait before the first retry of a Spot interruption, heartbeat
            timeout or ECS API error (doubled before the second).
        agent_alarms: thresholds of each monitored agent's alarms (``AgentAlarms``).
        cost_budget_per_run_usd: a run that costs more (USD) alerts, and the environment's
            ``RunCostUSD`` alarm fires (the seed's target: under 20 USD for 100,000 rows).
        prices: price overrides (``PriceKey`` -> USD), e.g. a negotiated Fargate rate.
        observability: CloudWatch cross-account observability (``Observability``), or None.
    """

    environment: Annotated[str, Field(pattern="^(dev|test|prod)$")]
    account_id: Annotated[str, Field(pattern=ACCOUNT_ID)]
    region: Annotated[str, Field(pattern=r"^[a-z]{2}(-gov)?-[a-z]+-\d$")]
    allowed_account_ids: tuple[Annotated[str, Field(pattern=ACCOUNT_ID)], ...]
    assume_roles: tuple[AssumeRole, ...]
    default_tags: dict[str, str]
    tooling_account_id: Annotated[str, Field(pattern=ACCOUNT_ID)]
    alert_emails: tuple[Annotated[str, Field(pattern=EMAIL_PATTERN)], ...]
    rollout_plan: tuple[Annotated[int, Field(gt=0, le=100)], ...]
    bake: Bake = Bake()
    task_sizes: TaskSizes
    log_retention_days: Annotated[int, Field(gt=0)] = 30
    deletion_protection: bool = False
    schedule: Annotated[str, Field(pattern=r"^(cron|rate)\(.+\)$")] = "rate(1 day)"
    scoring_concurrency: Annotated[int, Field(ge=1, le=1000)] = 4
    rows_per_partition: Annotated[int, Field(ge=1)] = 1_000_000
    task_heartbeat_seconds: Annotated[int, Field(ge=5, le=86_400)] = 300
    task_retry_interval_seconds: Annotated[int, Field(ge=1, le=3_600)] = 30
    agent_alarms: AgentAlarms = AgentAlarms()
    cost_budget_per_run_usd: Annotated[float, Field(gt=0)] = 20.0
    prices: dict[PriceKey, Annotated[float, Field(ge=0)]] = {}
    observability: Observability | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "EnvironmentSettings":
        if self.account_id not in self.allowed_account_ids:
            raise ValueError(
                f"accountId {self.account_id} is not in aws:allowedAccountIds {list(self.allowed_account_ids)}"
            )
        if not self.assume_roles:
            raise ValueError("aws:assumeRoles must name at least one role")
        if self.assume_roles[-1].account_id != self.account_id:
            raise ValueError(
                f"the last role in aws:assumeRoles ({self.assume_roles[-1].role_arn}) is not in "
                f"account {self.account_id}"
            )
        plan = list(self.rollout_plan)
        if not plan or plan[-1] != 100:
            raise ValueError(f"rolloutPlan must end at 100, got {plan}")
        if any(b <= a for a, b in zip(plan, plan[1:])):
            raise ValueError(f"rolloutPlan steps must strictly increase, got {plan}")
        missing = {"Project", "Environment", "CostCenter", "ManagedBy"} - set(self.default_tags)
        if missing:
            raise ValueError(f"aws:defaultTags.tags is missing {sorted(missing)}")
        return self

    @property
    def heartbeat_interval_seconds(self) -> int:
        """How often the job container calls ``SendTaskHeartbeat`` (seconds): a fifth of
        ``task_heartbeat_seconds``, so four beats may be lost before the task times out."""
        return max(1, self.task_heartbeat_seconds // 5)

    @property
    def role(self) -> AssumeRole:
        """The role that lands in the environment's account (the last of ``assume_roles``)."""
        return self.assume_roles[-1]

    @property
    def partition(self) -> str:
        """ARN partition of the environment (from its role ARN, never hard-coded)."""
        return self.role.partition


def stack_file(env: str, root: Path | None = None) -> Path:
    """Path of ``Pulumi.<env>.yaml`` in ``root`` (default: the project root found from cwd)."""
    return (root or find_project_root()) / f"Pulumi.{env}.yaml"


def find_project_root(start: Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default cwd) holding ``Pulumi.yaml``.

    Falls back to the folder this package was installed from (an editable install of the repo).

    Raises:
        SettingsError: no ``Pulumi.yaml`` was found.
    """
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "Pulumi.yaml").is_file():
            return folder
    repo = Path(__file__).resolve().parent.parent
    if (repo / "Pulumi.yaml").is_file():
        return repo
    raise SettingsError(
        f"no Pulumi.yaml in {here} or above; run from the Stagewise project folder or pass --project-dir"
    )


def load_settings(env: str, root: Path | None = None) -> EnvironmentSettings:
    """Read and validate the settings of environment ``env`` from its stack file.

    Args:
        env: ``dev``, ``test`` or ``prod``.
        root: folder holding ``Pulumi.yaml`` and the stack files (default: found from cwd).

    Raises:
        SettingsError: unknown environment, missing file, invalid YAML, or an invalid setting (the
            message names the Pulumi config key).
    """
    if env not in ENVIRONMENTS:
        raise SettingsError(f"unknown environment {env!r}; choose one of {', '.join(ENVIRONMENTS)}")
    path = stack_file(env, root)
    if not path.is_file():
        raise SettingsError(f"stack file {path} does not exist")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise SettingsError(f"{path}: not valid YAML: {e}") from e
    config = doc.get("config") or {}
    if not isinstance(config, dict):
        raise SettingsError(f"{path}: 'config' must be a mapping")
    return settings_from_config(config, origin=str(path))


def settings_from_config(config: dict[str, Any], origin: str = "config") -> EnvironmentSettings:
    """Build settings from a flat Pulumi config mapping (``{"aws:region": ..., "stagewise:...": ...}``).

    The Pulumi program calls this with the values of ``pulumi.Config``; ``load_settings`` with the
    stack file's ``config`` block.

    Raises:
        SettingsError: a setting is invalid or missing; the message names the Pulumi key.
    """
    raw = {
        "environment": config.get("stagewise:environment"),
        "account_id": config.get("stagewise:accountId"),
        "region": config.get("aws:region"),
        "allowed_account_ids": config.get("aws:allowedAccountIds"),
        "assume_roles": config.get("aws:assumeRoles"),
        "default_tags": (config.get("aws:defaultTags") or {}).get("tags"),
        "tooling_account_id": config.get("stagewise:toolingAccountId"),
        "alert_emails": config.get("stagewise:alertEmails", []),
        "rollout_plan": config.get("stagewise:rolloutPlan"),
        "bake": config.get("stagewise:bake"),
        "task_sizes": config.get("stagewise:taskSizes"),
        "log_retention_days": config.get("stagewise:logRetentionDays"),
        "deletion_protection": config.get("stagewise:deletionProtection"),
        "schedule": config.get("stagewise:schedule"),
        "scoring_concurrency": config.get("stagewise:scoringConcurrency"),
        "rows_per_partition": config.get("stagewise:rowsPerPartition"),
        "task_heartbeat_seconds": config.get("stagewise:taskHeartbeatSeconds"),
        "task_retry_interval_seconds": config.get("stagewise:taskRetryIntervalSeconds"),
        "agent_alarms": config.get("stagewise:agentAlarms"),
        "cost_budget_per_run_usd": config.get("stagewise:costBudgetPerRunUsd"),
        "prices": config.get("stagewise:prices"),
        "observability": config.get("stagewise:observability"),
    }
    raw = {k: v for k, v in raw.items() if v is not None}
    try:
        return EnvironmentSettings.model_validate(raw)
    except ValidationError as e:
        raise SettingsError(f"{origin}: {_describe(e)}") from e


_KEYS = {
    "environment": "stagewise:environment",
    "account_id": "stagewise:accountId",
    "region": "aws:region",
    "allowed_account_ids": "aws:allowedAccountIds",
    "assume_roles": "aws:assumeRoles",
    "default_tags": "aws:defaultTags.tags",
    "tooling_account_id": "stagewise:toolingAccountId",
    "alert_emails": "stagewise:alertEmails",
    "rollout_plan": "stagewise:rolloutPlan",
    "bake": "stagewise:bake",
    "task_sizes": "stagewise:taskSizes",
    "log_retention_days": "stagewise:logRetentionDays",
    "deletion_protection": "stagewise:deletionProtection",
    "schedule": "stagewise:schedule",
    "scoring_concurrency": "stagewise:scoringConcurrency",
    "rows_per_partition": "stagewise:rowsPerPartition",
    "task_heartbeat_seconds": "stagewise:taskHeartbeatSeconds",
    "task_retry_interval_seconds": "stagewise:taskRetryIntervalSeconds",
    "agent_alarms": "stagewise:agentAlarms",
    "cost_budget_per_run_usd": "stagewise:costBudgetPerRunUsd",
    "prices": "stagewise:prices",
    "observability": "stagewise:observability",
}


def _describe(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = [str(p) for p in err["loc"]]
        key = _KEYS.get(loc[0], loc[0]) if loc else "<settings>"
        rest = ".".join(loc[1:])
        where = f"{key}.{rest}" if rest else key
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if loc else msg)
    return "; ".join(parts)
