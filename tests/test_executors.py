"""The AWS path on a laptop: `stagewise run --executor state-machine` runs the environment's state
machine on the embedded AWS (provisioned as the stack declares it), its tasks as local Fargate
processes under their own task roles, and ends as the in-process runner ends.

- **The two executors agree**: the same data through both, each in a fresh environment (its own
  embedded AWS): the registered version (artifact sha256, metrics, gates, stage), every row's
  prediction and version, the manifest's rows and parts, the review queue, the drift result, and
  the CloudWatch metric names and dimensions are equal. A difference is a bug in one of them.
- **Exit codes**: a dataset that fails validation exits 2 through the state machine too, with
  nothing registered; `stagewise score --executor state-machine` and a model spec the job image
  does not ship are refused with exit 4.
- **IAM**: the stack's task roles and state machine role are enforced by the embedded AWS
  (``platform/runtime/local_iam.py``): the runs use only what the roles grant, and a train role
  without its ``WriteArtifacts`` statement fails the run there, naming ``s3:PutObject`` and the key;
  with it back, ``--resume`` finishes the run.
- **Faults on the AWS path**, each ending with the clean run's version and predictions: ``StopTask``
  (SIGTERM, as Fargate Spot reclaims a task) to the running train task is reported as
  ``Stagewise.SpotInterruption`` and retried on Spot; a train task killed outright (SIGKILL, as the
  kernel's OOM killer does) sends no more heartbeats, times out with ``States.HeartbeatTimeout`` and
  is retried; a scoring partition that fails (its role may not write its part) fails the Map and the
  run, its alert carries the partition's own error, and ``--resume`` finishes the run.

The environments run from a copy of the project whose dev stack file sets ``FAST`` (two scoring
partitions of the 4,000 rows, an 8 s heartbeat timeout, 1 s retry interval) through the stack
settings a user has: the state machine and task definitions are compiled from them as on AWS.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import REPO, _free_port, private_embedded_aws
from stagewise.pipeline.generator import generate_customers, write_dataset
from stagewise.pipeline.local_stack import provision_stack
from stagewise.pipeline.scoring.publish import read_manifest, read_predictions
from stagewise.platform.runtime.embedded import EmbeddedAWS
from stagewise.platform.runtime.idhash import salt_parameter
from stagewise.platform.runtime.local_iam import action_matches
from stagewise.platform.runtime.objects import ObjectStore
from stagewise.registry.dynamodb import registry_of

STAGEWISE = str(Path(sys.executable).parent / "stagewise")
MODEL = "engagement"
FAST = {"stagewise:rowsPerPartition": 2000, "stagewise:taskHeartbeatSeconds": 8, "stagewise:taskRetryIntervalSeconds": 1}
"""Stack settings of the tests' dev environment (``Pulumi.dev.yaml`` keeps 1,000,000 rows, 300 s, 30 s)."""
ROW_GROUP_ROWS = 1000


