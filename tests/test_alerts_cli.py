"""`stagewise alerts subscribe | list | tail` against the embedded AWS (moto's server over HTTPS).

Alerts travel the real way: ``publish_alert`` -> SNS topic -> SQS tail queue -> ``tail``. The
real-AWS confirmation states, which moto never produces, are checked on a stubbed SNS client.
"""

from __future__ import annotations

import json
import uuid
from types import SimpleNamespace

import boto3
import pytest
from botocore.stub import Stubber
from typer.testing import CliRunner

from conftest import REPO
from stagewise.monitoring import alerts_cli
from stagewise.monitoring.alerts import Alert, publish_alert
from stagewise.monitoring.alerts_cli import alerts_app, ensure_tail_queue, list_subscriptions, tail_queue_name

runner = CliRunner()
HAND_ADDED = "oncall-alerts-cli@example.org"


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands find the stack files from the working directory, as a user runs them."""
    monkeypatch.chdir(REPO)


def cli(*args: str):
    return runner.invoke(alerts_app, list(args), env={"COLUMNS": "200"})


def cli_json(*args: str) -> tuple[int, dict]:
    result = cli(*args, "--json")
    assert result.stdout.strip().startswith("{"), result.output
    return result.exit_code, json.loads(result.stdout)


def _email_subscriptions(dev, address: str) -> list[dict]:
    sns = dev.clients.client("sns")
    return [
        s for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=dev.resources.alert_topic_arn)
        for s in page["Subscriptions"] if s["Protocol"] == "email" and s["Endpoint"].lower() == address.lower()
    ]


@pytest.fixture
def hand_added(dev):
    """The hand-added address is unsubscribed afterwards: other tests expect only the stack's e-mails."""
    yield HAND_ADDED
    for s in _email_subscriptions(dev, HAND_ADDED):
        dev.clients.client("sns").unsubscribe(SubscriptionArn=s["SubscriptionArn"])


def _alert(run_id: str, **changes) -> Alert:
    fields = dict(
        event="gate.failed", title="Offline gate failed: r2 0.4123 < 0.70", environment="dev", model="engagement",
        version=7, run_id=run_id, details="Version 7 scored below the r2 gate on the holdout split.",
        numbers={"r2": 0.4123, "threshold": 0.7, "holdout rows": 4000},
        next_steps="Look at the validation report, fix the labels and retrain with `stagewise run`.",
    )
    return Alert(**{**fields, **changes})


# ------------------------------------------------------------------------------- subscribe
@pytest.mark.parametrize("address", ["not-an-email", "two@at@example", "no-dot@example", "spa ce@example.com", ""])
def test_subscribe_rejects_what_is_not_an_address(dev, address):
    code, doc = cli_json("subscribe", address, "--env", "dev")
    assert code == 4 and "is not an e-mail address" in doc["error"]
    assert _email_subscriptions(dev, address) == []  # moto itself accepts any endpoint: nothing may reach it


def test_subscribe_is_idempotent_and_explains_confirmation(dev, hand_added):
    result = cli("subscribe", hand_added, "--env", "dev")
    assert result.exit_code == 0, result.output
    assert f"subscribed {hand_added}" in result.stdout and "confirmation e-mail" in result.stdout
    first = _email_subscriptions(dev, hand_added)
    assert len(first) == 1

    code, again = cli_json("subscribe", hand_added.upper(), "--env", "dev")
    assert code == 0 and again["created"] is False
    assert again["subscription_arn"] == first[0]["SubscriptionArn"] and again["source"] == "manual"
    assert again["status"] == "confirmed" and "moto" in again["note"]  # the embedded AWS confirms at once
    assert _email_subscriptions(dev, hand_added) == first

    stack_email = dev.settings.alert_emails[0]
    result = cli("subscribe", stack_email, "--env", "dev")
    assert result.exit_code == 0 and "already subscribed" in result.stdout and "stack file" in result.stdout
    assert len(_email_subscriptions(dev, stack_email)) == 1


