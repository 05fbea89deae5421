"""The stack's resources as data, written once: the Pulumi components and local provisioning
(``stagewise.platform.runtime.provision_stack``) both call these functions.

Each function returns plain data (names, trust documents, container definitions, sizes, network
layout, SSM parameters, schedule, alarms) from plain values. The Pulumi side calls them with
resolved ``Output`` values (inside ``apply``) or with names; local provisioning calls them with ARNs
built from names (``EnvironmentResources``), so a difference between the stack and the embedded AWS
can only come from the values handed in, which the parity test (``tests/test_parity.py``) compares.

Nothing here imports Pulumi or boto3.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stagewise.platform import policies
from stagewise.platform.contract import Env
from stagewise.platform.resources import CONTAINER_NAME, EnvironmentResources
from stagewise.stacks.settings import TaskSizes

Doc = dict[str, Any]

ECS_TASKS = "ecs-tasks.amazonaws.com"
STATES = "states.amazonaws.com"
SCHEDULER = "scheduler.amazonaws.com"
EVENTS = "events.amazonaws.com"
TASKS = ("validate", "train", "score")
SPOT_STOP_TIMEOUT = 120  # seconds: Fargate Spot's interruption notice; the job stops cleanly within it
CAPACITY_PROVIDERS = ("FARGATE_SPOT", "FARGATE")
DEFAULT_CAPACITY_PROVIDER = "FARGATE_SPOT"
CLUSTER_SETTINGS = ({"name": "containerInsights", "value": "enabled"},)
EPHEMERAL_STORAGE_GIB = 40
ROLE_MAX_SESSION_SECONDS = 3600
VPC_CIDR = "10.42.0.0/16"
JOBS_EGRESS = ({"protocol": "tcp", "from_port": 443, "to_port": 443, "cidr_blocks": ["0.0.0.0/0"],
                "description": "AWS APIs and ECR"},)
JOBS_SECURITY_GROUP_DESCRIPTION = "Stagewise job tasks: no inbound, HTTPS outbound"
STATE_MACHINE_LOG_LEVEL = "ERROR"
SCHEDULE_WINDOW_MINUTES = 15
SCHEDULE_RETRY = {"maximum_retry_attempts": 2, "maximum_event_age_in_seconds": 3600}
TRIGGER_RETRY = {"maximum_retry_attempts": 8, "maximum_event_age_in_seconds": 3600}


MONITORED_MODELS = ("engagement",)
MONITORED_AGENTS = ("engagement-analyst",)
"""The agents whose error rate, p95 latency and daily cost have alarms (``monitoring.alarms``)."""
"""Models whose alarms the stack creates."""
SCHEDULED_MODEL = "engagement"
"""The model the stack's schedule runs."""


def component_name(environment: str, part: str) -> str:
    """Pulumi name of one of the stack's components (``stagewise-<env>-<part>``): the prefix of its
    children's names, and locally the name of what has no AWS name of its own (subnets, policies)."""
    return f"stagewise-{environment}-{part}"


# ------------------------------------------------------------------------------ IAM roles
def role_name(environment: str, role: str) -> str:
    """Name of one of the stack's roles.

    Args:
        environment: ``dev``, ``test`` or ``prod``.
        role: ``validate-task``, ``train-task``, ``score-task``, ``task-execution``,
            ``state-machine``, ``scheduler``, ``trigger``, ``promoter`` or ``deployer`` (one per account, no
            environment in its name: the stack's ``aws:assumeRoles`` points at it).
    """
    return "stagewise-deployer" if role == "deployer" else f"stagewise-{environment}-{role}"


def role_arn(partition: str, account_id: str, name: str) -> str:
    """``arn:<partition>:iam::<account>:role/<name>``."""
    return f"arn:{partition}:iam::{account_id}:role/{name}"


def service_trust(service: str) -> Doc:
    """Trust policy of a role assumed by an AWS service (``ecs-tasks.amazonaws.com``, ...)."""
    return policies.assume_role_policy(service=service)


def tooling_trust(partition: str, tooling_account_id: str) -> Doc:
    """Trust policy of the cross-account roles (deployer, promoter): the tooling account's principals."""
    return policies.assume_role_policy(account_arn=f"arn:{partition}:iam::{tooling_account_id}:root")


def deployer_managed_policy_arns(partition: str) -> list[str]:
    """AWS managed policies of the deployer role (PowerUserAccess; IAM comes from its inline policy)."""
    return [f"arn:{partition}:iam::aws:policy/PowerUserAccess"]


def ssm_parameters_arn(partition: str, region: str, account_id: str, ssm_prefix: str) -> str:
    """ARN pattern of the environment's SSM parameters (what the task roles may read)."""
    return f"arn:{partition}:ssm:{region}:{account_id}:parameter{ssm_prefix}/*"


