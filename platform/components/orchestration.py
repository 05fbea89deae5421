"""Pipeline: the Step Functions state machine compiled from the pipeline definition, its role,
its logs, the EventBridge schedule that starts it, and the EventBridge rule that starts it when
data lands under ``incoming/<model>/`` of the data bucket (a triggered run claims its input first)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from stagewise.pipeline.asl import compile_for_environment, map_run_labels, to_json
from stagewise.platform import declarations, policies


@dataclass
class PipelineStateMachineArgs:
    """Everything the state machine needs.

    Attributes:
        settings, resources: the environment (``stacks.settings``, ``platform.resources``).
        task_definition_arns: task definition name -> ARN (from ``Compute``).
        task_definition_family_arns: task definition name -> family ARN (RunTask permission).
        cluster_arn: the ECS cluster.
        pass_role_arns: the task and execution roles the state machine passes to ECS.
        subnet_ids, security_group_id: where the tasks run (``Network``).
        model: the model the schedule runs.
    """

    settings: Any
    resources: Any
    task_definition_arns: dict[str, pulumi.Input[str]]
    task_definition_family_arns: dict[str, str]
    cluster_arn: pulumi.Input[str]
    pass_role_arns: list[pulumi.Input[str]]
    subnet_ids: list[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    model: str = declarations.SCHEDULED_MODEL


class PipelineStateMachine(pulumi.ComponentResource):
    """The state machine (definition from ``stagewise.pipeline.asl``, the same steps the local
    runner executes), an execution role limited to running the job tasks on its cluster and the
    child executions of its own Distributed Map, ERROR-level logs, and an EventBridge Scheduler
    schedule from the stack's ``schedule`` that starts it with the model's latest input
    (``s3://<data bucket>/incoming/<model>/latest.parquet``)."""

    def __init__(self, name: str, args: PipelineStateMachineArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        # the type was stagewise:platform:Pipeline: the alias keeps deployed stacks' URNs (no replacement)
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(aliases=[pulumi.Alias(type_="stagewise:platform:Pipeline")]))
        super().__init__("stagewise:platform:PipelineStateMachine", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        res, st = args.resources, args.settings
        env = st.environment
        role = aws.iam.Role(
            f"{name}-role", name=declarations.role_name(env, "state-machine"),
            assume_role_policy=json.dumps(declarations.service_trust(declarations.STATES)), opts=child,
        )
        # the state machine's own ARN from its name (the state machine depends on this role)
        aws.iam.RolePolicy(
            f"{name}-policy", role=role.id,
            policy=pulumi.Output.all(args.cluster_arn, *args.pass_role_arns).apply(
                lambda a: json.dumps(policies.state_machine_policy(
                    list(args.task_definition_family_arns.values()), a[0], list(a[1:]), res.alert_topic_arn,
                    res.state_machine_arn, list(map_run_labels())))),
            opts=pulumi.ResourceOptions(parent=role),
        )
        logs = aws.cloudwatch.LogGroup(f"{name}-logs", name=declarations.state_machine_log_group(env),
                                       retention_in_days=st.log_retention_days, opts=child)
        names = list(args.task_definition_arns)
        definition = pulumi.Output.all(*args.task_definition_arns.values(), *args.subnet_ids, args.security_group_id).apply(
            lambda a: to_json(compile_for_environment(
                st, res, dict(zip(names, a[: len(names)])), tuple(a[len(names):-1]), (a[-1],))))
        self.state_machine = aws.sfn.StateMachine(
            f"{name}-state-machine", name=res.compute.state_machine, role_arn=role.arn, definition=definition, type="STANDARD",
            logging_configuration={"level": declarations.STATE_MACHINE_LOG_LEVEL, "include_execution_data": False,
                                   "log_destination": logs.arn.apply(lambda arn: f"{arn}:*")},
            tracing_configuration={"enabled": True},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[role]),
        )
        scheduler_role = self._starter_role(name, env, "scheduler", declarations.SCHEDULER, child)
        schedule = declarations.schedule(res, st.schedule, args.model)
        self.schedule = aws.scheduler.Schedule(
            f"{name}-schedule", name=schedule.name, schedule_expression=schedule.expression,
            flexible_time_window={"mode": "FLEXIBLE", "maximum_window_in_minutes": schedule.window_minutes},
            target={"arn": self.state_machine.arn, "role_arn": scheduler_role.arn, "input": schedule.input,
                    "retry_policy": dict(schedule.retry)},
            opts=child,
        )
        trigger = declarations.data_trigger(res, args.model)
        trigger_role = self._starter_role(name, env, "trigger", declarations.EVENTS, child)
        self.trigger = aws.cloudwatch.EventRule(
            f"{name}-trigger", name=trigger.name, event_pattern=trigger.event_pattern,
            description=f"Start {res.compute.state_machine} when data lands under its incoming/ prefix", opts=child,
        )
        aws.cloudwatch.EventTarget(
            f"{name}-trigger-target", rule=self.trigger.name, target_id="state-machine", arn=self.state_machine.arn,
            role_arn=trigger_role.arn,
            input_transformer={"input_paths": dict(trigger.input_paths), "input_template": trigger.input_template},
            retry_policy={"maximum_retry_attempts": trigger.retry["maximum_retry_attempts"],
                          "maximum_event_age_in_seconds": trigger.retry["maximum_event_age_in_seconds"]},
            opts=pulumi.ResourceOptions(parent=self.trigger),
        )
        self.arn = self.state_machine.arn
        self.definition = definition
        self.register_outputs({"state_machine_arn": self.arn, "schedule": self.schedule.name})

    def _starter_role(self, name: str, env: str, role: str, service: str, child: pulumi.ResourceOptions) -> aws.iam.Role:
        """A role ``service`` (EventBridge Scheduler, EventBridge) assumes to start this state
        machine, and nothing else (``policies.scheduler_policy``)."""
        starter = aws.iam.Role(f"{name}-{role}-role", name=declarations.role_name(env, role),
                               assume_role_policy=json.dumps(declarations.service_trust(service)), opts=child)
        aws.iam.RolePolicy(
            f"{name}-{role}-policy", role=starter.id,
            policy=self.state_machine.arn.apply(lambda arn: json.dumps(policies.scheduler_policy(arn))),
            opts=pulumi.ResourceOptions(parent=starter),
        )
        return starter
