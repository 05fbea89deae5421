"""Reading what runs published: ``stagewise query`` (SQL over the results catalog), ``explain`` (one
row's SHAP contributions), ``review`` (a run's review queue) and ``agent ask`` (the analyst agent
over the same tools)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.table import Table

from stagewise.pipeline import agent_serving, analyst, catalog, spec_store
from stagewise.pipeline.agent_backend import AgentBackend
from stagewise.pipeline.spec import load_spec
from stagewise.pipeline.version_files import load_prompt, reporting_tampered
from stagewise.platform.cli import AWS_OPT, ENV_OPT, JSON_OPT, PROJECT_OPT, emit_json, err, fail, handles_errors, out
from stagewise.platform.contract import Env, ExitCode
from stagewise.platform.runtime.embedded import stagewise_home
from stagewise.platform.runtime.environment import connect
from stagewise.platform.runtime.idhash import read_id_salt
from stagewise.platform.runtime.objects import ObjectStore
from stagewise.registry.dynamodb import registry_of


@handles_errors
def query(
    sql: str = typer.Argument(..., help='SQL over the results catalog, e.g. "SELECT * FROM at_risk LIMIT 5".'),
    max_rows: int = typer.Option(50, "--max-rows", min=1, help="Rows to print (--json prints them all)."),
    env: str = ENV_OPT, aws: bool = AWS_OPT, project_dir: Optional[Path] = PROJECT_OPT, as_json: bool = JSON_OPT,
) -> None:
    """Query the results catalog with SQL (DuckDB, over the same Parquet files Athena reads on AWS).

    Tables: <model>_results, one per model with published results (e.g. engagement_results:
    customer_id_hash, run_id, prediction, in_training, the features, the label; partitions
    run_date, model_version); agent_calls, one row per audited agent call (agent, version, role,
    latency_ms, input_tokens, output_tokens, cost_usd, tool_calls, error_class, hashes). Views: those the models' specs declare (`views:` in the spec; the
    engagement spec's high_value, at_risk, model_performance). New results objects are copied to
    $STAGEWISE_HOME/cache/<env> first. The table is cut to the terminal's width (--json has every
    column and row). The SQL is sandboxed: one read-only SELECT (or WITH ... SELECT), no file
    access, at most 20,000 characters, 1 GB of memory, 2 threads, 30 s and 1,000,000 rows. Exit 4
    if the SQL is refused or fails (the message says why and names the tables and views there are).

    Examples:

      stagewise query "SELECT * FROM at_risk LIMIT 5"
      stagewise query "SELECT * FROM model_performance" --json
    """

    conn = connect(env, aws=aws, project_dir=project_dir)
    objects = ObjectStore(conn.clients.client("s3"))
    with err.status("syncing the results catalog"):
        models = catalog.sync(objects, conn.resources.data_bucket.name, stagewise_home() / "cache" / env)
        calls = catalog.sync_agent_calls(objects, conn.resources.data_bucket.name, stagewise_home() / "cache" / env)
        views = catalog.views(spec_store.catalog_specs(registry_of(conn), objects))
    db = catalog.connect(models, views, agent_calls=calls)
    columns, rows = catalog.query(db, sql, None if as_json else max_rows + 1)
    if as_json:
        emit_json({"columns": columns, "rows": [dict(zip(columns, r)) for r in rows]})
        return
    print_rows(columns, rows[:max_rows])
    if len(rows) > max_rows:
        err.print("[dim]more rows not shown: --max-rows N, or --json for all[/]")


def print_rows(columns: list[str], rows: list[tuple[Any, ...]], max_cell: int = 24) -> None:
    """Print query rows as a table that fits the terminal: numbers to 4 decimals, long text cut
    with an ellipsis at ``max_cell`` characters (a 32-character id hash shows its first 12), and
    columns that do not fit the width left out with a note naming them (``--json`` has all)."""
    def cell(v: Any, name: str) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4f}"
        text = str(v)
        if name.endswith("_hash") and len(text) > 12:
            return text[:12] + "…"
        return text if len(text) <= max_cell else text[: max_cell - 1] + "…"

    cells = [[cell(v, c) for v, c in zip(r, columns)] for r in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    budget, shown = out.width - 4, []
    for i, w in enumerate(widths):
        if shown and sum(widths[j] + 3 for j in shown) + w + 3 > budget:
            break
        shown.append(i)
    table = Table()
    for i in shown:
        table.add_column(columns[i], no_wrap=True, overflow="ellipsis")
    for r in cells:
        table.add_row(*(r[i] for i in shown))
    out.print(table)
    hidden = [columns[i] for i in range(len(columns)) if i not in shown]
    out.file.flush()  # the table first, then the note on stderr
    if hidden:
        err.print(f"[dim]{len(hidden)} more column(s) not shown ({', '.join(hidden[:8])}{', …' if len(hidden) > 8 else ''}): "
                  "SELECT fewer columns, or --json for all[/]")


MODEL_ARG = typer.Argument(..., help="A registered model's name (e.g. engagement), or the path of its spec file.")


def _spec_lookup(conn: Any, model: str) -> tuple[str, Any, Callable[[Any], Any]]:
    """For a command given a model's name or its spec file: the model's name, its spec (the
    file's; else the champion's, from the registry) and ``spec_of(version) -> spec`` (each
    version's own spec, from the registry).

    Raises:
        SpecError: the name is neither registered, built in nor a file.
    """

    if spec_store.is_spec_path(model):
        spec = load_spec(model)
        return spec.name, spec, lambda version: spec
    objects = ObjectStore(conn.clients.client("s3"))
    current = spec_store.resolve_spec(model, registry_of(conn), objects)  # raises for an unknown name
    return model, current, lambda version: spec_store.version_spec(objects, version) or current


@handles_errors
def explain(
    model: str = MODEL_ARG,
    entity_id: str = typer.Argument(..., metavar="ID", help="The row's id as in the input, e.g. a customer_id (cus_0123456789)."),
    run_id: Optional[str] = typer.Option(None, "--run", help="Explain this run's prediction (default: the newest published run)."),
    top: int = typer.Option(10, "--top", min=1, help="Show the N largest contributions (--json has them all)."),
    env: str = ENV_OPT, aws: bool = AWS_OPT, project_dir: Optional[Path] = PROJECT_OPT, as_json: bool = JSON_OPT,
) -> None:
    """Why one row (a customer, a house: the spec's entity) got its prediction: the version that
    made it, and each feature's SHAP contribution.

    Reads the newest published run (or --run), finds the row by the keyed hash of its id, reads its
    features from the run's input, and asks XGBoost for the TreeSHAP contributions of that
    version's model (with the spec that version was trained with); beside each, where the value
    sits in the version's training data. The contributions plus the bias add up to the model's
    raw output; the prediction is that output clipped to the target's range (a classifier: its
    probability, and the decision at the version's threshold). Exit 4 if the model is unknown, has
    no published run or the id is not in it; 5 if the embedded AWS is not running.

    Examples:

      stagewise explain engagement cus_0b8001434a
      stagewise explain my-model 17 --run 20261122T041500Z-1a2b3c --json
    """
    from stagewise.pipeline import explain as ex  # deferred: XGBoost and pandas (~1.4 s)

    conn = connect(env, aws=aws, project_dir=project_dir)
    with reporting_tampered(conn, model, "explaining the prediction"):
        name, _, spec_of = _spec_lookup(conn, model)
        registry = registry_of(conn)
        result = ex.explain(ObjectStore(conn.clients.client("s3")), conn.resources.data_bucket.name, name, spec_of,
                            lambda n: registry.get_version(name, n), read_id_salt(conn.clients, conn.resources).key,
                            entity_id, stagewise_home() / "cache", run_id)
    if as_json:
        emit_json(result.to_dict())
        return
    log_odds = result.threshold is not None
    out.print(f"[bold]{name}[/] {result.entity} {entity_id} · run {result.run_id} · version [bold]v{result.version}[/]")
    out.print(f"prediction [bold]{result.prediction:.4f}[/] (raw {result.raw:.4f}{' log-odds' if log_odds else ''}"
              f" = bias {result.bias:.4f} + contributions)")
    if log_odds:
        out.print(f"decision [bold]{'yes' if result.decision else 'no'}[/] (threshold {result.threshold:.4f}: "
                  f"{result.prediction:.4f} {'>=' if result.decision else '<'} {result.threshold:.4f})")
    if result.in_training:
        out.print(f"[dim]v{result.version} trained on this {result.entity} (its split's training side): "
                  "this prediction is not evidence of how it does on unseen rows[/]")
    table = Table(title=f"Top {min(top, len(result.contributions))} of {len(result.contributions)} contributions (TreeSHAP)")
    for col in ("feature", "value", "contribution", "in training data"):
        table.add_column(col, justify="right" if col == "contribution" else "left")
    for c in result.contributions[:top]:
        where = (f"percentile {c.percentile:g}" if c.percentile is not None
                 else f"{c.training_share:.1%} of rows" if c.training_share is not None else "-")
        color = "green" if c.contribution > 0 else "red"
        table.add_row(c.feature, "-" if c.value is None else str(c.value), f"[{color}]{c.contribution:+.4f}[/]", where)
    out.print(table)


@handles_errors
def review(
    model: str = MODEL_ARG,
    run_id: Optional[str] = typer.Option(None, "--run", help="This run's queue (default: the newest published run)."),
    top: int = typer.Option(20, "--top", min=1, help="Show the N rows of highest priority (--json has the whole queue)."),
    env: str = ENV_OPT, aws: bool = AWS_OPT, project_dir: Optional[Path] = PROJECT_OPT, as_json: bool = JSON_OPT,
) -> None:
    """The review queue of a run: the rows most worth a human look, highest priority first, each
    with its reason (disagreement between champion and challenger, an extreme prediction, features
    outside the training range) and a detail; priorities are in standard deviations.

    Rows are identified by the keyed hash of their id (join back with the salt). Exit 4 if the
    model is unknown, has no published run, or the run has no queue (review.size: 0).

    Examples:

      stagewise review engagement --top 10
      stagewise review churn --json
    """
    import io

    import pandas as pd
    from stagewise.pipeline import explain as ex  # deferred: XGBoost and pandas (~1.4 s)

    conn = connect(env, aws=aws, project_dir=project_dir)
    name, spec, _ = _spec_lookup(conn, model)
    objects, bucket = ObjectStore(conn.clients.client("s3")), conn.resources.data_bucket.name
    manifest = ex.latest_manifest(objects, bucket, name, run_id)
    ref = manifest.get("review_queue")
    if not ref:
        fail(f"run {manifest['run_id']} of {name!r} has no review queue", ExitCode.BAD_INPUT, as_json,
             hint="the spec's review.size is 0, or the run was published before review queues existed")
    queue = pd.read_parquet(io.BytesIO(objects.get_bytes(bucket, ref["key"])))
    if as_json:
        emit_json({"model": name, "run_id": manifest["run_id"], "rows": len(queue),
                   "reasons": queue["reason"].value_counts().to_dict() if len(queue) else {},
                   "queue": json_records(queue)})
        return
    reasons = ", ".join(f"{k} {v}" for k, v in queue["reason"].value_counts().items()) if len(queue) else "empty"
    out.print(f"[bold]{name}[/] run {manifest['run_id']}: {len(queue):,} {spec.entity}(s) to review ({reasons})")
    table = Table("#", queue.columns[0] if len(queue.columns) else "id", "reason", "priority (sd)", "prediction", "version", "detail")
    for i, r in enumerate(queue.head(top).itertuples(index=False), start=1):
        table.add_row(str(i), str(r[0])[:12] + "…", r.reason, f"{r.priority:.2f}", f"{r.prediction:.4f}", f"v{r.model_version}",
                      r.detail)
    out.print(table)
    if len(queue) > top:
        err.print(f"[dim]{len(queue) - top} more not shown: --top N, or --json for all[/]")


def json_records(frame: Any) -> list[dict[str, Any]]:
    """A DataFrame's rows as JSON-ready records (NaN becomes null)."""
    import json as _json

    return _json.loads(frame.to_json(orient="records"))


@handles_errors
def agent_ask(
    name: str = typer.Argument(..., help="The agent, e.g. engagement-analyst."),
    question: str = typer.Argument(..., help="What to ask, in plain words."),
    key: Optional[str] = typer.Option(None, "--key", help="Routing key (your user or session id): the same key keeps "
                                      "its version during a rollout. Default: a random one per call."),
    env: str = ENV_OPT, aws: bool = AWS_OPT, project_dir: Optional[Path] = PROJECT_OPT, as_json: bool = JSON_OPT,
) -> None:
    """Ask an analyst agent: the version its rollout routes --key to (champion, or the challenger at
    the rollout's weight; shadow mode asks the challenger too and answers with the champion), with
    Bedrock's Converse API, the version's prompt, model and tools (query_results,
    feature_statistics, explain_prediction). The call is measured and audited (latency, tokens,
    cost, tools, errors: table agent_calls of `stagewise query`, CloudWatch Agent* metrics).

    A Bedrock model needs --aws (the embedded AWS has no Bedrock runtime: exit 5). A version whose
    model id is ollama/<model> or openai-compatible/<model> runs on a laptop against the
    OpenAI-compatible endpoint configured for agents (default Ollama's, http://127.0.0.1:11434/v1).

    Examples:

      stagewise agent ask engagement-analyst "Which customers are at risk, and why?" --aws --key user-42
      stagewise agent ask local-analyst "How many customers are at risk?"
    """

    conn = connect(env, aws=aws, project_dir=project_dir)
    registry = registry_of(conn)
    champion = registry.champion(name)
    if champion is None or champion.agent is None:
        fail(f"{name!r} has no champion agent version", ExitCode.BAD_INPUT, as_json,
             hint="register one: stagewise agent register NAME --prompt FILE --model-id ID --tool query_results ...")
    objects = ObjectStore(conn.clients.client("s3"))
    with reporting_tampered(conn, name, "asking the agent"):  # verified first: a changed prompt is never sent
        load_prompt(objects, champion)
    backend = AgentBackend(conn, registry, objects)
    _needs_a_model_here(backend, registry, name, as_json)
    answer = backend.answer

    recorder = agent_serving.CallRecorder(objects, conn.resources.data_bucket.name, conn.clients.client("cloudwatch"),
                                          conn.resources.metrics_namespace, env)
    with reporting_tampered(conn, name, "answering the question"), \
            agent_serving.Agent(name, registry, objects, answer, recorder) as agent:  # a changed prompt, artifact or spec
        served = agent.ask(question, key)
    record, reply = served.record, served.answer
    if as_json:
        emit_json({"agent": name, "version": record.version, "role": record.role, "answer": reply.text,
                   "tool_calls": reply.tool_calls, "turns": reply.turns, "usage": reply.usage, "call": record.model_dump(mode="json")})
    else:
        out.print(reply.text)
        cost = "unknown" if record.cost_usd is None else f"${record.cost_usd:.4f}"
        err.print(f"[dim]{name} v{record.version} ({record.role}) · {reply.turns} turn(s) · {record.latency_ms:,.0f} ms · "
                  f"{cost} · tools: {', '.join(c['tool'] for c in reply.tool_calls) or 'none'}[/]")


def _needs_a_model_here(backend: AgentBackend, registry: Any, name: str, as_json: bool,
                        versions: list[int] | None = None, judge_model_id: str | None = None) -> None:
    """Exit 5 when a model the command would call cannot be called here (a Bedrock model on the
    embedded AWS): ``versions`` (default: the serving champion and challenger) and the judge."""
    if versions is None:
        serving = registry.get_model(name).serving()
        versions = [v for v in (serving["champion"], serving["challenger"]) if v]
    models = [registry.get_version(name, v).agent.model_id for v in versions] + ([judge_model_id] if judge_model_id else [])
    blocked = sorted({m for m in models if not backend.can_call(m)})
    if blocked:
        fail(f"the embedded AWS has no Bedrock runtime, so {', '.join(blocked)} cannot be called here", ExitCode.AWS_UNREACHABLE,
             as_json, hint="use --aws (Bedrock in the stack's account), or a local model server: a version with --model-id "
                           f"ollama/<model> at ${Env.LLM_BASE_URL}; or run the tools yourself: `stagewise query`, `stagewise explain`")


@handles_errors
def agent_evaluate(
    name: str = typer.Argument(..., help="The agent, e.g. engagement-analyst."),
    version: int = typer.Argument(..., help="The version to evaluate (its champion answers the same cases)."),
    dataset: Path = typer.Option(..., "--dataset", exists=True, dir_okay=False, help="Evaluation set, JSON lines."),
    judge_model_id: Optional[str] = typer.Option(None, "--judge-model-id", help="Model of the LLM judge (must differ from "
                                                 "the agent's); needed when a case has a judge check."),
    min_pass_rate: float = typer.Option(0.9, "--min-pass-rate", min=0, max=1, help="Gate: share of cases passed."),
    max_drop: float = typer.Option(0.05, "--max-drop", min=0, max=1, help="Gate: pass rate below the champion's by at most this."),
    max_cost: Optional[float] = typer.Option(None, "--max-cost-per-answer", min=0, help="Gate: USD per answer."),
    max_p95_ms: Optional[float] = typer.Option(None, "--max-p95-ms", min=0, help="Gate: p95 latency per answer, ms."),
    actor: Optional[str] = typer.Option(None, "--actor", help="Who acts (default: the caller's identity)."),
    env: str = ENV_OPT, aws: bool = AWS_OPT, project_dir: Optional[Path] = PROJECT_OPT, as_json: bool = JSON_OPT,
) -> None:
    """Evaluate an agent version on an evaluation set, beside its champion: deterministic checks
    (tools called, a number within tolerance of a reference SQL over the results catalog, strings
    that must or must not appear), then an LLM judge for free-text criteria. Prints each case and
    the gates (pass rate, vs the champion, cost per answer, p95 latency); the result goes to S3 and
    the registry's audit trail. Exit 3 when a gate fails: `registry promote` then refuses to start
    the version's rollout.

    Bedrock models (the agent's, its champion's, the judge's) need --aws (exit 5 without);
    ollama/<model> and openai-compatible/<model> ones run on the local endpoint, as `agent ask`.

    Examples:

      stagewise agent evaluate engagement-analyst 2 --dataset pipeline/specs/engagement-analyst-eval.jsonl --aws
      stagewise agent evaluate engagement-analyst 2 --dataset eval.jsonl --judge-model-id amazon.nova-pro-v1:0 --aws
    """
    from stagewise.pipeline import agent_evaluation as ev  # deferred: only this command evaluates

    try:
        cases = ev.load_cases(dataset)
    except ValueError as e:
        fail(str(e), ExitCode.BAD_INPUT, as_json)
    conn = connect(env, aws=aws, project_dir=project_dir)
    registry = registry_of(conn)
    target = registry.get_version(name, version)
    if target.agent is None:
        fail(f"{name} v{version} is not an agent version", ExitCode.BAD_INPUT, as_json)
    champion = registry.get_model(name).champion
    objects = ObjectStore(conn.clients.client("s3"))
    backend = AgentBackend(conn, registry, objects)
    _needs_a_model_here(backend, registry, name, as_json, [version, *([champion] if champion else [])], judge_model_id)
    try:
        judge = ev.judge_with(backend.complete, judge_model_id, target.agent.model_id) if judge_model_id else None
    except ValueError as e:
        fail(str(e), ExitCode.BAD_INPUT, as_json)

    def answer_with(number: int) -> Callable[[str], analyst.Answer]:
        record = registry.get_version(name, number)
        with reporting_tampered(conn, name, "evaluating the agent"):
            prompt = load_prompt(objects, record)
        return lambda question: backend.answer(record.agent, prompt, question)

    reference = backend.reference

    def show(number: int, r: Any) -> None:
        if not as_json:
            mark = "[green]pass[/]" if r.passed else "[red]fail[/]"
            err.print(f"  v{number} {r.id}: {mark} {'; '.join(r.failures)}")

    evaluation = ev.evaluate_version(name, version, champion, dataset.name, cases, answer_with,
                                     lambda n: registry.get_version(name, n).agent.model_id, reference, judge,
                                     ev.EvaluationGates(min_pass_rate, max_drop, max_cost, max_p95_ms), show)
    uri = ev.record_evaluation(registry, objects, conn.resources.artifact_bucket.name, evaluation,
                               actor or conn.clients.caller_identity()["Arn"])
    if as_json:
        emit_json({**evaluation.to_dict(), "uri": uri})
    else:
        for g in evaluation.gates:
            out.print(f"  {g.describe()}")
        out.print(f"{name} v{version}: evaluation {'passed' if evaluation.passed else 'failed'} ({uri})")
    if not evaluation.passed:
        raise typer.Exit(ExitCode.GATE_FAILED)


@handles_errors
def agent_evaluate_rollout(
    name: str = typer.Argument(..., help="The agent, e.g. engagement-analyst."),
    actor: Optional[str] = typer.Option(None, "--actor", help="Who acts (default: the caller's identity)."),
    env: str = ENV_OPT, aws: bool = AWS_OPT, project_dir: Optional[Path] = PROJECT_OPT, as_json: bool = JSON_OPT,
) -> None:
    """Apply the agent's online gates to the calls of its rollout's current step: error_rate,
    latency_p95_ms, cost_per_call_usd and their *_vs_champion deltas, from the audited calls (plus
    the feedback gates). All pass with the bake done: the rollout advances; a gate fails: it rolls
    back (exit 3) and an alert goes to the environment's topic; otherwise it holds. Evaluating again
    without new calls changes nothing.

    Examples:

      stagewise agent evaluate-rollout engagement-analyst
      stagewise agent evaluate-rollout engagement-analyst --json
    """

    conn = connect(env, aws=aws, project_dir=project_dir)
    objects = ObjectStore(conn.clients.client("s3"))
    who = actor or conn.clients.caller_identity()["Arn"]
    decision, observations = agent_serving.evaluate_rollout(
        registry_of(conn), objects, conn.resources.data_bucket.name, name, actor=who,
        sns=conn.clients.client("sns"), topic_arn=conn.resources.alert_topic_arn, environment=env)
    if as_json:
        emit_json({"agent": name, "outcome": decision.outcome, "reason": decision.reason,
                   "observations": {k: {"value": v, "samples": n} for k, (v, n) in observations.items()},
                   "gates": [g.model_dump() for g in decision.results], "serving": decision.model.serving()})
    else:
        for g in decision.results:
            out.print(f"  {g.describe()}")
        out.print(f"{name}: {decision.outcome.replace('_', ' ')}" + (f" ({decision.reason})" if decision.reason else ""))
    if decision.outcome == "rolled_back":
        raise typer.Exit(ExitCode.GATE_FAILED)
