"""Create the rest of the stack on the embedded AWS, from the declarations the Pulumi components use.

``provision.ensure_environment`` creates what every command needs (buckets, registry table, alert
topic, tail queue, salt). ``ensure_stack`` adds, from a ``platform.declarations.StackDeclaration``:

- IAM roles with their trust documents, inline policies and managed policies: the three task roles,
  the task execution role, the state machine role, the scheduler and trigger roles, the promoter and the
  deployer;
- CloudWatch Logs groups (the three job groups and the state machine's) with their retention;
- the ECR repository (empty: see below);
- the ECS cluster with its FARGATE_SPOT (default) and FARGATE capacity providers;
- the validate, train and score task definitions (container command, environment, cpu/memory,
  task and execution roles, awslogs configuration);
- the network: VPC, internet gateway, public route table, one subnet per zone and its route table
  association, the jobs' security group (no inbound, HTTPS outbound);
- the state machine with the compiled ASL document unchanged (naming the task definitions, subnets
  and security group created above), its logging and tracing configuration;
- the EventBridge Scheduler schedule that starts it, and the EventBridge rule that starts it when
  data lands under ``incoming/<model>/`` (the data bucket sends its events to EventBridge);
- the SSM String parameters naming the resources;
- the CloudWatch dashboard and the alarms (actions: the alert topic).

Not created locally, and why:

- the job image: the stack builds and pushes it with Docker (``docker-build`` provider); the
  embedded AWS has no registry to push to and the laptop path needs no Docker. Task definitions
  name the image URI the stack would push (``<repository>:<package version>``).
- AWS managed policies (the deployer's ``PowerUserAccess``): moto holds them only when its server
  loads all of them (``MOTO_IAM_LOAD_MANAGED_POLICIES``), which adds ~1.7 s to the first call into
  each account of a fresh embedded AWS (STS AssumeRole builds the account's IAM), so every fresh
  ``stagewise run`` would pay it. The deployer role is created with its trust and inline policy;
  the attachment is skipped while the policy does not exist there (the parity test lists this gap).
- the S3 TLS-only bucket policies (see ``provision.ensure_bucket``: moto ignores Conditions, so the
  Deny would refuse every call).
- the SNS topic's KMS key (``alias/aws/sns``) and the ECR repository's scanning/encryption
  settings: settings of AWS-managed services the embedded AWS does not act on.
- the Glue database, tables and Athena workgroup of the results catalog (not part of this
  provisioning yet; ``stagewise query`` reads the same files with DuckDB locally).
- default tags: the stack applies ``aws:defaultTags`` through its provider; locally only the
  buckets and queue are tagged.

Idempotent and cheap to repeat: the cluster carries a tag holding a digest of the declaration,
written last; when it matches, ``ensure_stack`` makes one call and reports every resource
``exists``. Otherwise each resource is read and created (``created``), changed to the declaration
(``updated``) or left as it is (``exists``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any

from botocore.exceptions import ClientError

from stagewise.platform import declarations as d
from stagewise.platform.runtime.aws import AwsClients
from stagewise.platform.runtime.provision import ProvisionAction

DIGEST_TAG = "stagewise:declaration-digest"
AWS_MANAGED = ":iam::aws:policy/"


def declaration_digest(decl: d.StackDeclaration) -> str:
    """sha256 of everything ``decl`` declares (the state machine compiled with placeholder ids)."""
    data = {k: v for k, v in asdict(decl).items() if k != "definition"}
    placeholders = {t: f"<task-definition/{t}>" for t in decl.task_definitions}
    data["definition"] = decl.definition(placeholders, [f"<{s.logical_name}>" for s in decl.subnets], ["<jobs>"])
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def inventory(decl: d.StackDeclaration) -> list[tuple[str, str]]:
    """``(kind, name)`` of every resource ``ensure_stack`` manages, in creation order."""
    res = decl.resources
    return [
        *[("iam role", r.name) for r in decl.roles],
        *[("log group", g) for g in (*decl.log_groups.values(), decl.state_machine_log_group)],
        ("ecr repository", res.compute.repository),
        ("ecs cluster", res.compute.cluster),
        *[("task definition", t.family) for t in decl.task_definitions.values()],
        ("vpc", f"{decl.network_name}-vpc"),
        *[("subnet", s.logical_name) for s in decl.subnets],
        ("security group", decl.security_group),
        ("state machine", res.compute.state_machine),
        ("schedule", decl.schedule.name),
        ("event rule", decl.trigger.name),
        *[("ssm parameter", f"{res.compute.ssm_prefix}/{k}") for k in _parameter_keys(decl)],
        ("dashboard", d.dashboard_name(res.environment)),
        *[("alarm", a.name) for a in decl.alarms],
    ]


def ensure_stack(clients: AwsClients, decl: d.StackDeclaration) -> list[ProvisionAction]:
    """Create (or confirm) every resource of ``decl`` on the embedded AWS; see the module docstring.

    Returns:
        One ``ProvisionAction`` per resource of ``inventory(decl)`` (outcome ``created``,
        ``updated`` or ``exists``).

    Raises:
        botocore.exceptions.ClientError: an AWS call failed for a reason other than "not found".
    """
    res = decl.resources
    ecs = clients.client("ecs")
    digest = declaration_digest(decl)
    clusters = ecs.describe_clusters(clusters=[res.compute.cluster], include=["TAGS"])["clusters"]
    if clusters and clusters[0]["status"] == "ACTIVE" and {"key": DIGEST_TAG, "value": digest} in clusters[0].get("tags", []):
        return [ProvisionAction(kind, name, "exists") for kind, name in inventory(decl)]
    actions = [_ensure_role(clients, r) for r in decl.roles]
    actions += [_ensure_log_group(clients, g, decl.log_retention_days)
                for g in (*decl.log_groups.values(), decl.state_machine_log_group)]
    actions.append(_ensure_repository(clients, res.compute.repository))
    actions.append(_ensure_cluster(clients, res.compute.cluster, bool(clusters) and clusters[0]["status"] == "ACTIVE"))
    task_arns: dict[str, str] = {}
    for task, td in decl.task_definitions.items():
        arn, outcome = _ensure_task_definition(clients, decl, td)
        task_arns[task] = arn
        actions.append(ProvisionAction("task definition", td.family, outcome))
    subnet_ids, group_id, net_actions = _ensure_network(clients, decl)
    actions += net_actions
    definition = decl.definition(task_arns, subnet_ids, [group_id])
    actions.append(_ensure_state_machine(clients, decl, definition))
    actions.append(_ensure_schedule(clients, decl))
    actions.append(_ensure_trigger(clients, decl))
    parameters = d.ssm_parameters(
        data_bucket=res.data_bucket.name, artifact_bucket=res.artifact_bucket.name, registry_table=res.registry_table.name,
        alert_topic_arn=res.alert_topic_arn, cluster_arn=cluster_arn(res), state_machine_arn=res.state_machine_arn,
        task_definition_arns=task_arns)
    actions += _ensure_parameters(clients, res.compute.ssm_prefix, parameters)
    actions.append(_ensure_dashboard(clients, d.dashboard_name(res.environment), decl.dashboard_body))
    actions += [_ensure_alarm(clients, a, res.alert_topic_arn) for a in decl.alarms]
    ecs.tag_resource(resourceArn=cluster_arn(res), tags=[{"key": DIGEST_TAG, "value": digest}])
    return actions


def cluster_arn(res: Any) -> str:
    """ARN of the environment's ECS cluster."""
    return res.arn("ecs", f"cluster/{res.compute.cluster}")


