"""Create an environment's resources on the embedded AWS, idempotently, from ``platform.resources``.

On AWS the Pulumi stack creates these resources; on a laptop ``stagewise run`` calls
``ensure_environment`` so the embedded AWS holds the same buckets, registry table and alert topic
(same names, same settings) under the environment's account id. Calling it again changes nothing,
and costs one call: the last provisioning leaves a digest of what it provisioned (the resources'
specifications and this module's code) in an SSM parameter outside the stack's prefix
(``provisioned_parameter``); while it matches, nothing is checked again. A reset or restarted
embedded AWS loses the marker with everything else, so the next call provisions in full.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from botocore.exceptions import ClientError

from stagewise.platform.runtime import idhash
from stagewise.platform.runtime.aws import AwsClients
from stagewise.platform.runtime.idhash import ensure_id_salt, salt_parameter
from stagewise.platform.policies import tail_queue_policy, tls_only_bucket_policy
from stagewise.platform.resources import BucketSpec, EnvironmentResources, TableSpec, TopicSpec


@dataclass(frozen=True)
class ProvisionAction:
    """One resource and what provisioning did to it: ``created`` or ``exists``."""

    kind: str
    name: str
    outcome: str


def ensure_environment(clients: AwsClients, resources: EnvironmentResources) -> list[ProvisionAction]:
    """Create (or confirm) the environment's buckets, registry table, alert topic, the queue
    ``stagewise alerts tail`` reads (subscribed before the first run publishes anything), and the
    secret salt of the id hash (``stagewise.platform.runtime.idhash``).

    When the digest marker (``provisioned_parameter``) says these very resources were provisioned
    by this code, nothing else is called and every outcome is ``exists``.

    Raises:
        botocore.exceptions.ClientError: an AWS call failed for a reason other than "already exists".
    """
    ssm, marker, digest = clients.client("ssm"), provisioned_parameter(resources), environment_digest(resources)
    try:
        if ssm.get_parameter(Name=marker)["Parameter"]["Value"] == digest:
            return [ProvisionAction(kind, name, "exists") for kind, name in inventory(resources)]
    except ClientError as e:
        if e.response["Error"]["Code"] != "ParameterNotFound":
            raise
    actions = [ensure_bucket(clients, b, resources) for b in resources.buckets]
    actions.append(ensure_table(clients, resources.registry_table))
    actions.append(ensure_topic(clients, resources.alert_topic))
    queue = ensure_tail_queue(clients, resources)
    actions.append(ProvisionAction("sqs queue", tail_queue_name(resources), "created" if queue.subscribed_now else "exists"))
    actions.append(ProvisionAction("ssm parameter", salt_parameter(resources), ensure_id_salt(clients, resources)))
    ssm.put_parameter(Name=marker, Value=digest, Type="String", Overwrite=True,
                      Description="Stagewise (embedded AWS only): digest of the environment as last provisioned")
    return actions


def inventory(resources: EnvironmentResources) -> list[tuple[str, str]]:
    """``(kind, name)`` of every resource ``ensure_environment`` provisions, in its order."""
    return [*(("s3 bucket", b.name) for b in resources.buckets), ("dynamodb table", resources.registry_table.name),
            ("sns topic", resources.alert_topic.name), ("sqs queue", tail_queue_name(resources)),
            ("ssm parameter", salt_parameter(resources))]


def provisioned_parameter(resources: EnvironmentResources) -> str:
    """The SSM parameter holding the digest of the last provisioning,
    ``/stagewise-embedded/<env>/provisioned``: outside the stack's parameter prefix (the stack
    declares no such parameter; parity compares that prefix only)."""
    return f"/stagewise-embedded/{resources.environment}/provisioned"


def environment_digest(resources: EnvironmentResources) -> str:
    """sha256 of what ``ensure_environment`` provisions: the resources' specifications, the tail
    queue's policy and the code of this module and of the id salt's (a change to either
    provisions again)."""
    queue_arn = resources.arn("sqs", tail_queue_name(resources))
    data = {"resources": asdict(resources), "queue_policy": tail_queue_policy(queue_arn, resources.alert_topic_arn)}
    h = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode())
    for module in (__file__, idhash.__file__):
        h.update(Path(module).read_bytes())
    return h.hexdigest()


def ensure_bucket(clients: AwsClients, spec: BucketSpec, resources: EnvironmentResources) -> ProvisionAction:
    """Create the bucket with SSE, versioning, public access blocked, TLS-only policy, lifecycle."""
    s3 = clients.client("s3")
    outcome = "created"
    kwargs: dict = {"Bucket": spec.name}
    if resources.region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": resources.region}
    try:
        s3.create_bucket(**kwargs)
    except ClientError as e:
        if e.response["Error"]["Code"] != "BucketAlreadyOwnedByYou":
            raise
        outcome = "exists"
    s3.put_bucket_encryption(
        Bucket=spec.name,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": spec.sse_algorithm}}]
        },
    )
    if spec.versioning:
        s3.put_bucket_versioning(Bucket=spec.name, VersioningConfiguration={"Status": "Enabled"})
    s3.put_public_access_block(
        Bucket=spec.name,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    if not clients.target.embedded:
        # moto evaluates bucket policies without their Conditions ("Conditions are not taken into
        # account", moto's put_bucket_policy docs), so this conditional Deny would deny every call.
        # The embedded AWS is served over TLS anyway; on AWS the Pulumi stack owns this policy.
        arn = f"arn:{resources.partition}:s3:::{spec.name}"
        s3.put_bucket_policy(Bucket=spec.name, Policy=json.dumps(tls_only_bucket_policy(arn)))
    if spec.lifecycle:
        rules = []
        for r in spec.lifecycle:
            rule: dict = {
                "ID": r.id,
                "Filter": {"Prefix": r.prefix},
                "Status": "Enabled",
                "NoncurrentVersionExpiration": {"NoncurrentDays": r.noncurrent_days},
            }
            if r.expire_days:
                rule["Expiration"] = {"Days": r.expire_days}
            rules.append(rule)
        s3.put_bucket_lifecycle_configuration(Bucket=spec.name, LifecycleConfiguration={"Rules": rules})
    if resources.tags:
        s3.put_bucket_tagging(
            Bucket=spec.name, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in resources.tags.items()]}
        )
    return ProvisionAction("s3 bucket", spec.name, outcome)


def ensure_table(clients: AwsClients, spec: TableSpec) -> ProvisionAction:
    """Create the registry table (on-demand) if missing, wait until ACTIVE, enable PITR."""
    ddb = clients.client("dynamodb")
    outcome = "created"
    try:
        ddb.create_table(
            TableName=spec.name,
            BillingMode="PAY_PER_REQUEST",
            KeySchema=[
                {"AttributeName": spec.hash_key.name, "KeyType": "HASH"},
                {"AttributeName": spec.range_key.name, "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[{"AttributeName": a.name, "AttributeType": a.type} for a in spec.attributes],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": i.name,
                    "KeySchema": [
                        {"AttributeName": i.hash_key.name, "KeyType": "HASH"},
                        {"AttributeName": i.range_key.name, "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
                for i in spec.indexes
            ],
            DeletionProtectionEnabled=spec.deletion_protection,
        )
    except ClientError as e:
        if e.response["Error"]["Code"] != "ResourceInUseException":
            raise
        outcome = "exists"
    ddb.get_waiter("table_exists").wait(TableName=spec.name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    if spec.point_in_time_recovery:
        ddb.update_continuous_backups(
            TableName=spec.name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
        )
    return ProvisionAction("dynamodb table", spec.name, outcome)


def ensure_topic(clients: AwsClients, spec: TopicSpec) -> ProvisionAction:
    """Create the alert topic (CreateTopic is idempotent) and subscribe the alert e-mails."""
    sns = clients.client("sns")
    arn = sns.create_topic(Name=spec.name)["TopicArn"]
    existing = {
        s["Endpoint"]
        for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=arn)
        for s in page["Subscriptions"]
        if s["Protocol"] == "email"
    }
    for email in spec.emails:
        if email not in existing:
            sns.subscribe(TopicArn=arn, Protocol="email", Endpoint=email)
    return ProvisionAction("sns topic", spec.name, "exists" if existing else "created")


@dataclass(frozen=True)
class TailQueue:
    """The queue ``stagewise alerts tail`` reads, and whether it was subscribed by this call."""

    url: str
    arn: str
    subscribed_now: bool


def tail_queue_name(resources: EnvironmentResources) -> str:
    """Name of the embedded AWS's alert tail queue: ``stagewise-<env>-alerts-tail``."""
    return f"stagewise-{resources.environment}-alerts-tail"


def ensure_tail_queue(clients: AwsClients, resources: EnvironmentResources) -> TailQueue:
    """Create (idempotently) the alert tail queue, let only the alert topic send to it, and
    subscribe it to the topic (SNS -> SQS). Embedded AWS only: callers check.

    Raises:
        botocore.exceptions.ClientError: an SQS or SNS call failed.
    """
    sqs, sns = clients.client("sqs"), clients.client("sns")
    name, topic_arn = tail_queue_name(resources), resources.alert_topic_arn
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") not in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
            raise
        url = sqs.create_queue(QueueName=name, tags=dict(resources.tags))["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(tail_queue_policy(arn, topic_arn))})
    subscribed = any(
        s["Protocol"] == "sqs" and s["Endpoint"] == arn
        for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic_arn)
        for s in page["Subscriptions"]
    )
    if not subscribed:
        sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn, ReturnSubscriptionArn=True)
    return TailQueue(url, arn, subscribed_now=not subscribed)
