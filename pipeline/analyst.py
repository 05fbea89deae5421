"""The engagement-analyst agent: a registered prompt and model that answers questions about scoring
runs with three tools, the same functions ``stagewise query`` and ``stagewise explain`` use.

Tools (``TOOL_SPECS``, JSON Schema inputs, as the Bedrock Converse API's ``toolConfig`` takes them):

    query_results(sql)                      one SELECT over the results catalog: Athena on AWS (``catalog.Athena``),
                                            else the DuckDB sandbox (``catalog.query``, ``sql_sandbox``)
    feature_statistics(model, feature)      the champion's training statistics of one feature
    explain_prediction(model, customer_id)  version, prediction, top SHAP contributions (``explain``)

``converse`` runs the agent loop against Bedrock's Converse API (``bedrock-runtime``): it sends the
question with the agent version's system prompt, model id, temperature, max tokens and its
allowed tools; while the model stops with ``tool_use`` it runs each requested tool and returns a
``toolResult`` (JSON, or ``status: error`` with the reason); it ends on ``end_turn``. The embedded
AWS has no Bedrock runtime, so on a laptop the tools run directly (``stagewise query``,
``stagewise explain``); ``stagewise agent ask --aws`` talks to Bedrock in the stack's account.

The model's SQL is hostile input (the model reads data it did not write): it must be one read-only
SELECT (DuckDB's parser decides, ``sql_sandbox.check_select``) and runs where it can touch nothing
else. On AWS that is Athena in the stack's workgroup (its bytes-scanned cutoff bounds each query),
never a local DuckDB over downloaded data; without ``athena`` (tests, the embedded AWS) it is the
sandboxed DuckDB catalog (no file access; memory, thread, time and length limits).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from stagewise.pipeline import catalog
from stagewise.pipeline.spec import builtin_spec_names, load_spec
from stagewise.pipeline.version_files import load_baseline
from stagewise.platform.runtime.idhash import hash_ids
from stagewise.platform.runtime.objects import ChecksumMismatch, ObjectStore
from stagewise.registry.records import AgentConfig

MAX_TURNS = 8
MAX_ROWS = 50
TOOL_SPECS: dict[str, dict[str, Any]] = {
    "query_results": {
        "description": "Run one read-only SQL SELECT (or WITH ... SELECT) over the results catalog; nothing else runs. "
                       "Tables: <model>_results (e.g. engagement_results: customer_id_hash, run_id, prediction, the features, "
                       "the label; partitions run_date, model_version). Views: high_value, at_risk, model_performance. "
                       "Returns at most 50 rows.",
        "inputSchema": {"json": {"type": "object", "properties": {"sql": {"type": "string", "description": "a SELECT statement"}},
                                 "required": ["sql"]}},
    },
    "feature_statistics": {
        "description": "Training statistics of one feature for a model's champion version: count, null share, mean, std, "
                       "min, max and deciles (numeric) or category shares (categorical).",
        "inputSchema": {"json": {"type": "object", "properties": {"model": {"type": "string"}, "feature": {"type": "string"}},
                                 "required": ["model", "feature"]}},
    },
    "explain_prediction": {
        "description": "Why a customer got their prediction in the newest run: the version, the prediction and the ten "
                       "largest SHAP contributions with where the customer's values sit in the training data.",
        "inputSchema": {"json": {"type": "object", "properties": {"model": {"type": "string"}, "customer_id": {"type": "string"}},
                                 "required": ["model", "customer_id"]}},
    },
}


class AgentError(RuntimeError):
    """The agent could not answer (no final answer within ``MAX_TURNS``, or the model asked for a
    tool it is not allowed)."""


def tool_config(allowed: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """Converse ``toolConfig`` with the agent version's allowed tools (unknown names are refused).

    Raises:
        AgentError: a tool name is not one of ``TOOL_SPECS``.
    """
    unknown = sorted(set(allowed) - set(TOOL_SPECS))
    if unknown:
        raise AgentError(f"unknown tool(s) {unknown}; the analyst's tools are {sorted(TOOL_SPECS)}")
    return {"tools": [{"toolSpec": {"name": name, **TOOL_SPECS[name]}} for name in allowed]}


@dataclass
class AnalystTools:
    """The tools over one environment.

    Attributes:
        objects, bucket: S3 access and the data bucket.
        version_of: ``version_of(model, number) -> VersionRecord`` (the registry).
        champion_of: ``champion_of(model) -> VersionRecord | None``.
        salt: the id hash's salt.
        cache: local folder for results and inputs.
        spec_of: version record -> the spec it was trained with (default: the built-in spec of
            its model's name; the CLI passes ``spec_store.version_spec``).
        specs: model name -> spec, for the catalog's views (default: the built-in specs).
        athena: on AWS, the stack's Athena workgroup and database (``catalog.Athena``): the SQL
            runs there. Without it, in the sandboxed DuckDB catalog over the synced results.
    """

    objects: ObjectStore
    bucket: str
    version_of: Callable[[str, int], Any]
    champion_of: Callable[[str], Any]
    salt: bytes
    cache: Path
    spec_of: Callable[[Any], Any] = lambda version: load_spec(version.model)
    specs: Callable[[], dict[str, Any]] = lambda: {name: load_spec(name) for name in builtin_spec_names()}
    athena: catalog.Athena | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)
    _db: Any = field(default=None, repr=False)

    def query_results(self, sql: str) -> dict[str, Any]:
        """One SELECT, at most ``MAX_ROWS`` rows (``catalog.QueryError`` with the reason if refused)."""
        if self.athena is not None:
            columns, rows = self.athena.query(sql, MAX_ROWS)
            return {"columns": columns, "rows": [dict(zip(columns, r)) for r in rows]}
        if self._db is None:  # one sync and one DuckDB catalog per conversation, not per query
            self._db = self._catalog()
        columns, rows = catalog.query(self._db, sql, MAX_ROWS)
        return {"columns": columns, "rows": [dict(zip(columns, r)) for r in rows]}

    def _catalog(self) -> catalog.Catalog:
        """The sandboxed DuckDB catalog over the synced results."""
        return catalog.connect(catalog.sync(self.objects, self.bucket, self.cache), catalog.views(self.specs()))

    def feature_statistics(self, model: str, feature: str) -> dict[str, Any]:
        champion = self.champion_of(model)
        if champion is None or not champion.baseline_uri:
            raise LookupError(f"model {model!r} has no champion with training statistics")
        stats = load_baseline(self.objects, champion)["features"].get(feature)
        if stats is None:
            raise LookupError(f"model {model!r} has no feature {feature!r}")
        return {"model": model, "version": champion.version, "feature": feature,
                **{k: v for k, v in stats.items() if k != "sample"}}

    def explain_prediction(self, model: str, customer_id: str) -> dict[str, Any]:
        from stagewise.pipeline import explain  # deferred: XGBoost and pandas (~1.4 s)

        result = explain.explain(self.objects, self.bucket, model, self.spec_of, lambda n: self.version_of(model, n), self.salt,
                                 customer_id, self.cache).to_dict()
        column = result["id_column"]
        for key in ("id", column):  # the model gets the id's keyed hash, as the results catalog holds it, never the id
            result.pop(key, None)
        return {**result, f"{column}_hash": str(hash_ids([customer_id], self.salt)[0]), "contributions": result["contributions"][:10]}

    def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """Run tool ``name``; a failure becomes ``{"error": "..."}`` for the model to read, except a
        registered file whose bytes changed (``ChecksumMismatch``): that stops the conversation.

        Raises:
            ChecksumMismatch: an artifact, baseline or spec the tool loaded was changed.
        """
        call: dict[str, Any] = {"tool": name, "input": arguments}
        self.calls.append(call)
        if name not in TOOL_SPECS:
            call["error"] = "UnknownTool"
            return {"error": f"no tool {name!r}"}
        try:
            return json.loads(json.dumps(getattr(self, name)(**arguments), default=str))  # JSON-safe for toolResult
        except ChecksumMismatch:
            raise
        except Exception as e:  # noqa: BLE001 - the model is told what went wrong and may try again
            call["error"] = type(e).__name__  # the class only: the message may quote data
            return {"error": f"{type(e).__name__}: {e}"}


@dataclass(frozen=True)
class Answer:
    """The agent's final text, the tools it called (in order: ``tool``, ``input``, and ``error``,
    the exception class, when it failed), the token usage summed over turns (``inputTokens``,
    ``outputTokens``) and the last response's ``stopReason``."""

    text: str
    tool_calls: list[dict[str, Any]]
    turns: int
    usage: dict[str, int]
    stop_reason: str = "end_turn"


