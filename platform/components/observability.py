"""CloudWatch cross-account observability (OAM): each environment links its metrics and logs to a
sink in the monitoring account, where one dashboard shows dev, test and prod side by side.

Two steps, as OAM needs the sink before a link: the stack whose ``stagewise:observability`` says
``createSink: true`` creates the sink, its policy and the fleet dashboard in the monitoring account
(through that account's ``stagewise-deployer`` role) and exports ``oam_sink_arn``; each stack then
sets ``sinkArn`` to it and links (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch-Unified-Cross-Account-Setup.html).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from stagewise.monitoring.dashboard import fleet_dashboard_body
from stagewise.platform import declarations

RESOURCE_TYPES = ("AWS::CloudWatch::Metric", "AWS::Logs::LogGroup")
"""What an environment shares with the monitoring account."""
SINK_NAME = "stagewise-fleet"


@dataclass
class ObservabilityArgs:
    """The environment (name, account, region, ARN partition), the stack's ``Observability``
    settings and the models whose metrics the fleet dashboard charts."""

    environment: str
    account_id: str
    region: str
    partition: str
    settings: object
    models: tuple[str, ...] = declarations.MONITORED_MODELS


def sink_policy(accounts: list[str]) -> dict:
    """Who may link to the sink: the environments' accounts, for metrics and logs only."""
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": sorted(accounts)}, "Action": ["oam:CreateLink", "oam:UpdateLink"],
        "Resource": "*", "Condition": {"ForAllValues:StringEquals": {"oam:ResourceTypes": list(RESOURCE_TYPES)}}}]}


class CrossAccountObservability(pulumi.ComponentResource):
    """The sink, its policy and the fleet dashboard in the monitoring account (``createSink``), and
    this environment's link to the sink (``sinkArn``). Outputs ``sink_arn`` when it creates one."""

    def __init__(self, name: str, args: ObservabilityArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("stagewise:platform:CrossAccountObservability", name, None, opts)
        o = args.settings
        self.sink_arn: pulumi.Output[str] | None = None
        if o.create_sink:
            monitoring = aws.Provider(
                f"{name}-monitoring-account", region=args.region, allowed_account_ids=[o.monitoring_account_id],
                assume_roles=[{"role_arn": declarations.role_arn(args.partition, o.monitoring_account_id, "stagewise-deployer"),
                               "session_name": f"stagewise-{args.environment}-observability"}],
                opts=pulumi.ResourceOptions(parent=self))
            there = pulumi.ResourceOptions(parent=self, provider=monitoring)
            sink = aws.oam.Sink(f"{name}-sink", name=SINK_NAME, opts=there)
            aws.oam.SinkPolicy(f"{name}-sink-policy", sink_identifier=sink.arn,
                               policy=json.dumps(sink_policy(list(o.accounts.values()))), opts=there)
            aws.cloudwatch.Dashboard(f"{name}-fleet-dashboard", dashboard_name=SINK_NAME,
                                     dashboard_body=json.dumps(fleet_dashboard_body(dict(o.accounts), args.region, args.models)),
                                     opts=there)
            self.sink_arn = sink.arn
        if o.sink_arn:
            aws.oam.Link(f"{name}-link", sink_identifier=o.sink_arn, label_template="$AccountName",
                         resource_types=list(RESOURCE_TYPES), opts=pulumi.ResourceOptions(parent=self))
        self.register_outputs({"sink_arn": self.sink_arn})
