"""Offline evaluation of an agent version: an evaluation set run against the version and the
champion, checked, judged, summarised, gated and recorded.

An evaluation set is JSON lines, one case per line (``Case``)::

    {"id": "at-risk-count", "question": "How many customers are at risk?",
     "checks": {"tools": ["query_results"],
                "number_sql": "SELECT count(*) FROM at_risk", "tolerance": 0.01,
                "must_not_contain": ["customer_id"], "judge": "Names the segment with the most at-risk customers."}}

Checks, deterministic first (``check_answer``):

- ``tools``: each named tool was called during the conversation.
- ``number_sql`` / ``tolerance``: the reference value is the first column of the first row of the
  SELECT over the results catalog (the same sandboxed catalog ``stagewise query`` uses); some number
  in the answer must be within ``tolerance`` of it, relative (absolute below 1).
- ``must_contain`` / ``must_not_contain``: strings that must / must not appear (case-insensitive).
- ``judge``: a free-text criterion decided by an LLM judge (``converse_judge``) whose model must differ
  from the agent's (verifier separation), at temperature 0, answering pass/fail with a reason.

A case passes when every check it declares passes. The summary (``Summary``) holds the pass rate,
total and per-answer cost in USD (None when any cost is unknown), and the p95 latency in ms. The
offline gates (``EvaluationGates``) are evaluated with the registry's gate rules
(``stagewise.registry.gates``): ``pass_rate``, ``pass_rate_vs_champion`` (version minus champion,
on the same cases), ``cost_per_answer_usd``, ``latency_p95_ms``. The result is written to
``s3://<artifact bucket>/agents/<name>/evaluations/v<version>/<id>.json`` and noted in the registry
(audit event ``agent.evaluation`` of the version, with the gates, the failed cases and the URI):
``stagewise registry promote`` refuses to start a rollout of an agent version whose latest
evaluation failed its gates (exit 3, naming the failed cases).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import Field, ValidationError

from stagewise.pipeline.agent_serving import PriceTable, p95
from stagewise.pipeline.analyst import Answer, converse_text
from stagewise.platform.strict import StrictModel
from stagewise.registry import gates as gate_rules
from stagewise.registry.records import AGENT_EVALUATION, Gate, GateResult

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


class Checks(StrictModel):
    """What a case checks (module docstring); at least one."""

    tools: list[str] = Field(default_factory=list)
    number_sql: str | None = None
    tolerance: float = Field(default=0.01, ge=0)
    must_contain: list[str] = Field(default_factory=list)
    must_not_contain: list[str] = Field(default_factory=list)
    judge: str | None = None


class Case(StrictModel):
    """One evaluation case: an id, the question and its checks."""

    id: str = Field(min_length=1)
    question: str = Field(min_length=1)
    checks: Checks


def load_cases(path: Path) -> list[Case]:
    """The cases of an evaluation set (JSON lines; blank lines skipped).

    Raises:
        ValueError: a line is not JSON or not a case (the message names the line), a case declares
            no check, two cases share an id, or the file has no case.
    """
    cases: list[Case] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            case = Case.model_validate_json(line)
        except ValidationError as e:
            raise ValueError(f"{path}:{number}: not an evaluation case: {e.errors()[0]['loc']}: {e.errors()[0]['msg']}") from e
        c = case.checks
        if not (c.tools or c.number_sql or c.must_contain or c.must_not_contain or c.judge):
            raise ValueError(f"{path}:{number}: case {case.id!r} declares no check")
        cases.append(case)
    ids = [c.id for c in cases]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: case ids repeat: {sorted({i for i in ids if ids.count(i) > 1})}")
    if not cases:
        raise ValueError(f"{path}: no evaluation case")
    return cases


def numbers_in(text: str) -> list[float]:
    """Every number written in ``text`` (thousands separators allowed), as floats."""
    return [float(m.replace(",", "")) for m in _NUMBER.findall(text)]


def close_enough(value: float, reference: float, tolerance: float) -> bool:
    """``|value - reference| <= tolerance * max(|reference|, 1)``: relative, absolute below 1."""
    return abs(value - reference) <= tolerance * max(abs(reference), 1.0)


@dataclass(frozen=True)
class CaseResult:
    """One case's outcome for one version: passed, the checks that failed (why), the judge's
    reason, and what the answer cost (USD, None if unknown) and took (ms)."""

    id: str
    passed: bool
    failures: list[str]
    judge_reason: str | None
    latency_ms: float
    cost_usd: float | None
    tools: list[str]
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dict(self.__dict__)


def check_answer(case: Case, answer: Answer, reference: Callable[[str], float | None],
                 judge: Callable[[str, str, str], tuple[bool, str]] | None) -> tuple[list[str], str | None]:
    """The failed checks of ``answer`` (each a sentence) and the judge's reason, if judged.

    Args:
        reference: runs a reference SELECT, returning its first value (None: no row).
        judge: ``judge(criterion, question, answer) -> (passed, reason)``; required when the case
            has a ``judge`` check.
    """
    c, failures = case.checks, []
    called = [t["tool"] for t in answer.tool_calls]
    failures += [f"tool {t} was not called" for t in c.tools if t not in called]
    text = answer.text.lower()
    failures += [f"does not contain {s!r}" for s in c.must_contain if s.lower() not in text]
    failures += [f"contains {s!r}" for s in c.must_not_contain if s.lower() in text]
    if c.number_sql:
        expected = reference(c.number_sql)
        if expected is None:
            failures.append("the reference query returned no value")
        elif not any(close_enough(v, expected, c.tolerance) for v in numbers_in(answer.text)):
            failures.append(f"no number within {c.tolerance:g} of the reference {expected:g}")
    reason = None
    if c.judge:
        if judge is None:
            raise ValueError(f"case {case.id!r} has a judge check and no judge model was given")
        passed, reason = judge(c.judge, case.question, answer.text)
        if not passed:
            failures.append(f"judge: {reason}")
    return failures, reason


def run_cases(cases: list[Case], answer: Callable[[str], Answer], model_id: str, reference: Callable[[str], float | None],
              judge: Callable[[str, str, str], tuple[bool, str]] | None, prices: PriceTable | None = None,
              on_case: Callable[[CaseResult], None] = lambda _: None) -> list[CaseResult]:
    """Run every case against one version (``answer(question) -> Answer``); a conversation that
    raises fails its case with the error class."""
    prices = prices or PriceTable.load()
    results = []
    for case in cases:
        started = time.perf_counter()
        try:
            reply = answer(case.question)
        except Exception as e:  # noqa: BLE001 - the case fails; the evaluation goes on
            result = CaseResult(case.id, False, [f"the conversation failed: {type(e).__name__}"], None,
                                (time.perf_counter() - started) * 1000, None, [], type(e).__name__)
        else:
            latency = (time.perf_counter() - started) * 1000
            failures, reason = check_answer(case, reply, reference, judge)
            cost = prices.cost(model_id, reply.usage.get("inputTokens", 0), reply.usage.get("outputTokens", 0))
            result = CaseResult(case.id, not failures, failures, reason, latency, cost, [t["tool"] for t in reply.tool_calls])
        on_case(result)
        results.append(result)
    return results


@dataclass(frozen=True)
class Summary:
    """A version's results over the set: cases, passed, pass rate (0..1), cost in USD (total and
    per answer; None when any is unknown), p95 latency (ms)."""

    cases: int
    passed: int
    pass_rate: float
    cost_usd: float | None
    cost_per_answer_usd: float | None
    latency_p95_ms: float | None

    @classmethod
    def of(cls, results: list[CaseResult]) -> "Summary":
        """The summary of ``results``."""
        costs = [r.cost_usd for r in results]
        total = None if any(c is None for c in costs) else float(sum(costs))  # type: ignore[arg-type]
        passed = sum(r.passed for r in results)
        return cls(len(results), passed, passed / len(results) if results else 0.0, total,
                   None if total is None or not results else total / len(results), p95([r.latency_ms for r in results]))


@dataclass(frozen=True)
class EvaluationGates:
    """The offline gates of an agent version's evaluation: pass rate at least ``min_pass_rate``;
    not below the champion's by more than ``max_drop_vs_champion`` (points of pass rate, 0..1);
    cost per answer (USD) and p95 latency (ms) at most the given values (None: not gated)."""

    min_pass_rate: float = 0.9
    max_drop_vs_champion: float = 0.05
    max_cost_per_answer_usd: float | None = None
    max_latency_p95_ms: float | None = None

    def evaluate(self, mine: Summary, champion: Summary | None) -> list[GateResult]:
        """The gate results (``registry.gates.evaluate``); without a champion the comparison is
        inconclusive."""
        declared = [Gate(metric="pass_rate", comparator=">=", threshold=self.min_pass_rate, min_samples=1),
                    Gate(metric="pass_rate_vs_champion", comparator=">=", threshold=-self.max_drop_vs_champion,
                         min_samples=1, on_inconclusive="hold")]
        if self.max_cost_per_answer_usd is not None:
            declared.append(Gate(metric="cost_per_answer_usd", comparator="<=", threshold=self.max_cost_per_answer_usd, min_samples=1))
        if self.max_latency_p95_ms is not None:
            declared.append(Gate(metric="latency_p95_ms", comparator="<=", threshold=self.max_latency_p95_ms, min_samples=1))
        observations = {
            "pass_rate": (mine.pass_rate, mine.cases),
            "pass_rate_vs_champion": (None if champion is None else mine.pass_rate - champion.pass_rate,
                                      0 if champion is None else mine.cases),
            "cost_per_answer_usd": (mine.cost_per_answer_usd, mine.cases),
            "latency_p95_ms": (mine.latency_p95_ms, mine.cases),
        }
        notes = {"pass_rate_vs_champion": "no champion to compare with"} if champion is None else {}
        return gate_rules.evaluate(declared, observations, notes)


@dataclass
class Evaluation:
    """An evaluation of ``version`` (and the champion, when there is one) on one set."""

    agent: str
    version: int
    champion: int | None
    dataset: str
    results: list[CaseResult]
    champion_results: list[CaseResult] = field(default_factory=list)
    gates: list[GateResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """No gate failed (an inconclusive comparison with no champion does not block)."""
        return not any(g.outcome == "fail" for g in self.gates)

    @property
    def failed_cases(self) -> list[str]:
        """Ids of the version's failed cases."""
        return [r.id for r in self.results if not r.passed]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what is written to S3)."""
        return {
            "agent": self.agent, "version": self.version, "champion": self.champion, "dataset": self.dataset,
            "passed": self.passed, "failed_cases": self.failed_cases,
            "summary": Summary.of(self.results).__dict__,
            "champion_summary": Summary.of(self.champion_results).__dict__ if self.champion_results else None,
            "gates": [g.model_dump() for g in self.gates],
            "cases": [r.to_dict() for r in self.results], "champion_cases": [r.to_dict() for r in self.champion_results],
        }


def evaluate_version(agent: str, version: int, champion: int | None, dataset: str, cases: list[Case],
                     answer_with: Callable[[int], Callable[[str], Answer]], model_of: Callable[[int], str],
                     reference: Callable[[str], float | None], judge: Callable[[str, str, str], tuple[bool, str]] | None,
                     gates: EvaluationGates, on_case: Callable[[int, CaseResult], None] = lambda v, r: None) -> Evaluation:
    """Run ``cases`` against ``version`` and the champion (when it is another version) and apply
    the gates."""
    mine = run_cases(cases, answer_with(version), model_of(version), reference, judge, on_case=lambda r: on_case(version, r))
    theirs: list[CaseResult] = []
    if champion is not None and champion != version:
        theirs = run_cases(cases, answer_with(champion), model_of(champion), reference, judge,
                           on_case=lambda r: on_case(champion, r))
    results = gates.evaluate(Summary.of(mine), Summary.of(theirs) if theirs else None)
    return Evaluation(agent, version, champion if theirs else None, dataset, mine, theirs, results)


JUDGE_PROMPT = (
    "You grade an analyst's answer against one criterion. Reply with one JSON object and nothing else: "
    '{"pass": true or false, "reason": "<one sentence>"}.'
)


def judge_with(complete: Callable[[str, str, str], str], judge_model_id: str,
               agent_model_id: str) -> Callable[[str, str, str], tuple[bool, str]]:
    """A judge that asks ``complete(model_id, system, text) -> reply`` (a call at temperature 0)
    for a JSON verdict; a reply without one fails the case.

    Raises:
        ValueError: the judge model is the agent's own (a model does not grade itself).
    """
    if judge_model_id == agent_model_id:
        raise ValueError(f"the judge model must differ from the agent's ({agent_model_id}): a model does not grade itself")

    def judge(criterion: str, question: str, answer: str) -> tuple[bool, str]:
        text = complete(judge_model_id, JUDGE_PROMPT, f"Criterion: {criterion}\n\nQuestion: {question}\n\nAnswer: {answer}")
        try:
            verdict = json.loads(text[text.index("{"): text.rindex("}") + 1])
            return bool(verdict["pass"]), str(verdict.get("reason", ""))
        except (ValueError, KeyError, TypeError):
            return False, f"the judge gave no verdict: {text[:200]!r}"

    return judge


def converse_judge(bedrock: Any, judge_model_id: str, agent_model_id: str) -> Callable[[str, str, str], tuple[bool, str]]:
    """``judge_with`` over Bedrock's Converse API (temperature 0, at most 256 tokens).

    Raises:
        ValueError: the judge model is the agent's own.
    """
    return judge_with(lambda model_id, system, text: converse_text(bedrock, model_id, system, text), judge_model_id, agent_model_id)


def record_evaluation(registry: Any, objects: Any, bucket: str, evaluation: Evaluation, actor: str) -> str:
    """Write ``evaluation`` to ``s3://<bucket>/agents/<agent>/evaluations/v<version>/<id>.json`` and
    note it in the registry (audit action ``agent.evaluation`` of the version: passed, gates,
    failed cases, summary, URI); returns the URI.

    Raises:
        botocore.exceptions.ClientError: S3 or DynamoDB refused.
    """
    doc = evaluation.to_dict()
    body = json.dumps(doc, indent=2, default=str).encode()
    digest = hashlib.sha256(body).hexdigest()
    key = f"agents/{evaluation.agent}/evaluations/v{evaluation.version}/{digest[:16]}.json"
    objects.put_bytes(bucket, key, body, "application/json")
    uri = f"s3://{bucket}/{key}"
    verdict = "passed" if evaluation.passed else "failed"
    registry.note(evaluation.agent, AGENT_EVALUATION, version=evaluation.version, actor=actor, token=f"evaluation-{digest}",
                  reason=f"evaluation on {evaluation.dataset} {verdict}: {doc['summary']['passed']} of {doc['summary']['cases']} cases",
                  evidence={"passed": evaluation.passed, "uri": uri, "dataset": evaluation.dataset,
                            "failed_cases": evaluation.failed_cases, "summary": doc["summary"],
                            "champion": evaluation.champion, "champion_summary": doc["champion_summary"],
                            "gates": doc["gates"]})
    return uri
