"""``stagewise registry`` and ``stagewise agent``: read and change the registry of an environment.

Every change takes ``--actor`` (default: the caller's AWS identity), ``--reason``, ``--token`` (an
idempotency token: repeating a call with the same token acts once) and ``--expected-revision``
(refuse with exit 6 if the model changed since you read it).
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from stagewise.monitoring.metrics import publish
from stagewise.platform.cli import AWS_OPT, ENV_OPT, JSON_OPT, emit_json, fail, handles_errors, out
from stagewise.platform.contract import ExitCode
from stagewise.platform.runtime.environment import Environment, connect
from stagewise.registry import routing
from stagewise.registry.gates import parse_gate
from stagewise.registry.records import AGENT_EVALUATION, AgentConfig, Gate, ModelRecord, VersionRecord
from stagewise.registry.service import Registry, RolloutPlan
from stagewise.registry.dynamodb import registry_of

registry_app = typer.Typer(
    help="The model registry: versions, lineage, aliases, staged rollout, routing, audit.", no_args_is_help=True
)
agent_app = typer.Typer(help="LLM agents as registry entries: prompt, model id, inference settings, tools.", no_args_is_help=True)

ACTOR_OPT = typer.Option(None, "--actor", help="Who acts, for the audit (default: your AWS identity).")
TOKEN_OPT = typer.Option(None, "--token", help="Idempotency token: a retried call with the same token acts once.")
REVISION_OPT = typer.Option(None, "--expected-revision", help="Refuse (exit 6) unless the model is at this revision.")
DEFAULT_AGENT_GATES = (Gate(metric="approval_rate", comparator=">=", threshold=0.8, min_samples=20),)


def _connect(env: str, aws: bool, provision: bool = True) -> tuple[Environment, Registry]:
    """The environment and its registry; commands that write provision the embedded AWS first
    (so the table and buckets exist), reads do not."""
    conn = connect(env, aws=aws, provision=provision)
    return conn, registry_of(conn)


def _registry(env: str, aws: bool) -> Registry:
    """The registry, for read-only commands."""
    return _connect(env, aws, provision=False)[1]


def _actor(conn: Environment, actor: str | None) -> str:
    return actor or conn.clients.caller_identity()["Arn"]


def _serving_line(m: ModelRecord) -> str:
    sv = m.serving()
    line = f"{m.name}: champion v{sv['champion']}" if sv["champion"] else f"{m.name}: nothing serving"
    if sv["challenger"]:
        line += f", challenger v{sv['challenger']} at {'shadow' if sv['shadow'] else str(sv['weight']) + '%'}"
        line += f" of plan {list(m.rollout.plan)}" if m.rollout else ""
        line += " (paused)" if sv["paused"] else ""
    return line + f" · revision {m.revision}"


def _changed(m: ModelRecord, action: str, as_json: bool, env: str) -> None:
    if as_json:
        emit_json({"environment": env, "action": action, "model": m.name, "revision": m.revision,
                   "serving": m.serving(), "stages": {str(k): v for k, v in sorted(m.stages.items())}})
    else:
        out.print(_serving_line(m))


@registry_app.command("list")
@handles_errors
def list_models(env: str = ENV_OPT, aws: bool = AWS_OPT, as_json: bool = JSON_OPT) -> None:
    """List models and agents with their versions and aliases.

    Examples:

      stagewise registry list
      stagewise registry list --env prod --json
    """
    reg = _registry(env, aws)
    rows = []
    for model in reg.list_models():
        versions = reg.list_versions(model.name)
        rows.append({
            "name": model.name,
            "kind": model.kind,
            "latest_version": model.latest_version,
            "aliases": model.aliases,
            "serving": model.serving(),
            "revision": model.revision,
            "updated_at": model.updated_at.isoformat(),
            "versions": [
                {"version": v.version, "status": v.status, "stage": model.stages.get(v.version, v.status),
                 "created_at": v.created_at.isoformat(), "metrics": v.metrics, "artifact_sha256": v.artifact_sha256}
                for v in versions
            ],
        })
    if as_json:
        emit_json({"environment": env, "models": rows})
        return
    if not rows:
        out.print(f"no models registered in {env}; run `stagewise run` to train and register one")
        return
    table = Table(title=f"Registry ({env})")
    for col in ("model", "kind", "versions", "champion", "challenger", "aliases", "updated (UTC)"):
        table.add_column(col)
    for r in rows:
        sv = r["serving"]
        ch = f"v{sv['challenger']} @ {'shadow' if sv['shadow'] else str(sv['weight']) + '%'}" if sv["challenger"] else "-"
        table.add_row(
            r["name"], r["kind"], str(len(r["versions"])), str(r["aliases"].get("champion", "-")), ch,
            ", ".join(f"{k}={v}" for k, v in sorted(r["aliases"].items())) or "-", r["updated_at"][:19],
        )
    out.print(table)


@registry_app.command("show")
@handles_errors
def show(
    model: str = typer.Argument(..., help="Model name, e.g. engagement."),
    version: Optional[int] = typer.Argument(None, help="Version number; omit for the model and all its versions."),
    env: str = ENV_OPT,
    aws: bool = AWS_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Show a model (aliases, versions) or one version (metrics, gates, lineage, artifact).

    Examples:

      stagewise registry show engagement
      stagewise registry show engagement 2 --json
    """
    reg = _registry(env, aws)
    if version is not None:
        v = reg.get_version(model, version)
        evaluations = evaluations_of(reg, model, version)
        if as_json:
            emit_json({"environment": env, **v.model_dump(mode="json"), "evaluations": evaluations})
        else:
            _print_version(v, evaluations)
        return
    record = reg.get_model(model)
    versions = reg.list_versions(model)
    if as_json:
        emit_json({"environment": env, **record.model_dump(mode="json"), "versions": [v.model_dump(mode="json") for v in versions]})
        return
    out.print(f"[bold]{record.name}[/] ({record.kind}) in {env} · " + _serving_line(record) + " · aliases "
              f"{', '.join(f'{k}={v}' for k, v in sorted(record.aliases.items())) or 'none'}")
    table = Table()
    for col in ("version", "status", "stage", "created (UTC)", "metrics", "artifact sha256"):
        table.add_column(col)
    for v in versions:
        table.add_row(str(v.version), v.status, record.stages.get(v.version, "-"), v.created_at.isoformat()[:19],
                      _fmt_metrics(v.metrics), v.artifact_sha256[:16] + "…")
    out.print(table)


