"""Serving an agent through its rollout, measuring every call, and gating the rollout on the calls.

An agent version (prompt by sha256, model id, inference settings, tools) rolls out as a model
version does; this module makes the rollout decide what answers:

- **Routing** (``Agent.route``): the caller's key (a user or session id) goes to the challenger when
  its bucket is under the rollout's weight, with the registry's sticky routing
  (``stagewise.registry.routing``: sha256 of agent, rollout id and key), so a key keeps its version
  while the weight grows. No key: a random one per call, recorded as such. A paused rollout, or one
  in shadow mode, serves the champion; in shadow mode the challenger answers the same question too,
  measured and discarded.
- **Reads**: the registry record once per ``ttl_seconds`` per process (not per call); a version's
  prompt once per process, its sha256 checked against the registration (``load_prompt``).
- **Measurement** (``CallRecord``, one per call, shadow calls included): latency (ms), input and
  output tokens, cost in USD from ``agent_prices.json`` (a model id not listed costs ``None``,
  reported as unknown, never 0), tool calls and their error classes, stop reason, error class.
  ``CallRecorder.flush`` writes the records as JSON lines to
  ``s3://<data bucket>/agents/calls/agent=<name>/date=YYYY-MM-DD/<uuid>.jsonl`` (table
  ``agent_calls`` of ``stagewise query``) and publishes CloudWatch metrics with dimensions
  Environment, Agent, Version: ``AgentCalls``, ``AgentErrors``, ``AgentToolErrors`` (Count),
  ``AgentLatency`` (Milliseconds, one raw value per call, so dashboards and alarms take p50/p95/p99),
  ``AgentInputTokens``, ``AgentOutputTokens`` (Count), ``AgentCostUSD`` (None; known costs only).
  A record holds hashes of the key, question and answer, never their text, unless the caller
  asks for the text (``log_text``).
- **Online gates** (``evaluate_rollout``): the challenger's calls in the current step (live calls
  only, not shadow ones) give ``error_rate``, ``latency_p95_ms``, ``cost_per_call_usd`` and, against
  the champion's calls in the same step, ``error_rate_vs_champion``, ``latency_p95_ms_vs_champion``
  and ``cost_per_call_usd_vs_champion`` (challenger minus champion); the registry's rollout controller
  applies the agent's gates on them (plus the feedback gates), with min samples and bake, and a
  rollback publishes an alert.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources as package_files
from typing import Any, Callable, Literal

import numpy as np
from pydantic import Field

from stagewise.monitoring.alerts import Alert, publish_alert
from stagewise.monitoring import metrics as m
from stagewise.monitoring.metrics import Datum, publish
from stagewise.pipeline.analyst import Answer
from stagewise.pipeline.version_files import load_prompt
from stagewise.platform.runtime.objects import ObjectStore
from stagewise.platform.strict import StrictModel
from stagewise.registry import routing
from stagewise.registry.records import AgentConfig, ModelRecord, VersionRecord
from stagewise.registry.service import Decision, Registry

AUDIT_PREFIX = "agents/calls"
"""Where call records live in the data bucket: ``agents/calls/agent=<name>/date=YYYY-MM-DD/``."""
DEFAULT_TTL_SECONDS = 30.0
FLUSH_EVERY = 200
"""A recorder writes its buffered records once it holds this many (and on ``flush``/``close``)."""

Role = Literal["champion", "challenger", "shadow"]
Answerer = Callable[[AgentConfig, str, str], Answer]
"""``answer(config, system_prompt, question) -> Answer``: one conversation with the model (e.g.
``analyst.converse`` bound to a Bedrock client and the tools)."""


# ---------------------------------------------------------------------------------------- prices
@dataclass(frozen=True)
class PriceTable:
    """USD per 1,000 input and output tokens per model id (``pipeline/specs/agent_prices.json``,
    whose ``source`` and ``as_of`` say where the figures come from)."""

    usd_per_1k: dict[str, tuple[float, float]]
    free_prefixes: tuple[str, ...] = ()
    source: str = ""
    as_of: str = ""

    @classmethod
    def load(cls) -> "PriceTable":
        """The table shipped with the package."""
        doc = json.loads(package_files.files("stagewise.pipeline.specs").joinpath("agent_prices.json").read_text())
        return cls({k: (float(v["input"]), float(v["output"])) for k, v in doc["usd_per_1k_tokens"].items()},
                   tuple(doc.get("free_prefixes", ())), doc["source"], doc["as_of"])

    def cost(self, model_id: str, input_tokens: int, output_tokens: int) -> float | None:
        """USD for one call, or None when the model id has no price (unknown, never 0)."""
        if self.free_prefixes and model_id.startswith(self.free_prefixes):
            return 0.0
        price = self.usd_per_1k.get(model_id)
        if price is None:
            return None
        return (input_tokens * price[0] + output_tokens * price[1]) / 1000.0


# ----------------------------------------------------------------------------------- the record
def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class CallRecord(StrictModel):
    """One agent call, as audited and measured.

    Attributes:
        call_id: unique per call; ``at``: when it started (UTC).
        agent, version, role: what answered (``shadow``: the challenger's discarded answer).
        rollout_id, step: the rollout and its traffic step (percent, or ``shadow``) at the call.
        key_sha256, key_source: the routing key's sha256 (``caller``'s key or a ``random`` one).
        model_id: the model called.
        latency_ms: wall time of the conversation (all turns and tool calls), milliseconds.
        time_to_first_token_ms: None (answers are not streamed).
        input_tokens, output_tokens: summed over the conversation's turns.
        cost_usd: from the price table; None when the model id has no price.
        tool_calls: ``{"tool", "error"}`` per call (``error``: the exception class, or None).
        stop_reason: the model's last ``stopReason``; None when the call failed.
        error_class: the exception that ended the call, or None.
        prompt_sha256, question_sha256, answer_sha256: content hashes (no text).
        question, answer: the text, only when the caller asked for it (``log_text``).
    """

    call_id: str
    at: datetime
    agent: str
    version: int
    role: Role
    rollout_id: str | None = None
    step: int | str | None = None
    key_sha256: str
    key_source: Literal["caller", "random"]
    model_id: str
    latency_ms: float = Field(ge=0)
    time_to_first_token_ms: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    stop_reason: str | None = None
    error_class: str | None = None
    prompt_sha256: str
    question_sha256: str
    answer_sha256: str | None = None
    question: str | None = None
    answer: str | None = None

    @property
    def failed(self) -> bool:
        """The call ended in an exception."""
        return self.error_class is not None


def audit_key(agent: str, day: str) -> str:
    """A new audit object's key: ``agents/calls/agent=<agent>/date=<day>/<uuid>.jsonl``."""
    return f"{AUDIT_PREFIX}/agent={agent}/date={day}/{uuid.uuid4().hex}.jsonl"


