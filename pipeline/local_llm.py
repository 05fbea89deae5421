"""Agents on a laptop: the analyst loop over an OpenAI-compatible chat-completions endpoint.

A model id ``ollama/<model>`` or ``openai-compatible/<model>`` (e.g. ``ollama/llama3.1``) is served
by the endpoint at ``$STAGEWISE_LLM_BASE_URL`` (default ``http://127.0.0.1:11434/v1``, Ollama's;
llama.cpp's server and vLLM speak the same API) through the ``openai`` client library, with no AWS
account. Any other model id is a Bedrock model (``analyst.converse``). The loop is the Converse
loop's: the version's prompt as the system message, its allowed tools as functions (their JSON
Schemas from ``analyst.TOOL_SPECS``), each ``tool_calls`` turn answered with the tools' JSON
results (or the error for the model to read), the final message the answer; usage and the finish
reason (``stop`` -> ``end_turn``, ``length`` -> ``max_tokens``) as Converse reports them.
"""

from __future__ import annotations

import json
import os
from typing import Any

from stagewise.pipeline.analyst import MAX_TURNS, TOOL_SPECS, AgentError, AnalystTools, Answer
from stagewise.platform.contract import Env
from stagewise.registry.records import AgentConfig

LOCAL_PREFIXES = ("ollama/", "openai-compatible/")
DEFAULT_BASE_URL = "http://127.0.0.1:11434/v1"
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "content_filtered"}


def is_local(model_id: str) -> bool:
    """The model id names a model of an OpenAI-compatible endpoint (not Bedrock)."""
    return model_id.startswith(LOCAL_PREFIXES)


def model_name(model_id: str) -> str:
    """The endpoint's model name: the id without its prefix (``ollama/llama3.1`` -> ``llama3.1``)."""
    for prefix in LOCAL_PREFIXES:
        if model_id.startswith(prefix):
            return model_id[len(prefix):]
    raise ValueError(f"{model_id!r} is not a local model id (prefixes {', '.join(LOCAL_PREFIXES)})")


def client() -> Any:
    """An ``openai.OpenAI`` client for ``$STAGEWISE_LLM_BASE_URL`` (2 retries, 120 s timeout)."""
    import openai  # deferred: only agents on a local model server need it (the ``local`` extra)

    return openai.OpenAI(base_url=os.environ.get(Env.LLM_BASE_URL, DEFAULT_BASE_URL),
                         api_key=os.environ.get(Env.LLM_API_KEY, "not-needed"), max_retries=2, timeout=120.0)


def functions(allowed: tuple[str, ...] | list[str]) -> list[dict[str, Any]]:
    """The chat-completions ``tools`` of the allowed analyst tools."""
    return [{"type": "function", "function": {"name": n, "description": TOOL_SPECS[n]["description"],
                                              "parameters": TOOL_SPECS[n]["inputSchema"]["json"]}} for n in allowed]


def chat(llm: Any, agent: AgentConfig, system_prompt: str, question: str, tools: AnalystTools,
         max_turns: int = MAX_TURNS) -> Answer:
    """Answer ``question`` over chat completions with the agent's tools (module docstring).

    Raises:
        AgentError: the model asked for a tool the version does not allow, or gave no final answer
            within ``max_turns`` requests.
        openai.APIError: the endpoint refused or could not be reached (after the client's retries).
    """
    messages: list[dict[str, Any]] = [{"role": "system", "content": system_prompt}, {"role": "user", "content": question}]
    usage = {"inputTokens": 0, "outputTokens": 0}
    specs = functions(agent.tools)
    for turn in range(1, max_turns + 1):
        request: dict[str, Any] = {"model": model_name(agent.model_id), "messages": messages,
                                   "temperature": agent.temperature, "max_tokens": agent.max_tokens}
        if specs:
            request["tools"] = specs
        response = llm.chat.completions.create(**request)
        if response.usage is not None:
            usage["inputTokens"] += int(response.usage.prompt_tokens or 0)
            usage["outputTokens"] += int(response.usage.completion_tokens or 0)
        choice = response.choices[0]
        message = choice.message
        if not message.tool_calls:
            return Answer(message.content or "", tools.calls, turn, usage, _STOP_REASONS.get(choice.finish_reason, choice.finish_reason))
        messages.append({"role": "assistant", "content": message.content,
                         "tool_calls": [{"id": c.id, "type": "function",
                                         "function": {"name": c.function.name, "arguments": c.function.arguments}}
                                        for c in message.tool_calls]})
        for call in message.tool_calls:
            if call.function.name not in agent.tools:
                raise AgentError(f"the model asked for tool {call.function.name!r}, which this agent version may not use")
            try:
                arguments = json.loads(call.function.arguments or "{}")
            except ValueError:
                out: dict[str, Any] = {"error": "the arguments are not JSON"}
            else:
                out = tools.call(call.function.name, arguments if isinstance(arguments, dict) else {})
            messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(out)})
    raise AgentError(f"no final answer after {max_turns} requests")


def complete(llm: Any, model_id: str, system: str, text: str, temperature: float, max_tokens: int) -> str:
    """One chat completion without tools (the LLM judge's call); the reply's text."""
    response = llm.chat.completions.create(model=model_name(model_id), temperature=temperature, max_tokens=max_tokens,
                                           messages=[{"role": "system", "content": system}, {"role": "user", "content": text}])
    return response.choices[0].message.content or ""
