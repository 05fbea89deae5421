"""The embedded AWS's IAM evaluation for the stack's roles (``platform/runtime/local_iam.py``): the
rules, without a server. The enforcement on real runs is in ``tests/test_executors.py``."""

from __future__ import annotations

import json

from stagewise.platform.runtime.local_iam import _checks, evaluate, usage_report

BUCKET = "arn:aws:s3:::data"
POLICY = {"Version": "2012-10-17", "Statement": [
    {"Sid": "Read", "Effect": "Allow", "Action": ["s3:GetObject"], "Resource": [f"{BUCKET}/raw/*"]},
    {"Sid": "Registry", "Effect": "Allow", "Action": ["dynamodb:PutItem", "dynamodb:ConditionCheckItem"], "Resource": ["arn:aws:dynamodb:eu-west-1:1:table/t"]},
    {"Sid": "Metrics", "Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*",
     "Condition": {"StringEquals": {"cloudwatch:namespace": "Stagewise"}}},
    {"Sid": "NoSecrets", "Effect": "Deny", "Action": "s3:*", "Resource": f"{BUCKET}/raw/secret/*"},
]}


def test_an_allow_must_match_the_action_and_the_s3_resource():
    assert evaluate([POLICY], "s3:GetObject", f"{BUCKET}/raw/a.parquet") == "allow"
    assert evaluate([POLICY], "S3:getobject", f"{BUCKET}/raw/a.parquet") == "allow"  # IAM ignores the case of actions
    assert evaluate([POLICY], "s3:GetObject", f"{BUCKET}/models/a.ubj") == "implicit-deny"
    assert evaluate([POLICY], "s3:PutObject", f"{BUCKET}/raw/a.parquet") == "implicit-deny"


def test_an_explicit_deny_wins_and_unknown_resources_are_decided_by_the_action():
    assert evaluate([POLICY], "s3:GetObject", f"{BUCKET}/raw/secret/key") == "deny"
    assert evaluate([POLICY], "dynamodb:PutItem", "*") == "allow"  # moto gives no DynamoDB resource
    assert evaluate([POLICY], "dynamodb:DeleteItem", "*") == "implicit-deny"
    assert evaluate([POLICY], "cloudwatch:PutMetricData", "*") == "allow"  # conditions are not evaluated


def test_transactions_batches_and_multi_deletes_are_checked_by_their_parts():
    body = json.dumps({"TransactItems": [{"Put": {}}, {"ConditionCheck": {}}]})
    assert _checks("dynamodb:TransactWriteItems", "*", body) == [("dynamodb:ConditionCheckItem", "*"), ("dynamodb:PutItem", "*")]
    assert _checks("dynamodb:BatchWriteItem", "*", json.dumps({"RequestItems": {"t": [{"DeleteRequest": {}}]}})) == [("dynamodb:DeleteItem", "*")]
    delete = b"<Delete><Object><Key>raw/a</Key></Object><Object><Key>raw/b</Key></Object></Delete>"
    assert _checks("s3:DeleteObject", BUCKET, delete) == [("s3:DeleteObject", f"{BUCKET}/raw/a"), ("s3:DeleteObject", f"{BUCKET}/raw/b")]
    assert _checks("s3:GetObject", f"{BUCKET}/raw/a", b"") == [("s3:GetObject", f"{BUCKET}/raw/a")]


def test_the_report_lists_granted_actions_no_call_used():
    decisions = [{"role": "r", "action": "s3:GetObject", "outcome": "allow"},
                 {"role": "r", "action": "s3:PutObject", "outcome": "implicit-deny"}]
    [row] = usage_report(decisions, {"r": [POLICY]})
    assert row["used"] == ["s3:GetObject"] and row["denied"] == ["s3:PutObject"]
    assert row["unused"] == ["cloudwatch:PutMetricData", "dynamodb:ConditionCheckItem", "dynamodb:PutItem"]
