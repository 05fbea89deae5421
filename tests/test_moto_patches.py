"""The moto engine patches (``stagewise.platform.runtime.moto_patches``) still fit the moto installed.

Each patch replaces or wraps a moto internal; if moto changes one, the patch may silently do the
wrong thing. These fail first, naming the function that changed, so the patch is re-read against
the new moto before anything else runs on it. What each patch does is exercised by
``tests/test_state_machine.py`` (the control flow on the engine) and here on the embedded AWS's own
server process.
"""

from __future__ import annotations

import moto
import pytest

from stagewise.platform.runtime import moto_patches


def test_moto_is_the_pinned_minor_version():
    assert moto.__version__.startswith(moto_patches.PINNED + "."), (
        f"moto {moto.__version__} installed, patches written for {moto_patches.PINNED}.x: re-read each patch")


def test_every_patched_moto_function_is_the_one_the_patch_was_written_against():
    changed = {name: (was, now) for name, now in moto_patches.fingerprint().items()
               if (was := moto_patches.FINGERPRINT[name]) != now}
    assert not changed, f"moto changed under these patches (source sha256 recorded, now): {changed}"


def test_apply_patches_and_undo_restores_moto():
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import state_task_service_ecs as ecs_task
    from moto.stepfunctions.responses import StepFunctionResponse

    before = (ecs_task.boto_client_for, StepFunctionResponse.send_task_failure,
              set(ecs_task._SUPPORTED_API_PARAM_BINDINGS["runtask"]))
    undo = moto_patches.apply("https://127.0.0.1:1")
    try:
        assert ecs_task.boto_client_for is not before[0]
        assert "CapacityProviderStrategy" in ecs_task._SUPPORTED_API_PARAM_BINDINGS["runtask"]
        assert "CapacityProviderStrategy" not in before[2]  # moto still drops it: the patch is needed
    finally:
        undo()
    after = (ecs_task.boto_client_for, StepFunctionResponse.send_task_failure,
             set(ecs_task._SUPPORTED_API_PARAM_BINDINGS["runtask"]))
    assert after == before


def test_a_moto_of_another_minor_version_is_refused(monkeypatch):
    monkeypatch.setattr(moto, "__version__", "5.3.0")
    with pytest.raises(RuntimeError, match="written for moto 5.2.x"):
        moto_patches.apply("https://127.0.0.1:1")


def test_the_embedded_aws_engine_calls_services_as_the_execution_role_over_https(embedded, dev):
    """The embedded AWS's server process has the patches: a Task state's SNS publish reaches the
    server itself over HTTPS as the state machine's role, in the dev account (unpatched, moto calls
    http://localhost:$MOTO_PORT, which the HTTPS-only server never answers, and the execution fails)."""
    import json
    import time

    clients = dev.clients
    role = clients.client("iam").create_role(
        RoleName="patch-check",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "states.amazonaws.com"}, "Action": "sts:AssumeRole"}]}),
    )["Role"]["Arn"]
    definition = {"StartAt": "Publish", "States": {"Publish": {
        "Type": "Task", "Resource": "arn:aws:states:::sns:publish", "End": True,
        "Parameters": {"TopicArn": dev.resources.alert_topic_arn, "Message": "engine patch check"}}}}
    sfn = clients.client("stepfunctions")  # the embedded AWS executes state machines (moto_server)
    machine = sfn.create_state_machine(name="patch-check", definition=json.dumps(definition),
                                       roleArn=role)["stateMachineArn"]
    try:
        execution = sfn.start_execution(stateMachineArn=machine)["executionArn"]
        deadline = time.monotonic() + 60
        while (found := sfn.describe_execution(executionArn=execution))["status"] == "RUNNING":
            assert time.monotonic() < deadline, "the execution did not finish in 60 s"
            time.sleep(0.2)
    finally:
        sfn.delete_state_machine(stateMachineArn=machine)
        clients.client("iam").delete_role(RoleName="patch-check")
    assert found["status"] == "SUCCEEDED", sfn.get_execution_history(executionArn=execution)["events"][-3:]
    assert json.loads(found["output"])["MessageId"]
    assert machine.split(":")[4] == clients.caller_identity()["Account"] == "314159265358"


def test_the_embedded_cloudwatch_answers_percentile_statistics(dev):
    """Patch 10: GetMetricData with ``p50``/``p95``/``p99`` (moto fails with HTTP 500) gives the
    percentiles of the period's values, as CloudWatch does for the agents' latency widgets."""
    from datetime import datetime, timedelta, timezone

    cw = dev.clients.client("cloudwatch")
    now = datetime.now(timezone.utc)
    dims = [{"Name": "Agent", "Value": "percentile-test"}]
    cw.put_metric_data(Namespace="PatchTest", MetricData=[
        {"MetricName": "Latency", "Value": float(v), "Unit": "Milliseconds", "Dimensions": dims, "Timestamp": now}
        for v in range(1, 101)])
    queries = [{"Id": f"q{stat}", "MetricStat": {"Metric": {"Namespace": "PatchTest", "MetricName": "Latency", "Dimensions": dims},
                                                  "Period": 3600, "Stat": f"p{stat}"}} for stat in (50, 95, 99)]
    results = cw.get_metric_data(MetricDataQueries=queries, StartTime=now - timedelta(hours=1), EndTime=now + timedelta(hours=1))
    values = [r["Values"] for r in results["MetricDataResults"]]
    assert values == [[50.5], [pytest.approx(95.05)], [pytest.approx(99.01)]]


def test_the_embedded_cloudwatch_lists_each_metric_once(dev):
    """Patch 11: a metric with two dimensions put 300 times is listed once (moto listed it once per
    datum, quadratically), and a dimension filter still selects."""
    cw = dev.clients.client("cloudwatch")
    for dims in ({"Agent": "list-once", "Version": "1"}, {"Agent": "list-once", "Version": "2"}):
        for start in range(0, 300, 150):
            cw.put_metric_data(Namespace="PatchTestList", MetricData=[
                {"MetricName": "Calls", "Value": 1.0, "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()]}
                for _ in range(start, start + 150)])
    listed = [m for page in cw.get_paginator("list_metrics").paginate(Namespace="PatchTestList") for m in page["Metrics"]]
    assert sorted(next(d["Value"] for d in m["Dimensions"] if d["Name"] == "Version") for m in listed) == ["1", "2"]
    one = cw.list_metrics(Namespace="PatchTestList", Dimensions=[{"Name": "Version", "Value": "2"}])["Metrics"]
    assert len(one) == 1
