"""The engagement-analyst agent (issue 9): registered in the registry with its prompt, model id and
tools; its tools are the functions behind `stagewise query` and `stagewise explain`; its loop speaks
Bedrock's Converse API.

The embedded AWS has no Bedrock runtime, so the model's side of the conversation is botocore's
Stubber on a real ``bedrock-runtime`` client: every request the loop sends is validated against the
Converse API's service model, and the stubbed replies are shaped as Bedrock's. The tools run for
real against the embedded AWS after a real run."""

from __future__ import annotations

import copy
import json

import boto3
import pytest
from botocore.stub import ANY, Stubber
from typer.testing import CliRunner

from conftest import REPO, run_engagement_copy
from stagewise.pipeline import analyst, spec_store
from stagewise.pipeline.cli import app
from stagewise.pipeline.spec import load_spec
from stagewise.platform.runtime.objects import ObjectStore
from stagewise.platform.runtime.idhash import hash_ids, read_id_salt
from stagewise.registry.records import AgentConfig
from stagewise.registry.dynamodb import registry_of

MODEL = "engagement-analyst-data"
AGENT = "engagement-analyst"
PROMPT = REPO / "pipeline" / "specs" / "engagement-analyst.md"
MODEL_ID = "anthropic.claude-3-5-sonnet-20240620-v1:0"
runner = CliRunner()


@pytest.fixture(scope="module")
def world(dev, tmp_path_factory):
    folder = tmp_path_factory.mktemp("analyst")
    spec_path, df, _ = run_engagement_copy(folder, MODEL, 81, "--json")
    registry = registry_of(dev)
    objects = ObjectStore(dev.clients.client("s3"))
    tools = analyst.AnalystTools(  # as `stagewise agent ask` wires them: each version's own spec, from the registry
        objects, dev.resources.data_bucket.name, registry.get_version, registry.champion,
        read_id_salt(dev.clients, dev.resources).key, folder / "cache",
        spec_of=lambda v: spec_store.version_spec(objects, v), specs=lambda: spec_store.catalog_specs(registry, objects))
    assert spec_store.version_spec(objects, registry.get_version(MODEL, 1)) == load_spec(spec_path)
    return {"frame": df, "registry": registry, "tools": tools}


class Recording:
    """A bedrock-runtime client whose requests are kept (deep copies) before the Stubber checks them."""

    def __init__(self, client):
        self.client, self.sent = client, []

    def converse(self, **kwargs):
        self.sent.append(copy.deepcopy(kwargs))
        return self.client.converse(**kwargs)


def _bedrock():
    client = boto3.client("bedrock-runtime", region_name="eu-west-1")
    return client, Stubber(client)


def _reply(content: list, stop: str) -> dict:
    return {"output": {"message": {"role": "assistant", "content": content}}, "stopReason": stop,
            "usage": {"inputTokens": 100, "outputTokens": 20, "totalTokens": 120}, "metrics": {"latencyMs": 10}}


def test_the_agent_is_registered_with_its_prompt_model_and_tools(dev):
    result = runner.invoke(app, ["agent", "register", AGENT, "--prompt", str(PROMPT), "--model-id", MODEL_ID,
                                 "--tool", "query_results", "--tool", "feature_statistics", "--tool", "explain_prediction",
                                 "--json"])
    assert result.exit_code == 0, result.output
    champion = registry_of(dev).champion(AGENT)
    assert champion.agent.model_id == MODEL_ID
    assert champion.agent.tools == ("query_results", "feature_statistics", "explain_prediction")
    ask = runner.invoke(app, ["agent", "ask", AGENT, "Who is at risk?", "--project-dir", str(REPO), "--json"])
    assert ask.exit_code == 5 and "no Bedrock runtime" in json.loads(ask.stdout)["error"]  # locally: the tools, not the model


