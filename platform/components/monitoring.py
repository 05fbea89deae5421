"""Monitoring: the alert topic and its e-mail subscriptions, the dashboard, and the alarms."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from stagewise.monitoring.alarms import environment_alarms
from stagewise.monitoring.dashboard import dashboard_json
from stagewise.platform.resources import TopicSpec


@dataclass
class MonitoringArgs:
    """The alert topic spec (with the stack's alert e-mails), the environment, the state machine
    ARN (for execution metrics), the schedule (for the freshness alarm) and the models watched."""

    topic: TopicSpec
    environment: str
    region: str
    state_machine_arn: str
    schedule: str
    models: tuple[str, ...] = ("engagement",)


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
            f"{name}-dashboard", dashboard_name=f"stagewise-{args.environment}",
            dashboard_body=dashboard_json(args.environment, args.region, args.state_machine_arn),
            opts=child,
        )
        self.alarms = []
        for model in args.models:
            for spec in environment_alarms(args.environment, model, args.state_machine_arn, args.schedule):
                self.alarms.append(aws.cloudwatch.MetricAlarm(
                    f"{name}-{model}-{spec.key}", name=f"stagewise-{args.environment}-{model}-{spec.key}",
                    alarm_description=spec.description, namespace=spec.namespace, metric_name=spec.metric,
                    dimensions=spec.dimensions, statistic=spec.statistic, period=spec.period,
                    evaluation_periods=spec.evaluation_periods, comparison_operator=spec.comparison,
                    threshold=spec.threshold, treat_missing_data=spec.treat_missing_data,
                    alarm_actions=[self.topic.arn], ok_actions=[self.topic.arn], opts=child,
                ))
        self.topic_arn = self.topic.arn
        self.register_outputs({"topic_arn": self.topic_arn, "dashboard": self.dashboard.dashboard_name,
                               "alarms": [a.name for a in self.alarms]})
