"""Metric publishing: batches respect the per-call limit and never send NaN or infinities."""

from __future__ import annotations

import math

from stagewise.monitoring import metrics as m


class RecordingCloudWatch:
    """Stands in for the boto3 client only to count calls; the real call is covered end to end."""

    def __init__(self) -> None:
        self.calls: list[list[dict]] = []

    def put_metric_data(self, Namespace: str, MetricData: list[dict]) -> None:  # noqa: N803 - boto3 names
        self.calls.append(MetricData)


def test_batches_and_drops_non_finite_values():
    dims = m.dimensions("dev", "engagement", 3)
    data = [m.Datum(m.ROWS_SCORED, i, "Count", dims) for i in range(1_203)]
    data += [m.Datum(m.HOLDOUT_R2, math.nan, "None", dims), m.Datum(m.HOLDOUT_RMSE, math.inf, "None", dims)]
    cw = RecordingCloudWatch()
    result = m.publish(cw, data)
    assert (result.sent, result.dropped, result.calls) == (1_203, 2, 3)
    assert all(len(c) <= m.MAX_DATA_PER_CALL for c in cw.calls)
    assert all(math.isfinite(d["Value"]) for c in cw.calls for d in c)
    assert cw.calls[0][0]["Dimensions"] == [
        {"Name": "Environment", "Value": "dev"}, {"Name": "Model", "Value": "engagement"}, {"Name": "Version", "Value": "3"},
    ]


def test_runs_without_a_version_use_version_none():
    assert m.dimensions("prod", "engagement", None)["Version"] == "none"
