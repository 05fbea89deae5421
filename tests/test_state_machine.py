"""The compiled state machine: valid ASL, the container contract, and its control flow on moto.

``asl-validator`` (npm, pinned in package.json; install with ``npm ci --no-audit --no-fund``) checks
the PIPELINE and SCORING documents of dev, test and prod. A missing validator fails the tests: CI
must really validate.

The control-flow tests run the compiled dev document, unchanged, on moto's Step Functions engine.
Tests stand in for the ECS containers: the engine's ``ecs:runTask.waitForTaskToken`` starts a task
in moto's ECS, the test finds it with ``ListTasks``/``DescribeTasks``, reads ``STAGEWISE_TASK_TOKEN``
from the task's container overrides and answers with ``SendTaskSuccess`` (a JSON summary; the
validate group's carries ``partitions``, a score partition's ``partition`` and ``rows_scored``) or
``SendTaskFailure`` (``Stagewise.*`` error and a cause), exactly as the container entrypoint does,
then stops the task as the container would by exiting.

Why a private engine server. The engine runs in the server's process and acts on its own
backends; this module's server is in-process over plain HTTP, so the tests control when the engine
executes (``/moto-api/config``) and reset it afterwards, without touching the session's embedded
AWS. Where moto 5.2's engine differs from Step Functions (ECS parameters and responses, the
dropped ``CapacityProviderStrategy``, service calls as the execution role, ``States.HeartbeatTimeout``,
``SendTaskFailure``'s cause, ``ToleratedFailurePercentage``), it is put right by
``stagewise.platform.runtime.moto_patches``, the same patches the embedded AWS applies (each named
there with the AWS behaviour it restores; ``tests/test_moto_patches.py`` fails if moto changes under
one). The state machine itself is not changed for moto. Two moto ECS gaps are met by the fixtures
instead: containers declare cpu and memory, and the VPC has DNS hostnames.

The Distributed Map. moto 5.2.5 runs a ``DISTRIBUTED`` Map in-process: a Map Run (``ListMapRuns``,
``DescribeMapRun`` with its item counts, ``MaxConcurrency`` and tolerance), at most
``MaxConcurrency`` items at a time, each item's states kept out of the parent's history as a
child execution's would be, and ``MapRunStarted``/``MapRunSucceeded``/``MapRunFailed`` events. It
starts no child executions as API resources, so the role's rights to start and describe them
are checked by the stack tests (parliament, ``tests/test_stack.py``), not here.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from stagewise.pipeline.asl import (
    StateMachineTarget,
    compile_for_environment,
    compile_pipeline,
    target_for_environment,
    to_json,
)
from stagewise.pipeline.definition import PIPELINE, SCORING, Pipeline
from stagewise.platform.contract import Env, TaskError
from stagewise.platform.runtime import moto_patches
from stagewise.platform.runtime.aws import AwsClients, AwsTarget
from stagewise.platform.runtime.provision import ensure_environment
from stagewise.platform.resources import EnvironmentResources, environment_resources
from stagewise.stacks.settings import ENVIRONMENTS, EnvironmentSettings, load_settings

REPO = Path(__file__).resolve().parent.parent
VALIDATOR = REPO / "node_modules" / ".bin" / "asl-validator"
NPM_CI = "npm ci --no-audit --no-fund"
DATA = "s3://stagewise-dev-data-314159265358/raw/customers.parquet"
MODEL = "engagement"
EXCEED_TOLERATED_FAILURE = "States.ExceedToleratedFailureThreshold"


def _offline_target(env: str) -> tuple[EnvironmentSettings, EnvironmentResources, dict[str, str]]:
    settings = load_settings(env, REPO)
    resources = environment_resources(settings)
    arns = {t: resources.arn("ecs", f"task-definition/{family}:1") for t, family in resources.compute.task_families.items()}
    return settings, resources, arns


def _compile(env: str, pipeline: Pipeline = PIPELINE) -> dict[str, Any]:
    settings, resources, arns = _offline_target(env)
    return compile_for_environment(settings, resources, arns, ["subnet-0a1b2c3d"], ["sg-0a1b2c3d"], pipeline)


def _validate(definition: str) -> subprocess.CompletedProcess[str]:
    if not VALIDATOR.exists():
        pytest.fail(f"{VALIDATOR} is missing: run `{NPM_CI}` in {REPO} (the ASL must really be validated, so this does not skip)")
    return subprocess.run(
        [str(VALIDATOR), "--json-definition", definition], capture_output=True, text=True, timeout=60, check=False
    )


# ---------------------------------------------------------------------------------------------
# The document: asl-validator and the container contract


@pytest.mark.parametrize("pipeline", [PIPELINE, SCORING], ids=lambda p: p.name)
@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_asl_validator_accepts_the_compiled_state_machine(env: str, pipeline: Pipeline) -> None:
    result = _validate(to_json(_compile(env, pipeline)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is valid" in result.stdout


def test_asl_validator_rejects_a_dangling_transition() -> None:
    asl = _compile("dev")
    asl["States"]["Train"]["Next"] = "Nowhere"
    result = _validate(to_json(asl))
    assert result.returncode == 1
    assert "MISSING_TRANSITION_TARGET" in result.stdout + result.stderr


def test_states_follow_the_task_groups() -> None:
    asl = _compile("dev")
    assert asl["StartAt"] == "Triggered"
    assert list(asl["States"]) == [
        "Triggered", "ClaimInput", "ClaimInputOnDemand", "Claimed", "AlreadyProcessed",
        "Validate", "ValidateOnDemand", "ValidateFannedOut", "ValidatePartitions", "ValidatePartitionsFailed",
        "ValidateMerge", "ValidateMergeOnDemand",
        "Train", "TrainOnDemand", "Score", "ScoreFailed", "Report", "ReportOnDemand", "Done",
        "NotifyValidationFailed", "ValidationFailed", "NotifyGateFailed", "GateFailed", "NotifyFailure", "PipelineFailed",
    ]  # fmt: skip
    assert [asl["States"][s]["Next"] for s in ("Validate", "ValidatePartitions", "ValidateMerge", "Train", "Score", "Report")] == [
        "ValidateFannedOut", "ValidateMerge", "Train", "Score", "Report", "Done"]
    # validated by the first task (one partition): straight on; else the Map and the merge
    assert asl["States"]["ValidateFannedOut"]["Default"] == "Train"
    # an input with a trigger (the S3 rule, the schedule) claims its content first; any other starts at Validate
    assert asl["States"]["Triggered"]["Default"] == "Validate" and asl["States"]["ClaimInput"]["Next"] == "Claimed"
    assert asl["States"]["Claimed"]["Choices"][0]["Next"] == "Validate" and asl["States"]["Claimed"]["Default"] == "AlreadyProcessed"
    command = asl["States"]["ClaimInput"]["Parameters"]["Overrides"]["ContainerOverrides"][0]["Command.$"]
    assert command.startswith("States.Array('claim', '--run-id', $.run_id") and "$$.Execution.Id" in command
    scoring = _compile("dev", SCORING)
    assert [scoring["States"][s]["Next"] for s in ("ValidateMerge", "Score", "Report")] == ["Score", "Report", "Done"]
    assert scoring["States"]["ValidateFannedOut"]["Default"] == "Score"
    assert all(state["Comment"] for state in asl["States"].values())


def test_ecs_task_state_matches_the_container_contract() -> None:
    asl = _compile("prod")
    settings, resources, arns = _offline_target("prod")
    train = asl["States"]["Train"]
    assert train["Resource"] == "arn:aws:states:::ecs:runTask.waitForTaskToken"
    assert train["Parameters"] == {
        "Cluster": resources.arn("ecs", "cluster/stagewise-prod"),
        "TaskDefinition": arns["train"],
        "CapacityProviderStrategy": [{"CapacityProvider": "FARGATE_SPOT", "Weight": 1}],
        "NetworkConfiguration": {
            "AwsvpcConfiguration": {"Subnets": ["subnet-0a1b2c3d"], "SecurityGroups": ["sg-0a1b2c3d"], "AssignPublicIp": "ENABLED"}
        },
        "PropagateTags": "TASK_DEFINITION",
        "Overrides": {
            "ContainerOverrides": [
                {
                    "Name": "job",
                    "Command.$": "States.Array('train', '--run-id', $.run_id, '--data', $.data, '--model', $.model, '--env', 'prod')",
                    "Environment": [
                        {"Name": "STAGEWISE_TASK_TOKEN", "Value.$": "$$.Task.Token"},
                        {"Name": "STAGEWISE_CAPACITY_PROVIDER", "Value": "FARGATE_SPOT"},
                    ],
                }
            ]
        },
    }
    assert train["HeartbeatSeconds"] == 300
    assert train["ResultPath"] == "$.results.train"
    assert train["Retry"] == [
        {"ErrorEquals": ["Stagewise.RunLocked"], "IntervalSeconds": 60, "MaxAttempts": 20, "BackoffRate": 1.0},
        {
            "ErrorEquals": ["Stagewise.SpotInterruption", "States.HeartbeatTimeout", "ECS.AmazonECSException"],
            "IntervalSeconds": 30,
            "MaxAttempts": 2,
            "BackoffRate": 2.0,
        }
    ]
    assert train["Catch"] == [
        {"ErrorEquals": ["Stagewise.SpotInterruption", "States.HeartbeatTimeout"], "ResultPath": "$.error", "Next": "TrainOnDemand"},
        {"ErrorEquals": ["Stagewise.ValidationFailed"], "ResultPath": "$.error", "Next": "NotifyValidationFailed"},
        {"ErrorEquals": ["Stagewise.GateFailed"], "ResultPath": "$.error", "Next": "NotifyGateFailed"},
        {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "NotifyFailure"},
    ]
    fallback = asl["States"]["TrainOnDemand"]
    assert fallback["Parameters"]["CapacityProviderStrategy"] == [{"CapacityProvider": "FARGATE", "Weight": 1}]
    # the fallback tells the container it is the on-demand retry (it counts OnDemandFallbacks)
    assert fallback["Parameters"]["Overrides"]["ContainerOverrides"][0]["Environment"][1] == {
        "Name": "STAGEWISE_CAPACITY_PROVIDER", "Value": "FARGATE"}
    different = ("CapacityProviderStrategy", "Overrides")
    assert {k: v for k, v in fallback["Parameters"].items() if k not in different} == {
        k: v for k, v in train["Parameters"].items() if k not in different
    }
    assert fallback["Catch"] == train["Catch"][1:]
    assert asl["States"]["Report"]["Parameters"]["TaskDefinition"] == arns["score"]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_score_is_a_distributed_map_as_concurrent_as_the_stack_setting(env: str) -> None:
    score = _compile(env)["States"]["Score"]
    assert score["Type"] == "Map"
    assert score["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    assert score["Label"] == "Score"  # child executions: execution:<state machine>/Score:<id>
    # dev 2, test 4, prod 16: Pulumi.<env>.yaml's stagewise:scoringConcurrency
    assert score["MaxConcurrency"] == load_settings(env, REPO).scoring_concurrency == {"dev": 2, "test": 4, "prod": 16}[env]
    assert score["ToleratedFailurePercentage"] == 0
    assert score["ItemsPath"] == "$.results.validate.partitions"
    assert score["ItemSelector"] == {
        "run_id.$": "$.run_id", "data.$": "$.data", "model.$": "$.model", "partition.$": "$$.Map.Item.Value",
    }  # fmt: skip
    # the payload stays bounded: a child returns index and rows, the Map keeps their count
    assert (score["ResultSelector"], score["ResultPath"]) == ({"partitions.$": "States.ArrayLength($)"}, "$.results.score")
    # a failed partition alerted with its own error in its child execution: the Map's failure is not alerted twice
    assert score["Catch"] == [
        {"ErrorEquals": ["States.ExceedToleratedFailureThreshold"], "ResultPath": "$.error", "Next": "ScoreFailed"},
        {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "NotifyFailure"},
    ]
    assert _compile(env)["States"]["ScoreFailed"]["Type"] == "Fail"
    inner = score["ItemProcessor"]
    assert inner["StartAt"] == "ScorePartition" and set(inner["States"]) == {
        "ScorePartition", "ScorePartitionOnDemand", "NotifyScorePartitionFailed", "ScorePartitionFailed"}
    command = inner["States"]["ScorePartition"]["Parameters"]["Overrides"]["ContainerOverrides"][0]["Command.$"]
    assert command == (
        f"States.Array('score', '--run-id', $.run_id, '--data', $.data, '--model', $.model, '--env', '{env}', "
        "'--partition', States.Format('{}', $.partition.index), '--partitions', States.Format('{}', $.partition.count))"
    )
    for name in ("ScorePartition", "ScorePartitionOnDemand"):
        state = inner["States"][name]
        assert state["ResultSelector"] == {"index.$": "$.partition.index", "rows_scored.$": "$.rows_scored"}
        assert "ResultPath" not in state and state["End"] is True
        assert state["Catch"][-1] == {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "NotifyScorePartitionFailed"}
    assert inner["States"]["ScorePartition"]["Catch"][0]["Next"] == "ScorePartitionOnDemand"
    assert len(inner["States"]["ScorePartitionOnDemand"]["Catch"]) == 1


def test_validation_fans_out_to_a_distributed_map_then_a_merge_task() -> None:
    """On AWS the validate group is three tasks when the input has several partitions: the first
    (``--fan-out``) ingests and plans, a Distributed Map validates each partition's row groups,
    and the merge task (``--merge``) decides; every one on the validate task definition."""
    asl = _compile("dev")
    settings, resources, arns = _offline_target("dev")
    states = asl["States"]

    def command(state: dict) -> str:
        return state["Parameters"]["Overrides"]["ContainerOverrides"][0]["Command.$"]

    base = "States.Array('validate', '--run-id', $.run_id, '--data', $.data, '--model', $.model, '--env', 'dev'"
    assert command(states["Validate"]) == base + ", '--fan-out')"
    assert command(states["ValidateMerge"]) == base + ", '--merge')"
    assert states["Validate"]["ResultPath"] == states["ValidateMerge"]["ResultPath"] == "$.results.validate"
    assert {states[s]["Parameters"]["TaskDefinition"] for s in ("Validate", "ValidateMerge")} == {arns["validate"]}
    # a validation failure found by the merge alerts and fails as the first task's would
    assert states["ValidateMerge"]["Catch"][1:] == states["Validate"]["Catch"][1:]
    assert states["ValidateMerge"]["Catch"][1] == {"ErrorEquals": ["Stagewise.ValidationFailed"], "ResultPath": "$.error",
                                                   "Next": "NotifyValidationFailed"}
    choice = states["ValidateFannedOut"]
    assert choice["Choices"] == [{"And": [{"Variable": "$.results.validate.validated", "IsPresent": True},
                                          {"Variable": "$.results.validate.validated", "BooleanEquals": False}],
                                  "Next": "ValidatePartitions"}]
    fan = states["ValidatePartitions"]
    assert (fan["Type"], fan["Label"], fan["ItemsPath"], fan["MaxConcurrency"]) == (
        "Map", "ValidatePartitions", "$.results.validate.partitions", 2)
    assert fan["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    assert (fan["ResultSelector"], fan["ResultPath"]) == ({"partitions.$": "States.ArrayLength($)"}, "$.results.validate_partitions")
    inner = fan["ItemProcessor"]["States"]
    assert set(inner) == {"ValidatePartition", "ValidatePartitionOnDemand", "NotifyValidatePartitionFailed",
                          "ValidatePartitionFailed"}
    assert command(inner["ValidatePartition"]) == base + (
        ", '--partition', States.Format('{}', $.partition.index), '--partitions', States.Format('{}', $.partition.count))")
    assert inner["ValidatePartition"]["Parameters"]["TaskDefinition"] == arns["validate"]
    assert inner["ValidatePartition"]["ResultSelector"] == {"index.$": "$.partition.index", "rows.$": "$.rows"}


@pytest.mark.parametrize("concurrency", [0, -1, 10_001])
def test_compile_refuses_a_scoring_concurrency_a_distributed_map_cannot_take(concurrency: int) -> None:
    settings, resources, arns = _offline_target("dev")
    target = target_for_environment(settings, resources, arns, ["subnet-0a1b2c3d"], ["sg-0a1b2c3d"])
    with pytest.raises(ValueError, match="scoring_concurrency must be 1..10000"):
        compile_pipeline(PIPELINE, replace(target, scoring_concurrency=concurrency))
    assert compile_pipeline(PIPELINE, replace(target, scoring_concurrency=10_000))["States"]["Score"]["MaxConcurrency"] == 10_000


def test_failure_paths_alert_then_fail() -> None:
    states = _compile("dev")["States"]
    for notify, fail, subject in [
        ("NotifyValidationFailed", "ValidationFailed", "[Stagewise dev] stagewise: validation failed"),
        ("NotifyGateFailed", "GateFailed", "[Stagewise dev] stagewise: gate failed"),
        ("NotifyFailure", "PipelineFailed", "[Stagewise dev] stagewise: pipeline failed"),
    ]:
        assert states[notify]["Resource"] == "arn:aws:states:::sns:publish"
        assert states[notify]["Parameters"]["TopicArn"] == "arn:aws:sns:eu-west-1:314159265358:stagewise-dev-alerts"
        assert states[notify]["Parameters"]["Subject"] == subject
        assert "$.run_id" in states[notify]["Parameters"]["Message.$"]
        assert "$.error.Cause" in states[notify]["Parameters"]["Message.$"]
        assert states[notify]["ResultPath"] is None
        assert states[notify]["Next"] == fail
        assert states[fail]["Type"] == "Fail"
    assert (states["ValidationFailed"]["Error"], states["ValidationFailed"]["CausePath"]) == (TaskError.VALIDATION_FAILED, "$.error.Cause")
    assert (states["GateFailed"]["Error"], states["GateFailed"]["CausePath"]) == (TaskError.GATE_FAILED, "$.error.Cause")
    assert (states["PipelineFailed"]["Error"], states["PipelineFailed"]["CausePath"]) == (
        TaskError.PIPELINE_FAILED, "States.Format('{}: {}', $.error.Error, $.error.Cause)",
    )  # fmt: skip


def test_compile_refuses_a_target_missing_a_task_definition() -> None:
    settings, resources, arns = _offline_target("dev")
    del arns["train"]
    with pytest.raises(ValueError, match="no task definition ARN for 'train'"):
        compile_for_environment(settings, resources, arns, ["subnet-0a1b2c3d"], ["sg-0a1b2c3d"])
    target = target_for_environment(settings, resources, {**arns, "train": "arn"}, [], ["sg-0a1b2c3d"])
    with pytest.raises(ValueError, match="no subnets"):
        compile_pipeline(PIPELINE, target)


# ---------------------------------------------------------------------------------------------
# moto's Step Functions engine, on a private in-process server (see the module docstring)


def _moto_config(endpoint: str, execute: bool) -> None:
    body = json.dumps({"stepfunctions": {"execute_state_machine": execute}}).encode()
    request = urllib.request.Request(f"{endpoint}/moto-api/config", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status in (200, 201)


@pytest.fixture(scope="module")
def engine() -> Iterator[str]:
    """A private moto server (plain HTTP, in-process) with the state machine engine on."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    undo = moto_patches.apply(endpoint)  # what the embedded AWS's server process applies too
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        _moto_config(endpoint, execute=True)
        yield endpoint
    finally:
        _moto_config(endpoint, execute=False)
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10)
        server.stop()
        undo()