# ------------------------------------------------------------------------------- list
def test_list_shows_stack_emails_and_hand_added_ones_with_status(dev, hand_added):
    assert cli("subscribe", hand_added, "--env", "dev").exit_code == 0
    code, doc = cli_json("list", "--env", "dev")
    assert code == 0 and doc["topic_arn"] == dev.resources.alert_topic_arn and doc["embedded"] is True
    emails = {s["endpoint"]: s for s in doc["subscriptions"] if s["protocol"] == "email"}
    assert set(emails) == {*dev.settings.alert_emails, hand_added}
    assert {emails[e]["source"] for e in dev.settings.alert_emails} == {"stack"}
    assert emails[hand_added]["source"] == "manual"
    assert {s["status"] for s in emails.values()} == {"confirmed"}
    assert all(s["subscription_arn"].startswith(dev.resources.alert_topic_arn + ":") for s in emails.values())
    assert doc["stack_emails_not_subscribed"] == []

    result = cli("list", "--env", "dev")
    assert result.exit_code == 0
    row = next(line for line in result.stdout.splitlines() if hand_added in line)
    assert "confirmed" in row and "added by hand" in row
    assert "stack file (alertEmails)" in next(line for line in result.stdout.splitlines() if dev.settings.alert_emails[0] in line)
    assert "moto" in result.stdout  # says that the embedded AWS confirmed without an e-mail


PROD_TOPIC = "arn:aws:sns:eu-west-1:161803398874:stagewise-prod-alerts"


def _aws_conn(sns) -> SimpleNamespace:
    """A prod connection to a real account as far as the commands can tell, its SNS client stubbed."""
    resources = SimpleNamespace(
        alert_topic_arn=PROD_TOPIC, alert_topic=SimpleNamespace(name="stagewise-prod-alerts", emails=("ml-oncall@example.com",)),
        arn=lambda service, name: f"arn:aws:{service}:eu-west-1:161803398874:{name}",
    )
    return SimpleNamespace(clients=SimpleNamespace(client=lambda name: sns), resources=resources, embedded=False,
                           settings=SimpleNamespace(account_id="161803398874", alert_emails=("ml-oncall@example.com",)))


def _sub(arn: str, endpoint: str) -> dict:
    return {"SubscriptionArn": arn, "Owner": "161803398874", "Protocol": "email", "Endpoint": endpoint, "TopicArn": PROD_TOPIC}


def test_list_reports_pending_confirmation_as_aws_does():
    """moto confirms at once, so the two ways AWS reports a pending e-mail subscription are stubbed."""
    sns = boto3.client("sns", region_name="eu-west-1")
    subs = [_sub("PendingConfirmation", "new@example.com"), _sub(f"{PROD_TOPIC}:1111", "ml-oncall@example.com"),
            _sub(f"{PROD_TOPIC}:2222", "returned-arn@example.com")]
    with Stubber(sns) as stub:
        stub.add_response("list_subscriptions_by_topic", {"Subscriptions": subs[:2], "NextToken": "page-2"}, {"TopicArn": PROD_TOPIC})
        stub.add_response("get_subscription_attributes", {"Attributes": {"PendingConfirmation": "false"}},
                          {"SubscriptionArn": f"{PROD_TOPIC}:1111"})
        stub.add_response("list_subscriptions_by_topic", {"Subscriptions": subs[2:]}, {"TopicArn": PROD_TOPIC, "NextToken": "page-2"})
        stub.add_response("get_subscription_attributes", {"Attributes": {"PendingConfirmation": "true"}},
                          {"SubscriptionArn": f"{PROD_TOPIC}:2222"})
        listed = list_subscriptions(_aws_conn(sns))
        stub.assert_no_pending_responses()
    assert [(s.endpoint, s.status, s.source, s.subscription_arn) for s in listed] == [
        ("new@example.com", "pending confirmation", "manual", None),
        ("ml-oncall@example.com", "confirmed", "stack", f"{PROD_TOPIC}:1111"),
        ("returned-arn@example.com", "pending confirmation", "manual", f"{PROD_TOPIC}:2222"),
    ]


