"""The embedded AWS: a real server over HTTPS; each environment lands in its own account."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from conftest import REPO
from stagewise.pipeline.cli import app
from stagewise.platform.runtime.environment import connect
from stagewise.platform.runtime.provision import ensure_environment

runner = CliRunner()


def test_status_reports_the_running_server(embedded):
    result = runner.invoke(app, ["local", "status", "--json"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["running"] and doc["endpoint"] == embedded.endpoint and doc["endpoint"].startswith("https://127.0.0.1:")


def test_each_environment_assumes_its_stack_role_into_its_own_account(embedded):
    seen = {}
    for env in ("dev", "test", "prod"):
        conn = connect(env, project_dir=REPO)
        ident = conn.clients.caller_identity()
        assert ident["Account"] == conn.settings.account_id
        assert f":assumed-role/stagewise-deployer/stagewise-{env}" in ident["Arn"]
        seen[env] = ident["Account"]
    assert len(set(seen.values())) == 3


def test_provisioning_is_idempotent_and_follows_the_spec(dev):
    again = ensure_environment(dev.clients, dev.resources)
    assert {a.outcome for a in again} == {"exists"}
    s3 = dev.clients.client("s3")
    for bucket in dev.resources.buckets:
        assert s3.get_bucket_versioning(Bucket=bucket.name)["Status"] == "Enabled"
        enc = s3.get_bucket_encryption(Bucket=bucket.name)["ServerSideEncryptionConfiguration"]["Rules"][0]
        assert enc["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        block = s3.get_public_access_block(Bucket=bucket.name)["PublicAccessBlockConfiguration"]
        assert all(block.values())
    table = dev.clients.client("dynamodb").describe_table(TableName=dev.resources.registry_table.name)["Table"]
    assert {k["AttributeName"] for k in table["KeySchema"]} == {"pk", "sk"}
    assert table["GlobalSecondaryIndexes"][0]["IndexName"] == "by-kind"
    subs = dev.clients.client("sns").list_subscriptions_by_topic(TopicArn=dev.resources.alert_topic_arn)["Subscriptions"]
    assert {s["Endpoint"] for s in subs if s["Protocol"] == "email"} == set(dev.settings.alert_emails)


def test_registry_command_without_server_says_how_to_start_it(tmp_path, monkeypatch):
    monkeypatch.setenv("STAGEWISE_HOME", str(tmp_path))
    result = runner.invoke(app, ["registry", "list", "--json"])
    assert result.exit_code == 5
    assert "stagewise local up" in json.loads(result.stdout)["error"]