@dataclass(frozen=True)
class RoleDeclaration:
    """One IAM role: name, trust document, its inline policy (each role of the stack has one,
    named after the Pulumi ``RolePolicy``), managed policies and session length (None: AWS's default)."""

    name: str
    trust: Doc
    policy_name: str
    policy: Doc
    managed_policy_arns: tuple[str, ...] = ()
    max_session_duration: int | None = None


# ------------------------------------------------------------------------------ ECS
def task_size(sizes: TaskSizes, task: str) -> tuple[int, int]:
    """``(cpu units, memory MiB)`` of a job task.

    Raises:
        AttributeError: unknown task.
    """
    size = getattr(sizes, "validate_" if task == "validate" else task)
    return size.cpu, size.memory_mib


def container_definitions(task: str, *, image: str, log_group: str, environment: str, region: str,
                          heartbeat_interval_seconds: int, rows_per_partition: int) -> list[Doc]:
    """The one container of a job task definition: the job image, a placeholder command (the
    state machine overrides it with the task group and run), the environment the entrypoint reads
    (its environment name, ``STAGEWISE_IN_AWS=1``, how often it heartbeats in seconds, rows per
    scoring partition: the stack settings ``taskHeartbeatSeconds`` / 5 and ``rowsPerPartition``),
    the Spot stop timeout and awslogs logging."""
    return [{
        "name": CONTAINER_NAME,
        "image": image,
        "essential": True,
        "command": ["--help"],  # the state machine overrides it with the task group and run
        "stopTimeout": SPOT_STOP_TIMEOUT,
        "environment": [
            {"name": Env.ENVIRONMENT, "value": environment},
            {"name": Env.IN_AWS, "value": "1"},
            {"name": "AWS_REGION", "value": region},
            {"name": Env.HEARTBEAT_SECONDS, "value": str(heartbeat_interval_seconds)},
            {"name": Env.ROWS_PER_PARTITION, "value": str(rows_per_partition)},
        ],
        "logConfiguration": {"logDriver": "awslogs", "options": {
            "awslogs-group": log_group, "awslogs-region": region, "awslogs-stream-prefix": task}},
        "readonlyRootFilesystem": False,
    }]


@dataclass(frozen=True)
class TaskDefinitionDeclaration:
    """A job task definition (Fargate, awsvpc, Linux x86-64) and the roles it names."""

    family: str
    cpu: int
    memory: int
    container_definitions: list[Doc]
    task_role: str
    execution_role: str
    network_mode: str = "awsvpc"
    requires_compatibilities: tuple[str, ...] = ("FARGATE",)
    runtime_platform: Mapping[str, str] = field(
        default_factory=lambda: {"operating_system_family": "LINUX", "cpu_architecture": "X86_64"})
    ephemeral_storage_gib: int = EPHEMERAL_STORAGE_GIB


def image_uri(account_id: str, region: str, repository: str, tag: str) -> str:
    """``<account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>``."""
    return f"{account_id}.dkr.ecr.{region}.amazonaws.com/{repository}:{tag}"


# ------------------------------------------------------------------------------ network
@dataclass(frozen=True)
class SubnetDeclaration:
    """A public subnet: its Pulumi logical name (the ``Name`` tag locally), zone and CIDR."""

    logical_name: str
    availability_zone: str
    cidr: str


def subnets(name: str, cidr: str, availability_zones: Sequence[str]) -> list[SubnetDeclaration]:
    """One /20 per zone at the start of the VPC's /16 (``10.42.0.0/20``, ``10.42.16.0/20``, ...)."""
    base = cidr.split("/")[0].rsplit(".", 2)[0]
    return [SubnetDeclaration(f"{name}-public-{zone}", zone, f"{base}.{i * 16}.0/20") for i, zone in enumerate(availability_zones)]


def jobs_security_group(network: str) -> str:
    """Pulumi name of the job tasks' security group (its ``GroupName`` locally)."""
    return f"{network}-jobs"


def availability_zones(region: str) -> tuple[str, ...]:
    """The two zones the job subnets spread over."""
    return (f"{region}a", f"{region}b")


# ------------------------------------------------------------------------------ orchestration
def state_machine_log_group(environment: str) -> str:
    """CloudWatch Logs group of the state machine's ERROR-level logs."""
    return f"/stagewise/{environment}/state-machine"


@dataclass(frozen=True)
class ScheduleDeclaration:
    """The EventBridge Scheduler schedule starting the pipeline with the model's latest input."""

    name: str
    expression: str
    input: str
    window_minutes: int = SCHEDULE_WINDOW_MINUTES
    retry: Mapping[str, int] = field(default_factory=lambda: dict(SCHEDULE_RETRY))


def schedule(resources: EnvironmentResources, expression: str, model: str) -> ScheduleDeclaration:
    """The schedule of ``model``: ``stagewise-<env>-<model>``, input ``{run_id, data, model}``."""
    return ScheduleDeclaration(
        name=f"stagewise-{resources.environment}-{model}", expression=expression,
        input=json.dumps({
            "run_id": "<aws.scheduler.execution-id>",
            "data": f"s3://{resources.data_bucket.name}/incoming/{model}/latest.parquet",
            "model": model,
            "trigger": "schedule",  # claims its input: a file already processed is not run again
        }),
    )