def test_subscribe_on_aws_says_a_confirmation_email_was_sent_and_stays_pending(monkeypatch):
    sns = boto3.client("sns", region_name="eu-west-1")
    monkeypatch.setattr(alerts_cli, "connect", lambda env, aws, provision: _aws_conn(sns))
    with Stubber(sns) as stub:
        stub.add_response("list_subscriptions_by_topic", {"Subscriptions": []}, {"TopicArn": PROD_TOPIC})
        stub.add_response("subscribe", {"SubscriptionArn": f"{PROD_TOPIC}:3333"},
                          {"TopicArn": PROD_TOPIC, "Protocol": "email", "Endpoint": "new@example.com", "ReturnSubscriptionArn": True})
        stub.add_response("get_subscription_attributes", {"Attributes": {"PendingConfirmation": "true"}},
                          {"SubscriptionArn": f"{PROD_TOPIC}:3333"})
        first = cli("subscribe", "new@example.com", "--env", "prod", "--aws")
        # again, while still pending: AWS lists it as PendingConfirmation, and no second Subscribe is sent
        stub.add_response("list_subscriptions_by_topic", {"Subscriptions": [_sub("PendingConfirmation", "new@example.com")]},
                          {"TopicArn": PROD_TOPIC})
        code, again = cli_json("subscribe", "new@example.com", "--env", "prod", "--aws")
        stub.assert_no_pending_responses()
    assert first.exit_code == 0, first.output
    assert "subscribed new@example.com to stagewise-prod-alerts on AWS account 161803398874: pending confirmation" in first.stdout
    assert "AWS has sent a confirmation e-mail to new@example.com" in first.stdout and "until the link" in first.stdout
    assert code == 0 and again["created"] is False and again["status"] == "pending confirmation"
    assert "has not confirmed yet" in again["note"]


# ------------------------------------------------------------------------------- tail
@pytest.fixture
def tail_queue(dev) -> str:
    """The tail queue, subscribed, emptied of whatever earlier tests published."""
    url = ensure_tail_queue(dev)
    assert cli("tail", "--env", "dev", "--wait", "0").exit_code == 0
    return url


def test_ensure_tail_queue_is_idempotent_and_only_the_topic_may_send(dev, tail_queue):
    assert ensure_tail_queue(dev) == tail_queue
    sqs = dev.clients.client("sqs")
    attrs = sqs.get_queue_attributes(QueueUrl=tail_queue, AttributeNames=["QueueArn", "Policy"])["Attributes"]
    assert attrs["QueueArn"] == dev.resources.arn("sqs", tail_queue_name(dev.resources)) == \
        f"arn:aws:sqs:eu-west-1:{dev.settings.account_id}:stagewise-dev-alerts-tail"
    statement = json.loads(attrs["Policy"])["Statement"]
    assert statement == [{
        "Sid": "AllowAlertTopic", "Effect": "Allow", "Principal": {"Service": "sns.amazonaws.com"},
        "Action": "sqs:SendMessage", "Resource": attrs["QueueArn"],
        "Condition": {"ArnEquals": {"aws:SourceArn": dev.resources.alert_topic_arn}},
    }]
    code, doc = cli_json("list", "--env", "dev")
    tails = [s for s in doc["subscriptions"] if s["endpoint"] == attrs["QueueArn"]]
    assert [(s["protocol"], s["source"]) for s in tails] == [("sqs", "tail")]


def test_tail_prints_a_published_alert_once(dev, tail_queue):
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    alert = _alert(run_id)
    publish_alert(dev.clients.client("sns"), dev.resources.alert_topic_arn, alert)

    result = cli("tail", "--env", "dev", "--no-follow", "--wait", "1")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert alert.subject == "[Stagewise dev] engagement: Offline gate failed: r2 0.4123 < 0.70" and alert.subject in text
    assert "critical" in text and "gate.failed" in text and f"Run:         {run_id}" in text
    assert "  - r2: 0.4123" in text and "  - threshold: 0.7" in text and "  - holdout rows: 4000" in text
    assert "What to do next:\nLook at the validation report" in text
    assert "1 alert " in result.stderr

    again = cli("tail", "--env", "dev", "--wait", "0")
    assert again.exit_code == 0 and again.stdout == "" and "no new alerts" in again.stderr
    # deleted, not merely hidden by the visibility timeout
    counts = dev.clients.client("sqs").get_queue_attributes(
        QueueUrl=tail_queue, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])
    assert counts["Attributes"] == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}


