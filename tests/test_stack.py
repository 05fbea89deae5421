"""The Pulumi program under Pulumi's mocks, once per stack (dev, test, prod).

A ``pulumi.runtime.Mocks`` subclass records every resource's inputs; the config comes from the
real stack files through ``set_all_config``; the program's own ``deploy`` runs unchanged. The
assertions are what an operator would check before ``pulumi up``.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pytest
import yaml

from conftest import REPO
from stagewise.monitoring import metrics as m
from stagewise.monitoring.dashboard import metric_names


class RecordingMocks(pulumi.runtime.Mocks):
    """Records each resource (type, name, inputs) and answers with plausible ids and ARNs."""

    def __init__(self, account_id: str, region: str) -> None:
        self.resources: list[pulumi.runtime.MockResourceArgs] = []
        self.account_id, self.region = account_id, region

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(args)
        outputs = dict(args.inputs)
        name = outputs.get("name") or outputs.get("bucket") or outputs.get("family") or args.name
        region, acct = self.region, self.account_id
        arns = {
            "aws:s3/bucket:Bucket": f"arn:aws:s3:::{name}",
            "aws:iam/role:Role": f"arn:aws:iam::{acct}:role/{name}",
            "aws:dynamodb/table:Table": f"arn:aws:dynamodb:{region}:{acct}:table/{name}",
            "aws:ecr/repository:Repository": f"arn:aws:ecr:{region}:{acct}:repository/{name}",
            "aws:cloudwatch/logGroup:LogGroup": f"arn:aws:logs:{region}:{acct}:log-group:{name}",
            "aws:sfn/stateMachine:StateMachine": f"arn:aws:states:{region}:{acct}:stateMachine:{name}",
            "aws:ecs/cluster:Cluster": f"arn:aws:ecs:{region}:{acct}:cluster/{name}",
            "aws:ecs/taskDefinition:TaskDefinition": f"arn:aws:ecs:{region}:{acct}:task-definition/{name}:1",
            "aws:sns/topic:Topic": f"arn:aws:sns:{region}:{acct}:{name}",
        }
        kind = args.typ.split(":")[1].split("/")[0]
        outputs.setdefault("arn", arns.get(args.typ, f"arn:aws:{kind}:{region}:{acct}:{name}"))
        if args.typ == "aws:ecr/repository:Repository":
            outputs.update(repositoryUrl=f"{self.account_id}.dkr.ecr.{self.region}.amazonaws.com/{name}", registryId=self.account_id)
        if args.typ == "docker-build:index:Image":
            outputs["ref"] = f"{args.inputs['tags'][0]}@sha256:{'0' * 64}"
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        if args.token == "aws:ecr/getAuthorizationToken:getAuthorizationToken":
            return {"userName": "AWS", "password": "mock-token", "proxyEndpoint": "https://mock", "authorizationToken": "x",
                    "expiresAt": "2030-01-01T00:00:00Z", "id": "mock"}
        return {}

    def of_type(self, typ: str) -> list[pulumi.runtime.MockResourceArgs]:
        return [r for r in self.resources if r.typ == typ]


def stack_config(env: str) -> dict[str, str]:
    """The stack file's config as Pulumi hands it to a program: strings, objects as JSON."""
    config = yaml.safe_load((REPO / f"Pulumi.{env}.yaml").read_text())["config"]
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}


def run_stack(env: str, mocks_class: type[RecordingMocks] = RecordingMocks, config: dict[str, Any] | None = None,
              **mock_kwargs: Any) -> tuple[RecordingMocks, dict[str, Any]]:
    """Run the program of stack ``env`` under ``mocks_class(account_id, region, **mock_kwargs)``,
    with ``config`` (Pulumi keys) over the stack file's; returns the mocks (every resource's
    inputs) and the stack outputs."""
    from stagewise.stacks.config import settings_from_pulumi_config
    from stagewise.stacks.program import deploy
    from stagewise.stacks.settings import load_settings

    settings = load_settings(env, REPO)
    mocks = mocks_class(settings.account_id, settings.region, **mock_kwargs)
    pulumi.runtime.set_mocks(mocks, project="stagewise", stack=env, preview=False)
    pulumi.runtime.set_all_config({**stack_config(env), **{k: json.dumps(v) for k, v in (config or {}).items()}})
    exported: dict[str, Any] = {}

    @pulumi.runtime.test
    def program():
        outputs = deploy(settings_from_pulumi_config(), image_tag="test")
        return pulumi.Output.all(**outputs).apply(exported.update)

    program()
    return mocks, exported


