"""Specifications of an environment's AWS resources: one source for Pulumi and the embedded AWS.

The Pulumi components (``stagewise.platform.*``) and the local provisioner
(``stagewise.platform.runtime.provision``) both build resources from these plain dataclasses, so a bucket
name, a table key schema or a topic name is written once. Nothing here imports Pulumi or boto3.

Names are derived from the environment and account id: S3 bucket names are global, so they carry
the account id; everything else is per account and carries the environment name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stagewise.stacks.settings import EnvironmentSettings

METRICS_NAMESPACE = "Stagewise"


@dataclass(frozen=True)
class LifecycleRule:
    """Expire objects under ``prefix`` after ``expire_days`` days (0: never), and noncurrent
    versions after ``noncurrent_days`` days."""

    id: str
    prefix: str
    expire_days: int = 0
    noncurrent_days: int = 30


@dataclass(frozen=True)
class BucketSpec:
    """An S3 bucket: SSE (AES256 or KMS), versioning, all public access blocked, TLS-only policy."""

    role: str
    name: str
    versioning: bool = True
    sse_algorithm: str = "AES256"
    lifecycle: tuple[LifecycleRule, ...] = ()
    eventbridge: bool = False  # send the bucket's events to EventBridge (the data bucket: runs start when data lands)


@dataclass(frozen=True)
class KeyAttribute:
    """A DynamoDB key attribute: ``type`` is ``S``, ``N`` or ``B``."""

    name: str
    type: str = "S"


@dataclass(frozen=True)
class IndexSpec:
    """A DynamoDB global secondary index projecting all attributes."""

    name: str
    hash_key: KeyAttribute
    range_key: KeyAttribute


@dataclass(frozen=True)
class TableSpec:
    """The registry's single DynamoDB table (on-demand billing, PITR, optional deletion protection).

    Item layout (see ``stagewise.registry.dynamodb``): ``pk = "MODEL#<name>"`` with
    ``sk = "MODEL"`` (the model record), ``"VERSION#<000001>"`` (immutable versions),
    ``"EVENT#<revision>"`` (audit events, one per revision), ``"TOKEN#<idempotency token>"`` (idempotency
    markers). The ``by-kind`` index lists models by kind (``gsi1pk = "KIND#model"``).
    """

    name: str
    hash_key: KeyAttribute
    range_key: KeyAttribute
    indexes: tuple[IndexSpec, ...] = ()
    point_in_time_recovery: bool = True
    deletion_protection: bool = False

    @property
    def attributes(self) -> tuple[KeyAttribute, ...]:
        """Every attribute that appears in a key schema, each once (DynamoDB's AttributeDefinitions)."""
        seen: dict[str, KeyAttribute] = {}
        for a in (self.hash_key, self.range_key, *(k for i in self.indexes for k in (i.hash_key, i.range_key))):
            seen.setdefault(a.name, a)
        return tuple(seen.values())


@dataclass(frozen=True)
class TopicSpec:
    """The SNS topic alerts go to, with the e-mail addresses subscribed to it."""

    name: str
    emails: tuple[str, ...] = ()


CONTAINER_NAME = "job"
"""Name of the one container in every task definition (the state machine overrides its command)."""


@dataclass(frozen=True)
class ComputeNames:
    """Names of the compute and orchestration resources of one environment.

    Attributes:
        cluster: ECS cluster (capacity providers FARGATE_SPOT and FARGATE).
        repository: ECR repository of the job image.
        task_families: task group -> task definition family (``validate``, ``train``, ``score``).
        log_groups: task definition name -> CloudWatch Logs group.
        state_machine: the pipeline's Step Functions state machine.
        ssm_prefix: prefix of the SSM parameters exposing names and ARNs to the runtime.
    """

    cluster: str
    repository: str
    task_families: dict[str, str]
    log_groups: dict[str, str]
    state_machine: str
    ssm_prefix: str


@dataclass(frozen=True)
class EnvironmentResources:
    """Every named resource of one environment."""

    environment: str
    account_id: str
    region: str
    partition: str
    data_bucket: BucketSpec
    artifact_bucket: BucketSpec
    registry_table: TableSpec
    alert_topic: TopicSpec
    compute: ComputeNames
    metrics_namespace: str = METRICS_NAMESPACE
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def buckets(self) -> tuple[BucketSpec, ...]:
        """The data and artifact buckets."""
        return (self.data_bucket, self.artifact_bucket)

    @property
    def alert_topic_arn(self) -> str:
        """ARN of the alert topic (partition from the environment's role)."""
        return self.arn("sns", self.alert_topic.name)

    @property
    def reader_role_arn(self) -> str:
        """The environment's cross-account read-only role (``stagewise fleet``; the stack's ``Access`` component)."""
        return f"arn:{self.partition}:iam::{self.account_id}:role/stagewise-{self.environment}-reader"

    @property
    def promoter_role_arn(self) -> str:
        """The environment's cross-account promoter role (created by the stack's ``Access`` component)."""
        return f"arn:{self.partition}:iam::{self.account_id}:role/stagewise-{self.environment}-promoter"

    @property
    def state_machine_arn(self) -> str:
        """ARN of the pipeline state machine."""
        return self.arn("states", f"stateMachine:{self.compute.state_machine}")

    @property
    def table_arn(self) -> str:
        """ARN of the registry table."""
        return self.arn("dynamodb", f"table/{self.registry_table.name}")

    def bucket_arn(self, bucket: BucketSpec) -> str:
        """ARN of a bucket (S3 ARNs carry no region or account)."""
        return f"arn:{self.partition}:s3:::{bucket.name}"

    def arn(self, service: str, resource: str) -> str:
        """``arn:<partition>:<service>:<region>:<account>:<resource>`` for this environment."""
        return f"arn:{self.partition}:{service}:{self.region}:{self.account_id}:{resource}"


def registry_table_spec(name: str, deletion_protection: bool = False) -> TableSpec:
    """The registry table's key schema and indexes (see ``TableSpec`` for the item layout)."""
    return TableSpec(
        name=name,
        hash_key=KeyAttribute("pk"),
        range_key=KeyAttribute("sk"),
        indexes=(IndexSpec("by-kind", KeyAttribute("gsi1pk"), KeyAttribute("gsi1sk")),),
        deletion_protection=deletion_protection,
    )


def environment_resources(settings: EnvironmentSettings) -> EnvironmentResources:
    """Name and specify every resource of the environment described by ``settings``."""
    env, acct = settings.environment, settings.account_id
    prefix = f"stagewise-{env}"
    return EnvironmentResources(
        environment=env,
        account_id=acct,
        region=settings.region,
        partition=settings.partition,
        data_bucket=BucketSpec(
            role="data",
            name=f"{prefix}-data-{acct}",
            eventbridge=True,
            lifecycle=(
                LifecycleRule("raw-expiry", "raw/", expire_days=90),
                LifecycleRule("predictions-expiry", "predictions/", expire_days=180),
                # parts of runs that died before publishing (published runs delete their own)
                LifecycleRule("staging-expiry", "staging/", expire_days=1),
                LifecycleRule("results-expiry", "results/", expire_days=180),
                LifecycleRule("athena-results-expiry", "athena-results/", expire_days=30),
            ),
        ),
        artifact_bucket=BucketSpec(
            role="artifacts",
            name=f"{prefix}-artifacts-{acct}",
            lifecycle=(LifecycleRule("noncurrent-artifacts", "", noncurrent_days=90),),
        ),
        registry_table=registry_table_spec(f"{prefix}-registry", settings.deletion_protection),
        alert_topic=TopicSpec(name=f"{prefix}-alerts", emails=settings.alert_emails),
        compute=ComputeNames(
            cluster=prefix,
            repository=f"{prefix}-jobs",
            task_families={t: f"{prefix}-{t}" for t in ("validate", "train", "score")},
            log_groups={t: f"/stagewise/{env}/{t}" for t in ("validate", "train", "score")},
            state_machine=f"{prefix}-pipeline",
            ssm_prefix=f"/stagewise/{env}",
        ),
        tags=dict(settings.default_tags),
    )
