"""The rollout as a user drives it from the CLI against the embedded AWS.

prod (plan 10 -> 50 -> 100, two scoring runs of bake per step): two `stagewise run`s make v1
champion and v2 challenger at 10% (the run that registers v2 is not evidence for it: held);
`stagewise score` runs on fresh data take v2 to 50% and then champion; a third version is rolled
back when scoring data with broken labels fails its gate. An agent's second prompt version is
promoted and rolled back on feedback.

The model is the engagement spec with online gates on at least 300 rows: at a 10% canary of
20,000 rows, the challenger's evidence is its routed rows outside its training split (~20% of
them by the hash split: ~400 rows per run).
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from conftest import REPO, engagement_spec
from stagewise.pipeline.cli import app
from stagewise.pipeline.generator import generate_customers, with_label_noise, write_dataset
from stagewise.platform.runtime.environment import connect

ROWS = 20_000
MIN_SAMPLES = 300
runner = CliRunner()


def cli(*args: str) -> tuple[int, dict]:
    result = runner.invoke(app, [*args, "--json"])
    assert result.stdout.strip().startswith("{"), result.output
    return result.exit_code, json.loads(result.stdout)


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = engagement_spec(tmp_path_factory.mktemp("prod-spec"), "engagement")
    path.write_text(path.read_text().replace("min_samples: 1000}", f"min_samples: {MIN_SAMPLES}}}"))
    return path


def pipeline(command: str, data, spec) -> dict:
    code, doc = cli(command, "--env", "prod", "--project-dir", str(REPO), "--data", str(data), "--model", str(spec))
    assert code == 0, doc.get("error")
    return {s["name"]: s["summary"] for s in doc["steps"]}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prod-data")
    paths = {}
    for seed in range(21, 29):
        df = generate_customers(ROWS, seed=seed)
        if seed == 28:
            df = with_label_noise(df, 0.5, seed)
        paths[seed] = folder / f"customers-{seed}.parquet"
        write_dataset(df, paths[seed])
    return paths


def serving(steps: dict) -> dict:
    return steps["rollout"]["serving"]


def test_prod_rollout_walks_the_plan_then_rolls_back_a_bad_challenger(embedded, datasets, spec):
    first = pipeline("run", datasets[21], spec)
    assert first["register"]["stage"] == "champion" and first["register"]["version"] == 1

    second = pipeline("run", datasets[22], spec)
    assert second["register"]["stage"] == "challenger"
    assert (serving(second)["champion"], serving(second)["challenger"], serving(second)["weight"]) == (1, 2, 10)
    assert second["rollout"]["outcome"] == "held" and "not new evidence" in second["rollout"]["reason"]
    rows = second["score"]["versions"]
    assert abs(rows["2"]["rows"] / ROWS - 0.10) < 0.01  # the sticky hash sends ~10% to the challenger

    walk = [pipeline("score", datasets[seed], spec)["rollout"] for seed in (23, 24, 25, 26)]
    assert [w["outcome"] for w in walk] == ["held", "advanced", "held", "completed"]
    assert "baking: 1/2" in walk[0]["reason"] and walk[1]["serving"]["weight"] == 50
    assert walk[3]["serving"] == {**walk[3]["serving"], "champion": 2, "challenger": None}

    third = pipeline("run", datasets[27], spec)
    assert third["register"]["stage"] == "challenger" and serving(third)["challenger"] == 3

    conn = connect("prod", project_dir=REPO)
    sqs, sns = conn.clients.client("sqs"), conn.clients.client("sns")
    queue = sqs.create_queue(QueueName="prod-alerts")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=conn.resources.alert_topic_arn, Protocol="sqs", Endpoint=arn)

    broken = pipeline("score", datasets[28], spec)["rollout"]
    assert broken["outcome"] == "rolled_back" and "r2=" in broken["reason"]
    assert broken["serving"]["champion"] == 2 and broken["serving"]["challenger"] is None
    alerts = [json.loads(m["Body"]) for m in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])]
    alert = next(a for a in alerts if "rolled back" in a["Subject"])
    assert "v3" in alert["Subject"] and "Environment: prod" in alert["Message"] and "r2" in alert["Message"]

    code, listing = cli("registry", "show", "engagement", "--env", "prod")
    assert code == 0
    assert {v["version"]: listing["stages"][str(v["version"])] for v in listing["versions"]} == {
        1: "retired", 2: "champion", 3: "rolled_back"}

    code, hist = cli("registry", "history", "engagement", "--env", "prod")
    actions = [(e["action"], e["version"]) for e in hist["events"]]
    assert actions == [
        ("model.create", None), ("version.register", 1), ("version.register", 2), ("rollout.hold", 2),
        ("rollout.hold", 2), ("rollout.advance", 2), ("rollout.hold", 2), ("rollout.complete", 2),
        ("version.register", 3), ("rollout.hold", 3), ("rollout.rollback", 3),
    ]
    for e in hist["events"]:
        if e["action"].startswith("rollout."):
            gates = {g["metric"]: g for g in e["evidence"]["gates"]}
            assert set(gates) == {"r2", "r2_delta_vs_champion"}
            registering = "not new evidence" in e["reason"]  # the runs that registered v2 and v3
            assert gates["r2"]["samples"] == 0 if registering else gates["r2"]["samples"] >= MIN_SAMPLES
    rollback = hist["events"][-1]
    assert rollback["evidence"]["gates"][0]["outcome"] == "fail"
    assert rollback["before"]["serving"]["weight"] == 10 and rollback["after"]["serving"]["challenger"] is None

    # what was serving when v2 was at 50%
    at = next(e["at"] for e in hist["events"] if e["action"] == "rollout.advance")
    code, state = cli("registry", "serving", "engagement", "--env", "prod", "--at", at)
    assert (state["champion"], state["challenger"], state["weight"]) == (1, 2, 50)

    # an illegal transition from the CLI: advancing after the rollback
    code, err = cli("registry", "advance", "engagement", "--env", "prod")
    assert code == 7 and err["code_name"] == "InvalidTransition"


def test_agent_prompt_version_promoted_then_rolled_back_on_feedback(embedded, tmp_path):
    env = ["--env", "test"]
    for i, text in enumerate(("Answer briefly: {question}", "Answer citing feature statistics: {question}"), start=1):
        prompt = tmp_path / f"prompt-{i}.txt"
        prompt.write_text(text)
        code, reg = cli("agent", "register", "analyst", "--prompt", str(prompt), "--model-id",
                        "anthropic.claude-3-5-sonnet-20240620-v1:0", "--temperature", "0.2", "--max-tokens", "800",
                        "--tool", "query", "--tool", "explain", *env)
        assert code == 0 and reg["version"] == i
    assert reg["stage"] == "registered"  # v1 is champion; v2 waits for a promote

    code, again = cli("agent", "register", "analyst", "--prompt", str(prompt), "--model-id",
                      "anthropic.claude-3-5-sonnet-20240620-v1:0", "--temperature", "0.2", "--max-tokens", "800",
                      "--tool", "query", "--tool", "explain", *env)
    assert code == 0 and again["version"] == 2 and again["created"] is False

    code, promoted = cli("registry", "promote", "analyst", "2", "--plan", "10,50,100", "--reason", "citing prompt", *env)
    assert code == 0 and promoted["serving"]["challenger"] == 2 and promoted["serving"]["weight"] == 10

    outcomes = []
    for i in range(20):
        code, fb = cli("registry", "feedback", "analyst", "2", "--approved" if i < 6 else "--rejected", "--score",
                       "0.9" if i < 6 else "0.2", *env)
        assert code == 0
        outcomes.append(fb["outcome"])
    assert outcomes[:19] == ["held"] * 19 and outcomes[19] == "rolled_back"
    assert fb["approval_rate"] == pytest.approx(0.3) and fb["serving"] == {**fb["serving"], "champion": 1, "challenger": None}

    code, shown = cli("registry", "show", "analyst", "2", *env)
    assert shown["agent"]["model_id"].startswith("anthropic.") and shown["agent"]["tools"] == ["query", "explain"]
    code, hist = cli("registry", "history", "analyst", *env)
    assert hist["events"][-1]["action"] == "rollout.rollback"
    assert hist["events"][-1]["evidence"]["gates"][0] == {**hist["events"][-1]["evidence"]["gates"][0],
                                                         "metric": "approval_rate", "outcome": "fail"}
