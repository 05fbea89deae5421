"""Local Fargate (``stagewise.platform.runtime.local_fargate``): a task the embedded AWS's ECS runs is
a real local process, started with the task definition's command and environment, the overrides,
and the task role's credentials, and seen through ``DescribeTasks`` as ECS shows a task:
PENDING -> RUNNING -> STOPPED with the container's exit code; ``StopTask`` is SIGTERM, then
SIGKILL after the container's stop timeout.

The tasks here run small Python programs (``entryPoint`` = this interpreter) that report what they
see: who they are to STS, their environment, their working directory.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from stagewise.platform.runtime.local_fargate import LOG_FOLDER

PROBE = """
import json, os, sys, boto3
identity = boto3.client("sts").get_caller_identity()
print(json.dumps({"arn": identity["Arn"], "account": identity["Account"], "in_aws": os.environ.get("STAGEWISE_IN_AWS"),
                  "stack_files": sorted(p for p in os.listdir(".") if p.startswith("Pulumi")),
                  "server_home": os.environ.get("STAGEWISE_HOME")}), flush=True)
sys.exit(int(os.environ.get("EXIT", "0")))
"""
TERM_AWARE = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: (print("SIGTERM", flush=True), sys.exit(143)))
print("running", flush=True)
while True:
    time.sleep(0.1)
"""
TERM_DEAF = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("running", flush=True)
while True:
    time.sleep(0.1)
