"""Access: cross-account roles (deployer, promoter, reader) trusting the tooling account, and the SSM
parameters through which the runtime finds the environment's resources."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from stagewise.platform.runtime import idhash
from stagewise.platform import declarations, policies


@dataclass
class AccessArgs:
    """Who may come in (``tooling_account_id``), what they may touch, and what to publish in SSM.

    Attributes:
        parameters: SSM parameter name (under ``ssm_prefix``) -> value (resource names and ARNs;
            never secrets: these are String parameters).
    """

    environment: str
    account_id: str
    partition: str
    tooling_account_id: str
    artifact_bucket_arn: pulumi.Input[str]
    table_arn: pulumi.Input[str]
    topic_arn: pulumi.Input[str]
    ssm_prefix: str
    state_machine_arn: str = ""
    parameters: dict[str, pulumi.Input[str]] = field(default_factory=dict)


class Access(pulumi.ComponentResource):
    """The deployer role (PowerUserAccess plus IAM on ``stagewise-*`` roles; the stack's
    ``aws:assumeRoles`` points at it), the promoter role (artifacts and registry only) and the
    reader role (``stagewise fleet``: registry, executions, metrics and alarms, read only), all
    trusting the tooling account; the SSM String parameters, and the SecureString salt of the id
    hash (``stagewise.platform.runtime.idhash``). Outputs the role ARNs (never the salt)."""

    def __init__(self, name: str, args: AccessArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("stagewise:platform:Access", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        trust = json.dumps(declarations.tooling_trust(args.partition, args.tooling_account_id))
        self.deployer = aws.iam.Role(
            f"{name}-deployer", name=declarations.role_name(args.environment, "deployer"), assume_role_policy=trust,
            max_session_duration=declarations.ROLE_MAX_SESSION_SECONDS,
            managed_policy_arns=declarations.deployer_managed_policy_arns(args.partition), opts=child,
        )
        aws.iam.RolePolicy(f"{name}-deployer-iam", role=self.deployer.id,
                           policy=json.dumps(policies.deployer_iam_policy(args.partition, args.account_id)),
                           opts=pulumi.ResourceOptions(parent=self.deployer))
        self.promoter = aws.iam.Role(f"{name}-promoter", name=declarations.role_name(args.environment, "promoter"),
                                     assume_role_policy=trust, max_session_duration=declarations.ROLE_MAX_SESSION_SECONDS,
                                     opts=child)
        aws.iam.RolePolicy(
            f"{name}-promoter-policy", role=self.promoter.id,
            policy=pulumi.Output.all(args.artifact_bucket_arn, args.table_arn, args.topic_arn).apply(
                lambda a: json.dumps(policies.promoter_policy(a[0], a[1], a[2]))),
            opts=pulumi.ResourceOptions(parent=self.promoter),
        )
        self.reader = aws.iam.Role(f"{name}-reader", name=declarations.role_name(args.environment, "reader"),
                                   assume_role_policy=trust, max_session_duration=declarations.ROLE_MAX_SESSION_SECONDS,
                                   opts=child)
        aws.iam.RolePolicy(
            f"{name}-reader-policy", role=self.reader.id,
            policy=pulumi.Output.all(args.table_arn, args.artifact_bucket_arn).apply(
                lambda a: json.dumps(policies.reader_policy(a[0], args.state_machine_arn, a[1]))),
            opts=pulumi.ResourceOptions(parent=self.reader),
        )
        self.parameters = [
            aws.ssm.Parameter(f"{name}-param-{key}", name=f"{args.ssm_prefix}/{key}", type="String", value=value, opts=child)
            for key, value in args.parameters.items()
        ]
        # the id hash's secret salt: random at creation, a Pulumi secret (encrypted in the state, never
        # an output), and left as it is by later deploys (a new salt would break joins with old outputs)
        self.id_salt = aws.ssm.Parameter(
            f"{name}-id-salt", name=f"{args.ssm_prefix}/{idhash.ID_SALT}", type="SecureString",
            value=pulumi.Output.secret(idhash.new_salt()),
            description="Stagewise: secret salt of the keyed id hash (never rotate: joins break)",
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["value"], additional_secret_outputs=["value"]),
        )
        self.deployer_arn = self.deployer.arn
        self.promoter_arn = self.promoter.arn
        self.reader_arn = self.reader.arn
        self.register_outputs({"deployer_role_arn": self.deployer_arn, "promoter_role_arn": self.promoter_arn,
                               "reader_role_arn": self.reader_arn,
                               "parameters": [p.name for p in self.parameters]})
