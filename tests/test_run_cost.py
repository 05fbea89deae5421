"""What a run costs (``stagewise.pipeline.run_cost``): the pricing rules on tasks as
``DescribeTasks`` shows them, requests by billing class, an in-process run as Spot tasks, the
stack's overrides; end to end, an in-process run over a tiny budget publishes ``RunCostUSD`` and an
alert that ``stagewise alerts tail`` shows. A state-machine run's tasks and transitions are priced
end to end in ``tests/test_executors.py``."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from stagewise.pipeline.run_cost import AwsPrices, in_process_cost, request_cost, run_cost, task_cost

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
PRICES = AwsPrices(fargate_vcpu_hour=0.04, fargate_gb_hour=0.004, fargate_spot_discount=0.7,
                   step_functions_per_1k_transitions=0.025, s3_per_1k_put=0.005, s3_per_1k_get=0.0004,
                   dynamodb_per_million_write=1.0, dynamodb_per_million_read=0.25, source="test", as_of="now", region="eu-west-1")


def _task(group: str, seconds: float, provider: str, cpu: str = "1024", memory: str = "4096") -> dict:
    return {"startedAt": T0, "stoppedAt": T0 + timedelta(seconds=seconds), "cpu": cpu, "memory": memory,
            "capacityProviderName": provider, "overrides": {"containerOverrides": [{"command": [group, "--run-id", "r1"]}]}}


def test_a_task_is_priced_per_vcpu_and_gb_second_spot_at_its_discount_with_a_one_minute_minimum():
    on_demand = task_cost(_task("train", 3600, "FARGATE"), PRICES)
    assert (on_demand.group, on_demand.vcpu_seconds, on_demand.gb_seconds) == ("train", 3600, 4 * 3600)
    assert on_demand.usd == pytest.approx(0.04 + 4 * 0.004)
    spot = task_cost(_task("train", 3600, "FARGATE_SPOT"), PRICES)
    assert spot.usd == pytest.approx(on_demand.usd * 0.3)
    short = task_cost(_task("report", 5, "FARGATE"), PRICES)
    assert short.seconds == 60 and short.usd == pytest.approx((0.04 + 4 * 0.004) / 60)
    assert task_cost({**_task("score", 10, "FARGATE"), "stoppedAt": None}, PRICES) is None  # still running


def test_a_run_adds_its_tasks_and_its_transitions():
    events = [{"type": t} for t in ("ExecutionStarted", "TaskStateEntered", "TaskStateExited", "MapStateEntered",
                                    "SucceedStateEntered", "ExecutionSucceeded")]
    cost = run_cost([_task("validate", 120, "FARGATE_SPOT"), _task("train", 600, "FARGATE")], events, True, PRICES)
    assert cost.transitions == 3 and cost.transitions_usd == pytest.approx(3 * 0.025 / 1000)
    assert cost.fargate_usd == pytest.approx(sum(t.usd for t in cost.tasks)) and len(cost.tasks) == 2
    assert cost.to_dict()["vcpu_seconds"] == 720 and cost.estimated
    assert AwsPrices.load().region == "eu-west-1"  # the shipped table names its region and date


def test_requests_are_priced_by_billing_class_and_a_transactional_write_twice_per_item():
    counted = {"s3:PutObject": 3, "s3:CopyObject": 1, "s3:ListObjectsV2": 1, "s3:GetObject": 10, "s3:HeadObject": 2,
               "s3:DeleteObject": 5, "dynamodb:TransactWriteItems": 4, "dynamodb:PutItem": 1, "dynamodb:Query": 2,
               "dynamodb:GetItem": 3, "sts:AssumeRole": 1}
    r = request_cost(counted, PRICES)
    assert (r.s3_put, r.s3_get, r.dynamodb_write, r.dynamodb_read) == (5, 12, 9, 5)  # 4 items x 2 + 1; DELETE free
    assert r.usd == pytest.approx(5 * 0.005 / 1000 + 12 * 0.0004 / 1000 + 9 * 1.0 / 1e6 + 5 * 0.25 / 1e6)


def test_an_in_process_run_is_priced_as_one_spot_task_per_group_at_the_stacks_sizes():
    groups = {"ingest": "validate", "validate": "validate", "train": "train", "score": "score", "report": "report"}
    sizes = {"validate": (1024, 4096), "train": (4096, 16384), "score": (2048, 8192), "report": (2048, 8192)}
    cost = in_process_cost({"ingest": 10, "validate": 50, "train": 600, "score": 240, "report": 1, "other": 99},
                           groups, sizes, 2, {"s3:PutObject": 1000}, PRICES)
    by_group = sorted((t.group, t.seconds, t.capacity_provider) for t in cost.tasks)
    assert by_group == [("report", 60, "FARGATE_SPOT"), ("score", 120, "FARGATE_SPOT"), ("score", 120, "FARGATE_SPOT"),
                        ("train", 600, "FARGATE_SPOT"), ("validate", 60, "FARGATE_SPOT")]
    train = next(t for t in cost.tasks if t.group == "train")
    assert train.usd == pytest.approx((4 * 600 * 0.04 + 16 * 600 * 0.004) / 3600 * 0.3)
    assert cost.estimated and cost.transitions == 2 + 4 + 2 and cost.requests.s3_put == 1000
    assert cost.total_usd == pytest.approx(cost.fargate_usd + cost.transitions_usd + cost.requests.usd)
    assert "would cost on Fargate Spot" in cost.line()


def test_a_stack_overrides_prices_and_an_unknown_price_is_refused():
    assert AwsPrices.load({"fargate_vcpu_hour": 1.5}).fargate_vcpu_hour == 1.5
    assert "overridden by the stack: fargate_vcpu_hour" in AwsPrices.load({"fargate_vcpu_hour": 1.5}).source
    with pytest.raises(TypeError):
        AwsPrices.load({"lambda_per_request": 1.0})


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def over_budget(tmp_path_factory):
    """A fresh environment whose dev stack file sets a budget of 0.000001 USD per run, and one
    in-process ``stagewise run`` of 2,000 rows in it."""
    import subprocess

    from test_executors import STAGEWISE, Place, generated, project_with

    project = project_with(tmp_path_factory.mktemp("budget-project"), **{"stagewise:costBudgetPerRunUsd": 0.000001})
    place = Place(tmp_path_factory.mktemp("budget-home"), project).up()
    data = generated(tmp_path_factory.mktemp("budget-data") / "customers.parquet", 2000, 3)
    tail = [STAGEWISE, "alerts", "tail", "--env", "dev", "--wait", "1", "--json"]
    subprocess.run(tail, env=place.env, check=True, capture_output=True, cwd=project, timeout=120)  # the tail queue, empty
    code, doc, err = place.cli("run", "--data", str(data), "--env", "dev")
    assert code == 0, err
    alerts = subprocess.run(tail, env=place.env, check=True, capture_output=True, text=True, cwd=project, timeout=120).stdout
    yield place, doc, [json.loads(line) for line in alerts.splitlines() if line.strip()]
    place.server.down()


def test_a_run_reports_its_cost_and_over_the_budget_alerts_seen_by_alerts_tail(over_budget):
    place, doc, alerts = over_budget
    cost = doc["cost"]
    assert cost["estimated"] and cost["line"].startswith("would cost on Fargate Spot $")
    assert {t["group"] for t in cost["tasks"]} == {"validate", "train", "score", "report"}
    assert cost["requests"]["s3_put"] > 0 and cost["requests"]["dynamodb_write"] > 0 and cost["transitions"] == 7
    assert cost["total_usd"] == pytest.approx(cost["fargate_usd"] + cost["transitions_usd"] + cost["requests"]["usd"])
    assert cost["budget_usd"] == 0.000001 and cost["over_budget"] is True
    assert [a["event"] for a in doc["alerts"] if a.get("event") == "run.over_budget"] == ["run.over_budget"]
    [seen] = [a for a in alerts if a["attributes"].get("event") == "run.over_budget"]
    assert "over the budget of 1e-06 USD" in seen["subject"] and doc["run_id"] in seen["message"]
    # the metric, per model and environment, and the stack's alarm on it
    cw = place.conn.clients.client("cloudwatch")
    now = datetime.now(timezone.utc)
    stats = cw.get_metric_statistics(Namespace="Stagewise", MetricName="RunCostUSD", StartTime=now - timedelta(hours=1),
                                     EndTime=now + timedelta(minutes=5), Period=3600, Statistics=["Maximum"],
                                     Dimensions=[{"Name": "Environment", "Value": "dev"}, {"Name": "Model", "Value": "engagement"}])
    assert [round(p["Maximum"], 9) for p in stats["Datapoints"]] == [round(cost["total_usd"], 9)]
    [alarm] = cw.describe_alarms(AlarmNames=["stagewise-dev-engagement-run-cost"])["MetricAlarms"]
    assert (alarm["MetricName"], alarm["Threshold"], alarm["ComparisonOperator"]) == ("RunCostUSD", 0.000001, "GreaterThanThreshold")