"""


class Ecs:
    """A Fargate cluster, a task role and a task definition in dev, on the embedded AWS, named
    outside the stack's ``stagewise-`` namespace (``tests/test_parity.py`` inventories that)."""

    def __init__(self, dev: Any) -> None:
        self.clients = dev.clients
        self.ecs, ec2, iam = (self.clients.client(s) for s in ("ecs", "ec2", "iam"))
        self.cluster = self.ecs.create_cluster(clusterName="fargate-check",
                                               capacityProviders=["FARGATE_SPOT", "FARGATE"])["cluster"]["clusterArn"]
        vpc = ec2.create_vpc(CidrBlock="10.43.0.0/16")["Vpc"]["VpcId"]
        ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
        self.subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.43.1.0/24")["Subnet"]["SubnetId"]
        self.group = ec2.create_security_group(VpcId=vpc, GroupName="fargate-check", Description="tasks")["GroupId"]
        self.role = iam.create_role(RoleName="fargate-check-task", AssumeRolePolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                                                     "Action": "sts:AssumeRole"}]}))["Role"]["Arn"]

    def definition(self, family: str, program: str, stop_timeout: int = 2, entry: list[str] | None = None) -> str:
        return self.ecs.register_task_definition(
            family=family, requiresCompatibilities=["FARGATE"], networkMode="awsvpc", cpu="256", memory="512",
            taskRoleArn=self.role,
            containerDefinitions=[{"name": "job", "image": "stagewise:test", "cpu": 256, "memory": 512, "essential": True,
                                   "entryPoint": entry if entry is not None else [sys.executable, "-c"],
                                   "command": [program] if program else [], "stopTimeout": stop_timeout,
                                   "environment": [{"name": "STAGEWISE_IN_AWS", "value": "1"}, {"name": "EXIT", "value": "0"}]}],
        )["taskDefinition"]["taskDefinitionArn"]

    def run(self, definition: str, **overrides: Any) -> str:
        return self.ecs.run_task(
            cluster=self.cluster, taskDefinition=definition, count=1, overrides=overrides,
            capacityProviderStrategy=[{"capacityProvider": "FARGATE_SPOT", "weight": 1}],
            networkConfiguration={"awsvpcConfiguration": {"subnets": [self.subnet], "securityGroups": [self.group],
                                                          "assignPublicIp": "ENABLED"}},
        )["tasks"][0]["taskArn"]

    def describe(self, task: str) -> dict[str, Any]:
        return self.ecs.describe_tasks(cluster=self.cluster, tasks=[task])["tasks"][0]

    def wait(self, task: str, status: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = []
        while (found := self.describe(task))["lastStatus"] != status:
            seen.append(found["lastStatus"])
            assert time.monotonic() < deadline, f"task not {status} within {timeout} s: {seen[-5:]}"
            time.sleep(0.1)
        return found


@pytest.fixture(scope="module")
def fargate(dev) -> Ecs:
    return Ecs(dev)


def _log(embedded: Any, task: str) -> str:
    home = Path(embedded.log).parent  # the server's STAGEWISE_HOME
    return (home / LOG_FOLDER / f"{task.rsplit('/', 1)[-1]}.log").read_text()


def test_a_task_runs_its_command_as_its_role_with_its_environment_and_exit_code(embedded, fargate):
    definition = fargate.definition("fargate-probe", PROBE)
    task = fargate.run(definition, containerOverrides=[{"name": "job", "environment": [{"name": "EXIT", "value": "3"}]}])

    stopped = fargate.wait(task, "STOPPED")

    assert stopped["containers"][0]["exitCode"] == 3
    assert stopped["stopCode"] == "EssentialContainerExited" and stopped["stoppedReason"] == "Essential container in task exited"
    assert stopped["desiredStatus"] == "STOPPED" and stopped["startedAt"] <= stopped["stoppedAt"]
    seen = json.loads(_log(embedded, task).strip().splitlines()[-1])
    assert seen["arn"].startswith("arn:aws:sts::314159265358:assumed-role/fargate-check-task/"), seen
    assert seen["in_aws"] == "1" and seen["server_home"] is None  # only the task's environment, none of the server's
    assert "Pulumi.yaml" in seen["stack_files"] and "Pulumi.dev.yaml" in seen["stack_files"]  # as the image's /app


def test_stop_task_is_sigterm_and_the_exit_code_is_the_process_s(embedded, fargate):
    task = fargate.run(fargate.definition("fargate-term", TERM_AWARE))
    fargate.wait(task, "RUNNING")
    time.sleep(0.5)  # the handler is installed

    fargate.ecs.stop_task(cluster=fargate.cluster, task=task, reason="Spot interruption (test)")
    stopped = fargate.wait(task, "STOPPED", timeout=10)

    assert stopped["containers"][0]["exitCode"] == 143
    assert stopped["stopCode"] == "UserInitiated" and stopped["stoppedReason"] == "Spot interruption (test)"
    assert "SIGTERM" in _log(embedded, task)


def test_a_task_that_ignores_sigterm_is_killed_after_its_stop_timeout(embedded, fargate):
    task = fargate.run(fargate.definition("fargate-deaf", TERM_DEAF, stop_timeout=2))
    fargate.wait(task, "RUNNING")
    time.sleep(0.5)
    t = time.monotonic()

    fargate.ecs.stop_task(cluster=fargate.cluster, task=task, reason="stop")
    stopped = fargate.wait(task, "STOPPED", timeout=15)

    assert stopped["containers"][0]["exitCode"] == 137  # SIGKILL, as Docker reports it
    assert 1.5 <= time.monotonic() - t < 10


def test_the_default_entrypoint_is_the_job_image_s(embedded, fargate):
    """No ``entryPoint``: ``stagewise-task`` (the image's ENTRYPOINT) runs with the command."""
    task = fargate.run(fargate.definition("fargate-entry", "", entry=[]),
                       containerOverrides=[{"name": "job", "command": ["--help"]}])
    stopped = fargate.wait(task, "STOPPED")
    assert stopped["containers"][0]["exitCode"] == 0, _log(embedded, task)
    assert "stagewise-task" in _log(embedded, task)


def test_a_command_that_cannot_start_stops_the_task_and_says_why(embedded, fargate):
    task = fargate.run(fargate.definition("fargate-missing", "", entry=["/nonexistent/entrypoint"]))
    stopped = fargate.wait(task, "STOPPED")
    assert stopped["stopCode"] == "TaskFailedToStart"
    assert "CannotStartContainerError" in stopped["stoppedReason"] and "nonexistent" in stopped["stoppedReason"]