class Place:
    """A fresh environment: its own STAGEWISE_HOME and embedded AWS, run from project folder ``project``."""

    def __init__(self, home: Path, project: Path) -> None:
        self.home, self.port, self.project = home, _free_port(), project
        self.env = {**os.environ, "STAGEWISE_HOME": str(home), "STAGEWISE_EMBEDDED_PORT": str(self.port)}
        for name in ("STAGEWISE_FAULTS", "STAGEWISE_FAILPOINTS"):
            self.env.pop(name, None)
        self.server = EmbeddedAWS(home)
        self.conn: Any = None

    def up(self) -> "Place":
        with contextlib.chdir(self.project), private_embedded_aws(self.home, self.port, self.server, self.project) as conn:
            self.conn = conn  # the server's local Fargate copies the project's stack files into each task
            provision_stack(conn)  # as `run --executor state-machine` does first: any test may run alone
        return self

    def cli(self, *args: str) -> tuple[int, dict[str, Any], str]:
        proc = subprocess.run([STAGEWISE, *args, "--json"], env=self.env, capture_output=True, text=True, cwd=self.project, timeout=900)
        try:
            doc = json.loads(proc.stdout)
        except ValueError:
            doc = {}
        return proc.returncode, doc, proc.stderr[-4000:]

    def invoke(self, *args: str) -> dict[str, Any]:
        """`stagewise <args> --json` in this process (typer's CliRunner), as ``cli`` runs it in a
        process of its own: from the project folder, on this place's STAGEWISE_HOME and embedded
        AWS; asserts exit 0. For set-up commands that are not what a test is about: each saves the
        ~2 s cold start of a process."""
        from typer.testing import CliRunner

        from stagewise.pipeline.cli import app

        with contextlib.chdir(self.project):
            result = CliRunner().invoke(app, [*args, "--json"], env={"STAGEWISE_HOME": str(self.home),
                                                                     "STAGEWISE_EMBEDDED_PORT": str(self.port)})
        assert result.exit_code == 0, (args, result.output[-3000:])
        return json.loads(result.stdout)

    def outcome(self, run_id: str) -> dict[str, Any]:
        """What a user sees of run ``run_id``: the version, the predictions, the manifest, the
        review queue, the metrics."""
        registry = registry_of(self.conn)
        versions = [{"version": v.version, "status": v.status, "artifact_sha256": v.artifact_sha256, "metrics": v.metrics,
                     "gates": [(g.metric, g.value, g.outcome) for g in v.gates]} for v in registry.list_versions(MODEL)]
        head = registry.get_model(MODEL)
        objects, bucket = ObjectStore(self.conn.clients.client("s3")), self.conn.resources.data_bucket.name
        manifest = read_manifest(objects, bucket, MODEL, run_id)
        assert manifest is not None, f"run {run_id} published no predictions"
        predictions = read_predictions(objects, bucket, MODEL, run_id)
        id_col = [c for c in predictions.columns if c.endswith("_hash")][0]
        review = pd.read_parquet(io.BytesIO(objects.get_bytes(bucket, manifest["review_queue"]["key"])))
        cw = self.conn.clients.client("cloudwatch")
        metrics = sorted({(m["MetricName"], tuple(sorted((d["Name"], d["Value"]) for d in m["Dimensions"])))
                          for page in cw.get_paginator("list_metrics").paginate(Namespace="Stagewise") for m in page["Metrics"]})
        return {
            "versions": versions, "champion": head.champion,
            "predictions": predictions.sort_values(id_col).reset_index(drop=True),
            "manifest": {"rows": manifest["rows"], "parts": len(manifest["parts"]), "review_rows": manifest["review_queue"]["rows"]},
            "review": review.drop(columns=[c for c in review.columns if c in ("run_id",)]).reset_index(drop=True),
            "metrics": metrics,
        }


def generated(path: Path, rows: int, seed: int) -> Path:
    """The file `stagewise data generate --rows ROWS --seed SEED --out PATH` writes, made by the same
    two calls in this process (no cold start of a process for a test's data)."""
    write_dataset(generate_customers(rows, seed), path)
    return path


def project_with(folder: Path, **config: Any) -> Path:
    """A copy of the project's stack files in ``folder`` whose dev stack file sets ``config``
    (Pulumi keys, e.g. ``FAST``) on top of its own."""
    for stack_file in REPO.glob("Pulumi*.yaml"):
        shutil.copy2(stack_file, folder / stack_file.name)
    stack = yaml.safe_load((folder / "Pulumi.dev.yaml").read_text())
    stack["config"].update(config)
    (folder / "Pulumi.dev.yaml").write_text(yaml.safe_dump(stack))
    return folder


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> Any:
    project = project_with(tmp_path_factory.mktemp("executor-project"), **FAST)
    made = {name: Place(tmp_path_factory.mktemp(f"executor-{name}"), project).up() for name in ("in-process", "state-machine")}
    for place in made.values():  # one secret id salt for both, so the hashed ids of their predictions can be joined
        place.conn.clients.client("ssm").put_parameter(Name=salt_parameter(place.conn.resources), Value="5a" * 32,
                                                       Type="SecureString", Overwrite=True)
    data = generated(tmp_path_factory.mktemp("executor-data") / "customers.parquet", 4000, 11)
    pq.write_table(pq.read_table(data), data, row_group_size=ROW_GROUP_ROWS)  # 4 row groups: 2 partitions of 2,000 rows
    yield made, data
    for place in made.values():
        place.server.down()