@dataclass
class CallRecorder:
    """Buffers call records; ``flush`` writes them (one JSON-lines object per agent and day) and
    publishes their CloudWatch metrics (module docstring).

    Attributes:
        objects, bucket: S3 access and the data bucket.
        cloudwatch: a boto3 CloudWatch client; namespace: the stack's metrics namespace.
        environment: ``dev``, ``test`` or ``prod`` (the Environment dimension).
    """

    objects: ObjectStore
    bucket: str
    cloudwatch: Any
    namespace: str
    environment: str
    pending: list[CallRecord] = field(default_factory=list)
    written: list[str] = field(default_factory=list)

    def add(self, record: CallRecord) -> None:
        """Buffer ``record``; flush when ``FLUSH_EVERY`` are buffered."""
        self.pending.append(record)
        if len(self.pending) >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> list[str]:
        """Write and publish what is buffered; returns the keys written.

        Raises:
            botocore.exceptions.ClientError: S3 or CloudWatch refused (the records stay buffered).
        """
        if not self.pending:
            return []
        groups: dict[tuple[str, str], list[CallRecord]] = defaultdict(list)
        for r in self.pending:
            groups[(r.agent, r.at.strftime("%Y-%m-%d"))].append(r)
        keys = []
        for (agent, day), records in sorted(groups.items()):
            key = audit_key(agent, day)
            body = "".join(r.model_dump_json() + "\n" for r in records).encode()
            self.objects.put_bytes(self.bucket, key, body, "application/x-ndjson")
            keys.append(key)
        publish(self.cloudwatch, [d for r in self.pending for d in call_metrics(r, self.environment)], self.namespace)
        self.pending.clear()
        self.written += keys
        return keys


