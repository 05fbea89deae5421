"""Offline evaluation of an agent version (``stagewise.pipeline.agent_evaluation``) as a gate.

The agent and the judge are scripted with botocore's Stubber on a real ``bedrock-runtime`` client
(requests validated against the Converse API's model); reference numbers come from SQL over the
sandboxed results catalog of a real run in a private embedded AWS.

- The shipped evaluation set has 40 cases, and every reference query runs on the catalog of a run.
- A version that answers right passes; one that answers wrong fails its gates, the failed cases are
  named, the evaluation is in S3 and the version's audit trail, and ``registry promote`` refuses to
  start its rollout (exit 3) while the passing one's starts.
- The judge must be another model than the agent's, runs at temperature 0, and a verdict it cannot
  give fails the case.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber
from typer.testing import CliRunner

from conftest import REPO, _free_port, private_embedded_aws
from stagewise.pipeline import agent_evaluation as ev
from stagewise.pipeline import analyst, catalog
from stagewise.pipeline.cli import app
from stagewise.pipeline.generator import generate_customers, write_dataset
from stagewise.pipeline.spec import load_spec
from stagewise.platform.runtime.embedded import EmbeddedAWS
from stagewise.platform.runtime.objects import ObjectStore
from stagewise.registry.dynamodb import registry_of
from stagewise.registry.records import AGENT_EVALUATION, AgentConfig

EVAL_SET = REPO / "pipeline" / "specs" / "engagement-analyst-eval.jsonl"
AGENT_MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
JUDGE_MODEL = "amazon.nova-pro-v1:0"
runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Any:
    """A private embedded AWS with one engagement run published, its catalog, and an agent with
    two versions: v1 (champion) and v2."""
    home, port = tmp_path_factory.mktemp("eval-home"), _free_port()
    server = EmbeddedAWS(home)
    data = tmp_path_factory.mktemp("eval-data") / "customers.parquet"
    write_dataset(generate_customers(3_000, seed=91), data)
    with private_embedded_aws(home, port, server) as conn:
        result = runner.invoke(app, ["run", "--project-dir", str(REPO), "--data", str(data), "--json"])
        assert result.exit_code == 0, result.output
        objects = ObjectStore(conn.clients.client("s3"))
        db = catalog.connect(catalog.sync(objects, conn.resources.data_bucket.name, home / "cache"),
                             catalog.views([load_spec("engagement")]))
        for version in (1, 2):
            _register(conn, "analyst", f"You are the analyst, v{version}.")
        yield conn, objects, db, home, port
    server.down()


def _register(conn: Any, name: str, prompt: str) -> int:
    bucket, sha = conn.resources.artifact_bucket.name, hashlib.sha256(prompt.encode()).hexdigest()
    key = f"agents/{name}/{sha}/prompt.md"
    conn.clients.client("s3").put_object(Bucket=bucket, Key=key, Body=prompt.encode(), Metadata={"sha256": sha})
    config = AgentConfig(prompt_uri=f"s3://{bucket}/{key}", prompt_sha256=sha, model_id=AGENT_MODEL, tools=("query_results",))
    return registry_of(conn).register_version(
        name, artifact_uri=config.prompt_uri, artifact_sha256=sha, metrics={}, gates=[], lineage={"source": "test"},
        actor="test", token=f"r-{sha}", kind="agent", agent=config).version.version


def reference_of(db: Any):
    def reference(sql: str) -> float | None:
        _, rows = catalog.query(db, sql, 1)
        return float(rows[0][0]) if rows and rows[0][0] is not None else None
    return reference


class Scripted:
    """The agent's model: calls query_results with the case's reference SQL (a real tool call over
    the catalog), then answers with the number it got (``right``) or that number doubled."""

    def __init__(self, db: Any, right: bool) -> None:
        self.client = boto3.client("bedrock-runtime", region_name="eu-west-1")
        self.stub, self.db, self.right = Stubber(self.client), db, right
        self.stub.activate()

    def answer(self, config: AgentConfig, prompt: str, case: ev.Case) -> analyst.Answer:
        sql = case.checks.number_sql or "SELECT count(*) FROM engagement_results"
        self.stub.add_response("converse", {
            "output": {"message": {"role": "assistant", "content": [
                {"toolUse": {"toolUseId": "t1", "name": "query_results", "input": {"sql": sql}}}]}},
            "stopReason": "tool_use", "usage": {"inputTokens": 200, "outputTokens": 40, "totalTokens": 240}, "metrics": {"latencyMs": 5},
        }, {"modelId": config.model_id, "system": [{"text": prompt}], "messages": ANY, "inferenceConfig": ANY, "toolConfig": ANY})
        value = reference_of(self.db)(sql) or 0.0
        said = value if self.right else value * 2 + 7
        self.stub.add_response("converse", {
            "output": {"message": {"role": "assistant", "content": [{"text": f"The answer is {said:.4f}."}]}},
            "stopReason": "end_turn", "usage": {"inputTokens": 300, "outputTokens": 20, "totalTokens": 320}, "metrics": {"latencyMs": 5},
        })
        tools = analyst.AnalystTools(objects=None, bucket="", version_of=None, champion_of=None, salt=b"", cache=None)  # type: ignore[arg-type]
        tools._db = self.db  # the tool's SQL runs on the same sandboxed catalog
        return analyst.converse(self.client, config, prompt, case.question, tools)


def test_the_shipped_set_has_40_cases_each_answerable_from_the_catalog(world):
    _, _, db, _, _ = world
    cases = ev.load_cases(EVAL_SET)
    assert len(cases) == 40 and len({c.id for c in cases}) == 40
    reference = reference_of(db)
    for case in cases:
        if case.checks.number_sql:
            assert reference(case.checks.number_sql) is not None, case.id


def _evaluate(world: Any, version: int, right: dict[int, bool], cases: list[ev.Case], judge: Any = None) -> ev.Evaluation:
    conn, objects, db, _, _ = world
    registry = registry_of(conn)
    by_question = {c.question: c for c in cases}
    models = {v: Scripted(db, ok) for v, ok in right.items()}

    def answer_with(number: int):
        record = registry.get_version("analyst", number)
        prompt = f"You are the analyst, v{number}."
        return lambda question: models[number].answer(record.agent, prompt, by_question[question])

    return ev.evaluate_version("analyst", version, registry.get_model("analyst").champion, EVAL_SET.name, cases, answer_with,
                               lambda n: AGENT_MODEL, reference_of(db), judge, ev.EvaluationGates(min_pass_rate=0.9))


def test_a_wrong_version_fails_its_gates_and_cannot_start_a_rollout_a_right_one_can(world, monkeypatch):
    conn, objects, db, home, port = world
    numeric = [c for c in ev.load_cases(EVAL_SET) if c.checks.number_sql and not c.checks.judge][:12]
    registry = registry_of(conn)

    wrong = _evaluate(world, 2, {2: False, 1: True}, numeric)
    assert not wrong.passed and wrong.failed_cases == [c.id for c in numeric]
    assert {g.metric: g.outcome for g in wrong.gates} == {"pass_rate": "fail", "pass_rate_vs_champion": "fail"}
    assert all("no number within 0.01" in r.failures[0] or "no number within 0.02" in r.failures[0] for r in wrong.results)
    assert all(r.cost_usd and r.cost_usd > 0 and r.tools == ["query_results"] for r in wrong.results)
    uri = ev.record_evaluation(registry, objects, conn.resources.artifact_bucket.name, wrong, actor="test")
    stored = json.loads(objects.get_bytes(*uri[len("s3://"):].split("/", 1)))
    assert stored["passed"] is False and stored["failed_cases"] == wrong.failed_cases and len(stored["cases"]) == 12
    [note] = [e for e in registry.history("analyst") if e.action == AGENT_EVALUATION and e.version == 2]
    assert note.evidence["uri"] == uri and note.evidence["summary"]["pass_rate"] == 0.0

    monkeypatch.setenv("STAGEWISE_HOME", str(home))
    monkeypatch.setenv("STAGEWISE_EMBEDDED_PORT", str(port))
    refused = runner.invoke(app, ["registry", "promote", "analyst", "2", "--plan", "10,100", "--json"])
    assert refused.exit_code == 3, refused.output
    assert "failed its offline evaluation (pass_rate, pass_rate_vs_champion)" in refused.output
    assert numeric[0].id in refused.output and registry.get_model("analyst").rollout is None

    right = _evaluate(world, 2, {2: True, 1: True}, numeric)
    assert right.passed and right.failed_cases == [] and right.champion == 1
    ev.record_evaluation(registry, objects, conn.resources.artifact_bucket.name, right, actor="test")
    started = runner.invoke(app, ["registry", "promote", "analyst", "2", "--plan", "10,100", "--json"])
    assert started.exit_code == 0, started.output
    assert registry.get_model("analyst").serving()["challenger"] == 2

    # the version's lineage view holds both evaluations, the failed one and the passed one, in order
    shown = runner.invoke(app, ["registry", "show", "analyst", "2", "--json"])
    assert shown.exit_code == 0, shown.output
    evaluations = json.loads(shown.stdout)["evaluations"]
    assert [(e["passed"], e["uri"] == uri) for e in evaluations] == [(False, True), (True, False)]
    assert evaluations[0]["failed_cases"] == wrong.failed_cases and evaluations[1]["summary"]["pass_rate"] == 1.0
    table = runner.invoke(app, ["registry", "show", "analyst", "2"])
    assert "FAILED: 0 of 12 cases" in table.output and "passed: 12 of 12 cases" in table.output


def test_the_judge_is_another_model_at_temperature_0_and_no_verdict_fails_the_case():
    client = boto3.client("bedrock-runtime", region_name="eu-west-1")
    with pytest.raises(ValueError, match="must differ from the agent's"):
        ev.converse_judge(client, AGENT_MODEL, AGENT_MODEL)
    stub = Stubber(client)
    stub.activate()
    judge = ev.converse_judge(client, JUDGE_MODEL, AGENT_MODEL)
    expected = {"modelId": JUDGE_MODEL, "system": ANY, "messages": ANY, "inferenceConfig": {"temperature": 0.0, "maxTokens": 256}}
    for text in ('{"pass": true, "reason": "names the at-risk segment"}', "I think it is fine."):
        stub.add_response("converse", {"output": {"message": {"role": "assistant", "content": [{"text": text}]}},
                                       "stopReason": "end_turn", "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2},
                                       "metrics": {"latencyMs": 1}}, expected)
    assert judge("Names the segment.", "Which segment?", "Premium in US.") == (True, "names the at-risk segment")
    passed, reason = judge("Names the segment.", "Which segment?", "Premium in US.")
    assert not passed and reason.startswith("the judge gave no verdict")
    stub.assert_no_pending_responses()


def test_a_malformed_evaluation_set_is_refused_naming_the_line(tmp_path: Path):
    bad = tmp_path / "eval.jsonl"
    bad.write_text('{"id": "a", "question": "q", "checks": {"tools": ["query_results"]}}\n{"id": "b", "question": "q"}\n')
    with pytest.raises(ValueError, match=r"eval.jsonl:2: not an evaluation case"):
        ev.load_cases(bad)
    bad.write_text('{"id": "a", "question": "q", "checks": {}}\n')
    with pytest.raises(ValueError, match="declares no check"):
        ev.load_cases(bad)
    assert ev.numbers_in("1,234.5 customers, 12% and -0.25") == [1234.5, 12.0, -0.25]


def test_the_cli_refuses_a_bad_set_and_says_bedrock_is_needed_on_the_embedded_aws(world, monkeypatch, tmp_path):
    _, _, _, home, port = world
    monkeypatch.setenv("STAGEWISE_HOME", str(home))
    monkeypatch.setenv("STAGEWISE_EMBEDDED_PORT", str(port))
    bad = tmp_path / "eval.jsonl"
    bad.write_text("not json\n")
    result = runner.invoke(app, ["agent", "evaluate", "analyst", "2", "--dataset", str(bad), "--json"])
    assert result.exit_code == 4 and "eval.jsonl:1: not an evaluation case" in result.output
    result = runner.invoke(app, ["agent", "evaluate", "analyst", "2", "--dataset", str(EVAL_SET), "--json"])
    assert result.exit_code == 5 and "no Bedrock runtime" in result.output


# ------------------------------------------------------------------ a laptop backend, end to end
class ChatServer:
    """A scripted model behind a real HTTP server speaking OpenAI's chat-completions API. Every
    request is validated by the ``openai`` library's own request types (a pydantic TypeAdapter over
    ``CompletionCreateParamsNonStreaming``, messages and tools consumed so each one is checked).
    With tools it first calls ``query_results`` with the case's reference SQL, then answers with
    the number the tool returned; without tools (the judge) it answers a JSON verdict."""

    def __init__(self, sql_of: dict[str, str]) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from openai.types.chat import completion_create_params
        from pydantic import TypeAdapter

        adapter, server = TypeAdapter(completion_create_params.CompletionCreateParamsNonStreaming), self
        self.requests: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                assert self.path == "/v1/chat/completions", self.path
                checked = adapter.validate_python(body)
                list(checked["messages"]), list(checked.get("tools", []))  # each message and tool validated
                server.requests.append(body)
                reply = server.reply(body)
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.sql_of = sql_of
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"

    def reply(self, body: dict[str, Any]) -> dict[str, Any]:
        last = body["messages"][-1]
        message: dict[str, Any]
        if "tools" not in body:
            message, finish = {"role": "assistant", "content": '{"pass": true, "reason": "declines to share personal data"}'}, "stop"
        elif last["role"] == "user":
            question = last["content"]
            sql = self.sql_of.get(question, "SELECT count(*) FROM engagement_results")
            message = {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "query_results", "arguments": json.dumps({"sql": sql})}}]}
            finish = "tool_calls"
        else:
            result = json.loads(last["content"])
            value = next(iter(result["rows"][0].values())) if result.get("rows") else 0
            message, finish = {"role": "assistant", "content": f"The answer is {value}."}, "stop"
        return {"id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": 150, "completion_tokens": 25, "total_tokens": 175}}


def test_on_a_laptop_the_agent_asks_and_evaluates_against_a_local_openai_compatible_model(world, monkeypatch, tmp_path):
    conn, objects, db, home, port = world
    cases = [c for c in ev.load_cases(EVAL_SET) if c.checks.number_sql and not c.checks.judge][:6]
    cases.append(next(c for c in ev.load_cases(EVAL_SET) if c.id == "no-pii"))
    small = tmp_path / "eval.jsonl"
    small.write_text("".join(c.model_dump_json() + "\n" for c in cases))
    chat = ChatServer({c.question: c.checks.number_sql for c in cases if c.checks.number_sql})
    monkeypatch.setenv("STAGEWISE_HOME", str(home))
    monkeypatch.setenv("STAGEWISE_EMBEDDED_PORT", str(port))
    monkeypatch.setenv("STAGEWISE_LLM_BASE_URL", chat.url)
    prompt = tmp_path / "prompt.md"
    prompt.write_text("You are the engagement analyst. Use query_results.")
    registered = runner.invoke(app, ["agent", "register", "local-analyst", "--prompt", str(prompt), "--model-id", "ollama/llama3.1",
                                     "--tool", "query_results", "--json"])
    assert registered.exit_code == 0, registered.output

    asked = runner.invoke(app, ["agent", "ask", "local-analyst", cases[0].question, "--key", "user-7", "--json"])
    assert asked.exit_code == 0, asked.output
    doc = json.loads(asked.stdout)
    expected = reference_of(db)(cases[0].checks.number_sql)
    assert ev.numbers_in(doc["answer"])[0] == pytest.approx(expected)
    assert doc["tool_calls"][0]["tool"] == "query_results" and doc["call"]["cost_usd"] == 0.0  # a local model is free
    assert chat.requests[0]["model"] == "llama3.1" and chat.requests[0]["tools"][0]["function"]["name"] == "query_results"

    evaluated = runner.invoke(app, ["agent", "evaluate", "local-analyst", "1", "--dataset", str(small),
                                    "--judge-model-id", "openai-compatible/judge"])
    assert evaluated.exit_code == 0, evaluated.output
    for case in cases:
        assert f"v1 {case.id}: pass" in evaluated.output
    assert "pass_rate = 1 needs >= 0.9 (7 rows, min 1): pass" in evaluated.output
    assert "local-analyst v1: evaluation passed" in evaluated.output
    assert any("tools" not in r and r["temperature"] == 0.0 and r["model"] == "judge" for r in chat.requests)  # the judge
    chat.httpd.shutdown()