@pytest.fixture(scope="module")
def clean(places) -> dict[str, Any]:
    """The in-process run of the data in its fresh environment: the reference."""
    made, data = places
    code, doc, err = made["in-process"].cli("run", "--data", str(data))
    assert code == 0, err
    return doc


def test_the_state_machine_and_the_in_process_runner_agree(places, clean):
    made, data = places
    doc_a = clean
    code_b, doc_b, err_b = made["state-machine"].cli("run", "--executor", "state-machine", "--data", str(data))
    assert code_b == 0, err_b
    assert doc_b["executor"] == "state-machine" and ":execution:stagewise-dev-pipeline:" in doc_b["execution_arn"]

    a, b = made["in-process"].outcome(doc_a["run_id"]), made["state-machine"].outcome(doc_b["run_id"])

    assert a["versions"] == b["versions"] and a["champion"] == b["champion"] == 1
    pd.testing.assert_frame_equal(a["predictions"], b["predictions"])
    assert a["manifest"] == b["manifest"] and (a["manifest"]["rows"], a["manifest"]["parts"]) == (4000, 2)
    pd.testing.assert_frame_equal(a["review"], b["review"])
    assert a["metrics"] == b["metrics"] and a["metrics"], "the CloudWatch metric names and dimensions differ"
    # what the run would cost on Fargate: its four groups' tasks (two score partitions), priced; its transitions
    cost = doc_b["cost"]
    # validate: the first task (ingest, plan), a Map task per partition, the merge
    assert sorted(t["group"] for t in cost["tasks"]) == ["report", "score", "score", "train", *["validate"] * 4]
    assert all(t["capacity_provider"] == "FARGATE_SPOT" and t["seconds"] >= 60 for t in cost["tasks"])
    assert cost["estimated"] and cost["transitions"] >= 5 and 0 < cost["fargate_usd"] < 0.01
    assert cost["total_usd"] == pytest.approx(cost["fargate_usd"] + cost["transitions_usd"] + cost["requests"]["usd"])
    steps = lambda doc: {s["name"]: (s["status"], s["summary"].get("drifted"), s["summary"].get("outcome")) for s in doc["steps"]}  # noqa: E731
    assert steps(doc_a) == steps(doc_b)
    monitor = lambda doc: next(s["summary"] for s in doc["steps"] if s["name"] == "monitor")["versions"]  # noqa: E731
    assert monitor(doc_a) == monitor(doc_b)  # the drift result
    # validation: by partitions in one process, by a Distributed Map and a merge task: the same verdict and counts
    validated = lambda doc: {k: v for k, v in next(s["summary"] for s in doc["steps"] if s["name"] == "validate").items()  # noqa: E731
                             if k in ("success", "rows", "evaluated", "failed", "partitions", "pending")}
    assert validated(doc_a) == validated(doc_b) == {"success": True, "rows": 4000, "evaluated": validated(doc_a)["evaluated"],
                                                    "failed": 0, "partitions": 2}
    assert validated(doc_a)["evaluated"] > 100


@pytest.mark.parametrize("fault", ["out-of-range, one row group", "duplicate id across two partitions"])
def test_a_dataset_that_fails_validation_exits_2_through_the_state_machine(places, tmp_path, fault):
    """Validated whole by the first validate task (one row group: one partition), or fanned out to
    a Map task per partition whose merge finds an id that no partition alone holds twice."""
    made, data = places
    bad = tmp_path / "bad.parquet"
    frame = pd.read_parquet(data)
    if fault.startswith("out-of-range"):
        frame["sessions_per_week"] = -5.0
        frame.to_parquet(bad)
        failed = "sessions_per_week"
    else:
        frame.loc[3_999, "customer_id"] = frame.loc[0, "customer_id"]  # rows 0-1999 and 2000-3999: one in each
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), bad, row_group_size=ROW_GROUP_ROWS)
        failed = "customer_id"
    place = made["state-machine"]
    before = len(registry_of(place.conn).list_versions(MODEL))

    code, doc, err = place.cli("run", "--executor", "state-machine", "--data", str(bad))

    assert code == 2, err
    assert doc["error"].startswith("Stagewise.ValidationFailed") and failed in doc["error"]
    assert [(s["name"], s["status"]) for s in doc["steps"][:3]] == [("ingest", "succeeded"), ("validate", "failed"), ("train", "skipped")]
    assert "resume" not in doc and len(registry_of(place.conn).list_versions(MODEL)) == before