def call_metrics(record: CallRecord, environment: str) -> list[Datum]:
    """The CloudWatch values of one call (module docstring), each with dimensions Environment,
    Agent, Version and again with Environment, Agent (for the alarms); the cost only when known."""
    values = [
        (m.AGENT_CALLS, 1, "Count"), (m.AGENT_ERRORS, int(record.failed), "Count"),
        (m.AGENT_TOOL_ERRORS, sum(1 for c in record.tool_calls if c.get("error")), "Count"),
        (m.AGENT_LATENCY, record.latency_ms, "Milliseconds"),
        (m.AGENT_INPUT_TOKENS, record.input_tokens, "Count"), (m.AGENT_OUTPUT_TOKENS, record.output_tokens, "Count"),
    ]
    if record.cost_usd is not None:
        values.append((m.AGENT_COST_USD, record.cost_usd, "None"))
    per_version = {"Environment": environment, "Agent": record.agent, "Version": str(record.version)}
    per_agent = {"Environment": environment, "Agent": record.agent}
    return [Datum(name, value, unit, dims) for dims in (per_version, per_agent) for name, value, unit in values]


def feedback_metrics(agent: str, version: int, approved: bool, score: float | None, environment: str) -> list[Datum]:
    """The CloudWatch values of one feedback verdict on ``agent`` v``version``: ``AgentApproval``
    (1 approved, 0 rejected, so its Average over a period is the approval rate) and, when given,
    ``AgentFeedbackScore`` (0..1); dimensions as ``call_metrics``."""
    values = [(m.AGENT_APPROVALS, 1.0 if approved else 0.0)] + ([(m.AGENT_FEEDBACK_SCORE, score)] if score is not None else [])
    per_version = {"Environment": environment, "Agent": agent, "Version": str(version)}
    per_agent = {"Environment": environment, "Agent": agent}
    return [Datum(name, value, "None", dims) for dims in (per_version, per_agent) for name, value in values]


def read_calls(objects: ObjectStore, bucket: str, agent: str) -> list[CallRecord]:
    """Every audited call of ``agent`` (all days), oldest first."""
    records = []
    prefix = f"{AUDIT_PREFIX}/agent={agent}/"
    for page in objects.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            for line in objects.get_bytes(bucket, obj["Key"]).decode().splitlines():
                if line.strip():
                    records.append(CallRecord.model_validate_json(line))
    return sorted(records, key=lambda r: (r.at, r.call_id))


# ------------------------------------------------------------------------------------ serving
@dataclass(frozen=True)
class Served:
    """What ``Agent.ask`` returns: the answer the caller gets and the records of the call (and of
    the shadow call, in shadow mode)."""

    answer: Answer
    record: CallRecord
    shadow: CallRecord | None = None

    @property
    def version(self) -> int:
        """The version that answered."""
        return self.record.version