def _parameter_keys(decl: d.StackDeclaration) -> list[str]:
    return list(d.ssm_parameters(data_bucket="", artifact_bucket="", registry_table="", alert_topic_arn="", cluster_arn="",
                                 state_machine_arn="", task_definition_arns={t: "" for t in decl.task_definitions}))


def _code(e: ClientError) -> str:
    return e.response.get("Error", {}).get("Code", "")


# ------------------------------------------------------------------------------ IAM, logs, ECR, ECS
def _ensure_role(clients: AwsClients, role: d.RoleDeclaration) -> ProvisionAction:
    iam = clients.client("iam")
    outcome = "exists"
    try:
        current = iam.get_role(RoleName=role.name)["Role"]
    except ClientError as e:
        if _code(e) != "NoSuchEntity":
            raise
        kwargs: dict[str, Any] = {"RoleName": role.name, "AssumeRolePolicyDocument": json.dumps(role.trust)}
        if role.max_session_duration:
            kwargs["MaxSessionDuration"] = role.max_session_duration
        iam.create_role(**kwargs)
        outcome = "created"
    else:
        if current["AssumeRolePolicyDocument"] != role.trust:
            iam.update_assume_role_policy(RoleName=role.name, PolicyDocument=json.dumps(role.trust))
            outcome = "updated"
    try:
        policy = iam.get_role_policy(RoleName=role.name, PolicyName=role.policy_name)["PolicyDocument"]
    except ClientError as e:
        if _code(e) != "NoSuchEntity":
            raise
        policy = None
    if policy != role.policy:
        iam.put_role_policy(RoleName=role.name, PolicyName=role.policy_name, PolicyDocument=json.dumps(role.policy))
        outcome = "updated" if outcome == "exists" else outcome
    attached = {p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=role.name)["AttachedPolicies"]}
    for arn in role.managed_policy_arns:
        if arn not in attached:
            try:
                iam.attach_role_policy(RoleName=role.name, PolicyArn=arn)
            except ClientError as e:
                if not (_code(e) == "NoSuchEntity" and AWS_MANAGED in arn):
                    raise
                continue  # not held by the embedded AWS: see the module docstring
            outcome = "updated" if outcome == "exists" else outcome
    return ProvisionAction("iam role", role.name, outcome)