def test_what_the_state_machine_cannot_run_is_refused_with_exit_4(places, tmp_path):
    made, data = places
    place = made["state-machine"]
    code, doc, _ = place.cli("score", "--executor", "state-machine", "--data", str(data))
    assert code == 4 and "in-process only" in doc["error"]
    spec = tmp_path / "mine.yaml"
    spec.write_text((REPO / "pipeline" / "specs" / "engagement.yaml").read_text())
    code, doc, _ = place.cli("run", "--executor", "state-machine", "--model", str(spec), "--data", str(data))
    assert code == 4 and "built-in spec" in doc["error"]
    code, doc, _ = place.cli("run", "--executor", "lambda", "--data", str(data))
    assert code == 4 and "in-process, state-machine" in doc["error"]


def test_the_task_roles_are_enforced_and_a_run_uses_only_what_they_grant(places, clean):
    """After the state machine's runs, the embedded AWS's IAM decisions for the stack's roles: every
    action a task used is granted by its role's policy (the report lists what is granted and unused)."""
    made, _ = places
    code, doc, err = made["state-machine"].cli("local", "iam")
    assert code == 0, err
    roles = {r["role"]: r for r in doc["roles"]}
    assert set(roles) == {f"stagewise-dev-{r}" for r in ("validate-task", "train-task", "score-task", "state-machine")}
    for role in roles.values():
        assert role["used"], f"{role['role']}: no call recorded"
        assert all(any(action_matches(g, a) for g in role["granted"]) for a in role["used"])
        assert not role["denied"], role
    assert "s3:PutObject" in roles["stagewise-dev-train-task"]["used"] and "ecs:RunTask" in roles["stagewise-dev-state-machine"]["used"]


def _start_run(place: Place, data: Path) -> tuple[subprocess.Popen, set[str]]:
    """``stagewise run --executor state-machine`` in the background, and the tasks that ran before it."""
    ecs, cluster = place.conn.clients.client("ecs"), place.conn.resources.compute.cluster
    before = set(ecs.list_tasks(cluster=cluster)["taskArns"])
    proc = subprocess.Popen([STAGEWISE, "run", "--executor", "state-machine", "--data", str(data), "--json"],
                            env=place.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=place.project)
    return proc, before


def _running_train_task(place: Place, proc: subprocess.Popen, before: set[str]) -> str:
    """The ARN of the run's train task once it is RUNNING and training (its log says so)."""
    ecs, cluster = place.conn.clients.client("ecs"), place.conn.resources.compute.cluster
    family = place.conn.resources.compute.task_families["train"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        for arn in set(ecs.list_tasks(cluster=cluster)["taskArns"]) - before:
            task = ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]
            log = place.home / "fargate" / f"{arn.rsplit('/', 1)[-1]}.log"
            training = log.is_file() and '"step":"train","status":"started"' in log.read_text()
            if family in task["taskDefinitionArn"] and task["lastStatus"] == "RUNNING" and training:
                return arn
        time.sleep(0.05)
    _, stderr = proc.communicate(timeout=600)
    raise AssertionError(f"no train task was caught running: {stderr[-2000:]}")


def _process_of(place: Place, task_arn: str) -> int:
    """PID of a local Fargate task's container process: the process whose working directory is
    the task's folder, ``$STAGEWISE_HOME/fargate/<task id>``."""
    workdir = str(place.home / "fargate" / task_arn.rsplit("/", 1)[-1])
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and os.readlink(entry / "cwd") == workdir:
                return int(entry.name)
    raise AssertionError(f"no process runs in {workdir}")


