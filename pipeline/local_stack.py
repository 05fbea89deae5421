"""The stack of one environment as data, for local provisioning on the embedded AWS.

``stack_declaration`` assembles a ``platform.declarations.StackDeclaration`` from the same builders
the Pulumi components call: role names and trust documents (``platform.declarations``), policy
documents (``platform.policies``), container definitions and sizes, the compiled state machine
(``pipeline.asl``), the dashboard body (``monitoring.dashboard``) and the alarms
(``monitoring.alarms``). ARNs the components take from resources are built here from names, in the
form AWS gives them. ``provision_stack`` hands the declaration to
``platform.runtime.provision_stack.ensure_stack``. The parity test (``tests/test_parity.py``)
compares the result with the Pulumi program under mocks.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as package_version

from stagewise.monitoring.alarms import alarm_declarations
from stagewise.monitoring.dashboard import dashboard_json
from stagewise.pipeline.asl import compile_for_environment, map_run_labels, to_json
from stagewise.platform import declarations as d
from stagewise.platform import policies
from stagewise.platform.resources import EnvironmentResources
from stagewise.platform.runtime.environment import Environment
from stagewise.platform.runtime.provision import ProvisionAction
from stagewise.platform.runtime.provision_stack import cluster_arn, ensure_stack
from stagewise.stacks.settings import EnvironmentSettings


def _image_tag() -> str:
    try:
        return package_version("stagewise")
    except PackageNotFoundError:  # a source tree that is not installed
        return "dev"


def _roles(settings: EnvironmentSettings, res: EnvironmentResources) -> tuple[d.RoleDeclaration, ...]:
    env, part, acct = settings.environment, settings.partition, settings.account_id
    compute, pipeline, access = (d.component_name(env, p) for p in ("compute", "pipeline", "access"))
    data_arn, artifact_arn = res.bucket_arn(res.data_bucket), res.bucket_arn(res.artifact_bucket)
    ecs_trust, tooling = d.service_trust(d.ECS_TASKS), d.tooling_trust(part, settings.tooling_account_id)
    ssm_arn = d.ssm_parameters_arn(part, settings.region, acct, res.compute.ssm_prefix)
    roles = [
        d.RoleDeclaration(d.role_name(env, f"{t}-task"), ecs_trust, f"{compute}-{t}-policy", policies.task_role_policy(
            t, data_bucket_arn=data_arn, artifact_bucket_arn=artifact_arn, table_arn=res.table_arn,
            topic_arn=res.alert_topic_arn, ssm_parameters_arn=ssm_arn, metrics_namespace=res.metrics_namespace))
        for t in res.compute.task_families
    ]
    log_group_arns = [res.arn("logs", f"log-group:{g}") for g in res.compute.log_groups.values()]
    roles.append(d.RoleDeclaration(
        d.role_name(env, "task-execution"), ecs_trust, f"{compute}-execution-policy",
        policies.execution_role_policy(res.arn("ecr", f"repository/{res.compute.repository}"), log_group_arns)))
    # the roles the state machine passes to ECS: the task roles, then the execution role (Compute.role_arns)
    pass_roles = [d.role_arn(part, acct, r.name) for r in roles]
    families = [res.arn("ecs", f"task-definition/{f}") for f in res.compute.task_families.values()]
    roles += [
        d.RoleDeclaration(d.role_name(env, "state-machine"), d.service_trust(d.STATES), f"{pipeline}-policy",
                          policies.state_machine_policy(families, cluster_arn(res), pass_roles, res.alert_topic_arn,
                                                        res.state_machine_arn, list(map_run_labels()))),
        d.RoleDeclaration(d.role_name(env, "scheduler"), d.service_trust(d.SCHEDULER), f"{pipeline}-scheduler-policy",
                          policies.scheduler_policy(res.state_machine_arn)),
        d.RoleDeclaration(d.role_name(env, "trigger"), d.service_trust(d.EVENTS), f"{pipeline}-trigger-policy",
                          policies.scheduler_policy(res.state_machine_arn)),
        d.RoleDeclaration(d.role_name(env, "promoter"), tooling, f"{access}-promoter-policy",
                          policies.promoter_policy(artifact_arn, res.table_arn, res.alert_topic_arn),
                          max_session_duration=d.ROLE_MAX_SESSION_SECONDS),
        d.RoleDeclaration(d.role_name(env, "reader"), tooling, f"{access}-reader-policy",
                          policies.reader_policy(res.table_arn, res.state_machine_arn, artifact_arn),
                          max_session_duration=d.ROLE_MAX_SESSION_SECONDS),
        d.RoleDeclaration(d.role_name(env, "deployer"), tooling, f"{access}-deployer-iam",
                          policies.deployer_iam_policy(part, acct), tuple(d.deployer_managed_policy_arns(part)),
                          max_session_duration=d.ROLE_MAX_SESSION_SECONDS),
    ]
    return tuple(roles)


def stack_declaration(settings: EnvironmentSettings, res: EnvironmentResources, image_tag: str | None = None) -> d.StackDeclaration:
    """Everything ``ensure_stack`` creates for the environment, from the components' builders.

    Args:
        settings: the environment's settings.
        res: its resource names (``platform.resources.environment_resources(settings)``).
        image_tag: tag of the job image the task definitions name (default: the package version,
            as ``stacks.program.deploy``).
    """
    env, region = settings.environment, settings.region
    image = d.image_uri(settings.account_id, region, res.compute.repository, image_tag or _image_tag())
    task_definitions = {}
    for task, family in res.compute.task_families.items():
        cpu, memory = d.task_size(settings.task_sizes, task)
        task_definitions[task] = d.TaskDefinitionDeclaration(
            family=family, cpu=cpu, memory=memory,
            container_definitions=d.container_definitions(task, image=image, log_group=res.compute.log_groups[task],
                                                          environment=env, region=region,
                                                          heartbeat_interval_seconds=settings.heartbeat_interval_seconds,
                                                          rows_per_partition=settings.rows_per_partition),
            task_role=d.role_name(env, f"{task}-task"), execution_role=d.role_name(env, "task-execution"))
    network = d.component_name(env, "network")

    def definition(task_arns, subnets, groups) -> str:
        return to_json(compile_for_environment(settings, res, dict(task_arns), tuple(subnets), tuple(groups)))

    return d.StackDeclaration(
        resources=res,
        roles=_roles(settings, res),
        log_groups=dict(res.compute.log_groups),
        log_retention_days=settings.log_retention_days,
        task_definitions=task_definitions,
        network_name=network,
        vpc_cidr=d.VPC_CIDR,
        subnets=tuple(d.subnets(network, d.VPC_CIDR, d.availability_zones(region))),
        security_group=d.jobs_security_group(network),
        state_machine_role=d.role_name(env, "state-machine"),
        state_machine_log_group=d.state_machine_log_group(env),
        definition=definition,
        schedule=d.schedule(res, settings.schedule, d.SCHEDULED_MODEL),
        scheduler_role=d.role_name(env, "scheduler"),
        trigger=d.data_trigger(res, d.SCHEDULED_MODEL),
        trigger_role=d.role_name(env, "trigger"),
        dashboard_body=dashboard_json(env, region, res.state_machine_arn),
        alarms=tuple(a for _, a in alarm_declarations(env, d.MONITORED_MODELS, res.state_machine_arn, settings.schedule,
                                                      d.MONITORED_AGENTS, settings.agent_alarms,
                                                      settings.cost_budget_per_run_usd)),
    )


def provision_stack(conn: Environment, image_tag: str | None = None) -> list[ProvisionAction]:
    """Create the environment's whole stack on the embedded AWS (``ensure_stack``), after
    ``connect(..., provision=True)`` created its buckets, table and topic. One call when it is
    already there.

    Raises:
        ValueError: ``conn`` targets a real AWS account (the Pulumi stack owns those resources).
        botocore.exceptions.ClientError: an AWS call failed.
    """
    if not conn.embedded:
        raise ValueError("provision_stack creates resources on the embedded AWS only: on AWS, `pulumi up` does")
    return ensure_stack(conn.clients, stack_declaration(conn.settings, conn.resources, image_tag))