def _ensure_log_group(clients: AwsClients, name: str, retention_days: int) -> ProvisionAction:
    logs = clients.client("logs")
    groups = logs.describe_log_groups(logGroupNamePrefix=name)["logGroups"]
    group = next((g for g in groups if g["logGroupName"] == name), None)
    if group is None:
        logs.create_log_group(logGroupName=name)
    if group is None or group.get("retentionInDays") != retention_days:
        logs.put_retention_policy(logGroupName=name, retentionInDays=retention_days)
    return ProvisionAction("log group", name, "created" if group is None else
                           "exists" if group.get("retentionInDays") == retention_days else "updated")


def _ensure_repository(clients: AwsClients, name: str) -> ProvisionAction:
    ecr = clients.client("ecr")
    try:
        ecr.create_repository(repositoryName=name, imageTagMutability="IMMUTABLE",
                              imageScanningConfiguration={"scanOnPush": True})
    except ClientError as e:
        if _code(e) != "RepositoryAlreadyExistsException":
            raise
        return ProvisionAction("ecr repository", name, "exists")
    return ProvisionAction("ecr repository", name, "created")


def _ensure_cluster(clients: AwsClients, name: str, exists: bool) -> ProvisionAction:
    ecs = clients.client("ecs")
    strategy = [{"capacityProvider": d.DEFAULT_CAPACITY_PROVIDER, "weight": 1, "base": 0}]
    if not exists:  # moto's CreateCluster replaces an existing cluster: create only a missing one
        ecs.create_cluster(clusterName=name, settings=[dict(s) for s in d.CLUSTER_SETTINGS],
                           capacityProviders=list(d.CAPACITY_PROVIDERS), defaultCapacityProviderStrategy=strategy)
        return ProvisionAction("ecs cluster", name, "created")
    ecs.put_cluster_capacity_providers(cluster=name, capacityProviders=list(d.CAPACITY_PROVIDERS),
                                       defaultCapacityProviderStrategy=strategy)
    return ProvisionAction("ecs cluster", name, "exists")


def _task_definition_request(decl: d.StackDeclaration, td: d.TaskDefinitionDeclaration) -> dict[str, Any]:
    res = decl.resources
    return {
        "family": td.family,
        "containerDefinitions": td.container_definitions,
        "cpu": str(td.cpu),
        "memory": str(td.memory),
        "networkMode": td.network_mode,
        "requiresCompatibilities": list(td.requires_compatibilities),
        "runtimePlatform": {"operatingSystemFamily": td.runtime_platform["operating_system_family"],
                            "cpuArchitecture": td.runtime_platform["cpu_architecture"]},
        "ephemeralStorage": {"sizeInGiB": td.ephemeral_storage_gib},
        "taskRoleArn": d.role_arn(res.partition, res.account_id, td.task_role),
        "executionRoleArn": d.role_arn(res.partition, res.account_id, td.execution_role),
    }