@pytest.fixture(scope="module", params=["dev", "test", "prod"])
def stack(request):
    from stagewise.stacks.settings import load_settings

    mocks, outputs = run_stack(request.param)
    return request.param, load_settings(request.param, REPO), mocks, outputs


def _policies(mocks: RecordingMocks, typ: str = "aws:iam/rolePolicy:RolePolicy") -> dict[str, dict]:
    return {r.name: json.loads(r.inputs["policy"]) for r in mocks.of_type(typ)}


def test_provider_assumes_the_stack_role_into_the_stack_account_only(stack):
    env, settings, mocks, outputs = stack
    (prov,) = mocks.of_type("pulumi:providers:aws")
    assert prov.inputs["region"] == settings.region
    assert json.loads(prov.inputs["allowedAccountIds"]) == [settings.account_id]
    roles = json.loads(prov.inputs["assumeRoles"])
    assert [r["role_arn"] for r in roles] == [f"arn:aws:iam::{settings.account_id}:role/stagewise-deployer"]
    tags = json.loads(prov.inputs["defaultTags"])["tags"]
    assert tags["Environment"] == env and {"Project", "CostCenter", "ManagedBy"} <= set(tags)
    # every resource goes through that provider
    assert all(r.provider is None or "aws-" + env in r.provider for r in mocks.resources if r.typ.startswith("aws:"))
    assert outputs["account_id"] == settings.account_id


