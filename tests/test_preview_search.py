"""Where the dashboard preview evaluates SEARCH and SORT: CloudWatch on AWS, the preview on the embedded AWS.

A real boto3 ``cloudwatch`` client with botocore's ``Stubber`` (no network): on AWS the dashboard's
``SORT(SEARCH(...))`` row reaches ``GetMetricData`` character for character and nothing is listed;
on the embedded AWS (moto evaluates neither) the same row becomes ``ListMetrics`` plus one
``MetricStat`` query per match, and the preview sorts the series itself.
"""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

import boto3
import pytest
from botocore.stub import Stubber

from stagewise.monitoring import metrics as m
from stagewise.monitoring.dashboard import dashboard_body
from stagewise.monitoring.preview import collect_preview, resolve_widget

REGION = "eu-west-1"
START = datetime(2025, 1, 1, 0, tzinfo=timezone.utc)  # on the hour: the preview's period alignment keeps it
END = datetime(2025, 1, 1, 6, tzinfo=timezone.utc)
HOURS = [datetime(2025, 1, 1, h, tzinfo=timezone.utc) for h in (3, 4)]


@pytest.fixture()
def cloudwatch():
    return boto3.client("cloudwatch", region_name=REGION)


@pytest.fixture()
def psi_widget() -> dict:
    """The dashboard's 'most drifted features' widget: SORT(SEARCH(...), MAX, DESC, 10), label PSI."""
    body = dashboard_body("dev", REGION)
    return next(w for w in body["widgets"] if "SORT(SEARCH(" in str(w["properties"].get("metrics")))


def _expression(widget: dict) -> str:
    [[row]] = widget["properties"]["metrics"]
    return row["expression"]


def _result(qid: str, label: str, values: list[float], stamps: list[datetime] = HOURS) -> dict:
    return {"Id": qid, "Label": label, "Timestamps": stamps, "Values": values, "StatusCode": "Complete"}


def test_on_aws_get_metric_data_carries_the_search_expression_unchanged(cloudwatch, psi_widget):
    expression = _expression(psi_widget)
    request = {"MetricDataQueries": [{"Id": "e1", "Expression": expression, "Label": "PSI", "ReturnData": True}],
               "StartTime": START, "EndTime": END, "ScanBy": "TimestampAscending"}
    with Stubber(cloudwatch) as stub:
        # CloudWatch answers with the sorted matches under the expression's id, over two pages
        stub.add_response("get_metric_data", {"NextToken": "page2", "MetricDataResults": [
            _result("e1", "PSI spend", [0.31]), _result("e1", "PSI age", [0.12, 0.18])]}, request)
        stub.add_response("get_metric_data", {"MetricDataResults": [
            _result("e1", "PSI spend", [0.35], [datetime(2025, 1, 1, 5, tzinfo=timezone.utc)])]},
            {**request, "NextToken": "page2"})
        series = resolve_widget(cloudwatch, psi_widget, START, END, embedded=False)  # no ListMetrics stubbed
        stub.assert_no_pending_responses()
    assert [(s.label, s.values) for s in series] == [("PSI spend", [0.31, 0.35]), ("PSI age", [0.12, 0.18])]
    assert series[0].timestamps == [*HOURS[:1], datetime(2025, 1, 1, 5, tzinfo=timezone.utc)]


def test_on_the_embedded_aws_the_preview_lists_fetches_and_sorts(cloudwatch, psi_widget):
    def metric(feature: str) -> dict:
        dims = {"Environment": "dev", "Model": "engagement", "Version": "2", "Feature": feature}
        return {"Namespace": m.NAMESPACE, "MetricName": m.FEATURE_PSI,
                "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()]}

    features = ["age", "spend", "tenure"]
    stat_queries = [{"Id": f"s0_{j}", "Label": f"Feature={f}", "ReturnData": True,
                     "MetricStat": {"Metric": metric(f), "Period": 3600, "Stat": "Maximum"}}
                    for j, f in enumerate(features)]  # one per match, in label order; no Expression
    with Stubber(cloudwatch) as stub:
        stub.add_response("list_metrics", {"Metrics": [metric(f) for f in reversed(features)]},
                          {"Namespace": m.NAMESPACE, "MetricName": m.FEATURE_PSI,
                           "Dimensions": [{"Name": "Environment", "Value": "dev"}]})
        stub.add_response("get_metric_data", {"MetricDataResults": [
            _result("s0_0", "Feature=age", [0.12, 0.18]), _result("s0_1", "Feature=spend", [0.31]),
            _result("s0_2", "Feature=tenure", [])]},
            {"MetricDataQueries": stat_queries, "StartTime": START, "EndTime": END, "ScanBy": "TimestampAscending"})
        series = resolve_widget(cloudwatch, psi_widget, START, END, embedded=True)
        stub.assert_no_pending_responses()
    # SORT(..., MAX, DESC, 10) applied here: highest maximum first, the series without data last
    assert [(s.label, s.values) for s in series] == [
        ("Feature=spend", [0.31]), ("Feature=age", [0.12, 0.18]), ("Feature=tenure", [])]


def test_collect_preview_leaves_search_to_cloudwatch_when_the_target_is_aws(cloudwatch):
    body = dashboard_body("dev", REGION)
    env_conn = SimpleNamespace(
        settings=SimpleNamespace(environment="dev", region=REGION, account_id="123456789012"),
        resources=SimpleNamespace(state_machine_arn=None), clients=SimpleNamespace(client=lambda _: cloudwatch),
        embedded=False)
    sent: list[dict] = []
    cloudwatch.meta.events.register("provide-client-params.cloudwatch.GetMetricData",
                                    lambda params, **_: sent.extend(params["MetricDataQueries"]))
    metric_widgets = [w for w in body["widgets"] if w["type"] == "metric"]
    with Stubber(cloudwatch) as stub:
        for _ in metric_widgets:  # one request per widget; a ListMetrics call would fail the stub
            stub.add_response("get_metric_data", {"MetricDataResults": []})
        preview = collect_preview(env_conn, hours=6, now=END)
        stub.assert_no_pending_responses()
    expressions = [row[0]["expression"] for w in metric_widgets for row in w["properties"]["metrics"]]
    assert [q["Expression"] for q in sent] == expressions and all("MetricStat" not in q for q in sent)
    assert preview.notes == {} and " · AWS · " in preview.subtitle
