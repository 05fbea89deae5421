"""Monitoring: the alert topic and its e-mail subscriptions, the dashboard, and the alarms."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from stagewise.monitoring.alarms import alarm_declarations
from stagewise.monitoring.dashboard import dashboard_json
from stagewise.platform.declarations import MONITORED_AGENTS, MONITORED_MODELS, dashboard_name
from stagewise.stacks.settings import AgentAlarms
from stagewise.platform.resources import TopicSpec


@dataclass
class MonitoringArgs:
    """The alert topic spec (with the stack's alert e-mails), the environment, the state machine
    ARN (for execution metrics), the schedule (for the freshness alarm), the models and agents
    watched and the agents' alarm thresholds."""

    topic: TopicSpec
    environment: str
    region: str
    state_machine_arn: str
    schedule: str
    models: tuple[str, ...] = MONITORED_MODELS
    agents: tuple[str, ...] = MONITORED_AGENTS
    agent_limits: AgentAlarms = AgentAlarms()
    cost_budget_usd: float | None = None


class Monitoring(pulumi.ComponentResource):
    """SNS topic (AWS-managed KMS key) with one e-mail subscription per alert address, the
    CloudWatch dashboard whose body comes from ``stagewise.monitoring.dashboard`` (the metric names
    the runtime publishes), and the alarms of ``stagewise.monitoring.alarms`` notifying the topic."""

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("stagewise:platform:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.topic = aws.sns.Topic(f"{name}-alerts", name=args.topic.name, kms_master_key_id="alias/aws/sns", opts=child)
        self.subscriptions = [
            aws.sns.TopicSubscription(f"{name}-email-{i}", topic=self.topic.arn, protocol="email", endpoint=email,
                                      opts=pulumi.ResourceOptions(parent=self.topic))
            for i, email in enumerate(args.topic.emails)
        ]
        self.dashboard = aws.cloudwatch.Dashboard(
            f"{name}-dashboard", dashboard_name=dashboard_name(args.environment),
            dashboard_body=dashboard_json(args.environment, args.region, args.state_machine_arn),
            opts=child,
        )
        self.alarms = [
            aws.cloudwatch.MetricAlarm(
                f"{name}-{key}", name=alarm.name, alarm_description=alarm.description, namespace=alarm.namespace,
                metric_name=alarm.metric, dimensions=dict(alarm.dimensions),
                **({"extended_statistic": alarm.statistic} if alarm.extended else {"statistic": alarm.statistic}), period=alarm.period,
                evaluation_periods=alarm.evaluation_periods, comparison_operator=alarm.comparison,
                threshold=alarm.threshold, treat_missing_data=alarm.treat_missing_data,
                alarm_actions=[self.topic.arn], ok_actions=[self.topic.arn], opts=child,
            )
            for key, alarm in alarm_declarations(args.environment, args.models, args.state_machine_arn, args.schedule,
                                                 args.agents, args.agent_limits, args.cost_budget_usd)
        ]
        self.topic_arn = self.topic.arn
        self.register_outputs({"topic_arn": self.topic_arn, "dashboard": self.dashboard.dashboard_name,
                               "alarms": [a.name for a in self.alarms]})
