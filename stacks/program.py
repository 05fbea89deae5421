"""Build one Stagewise environment: an explicit AWS provider for the stack's account, then the
components, in dependency order. ``stacks/__main__.py`` calls ``deploy`` with the stack's settings."""

from __future__ import annotations

from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws

from stagewise.platform.components.access import Access, AccessArgs
from stagewise.platform.components.compute import Compute, ComputeArgs
from stagewise.platform.components.monitoring import Monitoring, MonitoringArgs
from stagewise.platform.components.network import Network, NetworkArgs
from stagewise.platform.components.observability import CrossAccountObservability, ObservabilityArgs
from stagewise.platform.components.orchestration import PipelineStateMachine, PipelineStateMachineArgs
from stagewise.platform.components.registry_table import RegistryTable, RegistryTableArgs
from stagewise.platform.components.results_catalog import ResultsCatalog, ResultsCatalogArgs
from stagewise.platform import declarations
from stagewise.platform.resources import environment_resources
from stagewise.platform.components.storage import Storage, StorageArgs
from stagewise.pipeline.spec import builtin_spec_names, load_spec
from stagewise.stacks.settings import EnvironmentSettings

REPO_ROOT = Path(__file__).resolve().parent.parent


def provider(settings: EnvironmentSettings) -> aws.Provider:
    """The AWS provider of the stack's account: assumes the stack's role(s), refuses any account
    but the stack's, and tags every resource with the stack's default tags."""
    return aws.Provider(
        f"aws-{settings.environment}",
        region=settings.region,
        allowed_account_ids=list(settings.allowed_account_ids),
        assume_roles=[{"role_arn": r.role_arn, "session_name": r.session_name} for r in settings.assume_roles],
        default_tags={"tags": dict(settings.default_tags)},
    )


def deploy(settings: EnvironmentSettings, image_tag: str | None = None) -> dict[str, Any]:
    """Create every resource of the environment; returns the stack outputs (no secrets)."""
    res = environment_resources(settings)
    opts = pulumi.ResourceOptions(provider=provider(settings))
    env = settings.environment
    storage = Storage(declarations.component_name(env, "storage"),
                      StorageArgs(buckets=res.buckets, deletion_protection=settings.deletion_protection), opts=opts)
    registry = RegistryTable(declarations.component_name(env, "registry"), RegistryTableArgs(table=res.registry_table), opts=opts)
    network = Network(declarations.component_name(env, "network"),
                      NetworkArgs(cidr=declarations.VPC_CIDR, availability_zones=declarations.availability_zones(settings.region)), opts=opts)
    monitoring = Monitoring(
        declarations.component_name(env, "monitoring"),
        MonitoringArgs(topic=res.alert_topic, environment=env, region=settings.region,
                       state_machine_arn=res.state_machine_arn, schedule=settings.schedule, agent_limits=settings.agent_alarms,
                       cost_budget_usd=settings.cost_budget_per_run_usd),
        opts=opts,
    )
    compute = Compute(
        declarations.component_name(env, "compute"),
        ComputeArgs(
            names=res.compute, environment=env, region=settings.region, account_id=settings.account_id,
            partition=settings.partition, task_sizes=settings.task_sizes, log_retention_days=settings.log_retention_days,
            context=REPO_ROOT, image_tag=image_tag or package_version("stagewise"),
            data_bucket_arn=storage.arns["data"], artifact_bucket_arn=storage.arns["artifacts"],
            table_arn=registry.arn, topic_arn=monitoring.topic_arn, metrics_namespace=res.metrics_namespace,
            heartbeat_interval_seconds=settings.heartbeat_interval_seconds, rows_per_partition=settings.rows_per_partition,
        ),
        opts=opts,
    )
    pipeline = PipelineStateMachine(
        declarations.component_name(env, "pipeline"),
        PipelineStateMachineArgs(
            settings=settings, resources=res, task_definition_arns=compute.task_definition_arns,
            task_definition_family_arns=compute.task_definition_family_arns, cluster_arn=compute.cluster_arn,
            pass_role_arns=list(compute.role_arns.values()), subnet_ids=network.subnet_ids,
            security_group_id=network.security_group_id,
        ),
        opts=opts,
    )
    access = Access(
        declarations.component_name(env, "access"),
        AccessArgs(
            environment=env, account_id=settings.account_id, partition=settings.partition,
            tooling_account_id=settings.tooling_account_id, artifact_bucket_arn=storage.arns["artifacts"],
            table_arn=registry.arn, topic_arn=monitoring.topic_arn, ssm_prefix=res.compute.ssm_prefix,
            state_machine_arn=res.state_machine_arn,
            parameters=declarations.ssm_parameters(
                data_bucket=storage.names["data"], artifact_bucket=storage.names["artifacts"],
                registry_table=registry.name, alert_topic_arn=monitoring.topic_arn, cluster_arn=compute.cluster_arn,
                state_machine_arn=pipeline.arn, task_definition_arns=compute.task_definition_arns),
        ),
        opts=opts,
    )
    results = ResultsCatalog(
        declarations.component_name(env, "results"),
        ResultsCatalogArgs(environment=env, data_bucket=res.data_bucket.name,
                           specs=[load_spec(n) for n in builtin_spec_names()]),
        opts=opts,
    )
    outputs: dict[str, Any] = {}
    if settings.observability is not None:
        observability = CrossAccountObservability(
            declarations.component_name(env, "observability"),
            ObservabilityArgs(environment=env, account_id=settings.account_id, region=settings.region,
                              partition=settings.partition, settings=settings.observability),
            opts=opts)
        if observability.sink_arn is not None:
            outputs["oam_sink_arn"] = observability.sink_arn
    return {
        **outputs,
        "environment": env,
        "account_id": settings.account_id,
        "region": settings.region,
        "data_bucket": storage.names["data"],
        "artifact_bucket": storage.names["artifacts"],
        "registry_table": registry.name,
        "alert_topic_arn": monitoring.topic_arn,
        "dashboard": monitoring.dashboard.dashboard_name,
        "state_machine_arn": pipeline.arn,
        "cluster_arn": compute.cluster_arn,
        "image": compute.image_ref,
        "deployer_role_arn": access.deployer_arn,
        "promoter_role_arn": access.promoter_arn,
        "reader_role_arn": access.reader_arn,
        "glue_database": results.database.name,
        "athena_workgroup": results.workgroup.name,
    }