def _ensure_task_definition(clients: AwsClients, decl: d.StackDeclaration,
                            td: d.TaskDefinitionDeclaration) -> tuple[str, str]:
    ecs = clients.client("ecs")
    request = _task_definition_request(decl, td)
    try:
        current = ecs.describe_task_definition(taskDefinition=td.family)["taskDefinition"]
    except ClientError as e:
        if _code(e) not in ("ClientException", "InvalidParameterException"):
            raise
        current = None
    if current is not None and _same_task_definition(current, request):
        return current["taskDefinitionArn"], "exists"
    arn = ecs.register_task_definition(**request)["taskDefinition"]["taskDefinitionArn"]
    return arn, "created" if current is None else "updated"


def _same_task_definition(current: dict[str, Any], request: dict[str, Any]) -> bool:
    keys = ("cpu", "memory", "networkMode", "taskRoleArn", "executionRoleArn")
    if any(current.get(k) != request[k] for k in keys):
        return False
    declared = request["containerDefinitions"][0]
    have = current["containerDefinitions"][0]
    return all(have.get(k) == v for k, v in declared.items())


# ------------------------------------------------------------------------------ network
def _find(items: list[dict[str, Any]], logical_name: str) -> dict[str, Any] | None:
    return next((i for i in items if {"Key": "Name", "Value": logical_name} in i.get("Tags", [])), None)


def _name_tag(kind: str, logical_name: str) -> list[dict[str, Any]]:
    return [{"ResourceType": kind, "Tags": [{"Key": "Name", "Value": logical_name}]}]


def _ensure_network(clients: AwsClients, decl: d.StackDeclaration) -> tuple[list[str], str, list[ProvisionAction]]:
    """VPC, gateway, route table, subnets, security group; returns subnet ids, group id, actions."""
    ec2 = clients.client("ec2")
    net = decl.network_name
    actions: list[ProvisionAction] = []
    vpc = _find(ec2.describe_vpcs(Filters=[{"Name": "tag:Name", "Values": [f"{net}-vpc"]}])["Vpcs"], f"{net}-vpc")
    if vpc is None:
        vpc = ec2.create_vpc(CidrBlock=decl.vpc_cidr, TagSpecifications=_name_tag("vpc", f"{net}-vpc"))["Vpc"]
        ec2.modify_vpc_attribute(VpcId=vpc["VpcId"], EnableDnsSupport={"Value": True})
        ec2.modify_vpc_attribute(VpcId=vpc["VpcId"], EnableDnsHostnames={"Value": True})
        gateway = ec2.create_internet_gateway(TagSpecifications=_name_tag("internet-gateway", f"{net}-igw"))["InternetGateway"]
        ec2.attach_internet_gateway(InternetGatewayId=gateway["InternetGatewayId"], VpcId=vpc["VpcId"])
        table = ec2.create_route_table(VpcId=vpc["VpcId"], TagSpecifications=_name_tag("route-table", f"{net}-public"))["RouteTable"]
        ec2.create_route(RouteTableId=table["RouteTableId"], DestinationCidrBlock="0.0.0.0/0",
                         GatewayId=gateway["InternetGatewayId"])
        actions.append(ProvisionAction("vpc", f"{net}-vpc", "created"))
    else:
        actions.append(ProvisionAction("vpc", f"{net}-vpc", "exists"))
    vpc_id = vpc["VpcId"]
    tables = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["RouteTables"]
    table_id = _find(tables, f"{net}-public")["RouteTableId"]  # type: ignore[index]
    existing = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]
    subnet_ids = []
    for s in decl.subnets:
        subnet = _find(existing, s.logical_name)
        if subnet is None:
            subnet = ec2.create_subnet(VpcId=vpc_id, CidrBlock=s.cidr, AvailabilityZone=s.availability_zone,
                                       TagSpecifications=_name_tag("subnet", s.logical_name))["Subnet"]
            ec2.associate_route_table(RouteTableId=table_id, SubnetId=subnet["SubnetId"])
        actions.append(ProvisionAction("subnet", s.logical_name, "exists" if subnet in existing else "created"))
        subnet_ids.append(subnet["SubnetId"])
    groups = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc_id]},
                                                   {"Name": "group-name", "Values": [decl.security_group]}])["SecurityGroups"]
    if groups:
        group_id = groups[0]["GroupId"]
        actions.append(ProvisionAction("security group", decl.security_group, "exists"))
    else:
        group_id = ec2.create_security_group(GroupName=decl.security_group, VpcId=vpc_id,
                                             Description=d.JOBS_SECURITY_GROUP_DESCRIPTION)["GroupId"]
        default = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]["IpPermissionsEgress"]
        if default:  # a new group allows all egress: replace it with the declared rules
            ec2.revoke_security_group_egress(GroupId=group_id, IpPermissions=default)
        ec2.authorize_security_group_egress(GroupId=group_id, IpPermissions=[
            {"IpProtocol": r["protocol"], "FromPort": r["from_port"], "ToPort": r["to_port"],
             "IpRanges": [{"CidrIp": c, "Description": r["description"]} for c in r["cidr_blocks"]]}
            for r in d.JOBS_EGRESS])
        actions.append(ProvisionAction("security group", decl.security_group, "created"))
    return subnet_ids, group_id, actions