def test_a_tool_use_turn_runs_the_tool_and_returns_its_result(world):
    customer = world["frame"]["customer_id"].iloc[4]
    expected = world["tools"].explain_prediction(MODEL, customer)  # what the tool answers, computed directly
    agent = AgentConfig(prompt_uri="s3://b/k", prompt_sha256="0" * 64, model_id=MODEL_ID, temperature=0.0, max_tokens=512,
                        tools=("query_results", "explain_prediction"))
    client, stub = _bedrock()
    stub.add_response("converse", _reply([{"text": "Let me look that up."}, {"toolUse": {
        "toolUseId": "tool-1", "name": "explain_prediction", "input": {"model": MODEL, "customer_id": customer}}}], "tool_use"),
        {"modelId": MODEL_ID, "system": [{"text": PROMPT.read_text()}], "messages": ANY,
         "inferenceConfig": {"temperature": 0.0, "maxTokens": 512}, "toolConfig": analyst.tool_config(agent.tools)})
    stub.add_response("converse", _reply([{"text": f"v{expected['version']} predicted {expected['prediction']:.2f}."}], "end_turn"),
                      {"modelId": MODEL_ID, "system": ANY, "messages": ANY, "inferenceConfig": ANY, "toolConfig": ANY})
    bedrock = Recording(client)
    world["tools"].calls.clear()
    with stub:
        answer = analyst.converse(bedrock, agent, PROMPT.read_text(), f"Why did {customer} get their score?", world["tools"])
        stub.assert_no_pending_responses()
    assert answer.text == f"v{expected['version']} predicted {expected['prediction']:.2f}." and answer.turns == 2
    assert answer.tool_calls == [{"tool": "explain_prediction", "input": {"model": MODEL, "customer_id": customer}}]
    assert answer.usage == {"inputTokens": 200, "outputTokens": 40}
    first, second = bedrock.sent
    assert [t["toolSpec"]["name"] for t in first["toolConfig"]["tools"]] == ["query_results", "explain_prediction"]
    assert first["messages"] == [{"role": "user", "content": [{"text": f"Why did {customer} get their score?"}]}]
    result = second["messages"][-1]["content"][0]["toolResult"]
    assert result["toolUseId"] == "tool-1" and result["status"] == "success" and result["content"] == [{"json": expected}]
    assert len(expected["contributions"]) == 10 and "customer_id" not in expected and "id" not in expected
    assert expected["customer_id_hash"] == hash_ids([customer], world["tools"].salt)[0]  # the model never gets the id


def test_tool_failures_reach_the_model_and_forbidden_tools_stop_the_loop(world):
    agent = AgentConfig(prompt_uri="s3://b/k", prompt_sha256="0" * 64, model_id=MODEL_ID, tools=("query_results",))
    client, stub = _bedrock()
    stub.add_response("converse", _reply([{"toolUse": {"toolUseId": "q", "name": "query_results",
                                                       "input": {"sql": "SELECT * FROM nowhere"}}}], "tool_use"))
    stub.add_response("converse", _reply([{"text": "That table does not exist."}], "end_turn"))
    bedrock = Recording(client)
    with stub:
        answer = analyst.converse(bedrock, agent, "prompt", "q?", world["tools"])
    sent = bedrock.sent[1]["messages"][-1]["content"][0]["toolResult"]
    assert sent["status"] == "error" and "nowhere" in sent["content"][0]["json"]["error"]
    assert answer.text == "That table does not exist."

    client, stub = _bedrock()
    stub.add_response("converse", _reply([{"toolUse": {"toolUseId": "x", "name": "explain_prediction",
                                                       "input": {"model": MODEL, "customer_id": "c"}}}], "tool_use"))
    with stub, pytest.raises(analyst.AgentError, match="may not use"):
        analyst.converse(Recording(client), agent, "prompt", "q?", world["tools"])


def test_query_and_feature_statistics_tools(world):
    table = MODEL.replace("-", "_") + "_results"
    out = world["tools"].query_results(f"SELECT count(*) AS n FROM {table}")
    assert out == {"columns": ["n"], "rows": [{"n": 3_000}]}
    stats = world["tools"].feature_statistics(MODEL, "sessions_per_week")
    assert stats["version"] == 1 and "sample" not in stats and stats["min"] <= stats["mean"] <= stats["max"]
    assert world["tools"].call("feature_statistics", {"model": MODEL, "feature": "shoe_size"})["error"].startswith("LookupError")