def _fmt_metrics(metrics: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items())


def evaluations_of(reg: Registry, name: str, version: int) -> list[dict[str, Any]]:
    """The offline evaluations of ``name`` v``version``, oldest first, from its audit trail (the
    version record is immutable, so an evaluation run after registration is lineage appended there):
    each ``{"at", "actor", "passed", "dataset", "uri", "summary", "gates", "failed_cases", "champion"}``."""
    keep = ("passed", "dataset", "uri", "summary", "gates", "failed_cases", "champion")
    return [{"at": e.at.isoformat(), "actor": e.actor, **{k: e.evidence.get(k) for k in keep}}
            for e in sorted(reg.history(name), key=lambda e: e.revision) if e.action == AGENT_EVALUATION and e.version == version]


def _print_version(v: VersionRecord, evaluations: list[dict[str, Any]] = ()) -> None:
    table = Table(show_header=False, title=f"{v.model} version {v.version}")
    table.add_column("field", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_row("status", v.status)
    table.add_row("created", f"{v.created_at.isoformat()} by {v.created_by}")
    table.add_row("metrics", _fmt_metrics(v.metrics))
    for g in v.gates:
        table.add_row("gate", f"{g.metric} {g.comparator} {g.threshold}: {g.value:.4f} -> {g.outcome}" if g.value is not None else f"{g.metric}: {g.outcome}")
    table.add_row("artifact", f"{v.artifact_uri}\nsha256 {v.artifact_sha256}")
    table.add_row("baseline", v.baseline_uri or "-")
    if v.agent:
        table.add_row("agent", f"model {v.agent.model_id}, temperature {v.agent.temperature}, max tokens "
                      f"{v.agent.max_tokens}, tools {list(v.agent.tools) or '-'}\nprompt {v.agent.prompt_uri}")
    for k, val in v.lineage.items():
        table.add_row(f"lineage.{k}", str(val))
    for e in evaluations:
        summary = e.get("summary") or {}
        table.add_row("evaluation", f"{e['at'][:19]} {'passed' if e['passed'] else 'FAILED'}: {summary.get('passed')} of "
                      f"{summary.get('cases')} cases on {e['dataset']}\n{e['uri']}")
    out.print(table)


# ------------------------------------------------------------------------------------ audit
@registry_app.command("history")
@handles_errors
def history(
    model: str = typer.Argument(..., help="Model or agent name."),
    limit: int = typer.Option(0, "--limit", "-n", help="Only the last N events (0: all)."),
    env: str = ENV_OPT, aws: bool = AWS_OPT, as_json: bool = JSON_OPT,
) -> None:
    """The audit trail: every state change with actor, reason, evidence and before/after.

    Examples:

      stagewise registry history engagement --env prod --limit 10
    """
    events = _registry(env, aws).history(model)
    events = events[-limit:] if limit else events
    if as_json:
        emit_json({"environment": env, "model": model, "events": [e.model_dump(mode="json") for e in events]})
        return
    table = Table(title=f"{model} history ({env})")
    for col in ("time (UTC)", "action", "v", "actor", "reason / evidence", "serving after"):
        table.add_column(col, overflow="fold")
    for e in events:
        after = e.after.get("serving", {})
        serving = f"champion v{after.get('champion')}" if after.get("champion") else "-"
        if after.get("challenger"):
            serving += f", v{after['challenger']} @ {'shadow' if after.get('shadow') else str(after.get('weight')) + '%'}"
        gates = e.evidence.get("gates") or []
        ev = "; ".join(
            f"{g['metric']}={g['value']:.4g} {g['outcome']}" if g.get("value") is not None else f"{g['metric']} {g['outcome']}"
            for g in gates
        )
        table.add_row(e.at.isoformat()[:19], e.action, str(e.version or "-"), e.actor.split("/")[-1][:24],
                      e.reason + (f"\n[dim]{ev}[/]" if ev else ""), serving)
    out.print(table)


def _parse_time(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise typer.BadParameter(f"{text!r} is not an ISO 8601 time, e.g. 2026-11-22T05:00:00Z") from e
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


@registry_app.command("serving")
@handles_errors
def serving(
    model: str = typer.Argument(..., help="Model or agent name."),
    at: Optional[str] = typer.Option(None, "--at", help="ISO 8601 time (UTC if no offset); default: now."),
    env: str = ENV_OPT, aws: bool = AWS_OPT, as_json: bool = JSON_OPT,
) -> None:
    """What serves now, or what was serving at a given time (replayed from the audit trail).

    Examples:

      stagewise registry serving engagement --env prod --at 2026-11-22T05:00:00Z
    """
    reg = _registry(env, aws)
    when = _parse_time(at) if at else datetime.now(timezone.utc)
    state = reg.serving_at(model, when)
    if as_json:
        emit_json({"environment": env, "model": model, "at": when.isoformat(), **state})
        return
    if state["champion"] is None:
        out.print(f"{model}: nothing was serving at {when.isoformat()}")
        return
    line = f"{model} at {when.isoformat()[:19]}Z: champion v{state['champion']}"
    if state["challenger"]:
        line += f", challenger v{state['challenger']} at {'shadow' if state['shadow'] else str(state['weight']) + '%'}"
    out.print(line + f" (since {state['since'][:19]}Z, {state['event']})")


@registry_app.command("route")
@handles_errors
def route(
    model: str = typer.Argument(..., help="Model name."),
    key: str = typer.Argument(..., help="Routing key, e.g. a customer_id."),
    env: str = ENV_OPT, aws: bool = AWS_OPT, as_json: bool = JSON_OPT,
) -> None:
    """Which version serves KEY now (sticky hash of model, rollout id and key).

    Examples:

      stagewise registry route engagement cus_0b8001434a --env prod
    """
    record = _registry(env, aws).get_model(model)
    version = int(routing.assign(record, [key])[0])
    r = record.rollout
    bucket = int(routing.buckets(model, r.id, [key])[0]) if r else None
    doc = {"environment": env, "model": model, "key": key, "version": version, "bucket": bucket,
           "challenger_weight": r.weight if r else 0.0, "rollout_id": r.id if r else None}
    if as_json:
        emit_json(doc)
    else:
        where = f" (bucket {bucket} of 10000, challenger gets < {int(r.weight * 100)})" if r else ""
        out.print(f"{model}: {key} -> v{version}{where}")


# ------------------------------------------------------------------------------- changes
@registry_app.command("register")
@handles_errors
def register(
    model: str = typer.Argument(..., help="Model name."),
    artifact: Path = typer.Option(..., "--artifact", exists=True, dir_okay=False, help="Model file to upload and register."),
    metric: list[str] = typer.Option([], "--metric", help="Holdout metric NAME=VALUE (repeatable)."),
    description: str = typer.Option("", "--description"),
    actor: Optional[str] = ACTOR_OPT, token: Optional[str] = TOKEN_OPT,
    env: str = ENV_OPT, aws: bool = AWS_OPT, as_json: bool = JSON_OPT,
) -> None:
    """Register a model file trained elsewhere as a new version (uploaded, addressed by sha256).

    Examples:

      stagewise registry register engagement --artifact model.ubj --metric r2=0.81
    """
    conn, reg = _connect(env, aws)
    metrics = {}
    for item in metric:
        name, _, value = item.partition("=")
        try:
            metrics[name] = float(value)
        except ValueError:
            fail(f"--metric {item!r} is not NAME=NUMBER", ExitCode.BAD_INPUT, as_json)
    data = artifact.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    bucket = conn.resources.artifact_bucket.name
    key = f"models/{model}/{sha}/{artifact.name}"
    conn.clients.client("s3").put_object(Bucket=bucket, Key=key, Body=data, Metadata={"sha256": sha})
    result = reg.register_version(
        model, artifact_uri=f"s3://{bucket}/{key}", artifact_sha256=sha, metrics=metrics, gates=[],
        lineage={"source": "manual", "file": artifact.name}, actor=_actor(conn, actor),
        token=token or f"register-{sha}", description=description,
    )
    _registered(result, as_json, env)


def _registered(result: Any, as_json: bool, env: str) -> None:
    v = result.version
    if as_json:
        emit_json({"environment": env, "model": v.model, "version": v.version, "stage": result.stage, "created": result.created,
                   "artifact_uri": v.artifact_uri, "artifact_sha256": v.artifact_sha256, "serving": result.model.serving()})
    else:
        again = "" if result.created else " (already registered: same content)"
        out.print(f"{v.model} v{v.version} registered{again}; stage {result.stage}; sha256 {v.artifact_sha256[:16]}…")


def latest_evaluation(reg: Registry, name: str, version: int) -> Any:
    """The newest ``agent.evaluation`` audit event of ``name`` v``version``, or None."""
    events = [e for e in reg.history(name) if e.action == AGENT_EVALUATION and e.version == version]
    return max(events, key=lambda e: e.revision) if events else None


@registry_app.command("promote")
@handles_errors
def promote(
    model: str = typer.Argument(..., help="Model or agent name."),
    version: int = typer.Argument(..., help="Version to roll out."),
    plan: Optional[str] = typer.Option(None, "--plan", help="Traffic steps, e.g. 10,50,100 (default: the stack's rolloutPlan)."),
    shadow: bool = typer.Option(False, "--shadow", help="Start in shadow mode: score every record, serve none."),
    bake_runs: Optional[int] = typer.Option(None, "--bake-runs", min=0, help="Scoring runs per step (default: the stack's bake)."),
    bake_minutes: Optional[float] = typer.Option(None, "--bake-minutes", min=0, help="Minutes per step (default: the stack's bake)."),
    reason: str = typer.Option("", "--reason"),
    actor: Optional[str] = ACTOR_OPT, token: Optional[str] = TOKEN_OPT, expected_revision: Optional[int] = REVISION_OPT,
    env: str = ENV_OPT, aws: bool = AWS_OPT, as_json: bool = JSON_OPT,
) -> None:
    """Start a rollout of VERSION as challenger at the plan's first step (or crown it if nothing serves).

    Examples:

      stagewise registry promote engagement 3 --env prod
      stagewise registry promote engagement 3 --plan 10,50,100 --shadow
    """
    conn, reg = _connect(env, aws)
    try:
        steps = tuple(int(x) for x in plan.split(",")) if plan else None
        rollout_plan = RolloutPlan.for_environment(conn.settings, steps, bake_minutes, bake_runs, shadow=shadow)
    except ValueError as e:
        fail(f"--plan {plan!r}: {e}", ExitCode.BAD_INPUT, as_json)
    evaluation = latest_evaluation(reg, model, version)
    if evaluation is not None and not evaluation.evidence.get("passed", True):
        failed = [g["metric"] for g in evaluation.evidence.get("gates", []) if g.get("outcome") == "fail"]
        fail(f"{model} v{version} failed its offline evaluation ({', '.join(failed)}) on "
             f"{evaluation.evidence.get('dataset')}; failed cases: {', '.join(evaluation.evidence.get('failed_cases', []))}",
             ExitCode.GATE_FAILED, as_json, hint=f"read it: {evaluation.evidence.get('uri')}; fix the agent and register a new version")
    m = reg.promote(model, version, rollout_plan, actor=_actor(conn, actor), token=token or uuid.uuid4().hex,
                    reason=reason, expected_revision=expected_revision)
    _changed(m, "promote", as_json, env)


def _rollout_command(action: str, help_text: str) -> None:
    """Register ``stagewise registry <action> MODEL`` for a rollout change that needs no arguments."""

    @registry_app.command(action, help=help_text)
    @handles_errors
    def command(
        model: str = typer.Argument(..., help="Model or agent name."),
        reason: str = typer.Option("", "--reason"),
        actor: Optional[str] = ACTOR_OPT, token: Optional[str] = TOKEN_OPT, expected_revision: Optional[int] = REVISION_OPT,
        env: str = ENV_OPT, aws: bool = AWS_OPT, as_json: bool = JSON_OPT,
    ) -> None:
        conn, reg = _connect(env, aws)
        change = getattr(reg, action)
        m = change(model, actor=_actor(conn, actor), token=token or uuid.uuid4().hex, reason=reason,
                   expected_revision=expected_revision)
        _changed(m, action, as_json, env)


_rollout_command("advance", "Move the challenger to the next traffic step now, skipping the bake (100% = champion).\n\n"
                 "Examples:\n\n  stagewise registry advance engagement --env prod --reason \"clean week\"")
_rollout_command("pause", "Pause the rollout: traffic stays where it is and the controller holds.\n\n"
                 "Examples:\n\n  stagewise registry pause engagement --env prod --reason \"investigating a spike\"")
_rollout_command("resume", "Resume a paused rollout.\n\nExamples:\n\n  stagewise registry resume engagement --env prod")


@registry_app.command("rollback")
@handles_errors
def rollback(
    model: str = typer.Argument(..., help="Model or agent name."),
    reason: str = typer.Option(..., "--reason", help="Why (recorded in the audit)."),
    actor: Optional[str] = ACTOR_OPT, token: Optional[str] = TOKEN_OPT, expected_revision: Optional[int] = REVISION_OPT,
    env: str = ENV_OPT, aws: bool = AWS_OPT, as_json: bool = JSON_OPT,
) -> None:
    """Abort the rollout in progress (all traffic to the champion), or, with none, restore the
    last known-good champion.

    Examples:

      stagewise registry rollback engagement --env prod --reason "labels broke upstream"
    """
    conn, reg = _connect(env, aws)
    m = reg.rollback(model, actor=_actor(conn, actor), token=token or uuid.uuid4().hex, reason=reason, expected_revision=expected_revision)
    _changed(m, "rollback", as_json, env)


@registry_app.command("alias")
@handles_errors
def alias(
    model: str = typer.Argument(..., help="Model or agent name."),
    name: str = typer.Argument(..., help="Alias, e.g. staging-candidate (champion/challenger are managed by rollouts)."),
    version: Optional[int] = typer.Argument(None, help="Version to point at; omit with --delete."),
    delete: bool = typer.Option(False, "--delete", help="Remove the alias."),
    actor: Optional[str] = ACTOR_OPT, token: Optional[str] = TOKEN_OPT,
    env: str = ENV_OPT, aws: bool = AWS_OPT, as_json: bool = JSON_OPT,
) -> None:
    """Point a user alias at a version, or delete it.

    Examples:

      stagewise registry alias engagement stable 2
      stagewise registry alias engagement stable --delete
    """
    if (version is None) != delete:
        fail("give a VERSION, or --delete", ExitCode.BAD_INPUT, as_json)
    conn, reg = _connect(env, aws)
    m = reg.set_alias(model, name, version, actor=_actor(conn, actor), token=token or uuid.uuid4().hex)
    _changed(m, "alias", as_json, env)


@registry_app.command("feedback")
@handles_errors
def feedback(
    agent: str = typer.Argument(..., help="Agent (or model) name."),
    version: int = typer.Argument(..., help="The version the verdict is about."),
    approved: bool = typer.Option(None, "--approved/--rejected", help="The verdict."),
    score: Optional[float] = typer.Option(None, "--score", min=0.0, max=1.0, help="Optional score in [0, 1]."),
    comment: str = typer.Option("", "--comment"),
    actor: Optional[str] = ACTOR_OPT, token: Optional[str] = TOKEN_OPT,
    env: str = ENV_OPT, aws: bool = AWS_OPT, as_json: bool = JSON_OPT,
) -> None:
    """Record a human or judge verdict; for a challenger it feeds the rollout's gates at once.

    Examples:

      stagewise registry feedback analyst 2 --rejected --comment "hallucinated a metric"
    """
    if approved is None:
        fail("give --approved or --rejected", ExitCode.BAD_INPUT, as_json)
    conn, reg = _connect(env, aws)
    d = reg.feedback(agent, version, approved=approved, score=score, actor=_actor(conn, actor),
                     token=token or uuid.uuid4().hex, comment=comment)
    if d.model.kind == "agent":  # the approval rate on the dashboard (the verdict itself is in the registry)
        from stagewise.pipeline.agent_serving import feedback_metrics  # deferred: numpy and the analyst; agents only

        publish(conn.clients.client("cloudwatch"), feedback_metrics(agent, version, approved, score, env),
                conn.resources.metrics_namespace)
    tally = d.model.feedback.get(version)
    if as_json:
        emit_json({"environment": env, "agent": agent, "version": version, **d.to_dict(),
                   "tally": tally.model_dump() if tally else None,
                   "approval_rate": tally.approval_rate if tally else None, "mean_score": tally.mean_score if tally else None})
        return
    rate = f"{tally.approval_rate:.0%} of {tally.verdicts}" if tally and tally.approval_rate is not None else "-"
    out.print(f"{agent} v{version}: approval {rate}; rollout {d.outcome.replace('_', ' ')}"
              + (f": {d.reason}" if d.reason else "") + "\n" + _serving_line(d.model))


@agent_app.command("register")
@handles_errors
def agent_register(
    name: str = typer.Argument(..., help="Agent name, e.g. engagement-analyst."),
    prompt: Path = typer.Option(..., "--prompt", exists=True, dir_okay=False, help="Prompt template file (uploaded, sha256)."),
    model_id: str = typer.Option(..., "--model-id", help="The model it calls, e.g. a Bedrock model id."),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, max=2.0),
    max_tokens: int = typer.Option(1024, "--max-tokens", min=1),
    tool: list[str] = typer.Option([], "--tool", help="Tool name the agent may call (repeatable)."),
    gate: list[str] = typer.Option([], "--gate", help="Rollout gate METRIC>=X[:MIN_SAMPLES] (or <=) on approval_rate, "
                                   "mean_score (feedback) or, from the measured calls, error_rate, latency_p95_ms, "
                                   "cost_per_call_usd and their *_vs_champion deltas (repeatable; "
                                   "default approval_rate>=0.8:20)."),
    description: str = typer.Option("", "--description"),
    actor: Optional[str] = ACTOR_OPT,
    env: str = ENV_OPT, aws: bool = AWS_OPT, as_json: bool = JSON_OPT,
) -> None:
    """Register a new agent version. The same prompt and settings again is a no-op.

    Examples:

      stagewise agent register analyst --prompt prompt.md --model-id anthropic.claude-3-5-sonnet-20240620-v1:0 --tool query_results
    """
    try:
        gates = tuple(parse_gate(g) for g in gate) or DEFAULT_AGENT_GATES
    except ValueError as e:
        fail(str(e), ExitCode.BAD_INPUT, as_json)
    conn, reg = _connect(env, aws)
    text = prompt.read_bytes()
    sha = hashlib.sha256(text).hexdigest()
    bucket = conn.resources.artifact_bucket.name
    key = f"agents/{name}/{sha}/{prompt.name}"
    conn.clients.client("s3").put_object(Bucket=bucket, Key=key, Body=text, ContentType="text/plain", Metadata={"sha256": sha})
    config = AgentConfig(prompt_uri=f"s3://{bucket}/{key}", prompt_sha256=sha, model_id=model_id,
                         temperature=temperature, max_tokens=max_tokens, tools=tuple(tool))
    token = hashlib.sha256(config.model_dump_json().encode()).hexdigest()
    result = reg.register_version(
        name, artifact_uri=config.prompt_uri, artifact_sha256=sha, metrics={}, gates=[],
        lineage={"source": "agent register", "prompt_file": prompt.name}, actor=_actor(conn, actor), token=token,
        kind="agent", description=description, online_gates=gates, agent=config,
    )
    _registered(result, as_json, env)