@dataclass(frozen=True)
class TriggerDeclaration:
    """The EventBridge rule that starts the pipeline when an object lands under
    ``incoming/<model>/`` of the data bucket (the bucket sends its events to EventBridge), and its
    state machine target's input transformer.

    Attributes:
        event_pattern: the rule's pattern (JSON): ``Object Created`` in the bucket, key prefix.
        input_paths, input_template: the target's ``InputTransformer``: the execution input
            ``{"run_id": "s3-<event id>", "data": "s3://<bucket>/<key>", "model", "trigger": "s3"}``.
        retry: the target's retry policy (EventBridge retries a failed StartExecution).
    """

    name: str
    event_pattern: str
    input_paths: Mapping[str, str]
    input_template: str
    retry: Mapping[str, int] = field(default_factory=lambda: dict(TRIGGER_RETRY))


def data_trigger(resources: EnvironmentResources, model: str) -> TriggerDeclaration:
    """The data-landing rule of ``model``: ``stagewise-<env>-<model>-incoming``. The object key is
    passed as the event carries it (not URL-decoded: keep landing keys to letters, digits, ``-_./``)."""
    bucket = resources.data_bucket.name
    return TriggerDeclaration(
        name=f"stagewise-{resources.environment}-{model}-incoming",
        event_pattern=json.dumps({
            "source": ["aws.s3"], "detail-type": ["Object Created"],
            "detail": {"bucket": {"name": [bucket]}, "object": {"key": [{"prefix": f"incoming/{model}/"}]}},
        }),
        input_paths={"event": "$.id", "bucket": "$.detail.bucket.name", "key": "$.detail.object.key"},
        input_template=f'{{"run_id": "s3-<event>", "data": "s3://<bucket>/<key>", "model": "{model}", "trigger": "s3"}}',
    )


def ssm_parameters(*, data_bucket: Any, artifact_bucket: Any, registry_table: Any, alert_topic_arn: Any, cluster_arn: Any,
                   state_machine_arn: Any, task_definition_arns: Mapping[str, Any]) -> dict[str, Any]:
    """SSM String parameters (key under the environment's prefix -> value) through which the
    runtime finds the resources; values are strings or Pulumi outputs."""
    return {
        "data-bucket": data_bucket, "artifact-bucket": artifact_bucket, "registry-table": registry_table,
        "alert-topic-arn": alert_topic_arn, "cluster-arn": cluster_arn, "state-machine-arn": state_machine_arn,
        **{f"task-definition/{t}": arn for t, arn in task_definition_arns.items()},
    }


# ------------------------------------------------------------------------------ monitoring
def dashboard_name(environment: str) -> str:
    """Name of the environment's CloudWatch dashboard."""
    return f"stagewise-{environment}"


def alarm_name(environment: str, model: str, key: str) -> str:
    """Name of one of the environment's alarms (``stagewise-<env>-<model>-<key>``)."""
    return f"stagewise-{environment}-{model}-{key}"


@dataclass(frozen=True)
class AlarmDeclaration:
    """A CloudWatch metric alarm notifying the alert topic (fields as ``monitoring.alarms.AlarmSpec``;
    a ``statistic`` ``pNN`` is an extended statistic, ``extended`` says so)."""

    name: str
    description: str
    namespace: str
    metric: str
    dimensions: Mapping[str, str]
    statistic: str
    period: int
    evaluation_periods: int
    comparison: str
    threshold: float
    treat_missing_data: str

    @property
    def extended(self) -> bool:
        """The statistic is a percentile (``p95``): CloudWatch's ``ExtendedStatistic``."""
        return self.statistic.startswith("p")


# ------------------------------------------------------------------------------ the whole stack
@dataclass(frozen=True)
class StackDeclaration:
    """Everything local provisioning creates beyond ``provision.ensure_environment``'s buckets,
    table, topic and salt. Built by ``stagewise.pipeline.deployment.stack_declaration`` (which may
    read the ASL compiler, the dashboard and the alarms); read by ``provision_stack.ensure_stack``.

    Attributes:
        definition: ``(task definition ARNs by task, subnet ids, security group ids) -> ASL JSON``:
            the state machine's document once the ids it names exist.
    """

    resources: EnvironmentResources
    roles: tuple[RoleDeclaration, ...]
    log_groups: Mapping[str, str]
    log_retention_days: int
    task_definitions: Mapping[str, TaskDefinitionDeclaration]
    network_name: str
    vpc_cidr: str
    subnets: tuple[SubnetDeclaration, ...]
    security_group: str
    state_machine_role: str
    state_machine_log_group: str
    definition: Callable[[Mapping[str, str], Sequence[str], Sequence[str]], str]
    schedule: ScheduleDeclaration
    scheduler_role: str
    trigger: TriggerDeclaration
    trigger_role: str
    dashboard_body: str
    alarms: tuple[AlarmDeclaration, ...]