# ------------------------------------------------------------------------------ orchestration
def _ensure_state_machine(clients: AwsClients, decl: d.StackDeclaration, definition: str) -> ProvisionAction:
    sfn = clients.client("stepfunctions")
    res = decl.resources
    role = d.role_arn(res.partition, res.account_id, decl.state_machine_role)
    logging = {"level": d.STATE_MACHINE_LOG_LEVEL, "includeExecutionData": False, "destinations": [
        {"cloudWatchLogsLogGroup": {"logGroupArn": res.arn("logs", f"log-group:{decl.state_machine_log_group}") + ":*"}}]}
    name = res.compute.state_machine
    try:
        current = sfn.describe_state_machine(stateMachineArn=res.state_machine_arn)
    except ClientError as e:
        if _code(e) != "StateMachineDoesNotExist":
            raise
        sfn.create_state_machine(name=name, definition=definition, roleArn=role, type="STANDARD",
                                 loggingConfiguration=logging, tracingConfiguration={"enabled": True})
        return ProvisionAction("state machine", name, "created")
    if current["definition"] == definition and current["roleArn"] == role:
        return ProvisionAction("state machine", name, "exists")
    sfn.update_state_machine(stateMachineArn=res.state_machine_arn, definition=definition, roleArn=role,
                             loggingConfiguration=logging, tracingConfiguration={"enabled": True})
    return ProvisionAction("state machine", name, "updated")


def _ensure_trigger(clients: AwsClients, decl: d.StackDeclaration) -> ProvisionAction:
    """The data bucket sends its events to EventBridge; the rule and its state machine target
    (put every time: both calls are idempotent)."""
    res, trigger, events = decl.resources, decl.trigger, clients.client("events")
    s3 = clients.client("s3")
    for bucket in (res.data_bucket, res.artifact_bucket):
        if bucket.eventbridge and "EventBridgeConfiguration" not in s3.get_bucket_notification_configuration(Bucket=bucket.name):
            s3.put_bucket_notification_configuration(Bucket=bucket.name, NotificationConfiguration={"EventBridgeConfiguration": {}})
    try:
        current = events.describe_rule(Name=trigger.name)
    except ClientError as e:
        if _code(e) != "ResourceNotFoundException":
            raise
        current = None
    events.put_rule(Name=trigger.name, EventPattern=trigger.event_pattern, State="ENABLED",
                    Description=f"Start {res.compute.state_machine} when data lands under its incoming/ prefix")
    events.put_targets(Rule=trigger.name, Targets=[{
        "Id": "state-machine", "Arn": res.state_machine_arn,
        "RoleArn": d.role_arn(res.partition, res.account_id, decl.trigger_role),
        "InputTransformer": {"InputPathsMap": dict(trigger.input_paths), "InputTemplate": trigger.input_template},
        "RetryPolicy": {"MaximumRetryAttempts": trigger.retry["maximum_retry_attempts"],
                        "MaximumEventAgeInSeconds": trigger.retry["maximum_event_age_in_seconds"]},
    }])
    if current is None:
        return ProvisionAction("event rule", trigger.name, "created")
    return ProvisionAction("event rule", trigger.name, "exists" if current.get("EventPattern") == trigger.event_pattern else "updated")