def converse_text(bedrock: Any, model_id: str, system: str, text: str, temperature: float = 0.0, max_tokens: int = 256) -> str:
    """One Converse request without tools (e.g. an LLM judge's); the reply's text.

    Raises:
        botocore.exceptions.ClientError: Bedrock refused the request.
    """
    response = bedrock.converse(modelId=model_id, system=[{"text": system}], messages=[{"role": "user", "content": [{"text": text}]}],
                                inferenceConfig={"temperature": temperature, "maxTokens": max_tokens})
    return "".join(b.get("text", "") for b in response["output"]["message"]["content"])


def converse(bedrock: Any, agent: AgentConfig, system_prompt: str, question: str, tools: AnalystTools,
             max_turns: int = MAX_TURNS) -> Answer:
    """Answer ``question`` with Bedrock's Converse API and the agent's tools.

    Args:
        bedrock: a boto3 ``bedrock-runtime`` client.
        agent: the agent version's configuration (model id, temperature, max tokens, tools).
        system_prompt: the version's prompt text (sha256-verified by the caller).

    Raises:
        AgentError: the model asked for a tool the version does not allow, or gave no final answer
            within ``max_turns`` requests.
        botocore.exceptions.ClientError: Bedrock refused a request (access, throttling, model id).
    """
    messages: list[dict[str, Any]] = [{"role": "user", "content": [{"text": question}]}]
    usage = {"inputTokens": 0, "outputTokens": 0}
    config = tool_config(agent.tools)
    for turn in range(1, max_turns + 1):
        request: dict[str, Any] = {
            "modelId": agent.model_id, "system": [{"text": system_prompt}], "messages": messages,
            "inferenceConfig": {"temperature": agent.temperature, "maxTokens": agent.max_tokens},
        }
        if config["tools"]:
            request["toolConfig"] = config
        response = bedrock.converse(**request)
        for k in usage:
            usage[k] += int(response.get("usage", {}).get(k, 0))
        message = response["output"]["message"]
        messages.append(message)
        if response["stopReason"] != "tool_use":
            text = "\n".join(block["text"] for block in message["content"] if "text" in block)
            return Answer(text, tools.calls, turn, usage, response["stopReason"])
        results = []
        for block in message["content"]:
            if "toolUse" not in block:
                continue
            use = block["toolUse"]
            if use["name"] not in agent.tools:
                raise AgentError(f"the model asked for tool {use['name']!r}, which this agent version may not use")
            out = tools.call(use["name"], use.get("input") or {})
            results.append({"toolResult": {"toolUseId": use["toolUseId"], "content": [{"json": out}],
                                           "status": "error" if "error" in out else "success"}})
        messages.append({"role": "user", "content": results})
    raise AgentError(f"no final answer after {max_turns} requests")