def _finished(place: Place, proc: subprocess.Popen) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The run's --json document and its execution's history, once it exited 0."""
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    doc = json.loads(stdout)
    sfn = place.conn.clients.client("stepfunctions")
    return doc, sfn.get_execution_history(executionArn=doc["execution_arn"], maxResults=1000)["events"]


def _ends_as_the_clean_run(made: dict[str, Place], clean: dict[str, Any], run_id: str) -> None:
    a, b = made["in-process"].outcome(clean["run_id"]), made["state-machine"].outcome(run_id)
    assert [v["artifact_sha256"] for v in b["versions"]] == [v["artifact_sha256"] for v in a["versions"]]  # no second version
    assert b["champion"] == a["champion"] and b["manifest"] == a["manifest"]
    pd.testing.assert_frame_equal(a["predictions"], b["predictions"])


def test_a_spot_interruption_on_the_aws_path_is_retried_and_ends_as_a_clean_run(places, clean):
    """SIGTERM to the running train task (``StopTask``, as Fargate Spot reclaims it): the task
    reports ``Stagewise.SpotInterruption``, the state machine retries the group on Spot, and the run
    ends with the clean run's version and predictions (no second version)."""
    made, data = places
    place = made["state-machine"]
    ecs, cluster = place.conn.clients.client("ecs"), place.conn.resources.compute.cluster
    proc, before = _start_run(place, data)
    stopped = _running_train_task(place, proc, before)
    ecs.stop_task(cluster=cluster, task=stopped, reason="Spot interruption (test)")

    doc, events = _finished(place, proc)

    failures = [e["taskFailedEventDetails"]["error"] for e in events if e["type"] == "TaskFailed"]
    assert failures == ["Stagewise.SpotInterruption"], failures
    task = ecs.describe_tasks(cluster=cluster, tasks=[stopped])["tasks"][0]
    assert task["containers"][0]["exitCode"] == 143 and task["stopCode"] == "UserInitiated"
    _ends_as_the_clean_run(made, clean, doc["run_id"])


def test_a_task_killed_outright_times_out_on_its_heartbeat_and_is_retried(places, clean):
    """SIGKILL to the running train task's process (as the OOM killer ends a container): it cannot
    report anything and stops sending heartbeats; after ``taskHeartbeatSeconds`` the state machine
    sees ``States.HeartbeatTimeout`` and retries the group on Spot, and the run ends as the clean run."""
    made, data = places
    place = made["state-machine"]
    ecs, cluster = place.conn.clients.client("ecs"), place.conn.resources.compute.cluster
    proc, before = _start_run(place, data)
    killed = _running_train_task(place, proc, before)
    os.killpg(_process_of(place, killed), signal.SIGKILL)

    doc, events = _finished(place, proc)

    timeouts = [e["taskTimedOutEventDetails"]["error"] for e in events if e["type"] == "TaskTimedOut"]
    assert timeouts == ["States.HeartbeatTimeout"]
    assert not [e for e in events if e["type"] == "TaskFailed"]
    task = ecs.describe_tasks(cluster=cluster, tasks=[killed])["tasks"][0]
    assert (task["lastStatus"], task["containers"][0]["exitCode"], task["stopCode"]) == ("STOPPED", 137, "EssentialContainerExited")
    trains = [e for e in events if e["type"] == "TaskStateEntered" and e["stateEnteredEventDetails"]["name"].startswith("Train")]
    assert [e["stateEnteredEventDetails"]["name"] for e in trains] == ["Train"]  # retried in place, on Spot
    _ends_as_the_clean_run(made, clean, doc["run_id"])