def _ensure_schedule(clients: AwsClients, decl: d.StackDeclaration) -> ProvisionAction:
    scheduler = clients.client("scheduler")
    res, sch = decl.resources, decl.schedule
    request = {
        "Name": sch.name, "ScheduleExpression": sch.expression,
        "FlexibleTimeWindow": {"Mode": "FLEXIBLE", "MaximumWindowInMinutes": sch.window_minutes},
        "Target": {"Arn": res.state_machine_arn, "RoleArn": d.role_arn(res.partition, res.account_id, decl.scheduler_role),
                   "Input": sch.input, "RetryPolicy": {"MaximumRetryAttempts": sch.retry["maximum_retry_attempts"],
                                                       "MaximumEventAgeInSeconds": sch.retry["maximum_event_age_in_seconds"]}},
    }
    try:
        current = scheduler.get_schedule(Name=sch.name)
    except ClientError as e:
        if _code(e) != "ResourceNotFoundException":
            raise
        scheduler.create_schedule(**request)
        return ProvisionAction("schedule", sch.name, "created")
    if current["ScheduleExpression"] == sch.expression and current["Target"].get("Input") == sch.input:
        return ProvisionAction("schedule", sch.name, "exists")
    scheduler.update_schedule(**request)
    return ProvisionAction("schedule", sch.name, "updated")


def _ensure_parameters(clients: AwsClients, prefix: str, parameters: dict[str, str]) -> list[ProvisionAction]:
    ssm = clients.client("ssm")
    names = [f"{prefix}/{k}" for k in parameters]
    have: dict[str, str] = {}
    for i in range(0, len(names), 10):  # GetParameters takes at most 10 names
        have.update({p["Name"]: p["Value"] for p in ssm.get_parameters(Names=names[i:i + 10])["Parameters"]})
    actions = []
    for name, value in zip(names, parameters.values()):
        if have.get(name) != value:
            ssm.put_parameter(Name=name, Value=value, Type="String", Overwrite=True)
        actions.append(ProvisionAction("ssm parameter", name, "exists" if have.get(name) == value
                                       else "updated" if name in have else "created"))
    return actions


# ------------------------------------------------------------------------------ monitoring
def _ensure_dashboard(clients: AwsClients, name: str, body: str) -> ProvisionAction:
    cw = clients.client("cloudwatch")
    try:
        current = cw.get_dashboard(DashboardName=name)["DashboardBody"]
    except ClientError as e:
        if _code(e) not in ("ResourceNotFound", "ResourceNotFoundException"):
            raise
        current = None
    if current != body:
        cw.put_dashboard(DashboardName=name, DashboardBody=body)
    return ProvisionAction("dashboard", name, "exists" if current == body else "created" if current is None else "updated")


def _ensure_alarm(clients: AwsClients, alarm: d.AlarmDeclaration, topic_arn: str) -> ProvisionAction:
    cw = clients.client("cloudwatch")
    existed = bool(cw.describe_alarms(AlarmNames=[alarm.name])["MetricAlarms"])
    cw.put_metric_alarm(  # PutMetricAlarm replaces the alarm with the same definition: idempotent
        AlarmName=alarm.name, AlarmDescription=alarm.description, Namespace=alarm.namespace, MetricName=alarm.metric,
        Dimensions=[{"Name": k, "Value": v} for k, v in alarm.dimensions.items()],
        **({"ExtendedStatistic": alarm.statistic} if alarm.extended else {"Statistic": alarm.statistic}),
        Period=alarm.period, EvaluationPeriods=alarm.evaluation_periods, ComparisonOperator=alarm.comparison,
        Threshold=alarm.threshold, TreatMissingData=alarm.treat_missing_data,
        AlarmActions=[topic_arn], OKActions=[topic_arn],
    )
    return ProvisionAction("alarm", alarm.name, "exists" if existed else "created")