@dataclass
class Deployed:
    """The dev environment on the engine's server, with the compiled state machine created."""

    clients: AwsClients
    resources: EnvironmentResources
    target: StateMachineTarget
    state_machine_arn: str
    queue_url: str

    def client(self, service: str) -> Any:
        """A client in the dev account."""
        return self.clients.client(service)


@pytest.fixture(scope="module")
def deployed(engine: str) -> Deployed:
    """Dev's resources (provisioned as `stagewise run` does), plus what the Pulumi stack would
    create: ECS cluster and task definitions, VPC network, execution role, the state machine, and
    an SQS queue subscribed to the alert topic to read the alerts."""
    settings = load_settings("dev", REPO)
    resources = environment_resources(settings)
    clients = AwsClients(AwsTarget.for_settings(settings, engine))
    ensure_environment(clients, resources)
    assert clients.caller_identity()["Account"] == "314159265358"

    ecs, ec2, iam = clients.client("ecs"), clients.client("ec2"), clients.client("iam")
    cluster = ecs.create_cluster(
        clusterName=resources.compute.cluster,
        capacityProviders=["FARGATE_SPOT", "FARGATE"],
        defaultCapacityProviderStrategy=[{"capacityProvider": "FARGATE_SPOT", "weight": 1}],
    )["cluster"]
    sizes = {"validate": settings.task_sizes.validate_, "train": settings.task_sizes.train, "score": settings.task_sizes.score}
    task_definition_arns = {
        name: ecs.register_task_definition(
            family=family,
            requiresCompatibilities=["FARGATE"],
            networkMode="awsvpc",
            cpu=str(sizes[name].cpu),
            memory=str(sizes[name].memory_mib),
            containerDefinitions=[
                {
                    "name": "job",
                    "image": f"{settings.account_id}.dkr.ecr.{settings.region}.amazonaws.com/{resources.compute.repository}:test",
                    "cpu": sizes[name].cpu,  # moto's RunTask needs container-level sizes
                    "memory": sizes[name].memory_mib,
                    "essential": True,
                }
            ],
        )["taskDefinition"]["taskDefinitionArn"]
        for name, family in resources.compute.task_families.items()
    }
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})  # moto's task ENIs need it
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(VpcId=vpc, GroupName="stagewise-dev-tasks", Description="pipeline tasks")["GroupId"]
    role = iam.create_role(
        RoleName="stagewise-dev-states",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": {"Service": "states.amazonaws.com"}, "Action": "sts:AssumeRole"}],
            }
        ),
    )["Role"]["Arn"]

    target = replace(
        target_for_environment(settings, resources, task_definition_arns, [subnet], [group]),
        retry_interval_seconds=1,  # 30 s on AWS; the retry path would take 90 s here
    )
    assert target.cluster_arn == cluster["clusterArn"]
    state_machine_arn = clients.client("stepfunctions").create_state_machine(
        name=resources.compute.state_machine, definition=to_json(compile_pipeline(PIPELINE, target)), roleArn=role
    )["stateMachineArn"]

    sqs, sns = clients.client("sqs"), clients.client("sns")
    queue_url = sqs.create_queue(QueueName="stagewise-dev-alert-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=resources.alert_topic_arn, Protocol="sqs", Endpoint=queue_arn)
    return Deployed(clients, resources, target, state_machine_arn, queue_url)


@dataclass(frozen=True)
class StartedTask:
    """An ECS task the state machine started, as its container sees it."""

    arn: str
    command: list[str]
    capacity_provider: str
    task_definition_arn: str
    token: str

    @property
    def group(self) -> str:
        """The task group (the first argument of ``stagewise-task``)."""
        return self.command[0]


class Containers:
    """Stands in for the ECS containers of one execution (see the module docstring)."""

    def __init__(self, deployed: Deployed) -> None:
        self.ecs = deployed.client("ecs")
        self.sfn = deployed.client("stepfunctions")
        self.cluster = deployed.resources.compute.cluster
        self.execution_arn = ""
        self.seen: set[str] = set(self._task_arns())  # tasks of earlier executions

    def _task_arns(self) -> list[str]:
        pages = self.ecs.get_paginator("list_tasks").paginate(cluster=self.cluster)
        return [arn for page in pages for arn in page["taskArns"]]

    def started(self, count: int = 1, timeout: float = 60.0) -> list[StartedTask]:
        """Wait for ``count`` newly started tasks (60 s: on a loaded machine, with another test
        file's runs on the other xdist worker, moto's engine took over 20 s to start one)."""
        found: list[StartedTask] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            new = [a for a in self._task_arns() if a not in self.seen]
            if new:
                for task in self.ecs.describe_tasks(cluster=self.cluster, tasks=new)["tasks"]:
                    self.seen.add(task["taskArn"])
                    found.append(self._as_container(task))
                if len(found) >= count:
                    assert len(found) == count, f"expected {count} tasks, the state machine started {len(found)}"
                    return found
            status = self.sfn.describe_execution(executionArn=self.execution_arn)["status"]
            assert status == "RUNNING", f"execution is {status} while waiting for a task: {_entered(self.sfn, self.execution_arn)}"
            time.sleep(0.1)
        raise AssertionError(f"no ECS task within {timeout} s; states entered: {_entered(self.sfn, self.execution_arn)}")

    def next(self) -> StartedTask:
        """Wait for the next started task."""
        return self.started(1)[0]

    def none_started(self, seconds: float) -> None:
        """Assert that the state machine starts no task for ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            new = [a for a in self._task_arns() if a not in self.seen]
            assert not new, f"{len(new)} more tasks started"
            time.sleep(0.1)

    def _as_container(self, task: dict) -> StartedTask:
        override = task["overrides"]["containerOverrides"][0]
        assert override["name"] == "job"
        env = {e["name"]: e["value"] for e in override["environment"]}
        return StartedTask(
            arn=task["taskArn"],
            command=override["command"],
            capacity_provider=task["capacityProviderName"],
            task_definition_arn=task["taskDefinitionArn"],
            token=env[Env.TASK_TOKEN],
        )

    def succeed(self, task: StartedTask, output: dict[str, Any]) -> None:
        """Report success as the entrypoint does, then exit."""
        self.sfn.send_task_success(taskToken=task.token, output=json.dumps(output))
        self.ecs.stop_task(cluster=self.cluster, task=task.arn, reason="Essential container in task exited")

    def fail(self, task: StartedTask, error: str, cause: str) -> None:
        """Report failure as the entrypoint does, then exit."""
        self.sfn.send_task_failure(taskToken=task.token, error=error, cause=cause)
        self.ecs.stop_task(cluster=self.cluster, task=task.arn, reason="Essential container in task exited")


def _history(sfn: Any, execution_arn: str) -> list[dict]:
    pages = sfn.get_paginator("get_execution_history").paginate(executionArn=execution_arn)
    return [e for page in pages for e in page["events"]]


def _entered(sfn: Any, execution_arn: str) -> list[str]:
    return [e["stateEnteredEventDetails"]["name"] for e in _history(sfn, execution_arn) if "stateEnteredEventDetails" in e]


def _finished(sfn: Any, execution_arn: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        execution = sfn.describe_execution(executionArn=execution_arn)
        if execution["status"] != "RUNNING":
            return execution
        time.sleep(0.1)
    raise AssertionError(f"execution still running after {timeout} s: {_entered(sfn, execution_arn)}")


def _start(deployed: Deployed, run_id: str, state_machine_arn: str | None = None) -> tuple[str, Containers]:
    containers = Containers(deployed)  # before the execution starts: it must not miss its first task
    containers.execution_arn = deployed.client("stepfunctions").start_execution(
        stateMachineArn=state_machine_arn or deployed.state_machine_arn,
        name=run_id,
        input=json.dumps({"run_id": run_id, "data": DATA, "model": MODEL}),
    )["executionArn"]
    return containers.execution_arn, containers


def _args(group: str, run_id: str, *extra: str) -> list[str]:
    return [group, "--run-id", run_id, "--data", DATA, "--model", MODEL, "--env", "dev", *extra]


def _partitions(n: int) -> list[dict[str, int]]:
    return [{"index": i, "count": n} for i in range(n)]


def _score_output(task: StartedTask, rows: int = 500) -> dict[str, Any]:
    """A score partition's SendTaskSuccess output, shaped as the entrypoint's (``_output``)."""
    run_id, index, count = task.command[2], int(task.command[-3]), int(task.command[-1])
    return {
        "run_id": run_id, "group": "score", "model": MODEL, "environment": "dev",
        "state_uri": f"s3://stagewise-dev-data-314159265358/runs/{run_id}/state.json",
        "partition": {"index": index, "count": count}, "rows_scored": rows,
        "staged_uri": f"s3://stagewise-dev-data-314159265358/staging/predictions/{MODEL}/run={run_id}/part-{index:05d}.parquet",
        "staged_shadow_uri": None,
    }  # fmt: skip


def _map_run(sfn: Any, execution_arn: str) -> dict:
    """The execution's one Map Run (the Distributed Map ``Score``), as DescribeMapRun shows it."""
    (listed,) = sfn.list_map_runs(executionArn=execution_arn)["mapRuns"]
    return sfn.describe_map_run(mapRunArn=listed["mapRunArn"])


def test_success_runs_every_group_on_spot_and_maps_the_partitions(deployed: Deployed) -> None:
    run_id = "run-success"
    execution_arn, containers = _start(deployed, run_id)
    arns = deployed.target.task_definition_arns

    validate = containers.next()
    assert (validate.command, validate.capacity_provider, validate.task_definition_arn) == (
        _args("validate", run_id, "--fan-out"), "FARGATE_SPOT", arns["validate"],
    )  # fmt: skip
    containers.succeed(validate, {"rows": 1000, "valid": True, "partitions": _partitions(2)})

    train = containers.next()
    assert (train.command, train.capacity_provider, train.task_definition_arn) == (_args("train", run_id), "FARGATE_SPOT", arns["train"])
    containers.succeed(train, {"version": 3, "r2": 0.41})

    scores = sorted(containers.started(2), key=lambda t: t.command)
    assert [t.command for t in scores] == [
        _args("score", run_id, "--partition", "0", "--partitions", "2"),
        _args("score", run_id, "--partition", "1", "--partitions", "2"),
    ]
    assert {(t.capacity_provider, t.task_definition_arn) for t in scores} == {("FARGATE_SPOT", arns["score"])}
    assert len({t.token for t in scores}) == 2
    for task in scores:
        containers.succeed(task, _score_output(task))

    report = containers.next()
    assert (report.command, report.capacity_provider, report.task_definition_arn) == (_args("report", run_id), "FARGATE_SPOT", arns["score"])
    containers.succeed(report, {"decision": "advance"})

    execution = _finished(deployed.client("stepfunctions"), execution_arn)
    assert execution["status"] == "SUCCEEDED"
    output = json.loads(execution["output"])
    assert {k: output[k] for k in ("run_id", "data", "model")} == {"run_id": run_id, "data": DATA, "model": MODEL}
    assert output["results"] == {
        "validate": {"rows": 1000, "valid": True, "partitions": _partitions(2)},
        "train": {"version": 3, "r2": 0.41},
        "score": {"partitions": 2},  # the partitions' results are in S3, not in the payload
        "report": {"decision": "advance"},
    }
    sfn = deployed.client("stepfunctions")
    # the partitions ran as child executions of the Map Run, each with its own history
    assert _entered(sfn, execution_arn) == ["Triggered", "Validate", "ValidateFannedOut", "Train", "Score", "Report", "Done"]
    assert {"MapRunStarted", "MapRunSucceeded"} <= {e["type"] for e in _history(sfn, execution_arn)}
    map_run = _map_run(sfn, execution_arn)
    assert map_run["mapRunArn"].split(":mapRun:")[1].startswith(f"{deployed.resources.compute.state_machine}/Score:")
    assert (map_run["status"], map_run["maxConcurrency"], map_run["toleratedFailurePercentage"]) == ("SUCCEEDED", 2, 0)
    assert (map_run["itemCounts"]["total"], map_run["itemCounts"]["succeeded"]) == (2, 2)


def test_spot_interruptions_are_retried_then_run_on_demand(deployed: Deployed) -> None:
    run_id = "run-spot"
    execution_arn, containers = _start(deployed, run_id)
    containers.succeed(containers.next(), {"rows": 10, "partitions": _partitions(1)})

    started = time.monotonic()
    for attempt in range(3):  # the first try and two retries, 1 s then 2 s apart
        train = containers.next()
        assert (train.command, train.capacity_provider) == (_args("train", run_id), "FARGATE_SPOT"), f"attempt {attempt + 1}"
        containers.fail(train, TaskError.SPOT_INTERRUPTION, "SIGTERM: Fargate Spot reclaimed the task")
    assert time.monotonic() - started >= 3 - 0.5  # IntervalSeconds 1, BackoffRate 2

    on_demand = containers.next()
    assert (on_demand.command, on_demand.capacity_provider, on_demand.task_definition_arn) == (
        _args("train", run_id), "FARGATE", deployed.target.task_definition_arns["train"],
    )  # fmt: skip
    containers.succeed(on_demand, {"version": 4})
    score = containers.next()
    containers.succeed(score, _score_output(score))
    containers.succeed(containers.next(), {"decision": "hold"})

    sfn = deployed.client("stepfunctions")
    execution = _finished(sfn, execution_arn)
    assert execution["status"] == "SUCCEEDED"
    assert json.loads(execution["output"])["results"]["train"] == {"version": 4}
    assert _entered(sfn, execution_arn) == ["Triggered", "Validate", "ValidateFannedOut", "Train", "TrainOnDemand", "Score", "Report", "Done"]
    failures = [e["taskFailedEventDetails"]["error"] for e in _history(sfn, execution_arn) if e["type"] == "TaskFailed"]
    assert failures == [TaskError.SPOT_INTERRUPTION] * 3


def test_each_attempt_has_its_own_task_token_and_a_late_callback_changes_nothing(deployed: Deployed) -> None:
    """A retried task gets a new token (as Step Functions gives each attempt): the interrupted
    attempt's ``SendTaskFailure`` arriving again after the retry started (botocore retrying a slow
    call) does not fail the retry (``moto_patches`` 9: moto reuses one token for every attempt)."""
    run_id = "run-late-callback"
    execution_arn, containers = _start(deployed, run_id)
    containers.succeed(containers.next(), {"rows": 10, "partitions": _partitions(1)})
    first = containers.next()
    containers.fail(first, TaskError.SPOT_INTERRUPTION, "SIGTERM: Fargate Spot reclaimed the task")
    second = containers.next()
    assert second.token != first.token and second.capacity_provider == "FARGATE_SPOT"
    with contextlib.suppress(ClientError):  # AWS answers TaskTimedOut: the token's attempt is over
        containers.fail(first, TaskError.SPOT_INTERRUPTION, "SIGTERM: Fargate Spot reclaimed the task")
    time.sleep(1.5)  # longer than the retry interval: a failed second attempt would have started a third
    containers.succeed(second, {"version": 4})
    score = containers.next()
    containers.succeed(score, _score_output(score))
    containers.succeed(containers.next(), {"decision": "hold"})

    sfn = deployed.client("stepfunctions")
    assert _finished(sfn, execution_arn)["status"] == "SUCCEEDED"
    assert _entered(sfn, execution_arn) == ["Triggered", "Validate", "ValidateFannedOut", "Train", "Score", "Report", "Done"]
    failures = [e["taskFailedEventDetails"]["error"] for e in _history(sfn, execution_arn) if e["type"] == "TaskFailed"]
    assert failures == [TaskError.SPOT_INTERRUPTION]


def test_a_partition_interrupted_on_spot_runs_on_demand_in_its_child_execution(deployed: Deployed) -> None:
    run_id = "run-partition-spot"
    execution_arn, containers = _start(deployed, run_id)
    containers.succeed(containers.next(), {"partitions": _partitions(1)})
    containers.succeed(containers.next(), {"version": 6})

    partition = _args("score", run_id, "--partition", "0", "--partitions", "1")
    for attempt in range(3):  # the first try and two retries
        task = containers.next()
        assert (task.command, task.capacity_provider) == (partition, "FARGATE_SPOT"), f"attempt {attempt + 1}"
        containers.fail(task, TaskError.SPOT_INTERRUPTION, "SIGTERM: Fargate Spot reclaimed the task")
    on_demand = containers.next()
    assert (on_demand.command, on_demand.capacity_provider, on_demand.task_definition_arn) == (
        partition, "FARGATE", deployed.target.task_definition_arns["score"],
    )  # fmt: skip
    containers.succeed(on_demand, _score_output(on_demand, rows=1000))
    containers.succeed(containers.next(), {"decision": "hold"})

    sfn = deployed.client("stepfunctions")
    execution = _finished(sfn, execution_arn)
    assert execution["status"] == "SUCCEEDED"
    assert json.loads(execution["output"])["results"]["score"] == {"partitions": 1}
    map_run = _map_run(sfn, execution_arn)
    assert (map_run["itemCounts"]["succeeded"], map_run["itemCounts"]["failed"]) == (1, 0)


def test_the_map_runs_scoring_concurrency_partitions_at_a_time_and_keeps_only_their_count(deployed: Deployed) -> None:
    run_id, count = "run-many-partitions", 7
    at_once = deployed.target.scoring_concurrency
    assert at_once == 2  # dev's stagewise:scoringConcurrency
    execution_arn, containers = _start(deployed, run_id)
    containers.succeed(containers.next(), {"partitions": _partitions(count)})
    containers.succeed(containers.next(), {"version": 7})

    running, scored = containers.started(at_once), []
    containers.none_started(1.0)  # the next partition waits for a free slot
    while running:
        task = running.pop(0)
        containers.succeed(task, _score_output(task, rows=100 + int(task.command[-3])))
        scored.append(int(task.command[-3]))
        if len(scored) + len(running) < count:
            running += containers.started(1)
        assert len(running) <= at_once
    assert sorted(scored) == list(range(count))
    containers.succeed(containers.next(), {"decision": "advance"})

    sfn = deployed.client("stepfunctions")
    execution = _finished(sfn, execution_arn)
    assert execution["status"] == "SUCCEEDED"
    # $.results.score is a count, whatever the number of partitions (2 in the success test)
    assert json.loads(execution["output"])["results"]["score"] == {"partitions": count}
    map_run = _map_run(sfn, execution_arn)
    assert (map_run["maxConcurrency"], map_run["itemCounts"]["succeeded"]) == (at_once, count)


def _alert(deployed: Deployed, run_id: str, timeout: float = 10.0) -> dict:
    sqs = deployed.client("sqs")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=deployed.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", []):
            sqs.delete_message(QueueUrl=deployed.queue_url, ReceiptHandle=message["ReceiptHandle"])
            notification = json.loads(message["Body"])
            if run_id in notification["Message"]:
                return notification
    raise AssertionError(f"no alert for {run_id} reached the queue subscribed to the alert topic")


def test_validation_failure_alerts_and_fails_the_execution(deployed: Deployed) -> None:
    run_id = "run-invalid"
    cause = "2 of 14 expectations failed: expect_column_values_to_not_be_null(customer_id), expect_column_values_to_be_between(tenure_months)"
    execution_arn, containers = _start(deployed, run_id)
    containers.fail(containers.next(), TaskError.VALIDATION_FAILED, cause)

    sfn = deployed.client("stepfunctions")
    execution = _finished(sfn, execution_arn)
    assert (execution["status"], execution["error"], execution["cause"]) == ("FAILED", TaskError.VALIDATION_FAILED, cause)
    assert _entered(sfn, execution_arn) == ["Triggered", "Validate", "NotifyValidationFailed", "ValidationFailed"]
    alert = _alert(deployed, run_id)
    assert alert["TopicArn"] == deployed.resources.alert_topic_arn
    assert alert["Subject"] == "[Stagewise dev] stagewise: validation failed"
    assert f"run {run_id} of model {MODEL}" in alert["Message"]
    assert cause in alert["Message"]
    assert execution_arn in alert["Message"]


def test_validation_of_several_partitions_fans_out_then_the_merge_decides(deployed: Deployed) -> None:
    """The first validate task says ``"validated": false``: each partition is validated by its own
    task of the ``ValidatePartitions`` Map, then ``ValidateMerge`` runs; its output (the verdict
    and the partitions to score) replaces the first task's. A merge that finds the data invalid
    alerts and fails the run as the first task would, and nothing is trained."""
    sfn = deployed.client("stepfunctions")
    arns = deployed.target.task_definition_arns
    run_id = "run-fan-out"
    execution_arn, containers = _start(deployed, run_id)
    containers.succeed(containers.next(), {"rows": 3000, "validated": False, "partitions": _partitions(3)})
    parts = sorted(containers.started(2), key=lambda t: t.command)  # scoringConcurrency 2: two at a time
    containers.none_started(1.0)
    assert [t.command for t in parts] == [_args("validate", run_id, "--partition", str(i), "--partitions", "3") for i in (0, 1)]
    assert {(t.capacity_provider, t.task_definition_arn) for t in parts} == {("FARGATE_SPOT", arns["validate"])}
    for task in parts:
        containers.succeed(task, {"partition": {"index": int(task.command[-3]), "count": 3}, "rows": 1000})
    last = containers.next()
    assert last.command == _args("validate", run_id, "--partition", "2", "--partitions", "3")
    containers.succeed(last, {"partition": {"index": 2, "count": 3}, "rows": 1000})

    merge = containers.next()
    assert (merge.command, merge.task_definition_arn) == (_args("validate", run_id, "--merge"), arns["validate"])
    containers.succeed(merge, {"rows": 3000, "validated": True, "partitions": _partitions(3)})
    containers.succeed(containers.next(), {"version": 4})
    for task in containers.started(2):
        containers.succeed(task, _score_output(task))
    third = containers.next()  # once a slot is free
    containers.succeed(third, _score_output(third))
    containers.succeed(containers.next(), {"decision": "advance"})
    execution = _finished(sfn, execution_arn)
    assert execution["status"] == "SUCCEEDED", _entered(sfn, execution_arn)
    assert _entered(sfn, execution_arn) == ["Triggered", "Validate", "ValidateFannedOut", "ValidatePartitions", "ValidateMerge",
                                            "Train", "Score", "Report", "Done"]
    results = json.loads(execution["output"])["results"]
    assert results["validate"] == {"rows": 3000, "validated": True, "partitions": _partitions(3)}
    assert results["validate_partitions"] == {"partitions": 3} and results["score"] == {"partitions": 3}
    runs = sfn.list_map_runs(executionArn=execution_arn)["mapRuns"]
    assert sorted(r["mapRunArn"].split(":mapRun:")[1].split(":")[0].split("/")[1] for r in runs) == ["Score", "ValidatePartitions"]

    run_id = "run-fan-out-invalid"
    cause = "1 of 107 expectations failed: expect_column_values_to_be_unique(customer_id)"
    execution_arn, containers = _start(deployed, run_id)
    containers.succeed(containers.next(), {"rows": 2000, "validated": False, "partitions": _partitions(2)})
    for task in containers.started(2):
        containers.succeed(task, {"partition": {"index": int(task.command[-3]), "count": 2}, "rows": 1000})
    containers.fail(containers.next(), TaskError.VALIDATION_FAILED, cause)
    execution = _finished(sfn, execution_arn)
    assert (execution["status"], execution["error"], execution["cause"]) == ("FAILED", TaskError.VALIDATION_FAILED, cause)
    assert _entered(sfn, execution_arn) == ["Triggered", "Validate", "ValidateFannedOut", "ValidatePartitions", "ValidateMerge",
                                            "NotifyValidationFailed", "ValidationFailed"]
    assert cause in _alert(deployed, run_id)["Message"]


def test_a_failed_partition_fails_the_map_run_and_the_run(deployed: Deployed) -> None:
    run_id = "run-score-fails"
    cause = "score: predictions for partition 1 could not be written to S3 (AccessDenied)"
    execution_arn, containers = _start(deployed, run_id)
    containers.succeed(containers.next(), {"partitions": _partitions(2)})
    containers.succeed(containers.next(), {"version": 5})
    first, second = sorted(containers.started(2), key=lambda t: t.command)
    containers.succeed(first, _score_output(first))
    containers.fail(second, TaskError.STEP_FAILED, cause)  # no retry, no fallback: the child execution fails

    sfn = deployed.client("stepfunctions")
    execution = _finished(sfn, execution_arn)
    # ToleratedFailurePercentage 0: the Map Run fails with States.ExceedToleratedFailureThreshold;
    # the partition's child execution alerted with its own error and cause
    assert (execution["status"], execution["error"]) == ("FAILED", TaskError.PIPELINE_FAILED)
    assert execution["cause"].startswith(f"{EXCEED_TOLERATED_FAILURE}: ")
    assert _entered(sfn, execution_arn)[-1:] == ["ScoreFailed"]
    assert "Report" not in _entered(sfn, execution_arn) and "NotifyFailure" not in _entered(sfn, execution_arn)
    (map_run_failed,) = [e["mapRunFailedEventDetails"] for e in _history(sfn, execution_arn) if e["type"] == "MapRunFailed"]
    assert map_run_failed["error"] == EXCEED_TOLERATED_FAILURE
    map_run = _map_run(sfn, execution_arn)
    assert (map_run["status"], map_run["itemCounts"]["succeeded"], map_run["itemCounts"]["failed"]) == ("FAILED", 1, 1)
    alert = _alert(deployed, run_id)
    assert alert["Subject"] == "[Stagewise dev] stagewise: partition failed"
    assert f"partition 1 (of 2, counted from 0) failed with {TaskError.STEP_FAILED}. {cause}" in alert["Message"]
    # the execution: on AWS the child's (execution:<state machine>/Score:<id>), on moto's engine the parent's
    assert f"Execution: {execution_arn.rsplit(':', 1)[0]}" in alert["Message"]


def test_a_silent_task_times_out_on_its_heartbeat_and_runs_on_demand(deployed: Deployed) -> None:
    sfn = deployed.client("stepfunctions")
    scoring = sfn.create_state_machine(
        name=f"{deployed.resources.compute.state_machine}-score-heartbeat",
        definition=to_json(compile_pipeline(SCORING, replace(deployed.target, heartbeat_seconds=1))),
        roleArn=sfn.describe_state_machine(stateMachineArn=deployed.state_machine_arn)["roleArn"],
    )["stateMachineArn"]
    run_id = "run-silent"
    execution_arn, containers = _start(deployed, run_id, scoring)

    for _ in range(3):  # no heartbeat, no answer: States.HeartbeatTimeout, retried twice
        assert containers.next().capacity_provider == "FARGATE_SPOT"
    validate = containers.next()
    assert (validate.command, validate.capacity_provider) == (_args("validate", run_id, "--fan-out"), "FARGATE")
    for _ in range(5):  # a container that heartbeats stays alive past HeartbeatSeconds
        time.sleep(0.3)
        sfn.send_task_heartbeat(taskToken=validate.token)
    containers.succeed(validate, {"partitions": _partitions(1)})
    score = containers.next()
    containers.succeed(score, _score_output(score))
    containers.succeed(containers.next(), {"decision": "advance"})

    assert _finished(sfn, execution_arn)["status"] == "SUCCEEDED"
    assert _entered(sfn, execution_arn) == ["Triggered", "Validate", "ValidateOnDemand", "ValidateFannedOut", "Score", "Report", "Done"]
    assert [e["type"] for e in _history(sfn, execution_arn)].count("TaskTimedOut") == 3
