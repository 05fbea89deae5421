"""What a state-machine run costs (``stagewise.pipeline.run_cost``): the pricing rules on tasks as
``DescribeTasks`` shows them. The run's own tasks and transitions are priced end to end in
``tests/test_executors.py``."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from stagewise.pipeline.run_cost import AwsPrices, run_cost, task_cost

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
PRICES = AwsPrices(vcpu_hour=0.04, gb_hour=0.004, spot_discount=0.7, per_1k_transitions=0.025, source="test", as_of="now",
                   region="eu-west-1")


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