def test_tail_json_lines_limit_and_deletion(dev, tail_queue):
    sns, run_id = dev.clients.client("sns"), f"run-{uuid.uuid4().hex[:8]}"
    first = _alert(run_id)
    second = _alert(run_id, event="validation.failed", title="Validation failed: 2 expectations", severity="warning",
                    numbers={"failed expectations": 2, "rows": 20000})
    for a in (first, second):
        publish_alert(sns, dev.resources.alert_topic_arn, a)

    one = cli("tail", "--env", "dev", "--json", "--limit", "1", "--wait", "0")
    rest = cli("tail", "--env", "dev", "--json", "--wait", "0")
    none = cli("tail", "--env", "dev", "--json", "--wait", "0")
    assert (one.exit_code, rest.exit_code, none.exit_code) == (0, 0, 0)
    lines = one.stdout.splitlines() + rest.stdout.splitlines()
    assert len(one.stdout.splitlines()) == 1 and len(lines) == 2 and none.stdout == ""
    records = [json.loads(line) for line in lines]
    assert all(set(r) == {"time", "subject", "message", "attributes"} for r in records)
    by_subject = {r["subject"]: r for r in records}
    assert set(by_subject) == {first.subject, second.subject}
    r = by_subject[second.subject]
    assert r["message"] == second.body() and "  - failed expectations: 2" in r["message"]
    assert r["attributes"] == {"event": "validation.failed", "environment": "dev", "model": "engagement", "severity": "warning"}
    assert r["time"].endswith("Z") and r["time"][:2] == "20"


def test_tail_since_start_discards_older_alerts(dev, tail_queue):
    publish_alert(dev.clients.client("sns"), dev.resources.alert_topic_arn, _alert("run-old"))
    result = cli("tail", "--env", "dev", "--since-start", "--wait", "0")
    assert result.exit_code == 0 and result.stdout == "" and "discarded 1" in result.stderr
    assert cli("tail", "--env", "dev", "--json", "--wait", "0").stdout == ""


def test_tail_follow_stops_at_limit_and_on_ctrl_c(dev, tail_queue, monkeypatch):
    publish_alert(dev.clients.client("sns"), dev.resources.alert_topic_arn, _alert("run-follow"))
    result = cli("tail", "--env", "dev", "--follow", "--limit", "1", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["subject"].endswith("r2 0.4123 < 0.70")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(alerts_cli, "_drain", interrupted)
    result = cli("tail", "--env", "dev", "--follow")
    assert result.exit_code == 0 and "stopped" in result.stderr


def test_tail_on_aws_is_refused_before_any_aws_call(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("tail --aws must not call AWS")

    monkeypatch.setattr(alerts_cli, "connect", no_network)
    monkeypatch.setattr("botocore.endpoint.Endpoint.make_request", no_network)
    code, doc = cli_json("tail", "--env", "prod", "--aws")
    assert code == 4
    assert "embedded AWS only" in doc["error"] and "does not create resources" in doc["error"]
    assert "arn:aws:sns:eu-west-1:" in doc["hint"] and ":stagewise-prod-alerts" in doc["hint"]
    assert "e-mail" in doc["hint"] and "Chatbot" in doc["hint"]


def test_tail_without_the_embedded_aws_says_how_to_start_it(embedded, tmp_path, monkeypatch):
    monkeypatch.setenv("STAGEWISE_HOME", str(tmp_path))
    code, doc = cli_json("tail", "--env", "dev")
    assert code == 5 and "stagewise local up" in doc["error"]