class Agent:
    """An agent served through its rollout (module docstring).

    Args:
        name: the agent's registry name.
        registry: the environment's registry.
        objects: S3 access (prompts, and the recorder's bucket).
        answer: runs one conversation (``Answerer``).
        recorder: where call records go.
        ttl_seconds: how long a registry read serves (seconds).
        log_text: keep the question and answer text in the records (default: hashes only).
        prices: the price table (default: the shipped one).
        clock: monotonic seconds (tests pass a fake).
    """

    def __init__(self, name: str, registry: Registry, objects: ObjectStore, answer: Answerer, recorder: CallRecorder,
                 ttl_seconds: float = DEFAULT_TTL_SECONDS, log_text: bool = False, prices: PriceTable | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name, self.registry, self.objects, self.answer, self.recorder = name, registry, objects, answer, recorder
        self.ttl_seconds, self.log_text, self.prices, self.clock = ttl_seconds, log_text, prices or PriceTable.load(), clock
        self.registry_reads = 0
        self._record: ModelRecord | None = None
        self._read_at = -math.inf
        self._versions: dict[int, tuple[VersionRecord, str]] = {}

    def model_record(self) -> ModelRecord:
        """The agent's registry record, read at most once per ``ttl_seconds``."""
        if self._record is None or self.clock() - self._read_at >= self.ttl_seconds:
            self._record, self._read_at = self.registry.get_model(self.name), self.clock()
            self.registry_reads += 1
        return self._record

    def version(self, number: int) -> tuple[VersionRecord, str]:
        """Version ``number`` and its prompt, fetched once and checked against its sha256.

        Raises:
            ChecksumMismatch: the prompt's bytes differ from the registered sha256.
            ValueError: the version is not an agent version.
        """
        if number not in self._versions:
            record = self.registry.get_version(self.name, number)
            self._versions[number] = (record, load_prompt(self.objects, record))
        return self._versions[number]

    def route(self, key: str) -> tuple[int, Role, dict[str, Any]]:
        """The version that answers ``key`` now, its role, and the record's serving state.

        Raises:
            LookupError: the agent has no champion.
        """
        record = self.model_record()
        serving = record.serving()
        if serving["champion"] is None:
            raise LookupError(f"agent {self.name!r} has no champion: register a version first")
        r = record.rollout
        if r is not None and not r.paused and not r.shadow and r.weight > 0 \
                and bool(routing.to_challenger(self.name, r.id, r.weight, [key])[0]):
            return r.challenger, "challenger", serving
        return serving["champion"], "champion", serving

    def ask(self, question: str, key: str | None = None) -> Served:
        """Answer ``question`` with the version the rollout routes ``key`` to (module docstring).

        Raises:
            LookupError: the agent has no champion.
            Exception: whatever the conversation raised (after it was recorded).
        """
        source: Literal["caller", "random"] = "caller" if key is not None else "random"
        key = key if key is not None else uuid.uuid4().hex
        number, role, serving = self.route(key)
        record, answer, error = self._call(number, role, serving, key, source, question)
        shadow = None
        r = self.model_record().rollout
        if r is not None and r.shadow and not r.paused:
            shadow, _, _ = self._call(r.challenger, "shadow", serving, key, source, question)  # its failure is only recorded
        if answer is None:
            raise error  # type: ignore[misc]
        return Served(answer, record, shadow)

    def _call(self, number: int, role: Role, serving: dict[str, Any], key: str, source: Literal["caller", "random"],
              question: str) -> tuple[CallRecord, Answer | None, Exception | None]:
        version, prompt = self.version(number)
        config = version.agent
        assert config is not None  # load_prompt refused a non-agent version
        at, started = datetime.now(timezone.utc), time.perf_counter()
        answer: Answer | None = None
        failure: Exception | None = None
        try:
            answer = self.answer(config, prompt, question)
        except Exception as e:  # noqa: BLE001 - recorded; re-raised by ask for the serving call
            failure = e
        latency = (time.perf_counter() - started) * 1000.0
        usage = answer.usage if answer else {}
        tokens_in, tokens_out = int(usage.get("inputTokens", 0)), int(usage.get("outputTokens", 0))
        record = CallRecord(
            call_id=uuid.uuid4().hex, at=at, agent=self.name, version=number, role=role,
            rollout_id=serving["rollout_id"], step=serving["step"], key_sha256=_sha256(f"{self.name}|{key}"), key_source=source,
            model_id=config.model_id, latency_ms=latency, input_tokens=tokens_in, output_tokens=tokens_out,
            cost_usd=self.prices.cost(config.model_id, tokens_in, tokens_out) if answer else None,
            tool_calls=[{"tool": c["tool"], "error": c.get("error")} for c in (answer.tool_calls if answer else [])],
            stop_reason=answer.stop_reason if answer else None, error_class=type(failure).__name__ if failure else None,
            prompt_sha256=config.prompt_sha256, question_sha256=_sha256(question),
            answer_sha256=_sha256(answer.text) if answer else None,
            question=question if self.log_text else None, answer=answer.text if self.log_text and answer else None,
        )
        self.recorder.add(record)
        return record, answer, failure

    def close(self) -> None:
        """Flush the recorder."""
        self.recorder.flush()

    def __enter__(self) -> "Agent":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ------------------------------------------------------------------------------- online gates
def p95(values: list[float]) -> float | None:
    """The 95th percentile (numpy's linear interpolation), or None without values."""
    return float(np.percentile(values, 95)) if values else None


def rollout_observations(calls: list[CallRecord], rollout_id: str, step: int | str, challenger: int,
                         champion: int) -> dict[str, tuple[float | None, int]]:
    """The challenger's online metrics over the live calls of one rollout step (metric ->
    (value, samples)); ``*_vs_champion`` are challenger minus champion on the same step's calls.
    ``cost_per_call_usd`` is None (inconclusive) when any call's cost is unknown."""
    step_calls = [c for c in calls if c.rollout_id == rollout_id and c.step == step and c.role != "shadow"]
    mine = [c for c in step_calls if c.version == challenger]
    theirs = [c for c in step_calls if c.version == champion]

    def rate(cs: list[CallRecord]) -> float | None:
        return sum(c.failed for c in cs) / len(cs) if cs else None

    mine_p95, their_p95 = p95([c.latency_ms for c in mine]), p95([c.latency_ms for c in theirs])
    mine_rate, their_rate = rate(mine), rate(theirs)
    def cost_of(cs: list[CallRecord]) -> tuple[float | None, int]:
        costs = [c.cost_usd for c in cs if not c.failed]
        known = bool(costs) and all(x is not None for x in costs)
        return (sum(costs) / len(costs) if known else None), len(costs)  # type: ignore[arg-type]

    (cost, cost_samples), (their_cost, _) = cost_of(mine), cost_of(theirs)
    both = min(len(mine), len(theirs))
    return {
        "error_rate": (mine_rate, len(mine)),
        "latency_p95_ms": (mine_p95, len(mine)),
        "cost_per_call_usd": (cost, cost_samples),
        "cost_per_call_usd_vs_champion": (None if cost is None or their_cost is None else cost - their_cost, both),
        "error_rate_vs_champion": (None if mine_rate is None or their_rate is None else mine_rate - their_rate, both),
        "latency_p95_ms_vs_champion": (None if mine_p95 is None or their_p95 is None else mine_p95 - their_p95, both),
    }


def evaluate_rollout(registry: Registry, objects: ObjectStore, bucket: str, name: str, *, actor: str,
                     sns: Any = None, topic_arn: str | None = None, environment: str = "") -> tuple[Decision, dict[str, Any]]:
    """Apply the agent's online gates to the calls of its rollout's current step (one bake
    "run" per new batch of calls: evaluating again without new calls changes nothing). A rollback
    publishes a ``rollout.rollback`` alert when ``sns`` and ``topic_arn`` are given.

    Returns:
        The registry's decision and the observations it was taken on.
    """
    record = registry.get_model(name)
    r = record.rollout
    if r is None or record.champion is None:
        return Decision("no_rollout", record, reason="no rollout in progress"), {}
    step = record.serving()["step"]
    calls = read_calls(objects, bucket, name)
    observations = rollout_observations(calls, r.id, step, r.challenger, record.champion)
    seen = sum(1 for c in calls if c.rollout_id == r.id and c.step == step)
    decision = registry.evaluate_rollout(name, observations, actor=actor, run_token=f"calls-{r.id}-{step}-{seen}")
    if decision.outcome == "rolled_back" and sns is not None and topic_arn:
        failed = [g for g in decision.results if g.outcome == "fail"]
        publish_alert(sns, topic_arn, Alert(
            event="rollout.rollback", title=f"Agent rollout rolled back: v{r.challenger} failed a gate",
            environment=environment, model=name, version=r.challenger,
            details=f"Agent {name} v{r.challenger} was rolled back at step {step}: " + "; ".join(g.describe() for g in failed),
            numbers={g.metric: g.value for g in failed}, next_steps=(
                f"Read its failed calls: stagewise query \"SELECT * FROM agent_calls WHERE agent = '{name}' "
                f"AND version = {r.challenger} AND error_class IS NOT NULL\"; fix it and register a new version."),
        ))
    return decision, observations
