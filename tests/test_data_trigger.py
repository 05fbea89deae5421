"""Runs start when data lands, once per content (issue 19, item 1), end to end on the embedded AWS.

An object put under ``incoming/engagement/`` of the data bucket is an S3 event to EventBridge; the
stack's rule (provisioned as the stack declares it) starts the state machine with the object's
URI and ``"trigger": "s3"``; the first states claim the object's content (sha256) in the registry
table for that execution (``stagewise-task claim``, run by local Fargate under the validate task
role) and the pipeline runs. The same bytes landing again (same key, or another key), or the
schedule firing on them, start executions that end in ``AlreadyProcessed`` without running a task
group: one run, one version, one claim naming the first execution.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import pyarrow.parquet as pq
import pytest

from test_executors import FAST, MODEL, Place, generated, project_with

from stagewise.platform import declarations as d
from stagewise.registry.claims import get_claim
from stagewise.registry.dynamodb import registry_of


@pytest.fixture(scope="module")
def place(tmp_path_factory) -> Any:
    project = project_with(tmp_path_factory.mktemp("trigger-project"), **FAST)
    made = Place(tmp_path_factory.mktemp("trigger-home"), project).up()
    yield made
    made.server.down()


@pytest.fixture(scope="module")
def data(place, tmp_path_factory) -> bytes:
    path = generated(tmp_path_factory.mktemp("trigger-data") / "customers.parquet", 2000, 5)
    pq.write_table(pq.read_table(path), path, row_group_size=2000)
    return path.read_bytes()


def _executions(sfn: Any, arn: str) -> list[dict[str, Any]]:
    return sorted(sfn.list_executions(stateMachineArn=arn)["executions"], key=lambda e: e["startDate"])


def _new_execution(sfn: Any, arn: str, known: int, timeout: float = 60) -> dict[str, Any]:
    """Wait for execution number ``known + 1`` to start (EventBridge delivers asynchronously)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _executions(sfn, arn)
        if len(found) > known:
            assert len(found) == known + 1, [e["name"] for e in found]
            return found[-1]
        time.sleep(0.5)
    raise AssertionError(f"no execution started within {timeout} s of the object landing")


def _finished(sfn: Any, execution_arn: str, timeout: float = 600) -> tuple[dict[str, Any], list[str]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        described = sfn.describe_execution(executionArn=execution_arn)
        if described["status"] != "RUNNING":
            pages = sfn.get_paginator("get_execution_history").paginate(executionArn=execution_arn)
            states = [e["stateEnteredEventDetails"]["name"] for p in pages for e in p["events"] if "stateEnteredEventDetails" in e]
            return described, states
        time.sleep(1)
    raise AssertionError(f"{execution_arn} still running after {timeout} s")


def test_the_same_content_landing_twice_or_scheduled_is_run_once(place, data):
    conn = place.conn
    sfn, s3 = conn.clients.client("stepfunctions"), conn.clients.client("s3")
    bucket, machine = conn.resources.data_bucket.name, conn.resources.state_machine_arn
    assert _executions(sfn, machine) == []

    # 1. the file lands: the rule starts the pipeline, which claims the content and runs
    s3.put_object(Bucket=bucket, Key=f"incoming/{MODEL}/latest.parquet", Body=data)
    first = _new_execution(sfn, machine, 0)
    described, states = _finished(sfn, first["executionArn"])
    assert described["status"] == "SUCCEEDED", (states, described.get("error"), described.get("cause"))
    given = json.loads(described["input"])
    assert given == {"run_id": given["run_id"], "data": f"s3://{bucket}/incoming/{MODEL}/latest.parquet", "model": MODEL,
                     "trigger": "s3"} and given["run_id"].startswith("s3-")
    assert states[:3] == ["Triggered", "ClaimInput", "Claimed"] and {"Validate", "Train", "Score", "Report", "Done"} <= set(states)
    registry = registry_of(conn)
    assert [v.version for v in registry.list_versions(MODEL)] == [1]

    # 2. the same bytes again, under the same key and under another: no second run
    for n, key in enumerate((f"incoming/{MODEL}/latest.parquet", f"incoming/{MODEL}/2026-11-30/again.parquet"), start=1):
        s3.put_object(Bucket=bucket, Key=key, Body=data)
        again = _new_execution(sfn, machine, n)
        described, states = _finished(sfn, again["executionArn"], timeout=180)
        assert described["status"] == "SUCCEEDED" and states == ["Triggered", "ClaimInput", "Claimed", "AlreadyProcessed"], states
        assert json.loads(described["output"])["results"]["claim"]["owner"] == first["executionArn"]

    # 3. the schedule fires on the file already processed (its declared input, as EventBridge Scheduler sends it)
    schedule = d.schedule(conn.resources, conn.settings.schedule, MODEL)
    scheduled = sfn.start_execution(stateMachineArn=machine, name="scheduled-1",
                                    input=schedule.input.replace("<aws.scheduler.execution-id>", "scheduled-1"))
    described, states = _finished(sfn, scheduled["executionArn"], timeout=180)
    assert states == ["Triggered", "ClaimInput", "Claimed", "AlreadyProcessed"], states

    # one run, one version, one claim, naming the first execution
    assert [v.version for v in registry.list_versions(MODEL)] == [1]
    ddb, table = conn.clients.client("dynamodb"), conn.resources.registry_table.name
    claims = ddb.query(TableName=table, KeyConditionExpression="pk = :p AND begins_with(sk, :c)",
                       ExpressionAttributeValues={":p": {"S": f"MODEL#{MODEL}"}, ":c": {"S": "CLAIM#"}})["Items"]
    assert len(claims) == 1
    claim = get_claim(ddb, table, MODEL, hashlib.sha256(data).hexdigest())
    assert claim is not None and claim.owner == first["executionArn"] and claim.run_id == given["run_id"]
    assert claim.trigger == "s3" and claim.data_uri == f"s3://{bucket}/incoming/{MODEL}/latest.parquet"


def test_a_manual_execution_does_not_claim(place):
    """``stagewise run --executor state-machine`` starts executions without a trigger: they run
    whatever they are given (re-running the same data on purpose stays possible)."""
    sfn = place.conn.clients.client("stepfunctions")
    definition = json.loads(sfn.describe_state_machine(stateMachineArn=place.conn.resources.state_machine_arn)["definition"])
    triggered = definition["States"]["Triggered"]
    assert definition["StartAt"] == "Triggered" and triggered["Default"] == "Validate"
    assert triggered["Choices"] == [{"Variable": "$.trigger", "IsPresent": True, "Next": "ClaimInput"}]
