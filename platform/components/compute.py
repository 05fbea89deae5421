"""Compute: the job image and where it runs (ECR, ECS on Fargate Spot, task definitions and roles)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pulumi_docker_build as docker_build

from stagewise.platform import declarations, policies
from stagewise.platform.resources import ComputeNames
from stagewise.stacks.settings import TaskSizes


@dataclass
class ComputeArgs:
    """What the job tasks need.

    Attributes:
        names: resource names (``platform.resources.ComputeNames``).
        environment, region, account_id, partition: where.
        task_sizes: Fargate cpu/memory of validate, train, score.
        log_retention_days: CloudWatch Logs retention.
        context: folder with the Dockerfile (the repository root).
        image_tag: tag of the job image (e.g. the package version or git sha).
        data_bucket_arn, artifact_bucket_arn, table_arn, topic_arn: what the task roles may use.
        metrics_namespace: the only CloudWatch namespace the tasks may publish to.
        heartbeat_interval_seconds: how often the container heartbeats (the stack setting
            ``taskHeartbeatSeconds`` / 5), in its environment.
        rows_per_partition: rows per scoring partition (``rowsPerPartition``), in its environment.
    """

    names: ComputeNames
    environment: str
    region: str
    account_id: str
    partition: str
    task_sizes: TaskSizes
    log_retention_days: int
    context: Path
    image_tag: str
    data_bucket_arn: pulumi.Input[str]
    artifact_bucket_arn: pulumi.Input[str]
    table_arn: pulumi.Input[str]
    topic_arn: pulumi.Input[str]
    metrics_namespace: str
    heartbeat_interval_seconds: int = 60
    rows_per_partition: int = 1_000_000


class Compute(pulumi.ComponentResource):
    """ECR repository (scan on push) with the job image built from the repo's Dockerfile
    (docker-build provider), an ECS cluster whose capacity providers are FARGATE_SPOT (default)
    and FARGATE, one log group, task role (least privilege) and task definition per job task,
    and the shared execution role. Outputs the cluster ARN, task definition ARNs, role ARNs, image ref."""

    def __init__(self, name: str, args: ComputeArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("stagewise:platform:Compute", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        n = args.names
        self.repository = aws.ecr.Repository(
            f"{name}-repository", name=n.repository, image_tag_mutability="IMMUTABLE",
            image_scanning_configuration={"scan_on_push": True}, encryption_configurations=[{"encryption_type": "AES256"}],
            force_delete=True, opts=child,
        )
        auth = aws.ecr.get_authorization_token_output(registry_id=self.repository.registry_id, opts=pulumi.InvokeOutputOptions(parent=self))
        self.image = docker_build.Image(
            f"{name}-image",
            context={"location": str(args.context)},
            dockerfile={"location": str(args.context / "Dockerfile")},
            platforms=["linux/amd64"],
            push=True,
            tags=[self.repository.repository_url.apply(lambda url: f"{url}:{args.image_tag}")],
            registries=[{"address": self.repository.repository_url, "username": auth.user_name, "password": auth.password}],
            opts=child,
        )
        self.image_ref = self.image.ref
        self.cluster = aws.ecs.Cluster(
            f"{name}-cluster", name=n.cluster, settings=[dict(s) for s in declarations.CLUSTER_SETTINGS], opts=child
        )
        aws.ecs.ClusterCapacityProviders(
            f"{name}-capacity", cluster_name=self.cluster.name, capacity_providers=list(declarations.CAPACITY_PROVIDERS),
            default_capacity_provider_strategies=[
                {"capacity_provider": declarations.DEFAULT_CAPACITY_PROVIDER, "weight": 1, "base": 0}],
            opts=child,
        )
        self.log_groups = {
            task: aws.cloudwatch.LogGroup(f"{name}-logs-{task}", name=group, retention_in_days=args.log_retention_days, opts=child)
            for task, group in n.log_groups.items()
        }
        self.execution_role = aws.iam.Role(
            f"{name}-execution-role", name=declarations.role_name(args.environment, "task-execution"),
            assume_role_policy=pulumi.Output.json_dumps(declarations.service_trust(declarations.ECS_TASKS)),
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-execution-policy", role=self.execution_role.id,
            policy=pulumi.Output.all(self.repository.arn, *[g.arn for g in self.log_groups.values()]).apply(
                lambda a: pulumi.Output.json_dumps(policies.execution_role_policy(a[0], list(a[1:])))),
            opts=pulumi.ResourceOptions(parent=self.execution_role),
        )
        ssm_arn = declarations.ssm_parameters_arn(args.partition, args.region, args.account_id, n.ssm_prefix)
        self.task_roles: dict[str, aws.iam.Role] = {}
        self.task_definitions: dict[str, aws.ecs.TaskDefinition] = {}
        for task, family in n.task_families.items():
            role = aws.iam.Role(
                f"{name}-{task}-role", name=declarations.role_name(args.environment, f"{task}-task"),
                assume_role_policy=pulumi.Output.json_dumps(declarations.service_trust(declarations.ECS_TASKS)),
                opts=child,
            )
            aws.iam.RolePolicy(
                f"{name}-{task}-policy", role=role.id,
                policy=pulumi.Output.all(args.data_bucket_arn, args.artifact_bucket_arn, args.table_arn, args.topic_arn).apply(
                    lambda a, task=task: pulumi.Output.json_dumps(policies.task_role_policy(
                        task, data_bucket_arn=a[0], artifact_bucket_arn=a[1], table_arn=a[2], topic_arn=a[3],
                        ssm_parameters_arn=ssm_arn, metrics_namespace=args.metrics_namespace))),
                opts=pulumi.ResourceOptions(parent=role),
            )
            cpu, memory = declarations.task_size(args.task_sizes, task)
            container = pulumi.Output.all(self.image_ref, self.log_groups[task].name).apply(
                lambda a, task=task: pulumi.Output.json_dumps(declarations.container_definitions(
                    task, image=a[0], log_group=a[1], environment=args.environment, region=args.region,
                    heartbeat_interval_seconds=args.heartbeat_interval_seconds, rows_per_partition=args.rows_per_partition)))
            self.task_definitions[task] = aws.ecs.TaskDefinition(
                f"{name}-{task}", family=family, cpu=str(cpu), memory=str(memory),
                network_mode="awsvpc", requires_compatibilities=["FARGATE"],
                runtime_platform={"operating_system_family": "LINUX", "cpu_architecture": "X86_64"},
                execution_role_arn=self.execution_role.arn, task_role_arn=role.arn, container_definitions=container,
                ephemeral_storage={"size_in_gib": declarations.EPHEMERAL_STORAGE_GIB}, opts=child,
            )
            self.task_roles[task] = role
        self.cluster_arn = self.cluster.arn
        self.task_definition_arns = {t: d.arn for t, d in self.task_definitions.items()}
        self.task_definition_family_arns = {
            t: f"arn:{args.partition}:ecs:{args.region}:{args.account_id}:task-definition/{f}" for t, f in n.task_families.items()
        }
        self.role_arns = {t: r.arn for t, r in self.task_roles.items()} | {"execution": self.execution_role.arn}
        self.register_outputs({
            "repository_url": self.repository.repository_url, "image_ref": self.image_ref, "cluster_arn": self.cluster_arn,
            "task_definition_arns": self.task_definition_arns, "role_arns": self.role_arns,
        })
