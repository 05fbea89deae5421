"""IAM policy documents, built by small named functions (never long inline JSON).

Every function returns a plain policy document (``{"Version": ..., "Statement": [...]}``) from ARNs
it is given, so the same documents serve the Pulumi components (as ``Output.json_dumps`` of
resolved ARNs), the local provisioner, and the ``parliament`` lint in the tests. No task role gets
a ``*`` action, and ``*`` resources appear only where the AWS action has no resource-level
permissions (each such statement says so in its Sid).
"""

from __future__ import annotations

from typing import Any

VERSION = "2012-10-17"
Doc = dict[str, Any]


def document(*statements: Doc) -> Doc:
    """A policy document holding ``statements``."""
    return {"Version": VERSION, "Statement": list(statements)}


def statement(sid: str, actions: list[str], resources: list[str], condition: Doc | None = None, effect: str = "Allow") -> Doc:
    """One statement; ``sid`` must be alphanumeric."""
    st: Doc = {"Sid": sid, "Effect": effect, "Action": sorted(actions), "Resource": resources}
    if condition:
        st["Condition"] = condition
    return st


def tls_only_bucket_policy(bucket_arn: str) -> Doc:
    """Deny any request to the bucket not made over TLS (AWS Security Hub control S3.5)."""
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [bucket_arn, f"{bucket_arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


def tail_queue_policy(queue_arn: str, topic_arn: str) -> Doc:
    """Queue policy of the embedded AWS's alert tail queue: the alert topic, and only it, may send."""
    return {
        "Version": VERSION,
        "Statement": [{
            "Sid": "AllowAlertTopic",
            "Effect": "Allow",
            "Principal": {"Service": "sns.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
        }],
    }


def assume_role_policy(service: str | None = None, account_arn: str | None = None, external_id: str | None = None) -> Doc:
    """Trust policy: a service principal (``ecs-tasks.amazonaws.com``) or an account's principals."""
    principal = {"Service": service} if service else {"AWS": account_arn}
    st: Doc = {"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"}
    if external_id:
        st["Condition"] = {"StringEquals": {"sts:ExternalId": external_id}}
    return {"Version": VERSION, "Statement": [st]}


# ------------------------------------------------------------------------------ the job tasks
TASK_S3_ACCESS = {
    # task definition -> (data bucket prefixes read, data prefixes written, artifact prefixes read, written)
    # validation/ is published from staging/validation/; metrics/ holds the once-per-run metrics markers
    # (read back: a conditional write whose response was lost meets its own marker, objects.put_new)
    "validate": (["raw/", "incoming/", "runs/", "staging/validation/", "validation/", "metrics/"],
                 ["raw/", "staging/validation/", "validation/", "runs/", "metrics/"], [], []),
    # train and score read the run's input where validate read it (raw/, or incoming/ where data lands)
    "train": (["raw/", "incoming/", "runs/", "metrics/"], ["runs/", "metrics/"], ["models/"], ["models/"]),
    "score": (["raw/", "incoming/", "runs/", "staging/", "predictions/", "metrics/"],
              ["staging/", "predictions/", "results/", "runs/", "metrics/"], ["models/", "agents/"], []),
}
TASK_S3_DELETES = {"validate": ["staging/validation/"], "score": ["staging/"]}
"""Data prefixes a task may delete in: what it staged, once published (validation files,
prediction parts)."""
TASK_REGISTRY_ACTIONS = {
    "validate": ["dynamodb:GetItem", "dynamodb:PutItem"],  # the run lock (registry.runlock) and input claims (registry.claims)
    "train": ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:ConditionCheckItem"],
    "score": ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:ConditionCheckItem"],
}


def task_role_policy(
    task: str,
    *,
    data_bucket_arn: str,
    artifact_bucket_arn: str,
    table_arn: str,
    topic_arn: str,
    ssm_parameters_arn: str,
    metrics_namespace: str,
) -> Doc:
    """Least-privilege policy of one job task role (``validate``, ``train`` or ``score``).

    Grants: S3 on the task's own prefixes only (``TASK_S3_ACCESS``; deletes only in
    ``TASK_S3_DELETES``), the registry actions it needs
    (``TASK_REGISTRY_ACTIONS``) on the registry table and its indexes, publishing to the alert
    topic, metrics in the Stagewise namespace only, reading its SSM parameters, and the Step
    Functions task-token callbacks.

    Raises:
        KeyError: unknown task.
    """
    reads, writes, art_reads, art_writes = TASK_S3_ACCESS[task]
    statements = [
        statement("ReadData", ["s3:GetObject"], [f"{data_bucket_arn}/{p}*" for p in reads]),
        statement("WriteData", ["s3:PutObject"], [f"{data_bucket_arn}/{p}*" for p in writes]),
        statement("ListDataPrefixes", ["s3:ListBucket"], [data_bucket_arn],
                  {"StringLike": {"s3:prefix": [f"{p}*" for p in sorted(set(reads + writes))]}}),
        statement("PublishAlerts", ["sns:Publish"], [topic_arn]),
        # PutMetricData has no resource-level permissions; the namespace condition scopes it
        statement("PutMetricsInNamespace", ["cloudwatch:PutMetricData"], ["*"],
                  {"StringEquals": {"cloudwatch:namespace": metrics_namespace}}),
        statement("ReadParameters", ["ssm:GetParameter", "ssm:GetParametersByPath"], [ssm_parameters_arn]),
        # the task-token callbacks have no resource-level permissions (the token is the authority)
        statement("ReportToStepFunctions", ["states:SendTaskSuccess", "states:SendTaskFailure", "states:SendTaskHeartbeat"], ["*"]),
    ]
    if TASK_S3_DELETES.get(task):
        statements.append(statement("DiscardStagedData", ["s3:DeleteObject"],
                                    [f"{data_bucket_arn}/{p}*" for p in TASK_S3_DELETES[task]]))
    if art_reads:
        statements.append(statement("ReadArtifacts", ["s3:GetObject"], [f"{artifact_bucket_arn}/{p}*" for p in art_reads]))
    if art_writes:
        statements.append(statement("WriteArtifacts", ["s3:PutObject"], [f"{artifact_bucket_arn}/{p}*" for p in art_writes]))
    if TASK_REGISTRY_ACTIONS[task]:
        statements.append(statement("UseRegistry", TASK_REGISTRY_ACTIONS[task], [table_arn, f"{table_arn}/index/*"]))
    return document(*statements)


def execution_role_policy(repository_arn: str, log_group_arns: list[str]) -> Doc:
    """ECS task execution role: pull the job image from its repository, write the job logs."""
    return document(
        # GetAuthorizationToken has no resource-level permissions
        statement("EcrLogin", ["ecr:GetAuthorizationToken"], ["*"]),
        statement("PullJobImage", ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"], [repository_arn]),
        statement("WriteJobLogs", ["logs:CreateLogStream", "logs:PutLogEvents"], [f"{arn}:log-stream:*" for arn in log_group_arns]),
    )


def state_machine_policy(
    task_definition_family_arns: list[str],
    cluster_arn: str,
    pass_role_arns: list[str],
    topic_arn: str,
    state_machine_arn: str,
    map_run_labels: list[str],
) -> Doc:
    """The state machine's role: run and stop the job tasks on its cluster, pass their roles to
    ECS only, publish alerts, run its own Distributed Maps, and deliver its own logs (log delivery
    APIs take no resource ARNs).

    A Distributed Map starts child executions of the state machine itself, named
    ``execution:<state machine>/<map run label>:<id>``: the role may start executions of
    ``state_machine_arn`` only, and describe, stop and redrive (a redriven parent redrives its
    failed Map Run) only the child executions of the given labels. It may also describe its own
    executions, as one version of AWS's example policy for Distributed Maps grants. ``state_machine_arn`` must be
    built from names (``EnvironmentResources.state_machine_arn``), not taken from the state machine
    resource, which depends on this role.
    """
    executions = state_machine_arn.replace(":stateMachine:", ":execution:", 1)
    children = [f"{executions}/{label}:*" for label in map_run_labels]
    statements = [
        statement("RunJobTasks", ["ecs:RunTask"], [f"{arn}:*" for arn in task_definition_family_arns],
                  {"ArnEquals": {"ecs:cluster": cluster_arn}}),
        statement("StopAndDescribeJobTasks", ["ecs:StopTask", "ecs:DescribeTasks"],
                  [cluster_arn.replace(":cluster/", ":task/", 1) + "/*"]),
        statement("PassJobRoles", ["iam:PassRole"], pass_role_arns,
                  {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}),
        statement("PublishAlerts", ["sns:Publish"], [topic_arn]),
        statement("DeliverLogs", ["logs:CreateLogDelivery", "logs:DeleteLogDelivery", "logs:DescribeLogGroups",
                                  "logs:DescribeResourcePolicies", "logs:GetLogDelivery", "logs:ListLogDeliveries",
                                  "logs:PutResourcePolicy", "logs:UpdateLogDelivery"], ["*"]),
    ]
    if children:
        statements += [
            statement("StartMapRunChildren", ["states:StartExecution"], [state_machine_arn]),
            statement("ManageMapRunChildren", ["states:DescribeExecution", "states:StopExecution", "states:RedriveExecution"],
                      children),
            statement("DescribeOwnExecutions", ["states:DescribeExecution"], [f"{executions}:*"]),
        ]
    return document(*statements)


def scheduler_policy(state_machine_arn: str) -> Doc:
    """EventBridge Scheduler's role: start executions of the pipeline state machine only."""
    return document(statement("StartPipeline", ["states:StartExecution"], [state_machine_arn]))


def promoter_policy(artifact_bucket_arn: str, table_arn: str, topic_arn: str) -> Doc:
    """The cross-account promoter: read and write model artifacts, use the registry, alert."""
    return document(
        statement("CopyArtifacts", ["s3:GetObject", "s3:PutObject"], [f"{artifact_bucket_arn}/models/*", f"{artifact_bucket_arn}/agents/*"]),
        statement("ListArtifacts", ["s3:ListBucket"], [artifact_bucket_arn]),
        statement("UseRegistry", ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:ConditionCheckItem"],
                  [table_arn, f"{table_arn}/index/*"]),
        statement("PublishAlerts", ["sns:Publish"], [topic_arn]),
    )


def reader_policy(table_arn: str, state_machine_arn: str, artifact_bucket_arn: str) -> Doc:
    """The cross-account fleet reader (``stagewise fleet``): read the registry, the pipeline's
    executions, metrics and alarms, and each version's baseline and feature importance (the model
    page compares them); nothing it can change, no model binary, no data. CloudWatch's read actions take no
    resource scope (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazoncloudwatch.html)."""
    executions = state_machine_arn.replace(":stateMachine:", ":execution:") + ":*"
    return document(
        statement("ReadRegistry", ["dynamodb:GetItem", "dynamodb:Query"], [table_arn, f"{table_arn}/index/*"]),
        statement("ReadVersionSummaries", ["s3:GetObject"], [f"{artifact_bucket_arn}/models/*/baseline.json",
                                                             f"{artifact_bucket_arn}/models/*/feature_importance.json"]),
        statement("ListRuns", ["states:ListExecutions"], [state_machine_arn]),
        statement("ReadRuns", ["states:DescribeExecution"], [executions]),
        statement("ReadMetricsAndAlarms", ["cloudwatch:GetMetricData", "cloudwatch:GetMetricStatistics",
                                           "cloudwatch:ListMetrics", "cloudwatch:DescribeAlarms"], ["*"]),
    )


def deployer_iam_policy(partition: str, account_id: str) -> Doc:
    """The deployer's IAM rights, limited to Stagewise's own roles (it also holds the AWS managed
    PowerUserAccess policy, which excludes IAM)."""
    role_arn = f"arn:{partition}:iam::{account_id}:role/stagewise-*"
    return document(
        statement("ManageStagewiseRoles", ["iam:AttachRolePolicy", "iam:CreateRole", "iam:DeleteRole", "iam:DeleteRolePolicy",
                                           "iam:DetachRolePolicy", "iam:GetRole", "iam:GetRolePolicy", "iam:ListAttachedRolePolicies",
                                           "iam:ListInstanceProfilesForRole", "iam:ListRolePolicies", "iam:PassRole",
                                           "iam:PutRolePolicy", "iam:TagRole", "iam:UntagRole", "iam:UpdateAssumeRolePolicy",
                                           "iam:UpdateRole"], [role_arn]),
    )