def test_every_bucket_is_encrypted_versioned_private_and_tls_only(stack):
    env, settings, mocks, _ = stack
    buckets = {r.name: r for r in mocks.of_type("aws:s3/bucket:Bucket")}
    assert {b.inputs["bucket"] for b in buckets.values()} == {
        f"stagewise-{env}-data-{settings.account_id}", f"stagewise-{env}-artifacts-{settings.account_id}"}
    for name in buckets:
        sse = next(r for r in mocks.of_type("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration") if r.name == f"{name}-sse")
        assert sse.inputs["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] in ("AES256", "aws:kms")
        ver = next(r for r in mocks.of_type("aws:s3/bucketVersioning:BucketVersioning") if r.name == f"{name}-versioning")
        assert ver.inputs["versioningConfiguration"]["status"] == "Enabled"
        block = next(r for r in mocks.of_type("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock") if r.name == f"{name}-public-access")
        assert all(block.inputs[k] for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"))
        policy = json.loads(next(r for r in mocks.of_type("aws:s3/bucketPolicy:BucketPolicy") if r.name == f"{name}-tls-only").inputs["policy"])
        deny = policy["Statement"][0]
        assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        assert deny["Resource"][0].endswith(buckets[name].inputs["bucket"])


def test_deletion_protection_only_in_prod(stack):
    env, _, mocks, _ = stack
    (table,) = mocks.of_type("aws:dynamodb/table:Table")
    assert table.inputs["deletionProtectionEnabled"] is (env == "prod")
    assert table.inputs["pointInTimeRecovery"]["enabled"] is True
    assert {b.inputs["forceDestroy"] for b in mocks.of_type("aws:s3/bucket:Bucket")} == {env != "prod"}


def test_task_roles_hold_no_wildcard_action_on_wildcard_resource(stack):
    env, _, mocks, _ = stack
    task_policies = {k: v for k, v in _policies(mocks).items() if "-compute-" in k and not k.endswith("execution-policy")}
    assert set(task_policies) == {f"stagewise-{env}-compute-{t}-policy" for t in ("validate", "train", "score")}
    for name, doc in task_policies.items():
        for st in doc["Statement"]:
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
            assert not any(a == "*" or a.endswith(":*") for a in actions), (name, st)
            if "*" in resources:
                assert st["Sid"] in ("PutMetricsInNamespace", "ReportToStepFunctions"), (name, st)
    validate = task_policies[f"stagewise-{env}-compute-validate-policy"]
    registry = sorted(a for st in validate["Statement"] for a in st["Action"] if a.startswith("dynamodb:"))
    assert registry == ["dynamodb:GetItem", "dynamodb:PutItem"]  # validate only takes the run lock (registry.runlock)
    for name, doc in task_policies.items():  # no task may delete a registry item (the lock is released by a put)
        assert not any(a in ("dynamodb:DeleteItem", "dynamodb:BatchWriteItem") for st in doc["Statement"] for a in st["Action"]), name


def test_dashboard_body_is_valid_and_shows_only_published_metrics(stack):
    env, settings, mocks, _ = stack
    (dash,) = mocks.of_type("aws:cloudwatch/dashboard:Dashboard")
    body = json.loads(dash.inputs["dashboardBody"])
    assert body["widgets"]
    for w in body["widgets"]:
        assert w["type"] in ("metric", "text") and 0 <= w["x"] and w["x"] + w["width"] <= 24 and w["height"] > 0
    names = metric_names(body)
    assert names and names <= m.PUBLISHED | {"ExecutionsSucceeded", "ExecutionsFailed", "ExecutionsTimedOut"}
    assert {m.HOLDOUT_R2, m.TRAFFIC_WEIGHT, m.ROWS_SCORED} <= names


def test_alarms_cover_failures_validation_rollback_and_staleness(stack):
    env, _, mocks, _ = stack
    alarms = {a.inputs["name"].removeprefix(f"stagewise-{env}-engagement-"): a.inputs for a in mocks.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")}
    assert set(alarms) == {"failed-executions", "failed-validation", "rollback", "no-successful-run", "run-cost",
                           "analyst-error-rate", "analyst-latency-p95", "analyst-daily-cost"}
    # a run dearer than stagewise:costBudgetPerRunUsd (default 20 USD) alarms on its RunCostUSD
    assert (alarms["run-cost"]["metricName"], alarms["run-cost"]["statistic"], alarms["run-cost"]["threshold"]) == (
        "RunCostUSD", "Maximum", 20.0)
    assert alarms["no-successful-run"]["treatMissingData"] == "breaching"
    assert alarms["failed-executions"]["namespace"] == "AWS/States"
    for a in alarms.values():
        assert a["metricName"] in m.PUBLISHED | {"ExecutionsFailed"}
        assert a["alarmActions"] and a["alarmActions"][0].endswith(f"stagewise-{env}-alerts")
    # the agent's: error rate (Average of 0/1 per call), p95 latency (an extended statistic), cost per day
    assert (alarms["analyst-error-rate"]["statistic"], alarms["analyst-error-rate"]["threshold"]) == ("Average", 0.05)
    assert alarms["analyst-latency-p95"]["extendedStatistic"] == "p95" and "statistic" not in alarms["analyst-latency-p95"]
    assert (alarms["analyst-daily-cost"]["period"], alarms["analyst-daily-cost"]["dimensions"]) == (
        86_400, {"Environment": env, "Agent": "engagement-analyst"})


def test_alert_emails_become_subscriptions(stack):
    env, settings, mocks, _ = stack
    subs = mocks.of_type("aws:sns/topicSubscription:TopicSubscription")
    assert sorted(s.inputs["endpoint"] for s in subs) == sorted(settings.alert_emails)
    assert {s.inputs["protocol"] for s in subs} == {"email"}


def test_compute_runs_on_fargate_spot_with_sizes_from_settings(stack):
    env, settings, mocks, _ = stack
    (cap,) = mocks.of_type("aws:ecs/clusterCapacityProviders:ClusterCapacityProviders")
    assert cap.inputs["capacityProviders"] == ["FARGATE_SPOT", "FARGATE"]
    assert cap.inputs["defaultCapacityProviderStrategies"][0]["capacityProvider"] == "FARGATE_SPOT"
    tds = {t.inputs["family"]: t.inputs for t in mocks.of_type("aws:ecs/taskDefinition:TaskDefinition")}
    train = tds[f"stagewise-{env}-train"]
    assert (int(train["cpu"]), int(train["memory"])) == (settings.task_sizes.train.cpu, settings.task_sizes.train.memory_mib)
    container = json.loads(train["containerDefinitions"])[0]
    assert container["stopTimeout"] == 120 and container["logConfiguration"]["logDriver"] == "awslogs"
    (repo,) = mocks.of_type("aws:ecr/repository:Repository")
    assert repo.inputs["imageScanningConfiguration"]["scanOnPush"] is True
    logs = {g.inputs["name"]: g.inputs["retentionInDays"] for g in mocks.of_type("aws:cloudwatch/logGroup:LogGroup")}
    assert logs and set(logs.values()) == {settings.log_retention_days}


def test_state_machine_and_schedule_come_from_the_pipeline_definition(stack):
    env, settings, mocks, _ = stack
    (sm,) = mocks.of_type("aws:sfn/stateMachine:StateMachine")
    definition = json.loads(sm.inputs["definition"])
    tasks = [s for s in definition["States"].values() if s.get("Type") == "Task"]
    assert any("ecs:runTask" in s["Resource"] for s in tasks)
    (schedule,) = mocks.of_type("aws:scheduler/schedule:Schedule")
    assert schedule.inputs["scheduleExpression"] == settings.schedule


def test_scoring_is_a_distributed_map_as_concurrent_as_the_stack_file_says(stack):
    env, settings, mocks, _ = stack
    (sm,) = mocks.of_type("aws:sfn/stateMachine:StateMachine")
    score = json.loads(sm.inputs["definition"])["States"]["Score"]
    assert score["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    concurrency = int(yaml.safe_load((REPO / f"Pulumi.{env}.yaml").read_text())["config"]["stagewise:scoringConcurrency"])
    assert score["MaxConcurrency"] == concurrency == settings.scoring_concurrency == {"dev": 2, "test": 4, "prod": 16}[env]
    assert score["ToleratedFailurePercentage"] == 0


def test_state_machine_role_starts_and_manages_only_its_own_child_executions(stack):
    env, settings, mocks, outputs = stack
    (sm,) = mocks.of_type("aws:sfn/stateMachine:StateMachine")
    (role,) = [r for r in mocks.of_type("aws:iam/role:Role") if r.inputs["name"] == f"stagewise-{env}-state-machine"]
    assert sm.inputs["roleArn"] == f"arn:aws:iam::{settings.account_id}:role/{role.inputs['name']}"
    doc = _policies(mocks)[f"stagewise-{env}-pipeline-policy"]
    states = {st["Sid"]: st for st in doc["Statement"] if any(a.startswith("states:") for a in st["Action"])}
    # the ARN the policy names (built from names) is the deployed state machine's
    own = outputs["state_machine_arn"]
    assert own == f"arn:aws:states:{settings.region}:{settings.account_id}:stateMachine:stagewise-{env}-pipeline"
    executions = own.replace(":stateMachine:", ":execution:")
    assert {sid: (st["Action"], st["Resource"]) for sid, st in states.items()} == {
        "StartMapRunChildren": (["states:StartExecution"], [own]),
        "ManageMapRunChildren": (["states:DescribeExecution", "states:RedriveExecution", "states:StopExecution"],
                                 [f"{executions}/ValidatePartitions:*", f"{executions}/Score:*"]),
        "DescribeOwnExecutions": (["states:DescribeExecution"], [f"{executions}:*"]),
    }
    definition = json.loads(sm.inputs["definition"])["States"]
    # the labels the child execution ARNs carry: validation's Map and scoring's
    assert (definition["ValidatePartitions"]["Label"], definition["Score"]["Label"]) == ("ValidatePartitions", "Score")


def test_outputs_hold_no_secret(stack):
    _, _, _, outputs = stack
    text = json.dumps(outputs, default=str)
    assert "mock-token" not in text and "password" not in text.lower()
    assert outputs["state_machine_arn"].endswith(f"stagewise-{stack[0]}-pipeline")


def test_id_salt_is_a_secure_string_and_no_output(stack):
    env, _, mocks, outputs = stack
    (salt,) = [r for r in mocks.of_type("aws:ssm/parameter:Parameter") if r.inputs["name"] == f"/stagewise/{env}/id-salt"]
    from pulumi.runtime.rpc import _special_secret_sig, _special_sig_key

    envelope = salt.inputs["value"]  # a Pulumi secret: encrypted in the stack's state
    assert salt.inputs["type"] == "SecureString" and envelope[_special_sig_key] == _special_secret_sig
    assert len(envelope["value"]) == 64 and envelope["value"] not in json.dumps(outputs, default=str)
    others = [r for r in mocks.of_type("aws:ssm/parameter:Parameter") if r is not salt]
    assert others and all(r.inputs["type"] == "String" for r in others)  # names and ARNs only


def test_iam_policies_pass_parliament(stack):
    """Every identity policy the stack writes passes parliament with no finding above LOW."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import parliament
        from parliament import analyze_policy_string

    def severity(issue: str) -> str:  # findings carry the issue; its severity is in parliament's config
        return parliament.config.get(issue, {}).get("severity", "HIGH")

    def false_positive(finding) -> bool:
        # states:DescribeExecution takes an execution or an express-execution ARN; parliament 1.6.4
        # demands both (it reads every resource type marked required as required together); so does
        # states:ListExecutions, which takes a state machine or a Map Run ARN
        express = {"action": "states:DescribeExecution", "required_format": "arn:*:states:*:*:express:*:*:*"}
        map_run = {"action": "states:ListExecutions", "required_format": "arn:*:states:*:*:mapRun:*/*:*"}
        return finding.issue == "RESOURCE_MISMATCH" and all(d in (express, map_run) for d in finding.detail)

    env, _, mocks, _ = stack
    docs = _policies(mocks)
    assert len(docs) >= 8
    for name, doc in docs.items():
        findings = [f for f in analyze_policy_string(json.dumps(doc)).findings if not false_positive(f)]
        above_low = [(f.issue, severity(f.issue), f.detail) for f in findings if severity(f.issue) not in ("LOW", "INFO", "MUTE")]
        assert not above_low, (name, above_low)
        # the LOW ones are the documented Resource "*" statements of actions without resource-level permissions
        assert {f.issue for f in findings} <= {"RESOURCE_STAR"}, (name, [(f.issue, f.detail) for f in findings])


def test_results_catalog_projects_partitions_over_the_runtime_layout(stack):
    """Glue tables over results/<model>/run_date=.../model_version=.../ with partition projection,
    the columns the runtime writes, and each repo view as an Athena named query."""
    from stagewise.pipeline import catalog
    from stagewise.pipeline.spec import load_spec

    env, settings, mocks, outputs = stack
    (db,) = mocks.of_type("aws:glue/catalogDatabase:CatalogDatabase")
    tables = {t.inputs["name"]: t for t in mocks.of_type("aws:glue/catalogTable:CatalogTable")}
    assert set(tables) == {"engagement_results", "churn_results"}  # one per built-in model
    table = tables["engagement_results"]
    bucket = f"stagewise-{env}-data-{settings.account_id}"
    assert outputs["glue_database"] == db.inputs["name"] == f"stagewise_{env}" and table.inputs["name"] == "engagement_results"
    p = table.inputs["parameters"]
    assert p["projection.enabled"] == "true" and p["projection.run_date.format"] == "yyyy-MM-dd"
    # the template is the key the runtime publishes to
    key = catalog.results_key("engagement", "20261122T041500Z-1a2b3c", 3, "part-00000.parquet")
    assert p["storage.location.template"].replace("${run_date}", "2026-11-22").replace("${model_version}", "3") \
        == f"s3://{bucket}/{key.rsplit('/', 1)[0]}/"
    columns = [c["name"] for c in table.inputs["storageDescriptor"]["columns"]]
    spec = load_spec("engagement")
    assert columns == ["customer_id_hash", "run_id", "prediction", "in_training", *spec.feature_names, "engagement_score"]
    assert not {"customer_id", "name", "email"} & set(columns)
    churn = [c["name"] for c in tables["churn_results"].inputs["storageDescriptor"]["columns"]]
    assert churn[:5] == ["customer_id_hash", "run_id", "prediction", "in_training", "decision"]  # a classifier's decision
    queries = {q.inputs["name"]: q.inputs["query"] for q in mocks.of_type("aws:athena/namedQuery:NamedQuery")}
    # each built-in spec's views
    assert set(queries) == {f"stagewise create view {v}" for v in ("at_risk", "high_value", "model_performance", "churn_performance")}
    (wg,) = mocks.of_type("aws:athena/workgroup:Workgroup")
    assert wg.inputs["configuration"]["resultConfiguration"]["outputLocation"] == f"s3://{bucket}/athena-results/"


ACCOUNTS = {"dev": "314159265358", "test": "271828182845", "prod": "161803398874"}


def test_cross_account_observability_a_sink_in_the_monitoring_account_and_a_link_from_each_environment():
    """``stagewise:observability``: the stack that creates the sink does it in the monitoring account
    (its own provider, that account's deployer role), lets the three accounts link metrics and logs,
    and puts the fleet dashboard there with one line per account; each environment links to the sink."""
    owner = {"monitoringAccountId": "999988887777", "createSink": True, "accounts": ACCOUNTS}
    mocks, outputs = run_stack("prod", config={"stagewise:observability": owner})
    (sink,) = mocks.of_type("aws:oam/sink:Sink")
    monitoring = next(p for p in mocks.of_type("pulumi:providers:aws") if "monitoring-account" in p.name)
    assert json.loads(monitoring.inputs["allowedAccountIds"]) == ["999988887777"]
    assert json.loads(monitoring.inputs["assumeRoles"])[0]["role_arn"] == "arn:aws:iam::999988887777:role/stagewise-deployer"
    assert sink.provider and "monitoring-account" in sink.provider and outputs["oam_sink_arn"]
    (policy,) = mocks.of_type("aws:oam/sinkPolicy:SinkPolicy")
    statement = json.loads(policy.inputs["policy"])["Statement"][0]
    assert statement["Principal"]["AWS"] == sorted(ACCOUNTS.values()) and statement["Action"] == ["oam:CreateLink", "oam:UpdateLink"]
    dashboards = {d.inputs["dashboardName"]: json.loads(d.inputs["dashboardBody"]) for d in mocks.of_type("aws:cloudwatch/dashboard:Dashboard")}
    fleet = dashboards["stagewise-fleet"]
    runs = next(w for w in fleet["widgets"] if w["properties"].get("title") == "engagement: Runs succeeded")
    assert [(line[3], line[-1]["accountId"]) for line in runs["properties"]["metrics"]] == list(ACCOUNTS.items())
    assert not mocks.of_type("aws:oam/link:Link")  # the sink's ARN is not known before it exists: link in a second deploy

    linked = {**owner, "createSink": False, "sinkArn": "arn:aws:oam:eu-west-1:999988887777:sink/0123-abcd"}
    for env in ("dev", "prod"):
        mocks, outputs = run_stack(env, config={"stagewise:observability": linked})
        (link,) = mocks.of_type("aws:oam/link:Link")
        assert link.inputs["sinkIdentifier"] == linked["sinkArn"] and "oam_sink_arn" not in outputs
        assert link.inputs["resourceTypes"] == ["AWS::CloudWatch::Metric", "AWS::Logs::LogGroup"]
        assert not mocks.of_type("aws:oam/sink:Sink")