def test_a_failed_partition_fails_the_map_and_the_run_with_its_own_error_in_the_alert(places, clean):
    """The score role may not write partition 1's part (an explicit Deny): that partition fails
    after its retries and on-demand fallback, its alert names the partition, the AccessDenied and
    the key; the Map Run and the run fail (exit 1) with nothing published. With the Deny gone,
    ``--resume`` finishes the run as the clean run."""
    made, data = places
    place = made["state-machine"]
    clients, res = place.conn.clients, place.conn.resources
    sqs, sns, iam = clients.client("sqs"), clients.client("sns"), clients.client("iam")
    queue = sqs.create_queue(QueueName="executor-test-alerts")["QueueUrl"]  # outside the stack's stagewise- names
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    subscription = sns.subscribe(TopicArn=res.alert_topic_arn, Protocol="sqs", Endpoint=queue_arn)["SubscriptionArn"]
    part = f"staging/predictions/{MODEL}/run=*/part-00001.parquet"
    deny = {"Version": "2012-10-17", "Statement": [{"Sid": "TestDenyPartition1", "Effect": "Deny", "Action": "s3:PutObject",
                                                    "Resource": f"arn:aws:s3:::{res.data_bucket.name}/{part}"}]}
    iam.put_role_policy(RoleName="stagewise-dev-score-task", PolicyName="test-deny-partition-1", PolicyDocument=json.dumps(deny))
    try:
        code, doc, err = place.cli("run", "--executor", "state-machine", "--data", str(data))
    finally:
        iam.delete_role_policy(RoleName="stagewise-dev-score-task", PolicyName="test-deny-partition-1")
    try:
        assert code == 1, err
        assert doc["error"].startswith("Stagewise.PipelineFailed: States.ExceedToleratedFailureThreshold: 1 of 2 items failed")
        assert doc["resume"] == f"stagewise run --executor state-machine --resume {doc['run_id']}"
        objects = ObjectStore(clients.client("s3"))
        assert read_manifest(objects, res.data_bucket.name, MODEL, doc["run_id"]) is None  # nothing published
        messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=2).get("Messages", [])
        alerts = [json.loads(m["Body"]) for m in messages]
        alerts = [a for a in alerts if doc["run_id"] in a["Message"]]
        # the task's own step alert, and the state machine's for the partition (which a task killed
        # outright could not send); no generic "pipeline failed" alert for the Map's failure
        assert sorted(a["Subject"] for a in alerts) == ["[Stagewise dev] engagement: Step score failed",
                                                        "[Stagewise dev] stagewise: partition failed"]
        message = next(a["Message"] for a in alerts if a["Subject"].endswith("partition failed"))
        assert "partition 1 (of 2, counted from 0) failed with Stagewise.StepFailed" in message
        assert "AccessDenied" in message and "s3:PutObject" in message and "part-00001.parquet" in message
    finally:
        sns.unsubscribe(SubscriptionArn=subscription)
        sqs.delete_queue(QueueUrl=queue)

    code, resumed, err = place.cli("run", "--executor", "state-machine", "--resume", doc["run_id"])

    assert code == 0, err
    _ends_as_the_clean_run(made, clean, doc["run_id"])


def test_a_task_role_without_a_permission_fails_there_naming_it_and_resume_finishes_the_run(places, tmp_path):
    """The train role loses its ``WriteArtifacts`` statement: the run fails in the train task with
    AccessDenied naming ``s3:PutObject`` and the artifact key, nothing is registered; with the
    statement back, ``--resume`` finishes the run (a new execution of the same run id) and
    registers the version once."""
    made, _ = places
    place = made["state-machine"]
    iam, role = place.conn.clients.client("iam"), "stagewise-dev-train-task"
    [name] = iam.list_role_policies(RoleName=role)["PolicyNames"]
    original = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
    original = json.loads(original) if isinstance(original, str) else original
    reduced = {**original, "Statement": [s for s in original["Statement"] if s.get("Sid") != "WriteArtifacts"]}
    assert len(reduced["Statement"]) == len(original["Statement"]) - 1
    data = generated(tmp_path / "new.parquet", 8000, 23)
    registry = registry_of(place.conn)
    before = len(registry.list_versions(MODEL))

    iam.put_role_policy(RoleName=role, PolicyName=name, PolicyDocument=json.dumps(reduced))
    try:
        code, doc, err = place.cli("run", "--executor", "state-machine", "--data", str(data))
    finally:
        iam.put_role_policy(RoleName=role, PolicyName=name, PolicyDocument=json.dumps(original))

    assert code == 1, err
    assert "AccessDenied" in doc["error"] and "assumed-role/stagewise-dev-train-task/" in doc["error"]
    assert "s3:PutObject on resource: arn:aws:s3:::stagewise-dev-artifacts-314159265358/models/engagement/" in doc["error"]
    assert len(registry.list_versions(MODEL)) == before
    assert doc["resume"] == f"stagewise run --executor state-machine --resume {doc['run_id']}"

    code, resumed, err = place.cli("run", "--executor", "state-machine", "--resume", doc["run_id"])

    assert code == 0, err
    assert resumed["run_id"] == doc["run_id"] and resumed["execution_arn"].endswith(f":{doc['run_id']}-2")
    assert len(registry.list_versions(MODEL)) == before + 1
    assert place.outcome(doc["run_id"])["manifest"]["rows"] == 8000
