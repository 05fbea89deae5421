"""``stagewise run`` and ``stagewise score``: one pipeline run from the terminal, with progress, the
run table, ``--json`` and ``--resume``; the run's journal makes an interrupted run resumable."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from stagewise.pipeline import run_cost, spec_store
from stagewise.pipeline.journal import RunJournal
from stagewise.pipeline.spec import builtin_spec_names, load_spec
from stagewise.platform.cli import AWS_OPT, JSON_OPT, PROJECT_OPT, emit_json, err, fail, handles_errors, out
from stagewise.platform.contract import RESUMABLE, Env, ExitCode
from stagewise.platform.runtime.embedded import stagewise_home
from stagewise.platform.runtime.environment import connect
from stagewise.platform.runtime.objects import ObjectStore, sha256_file
from stagewise.registry.dynamodb import registry_of
from stagewise.registry.runlock import DEFAULT_TTL_SECONDS, RunLease, describe

DATA_OPT = typer.Option(None, "--data", "-d", help="Dataset (parquet or CSV), or an s3:// URI. [default: data/customers.parquet]")
MODEL_OPT = typer.Option(None, "--model", "-m", help="A spec YAML's path, a built-in spec's name, or a registered model's name "
                         "(its champion's spec). [default: engagement]")
RUN_ENV_OPT = typer.Option(None, "--env", "-e", help="Environment (stack): dev, test or prod. [default: dev]")
RUN_ACTOR_OPT = typer.Option(None, "--actor", help="Who runs it, for the audit (default: the assumed role's identity).")
PORT_OPT = typer.Option(None, "--port", help="Port for the embedded AWS if it has to be started.")
RESUME_OPT = typer.Option(
    None, "--resume", metavar="RUN_ID|last",
    help="Finish an interrupted run (killed, SIGTERM, AWS unreachable) under its run id, with the model, data and "
    "environment it started with; `last` is the latest unfinished run. Steps are idempotent: the result is what an "
    "uninterrupted run would have made (no duplicate version, rollout counted once).",
)
WAIT_OPT = typer.Option(
    0.0, "--wait", metavar="SECONDS", min=0,
    help="If another run is working on this model in this environment, wait up to SECONDS for it to finish "
    "(default: refuse at once with exit 6).",
)
EXECUTOR_OPT = typer.Option(
    "in-process", "--executor", metavar="in-process|state-machine",
    help="in-process (default, fastest): the steps run in this process. state-machine: an execution of the "
    "environment's Step Functions state machine, its tasks on ECS Fargate (on the embedded AWS: local processes), "
    "as deployed; progress from the execution's history, the same run table and exit codes; --resume redrives.",
)
EXECUTORS = ("in-process", "state-machine")
DEFAULT_DATA, DEFAULT_MODEL, DEFAULT_ENV = Path("data/customers.parquet"), "engagement", "dev"


@handles_errors
def run(
    data: Optional[Path] = DATA_OPT, model: Optional[str] = MODEL_OPT, env: Optional[str] = RUN_ENV_OPT, aws: bool = AWS_OPT,
    actor: Optional[str] = RUN_ACTOR_OPT, port: Optional[int] = PORT_OPT, project_dir: Optional[Path] = PROJECT_OPT,
    resume: Optional[str] = RESUME_OPT, wait: float = WAIT_OPT, executor: str = EXECUTOR_OPT, as_json: bool = JSON_OPT,
) -> None:
    """Run the pipeline: ingest, validate, train, evaluate, register, score, rollout, publish.

    A new version that passes its gates becomes champion (the first), challenger at the first step
    of the rollout plan, or candidate (while another rollout is in progress). Without --aws it runs
    against the embedded AWS (started if needed, and left running so that `stagewise registry ...`
    can read the result; stop it with `stagewise local down`).

    One run at a time per model and environment: a second run (another terminal, the schedule)
    refuses with exit 6, or waits with --wait SECONDS.

    Exit codes: 0 ok, 1 a step failed, 2 validation failed, 3 gate failed, 4 bad input, 5 AWS
    unreachable, 6 another run is working on the model, 143 stopped by SIGTERM. After 1, 5 or 143
    (or a crash), `--resume RUN_ID` finishes the run.

    Examples:

      stagewise run --data data/customers.parquet
      stagewise run --model churn --env test --json
      stagewise run --resume last
      stagewise run --model churn --wait 600
      stagewise run --executor state-machine --data data/customers.parquet
    """
    from stagewise.pipeline.definition import PIPELINE  # deferred: the steps import pandas, XGBoost and scikit-learn (~2 s)

    if executor not in EXECUTORS:
        fail(f"--executor {executor!r} is not one of {', '.join(EXECUTORS)}", ExitCode.BAD_INPUT, as_json)
    if executor == "state-machine":
        _execute_on_state_machine(PIPELINE, data, model, env, aws, port, project_dir, as_json, resume)
    _execute(PIPELINE, data, model, env, aws, actor, port, project_dir, as_json, resume, wait)


@handles_errors
def score(
    data: Optional[Path] = DATA_OPT, model: Optional[str] = MODEL_OPT, env: Optional[str] = RUN_ENV_OPT, aws: bool = AWS_OPT,
    actor: Optional[str] = RUN_ACTOR_OPT, port: Optional[int] = PORT_OPT, project_dir: Optional[Path] = PROJECT_OPT,
    resume: Optional[str] = RESUME_OPT, wait: float = WAIT_OPT, executor: str = EXECUTOR_OPT, as_json: bool = JSON_OPT,
) -> None:
    """Score with the current rollout, without training: ingest, validate, score, rollout, publish.

    Each run counts toward the bake of the rollout in progress; the controller then advances,
    holds or rolls back on the online gates, so repeated scoring runs walk a challenger through
    its plan. Exit codes as `stagewise run`; `--resume RUN_ID` finishes an interrupted run.

    Examples:

      stagewise score --data week2.parquet --env prod
      stagewise score --model my-model --data new.csv --json
    """
    from stagewise.pipeline.definition import SCORING  # deferred: the steps import pandas, XGBoost and scikit-learn (~2 s)

    if executor != "in-process":
        fail(f"stagewise score runs in-process only (--executor {executor!r}): the stack deploys the training "
             "pipeline's state machine, not a scoring one", ExitCode.BAD_INPUT, as_json,
             hint="drop --executor, or run the whole pipeline with `stagewise run --executor state-machine`")
    _execute(SCORING, data, model, env, aws, actor, port, project_dir, as_json, resume, wait)


def _execute(pipeline: Any, data: Optional[Path], model: Optional[str], env: Optional[str], aws: bool, actor: Optional[str],
             port: Optional[int], project_dir: Optional[Path], as_json: bool, resume: Optional[str] = None,
             wait: float = 0.0) -> None:
    # deferred: the runner and the steps import pandas, XGBoost and scikit-learn (~2 s); `--help` needs none of it
    from stagewise.pipeline.runner import RunInterrupted, new_run_id, run_pipeline, sigterm_interrupts
    from stagewise.pipeline.steps import RunContext  # deferred: see above

    command = "run" if pipeline.name == "stagewise" else "score"
    runs_dir = stagewise_home() / "runs"
    journal = None
    if resume:
        journal = RunJournal.load(runs_dir, resume)  # a JournalError exits with its own code (4, or 6: still running)
        journal.check_resumable(command)
        data, model, env, aws = _resumed_arguments(journal, data, model, env, aws, as_json)
    data, model, env = data or DEFAULT_DATA, model or DEFAULT_MODEL, env or DEFAULT_ENV
    source = _data_source(data, as_json)
    if journal is not None and journal.doc.get("data_sha256") and not source.startswith("s3://"):

        if sha256_file(Path(source)) != journal.doc["data_sha256"]:
            fail(f"{source} changed since run {journal.run_id} read it (sha256 differs): it cannot be resumed",
                 ExitCode.BAD_INPUT, as_json, hint="start a new run without --resume")

    registered = not spec_store.is_spec_path(model) and model not in builtin_spec_names()
    spec = None if registered else load_spec(model)  # a bad spec file fails before anything starts
    with err.status(f"connecting to {env} ({'AWS' if aws else 'embedded AWS'})"):
        conn = connect(env, aws=aws, project_dir=project_dir, start_embedded=True, provision=True, port=port)
        identity = conn.clients.caller_identity()
    if spec is None:  # a model trained from its own spec file, named by its registered name

        spec = spec_store.resolve_spec(model, registry_of(conn), ObjectStore(conn.clients.client("s3")))
    run_id = journal.run_id if journal else new_run_id()
    lease = RunLease(registry_of(conn).store, spec.name, run_id, command, holder=actor or identity["Arn"],
                     ttl=float(os.environ.get(Env.RUN_LOCK_SECONDS, DEFAULT_TTL_SECONDS)))
    waiting = None if as_json else (lambda held: err.print(f"[yellow]waiting[/] up to {wait:.0f} s for "
                                                           f"{describe(held, time.time())} to finish"))
    with lease.held(wait, on_wait=waiting):  # nothing is read or written for the run before its model is locked
        workdir = stagewise_home() / "runs" / run_id
        workdir.mkdir(parents=True, exist_ok=True)
        if journal is None:
            spec_ref = str(Path(model).resolve()) if Path(model).is_file() else model  # resumable from any folder
            journal = RunJournal.create(workdir, run_id, command, spec_ref, source, env, aws)
        else:
            journal.resume()
        ctx = RunContext(
            run_id=run_id, settings=conn.settings, resources=conn.resources, clients=conn.clients, spec=spec,
            data_source=source, workdir=workdir, actor=actor or identity["Arn"],
        )
        where = f"embedded AWS {conn.clients.target.endpoint_url}" if conn.embedded else "AWS"
        if not as_json:
            out.print(f"[bold]stagewise {command}[/] {run_id}{' (resumed)' if resume else ''} · [cyan]{env}[/] "
                      f"account {identity['Account']} ({conn.settings.region}, {where}) · model [bold]{spec.name}[/]")

        def track(name: str, phase: str, rec: Any) -> None:
            if phase == "start":
                ingested = ctx.results.ingest
                journal.update(step=name, data_sha256=ingested.data_sha256 if ingested else journal.doc.get("data_sha256"))

        requests_before = Counter(conn.clients.requests)
        try:
            with sigterm_interrupts():
                result = _run_with_progress(ctx, lambda c, **kw: run_pipeline(c, pipeline, **kw), quiet=as_json, track=track)
        except (RunInterrupted, KeyboardInterrupt) as e:
            code = ExitCode.SIGTERM if isinstance(e, RunInterrupted) else ExitCode.INTERRUPTED
            what = "SIGTERM" if isinstance(e, RunInterrupted) else "Ctrl-C"
            journal.update(status="interrupted", exit_code=code, error=f"{what} during step {journal.doc['step']}")
            fail(f"run {run_id} stopped by {what} during step {journal.doc['step']}; nothing half-done is visible",
                 code, as_json, hint=f"finish it with `stagewise {command} --resume {run_id}`", run_id=run_id, status="interrupted")
        status = "succeeded" if result.exit_code == 0 else "failed" if result.exit_code in RESUMABLE else "rejected"
        journal.update(status=status, exit_code=result.exit_code, error=result.error)
        doc = result.to_dict()
        _cost_into(doc, conn, spec.name, run_id, _in_process_cost(doc, pipeline, conn, requests_before), as_json,
                   publish=result.exit_code != ExitCode.AWS_UNREACHABLE)
        doc["outputs"] = {"workdir": str(workdir), "journal": str(journal.path)}
        if result.exit_code in RESUMABLE:
            doc["resume"] = f"stagewise {command} --resume {run_id}"
        if as_json:
            emit_json(doc)
        else:
            _report(result, doc, ctx)
            if "resume" in doc:
                err.print(f"[dim]hint:[/] fix the cause, then finish this run with `{doc['resume']}`")
        raise typer.Exit(result.exit_code)


def _in_process_cost(doc: dict[str, Any], pipeline: Any, conn: Any, requests_before: Counter[str]) -> Any:
    """What the in-process run would cost on Fargate Spot (``run_cost.in_process_cost``): its steps'
    seconds by task group at the stack's task sizes, its S3 and DynamoDB requests."""
    from stagewise.pipeline.definition import TASK_DEFINITIONS  # deferred: see run()
    from stagewise.platform.declarations import task_size  # deferred: see run()

    groups = {st.name: g for g, steps in pipeline.task_groups() for st in steps}
    sizes = {g: task_size(conn.settings.task_sizes, TASK_DEFINITIONS[g]) for g in set(groups.values())}
    score = next((st["summary"] for st in doc["steps"] if st["name"] == "score" and st["summary"]), {})
    partitions = int((score.get("partitions") or {}).get("count") or 1)
    requests = Counter(conn.clients.requests)
    requests.subtract(requests_before)
    return run_cost.in_process_cost({st["name"]: st["seconds"] for st in doc["steps"]}, groups, sizes, partitions,
                                    +requests, run_cost.AwsPrices.load(conn.settings.prices))


def _cost_into(doc: dict[str, Any], conn: Any, model: str, run_id: str, cost: Any, as_json: bool, publish: bool = True) -> None:
    """Put the run's cost in ``doc["cost"]``, publish ``RunCostUSD`` and, over the stack's budget, the
    alert (into ``doc["alerts"]``); a cost that cannot be published leaves the run's outcome as it is,
    and a run that stopped because AWS could not be reached does not try (``publish`` False)."""
    doc["cost"] = {**cost.to_dict(), "line": cost.line(), "budget_usd": conn.settings.cost_budget_per_run_usd}
    if not publish:
        return
    try:
        alert = run_cost.publish_cost(conn.clients.client("cloudwatch"), conn.clients.client("sns"),
                                      conn.resources.metrics_namespace, conn.resources.alert_topic_arn,
                                      conn.settings.environment, model, run_id, cost, conn.settings.cost_budget_per_run_usd)
    except (ClientError, BotoCoreError) as e:
        if not as_json:
            err.print(f"[yellow]the run's cost was not published: {e}[/]")
        return
    doc["cost"]["over_budget"] = alert is not None
    if alert:
        doc.setdefault("alerts", []).append(alert)


def _data_source(data: Path, as_json: bool) -> str:
    """``data`` as the run reads it: an ``s3://`` URI, or an existing local file's absolute path (exit 4 if missing)."""
    source = str(data)
    if not source.startswith("s3:/") and not data.is_file():
        fail(f"input data {data} does not exist", ExitCode.BAD_INPUT, as_json,
             hint=f"generate it with `stagewise data generate --out {data}`, or pass --data FILE")
    if source.startswith("s3:/") and not source.startswith("s3://"):
        return "s3://" + source[len("s3:/"):]  # Path() collapses the double slash
    return source if source.startswith("s3://") else str(data.resolve())


def _execute_on_state_machine(pipeline: Any, data: Optional[Path], model: Optional[str], env: Optional[str], aws: bool,
                              port: Optional[int], project_dir: Optional[Path], as_json: bool, resume: Optional[str]) -> None:
    """``stagewise run --executor state-machine`` (``pipeline/sfn_executor.py``); exits with the run's code."""
    from types import SimpleNamespace

    from stagewise.pipeline import sfn_executor as sx  # deferred: imports the steps' results (pandas, ~1 s)
    from stagewise.pipeline.runner import new_run_id  # deferred: see above
    from stagewise.pipeline.task_state import RunState  # deferred: see above

    model, env = model or DEFAULT_MODEL, env or DEFAULT_ENV
    if model not in builtin_spec_names():
        fail(f"--executor state-machine runs a built-in spec ({', '.join(builtin_spec_names())}), not {model!r}: the "
             "state machine's tasks read the spec from the job image", ExitCode.BAD_INPUT, as_json,
             hint="add the spec to pipeline/specs/ (it ships in the image), or run in-process")
    spec = load_spec(model)
    source = None if resume else _data_source(data or DEFAULT_DATA, as_json)
    started = time.monotonic()
    with err.status(f"connecting to {env} ({'AWS' if aws else 'embedded AWS'})"):
        conn = connect(env, aws=aws, project_dir=project_dir, start_embedded=True, provision=True, port=port)
        identity = conn.clients.caller_identity()
        if conn.embedded:  # the whole stack, as Pulumi declares it (a repeat is one call)
            from stagewise.pipeline.local_stack import provision_stack  # deferred: the ASL compiler and the dashboard builders

            provision_stack(conn)
    sfn, arn = conn.clients.client("stepfunctions"), conn.resources.state_machine_arn
    try:
        if resume:
            run_id = resume
            execution_arn = sx.resume_execution(sfn, arn, run_id, conn.embedded)
        else:
            run_id = new_run_id()
            uri = sx.stage_data(conn.clients.client("s3"), conn.resources.data_bucket.name, spec.name, run_id, source or "")
            execution_arn = sx.start_execution(sfn, arn, run_id, sx.execution_input(run_id, uri, model))
    except sx.ExecutorError as e:
        fail(str(e), ExitCode.BAD_INPUT, as_json)
    if not as_json:
        out.print(f"[bold]stagewise run[/] {run_id}{' (resumed)' if resume else ''} · [cyan]{env}[/] account "
                  f"{identity['Account']} · model [bold]{spec.name}[/] · state machine execution "
                  f"{execution_arn.rsplit(':', 1)[-1]}")
    on_line = (lambda _: None) if as_json else (lambda line: err.print(f"[dim]{time.monotonic() - started:7.1f} s[/] {line}"))
    followed = sx.follow(sfn, execution_arn, on_line=on_line)
    state = RunState.load(conn.clients.client("s3"), conn.resources.data_bucket.name, spec.name, run_id)
    result = sx.run_result(followed.execution, state, pipeline, env, identity["Account"], started)
    doc = result.to_dict()
    doc.update(executor="state-machine", execution_arn=execution_arn)
    try:  # the run's outcome stands whether or not its cost can be read
        tasks = run_cost.run_tasks(conn.clients.client("ecs"), conn.resources.compute.cluster, run_id)
    except ClientError as e:
        err.print(f"[yellow]the run's cost is unknown: ECS would not list its tasks ({e})[/]")
        tasks = []
    cost = run_cost.run_cost(tasks, followed.events, conn.embedded, run_cost.AwsPrices.load(conn.settings.prices),
                             conn.clients.requests)
    _cost_into(doc, conn, spec.name, run_id, cost, as_json, publish=result.exit_code != ExitCode.AWS_UNREACHABLE)
    if result.exit_code in RESUMABLE:
        doc["resume"] = f"stagewise run --executor state-machine --resume {run_id}"
    if as_json:
        emit_json(doc)
    else:
        _report(result, doc, SimpleNamespace(spec=spec, settings=conn.settings, clients=conn.clients))
        if "resume" in doc:
            err.print(f"[dim]hint:[/] fix the cause, then finish this run with `{doc['resume']}`")
    raise typer.Exit(result.exit_code)


def _resumed_arguments(journal: Any, data: Optional[Path], model: Optional[str], env: Optional[str], aws: bool,
                       as_json: bool) -> tuple[Path, str, str, bool]:
    """The data, model, environment and target a resumed run was started with; an option given
    now that differs from them is refused (exit 4)."""
    d = journal.doc
    given = {"--model": (model, d["model"]), "--env": (env, d["env"]),
             "--data": (None if data is None else str(data) if str(data).startswith("s3:/") else str(data.resolve()), d["data"])}
    for flag, (now, then) in given.items():
        if now is not None and now != then and not (flag == "--data" and now.replace("s3:/", "s3://", 1) == then):
            fail(f"run {journal.run_id} was started with {flag} {then}, not {now}", ExitCode.BAD_INPUT, as_json,
                 hint="resume it without that option, or start a new run without --resume")
    if aws != d["aws"] and aws:
        fail(f"run {journal.run_id} ran on the embedded AWS; it cannot be resumed on AWS", ExitCode.BAD_INPUT, as_json)
    return Path(d["data"]), d["model"], d["env"], bool(d["aws"])


def _run_with_progress(ctx: Any, run_pipeline: Callable[..., Any], quiet: bool,
                       track: Callable[[str, str, Any], None] = lambda *_: None) -> Any:
    if quiet:
        return run_pipeline(ctx, on_step=track)
    progress = Progress(
        SpinnerColumn(), TextColumn("[bold]{task.fields[step]:<9}"), BarColumn(), TaskProgressColumn(),
        TextColumn("{task.description}"), TimeElapsedColumn(), console=err, transient=True,
    )
    tasks: dict[str, Any] = {}
    current: dict[str, str] = {}

    def on_step(name: str, phase: str, rec: Any) -> None:
        track(name, phase, rec)
        if phase == "start":
            tasks[name] = progress.add_task("", total=None, step=name)
            current["step"] = name
        else:
            progress.update(tasks[name], total=1, completed=1, description=f"{rec.status} in {rec.seconds:.1f} s")

    def report(done: int, total: int, message: str) -> None:
        task = tasks.get(current.get("step", ""))
        if task is not None:
            progress.update(task, completed=done, total=total if total > 1 else None, description=message)

    ctx.progress = report
    with progress:
        return run_pipeline(ctx, on_step=on_step)


_STATUS_STYLE = {"succeeded": "green", "failed": "red", "stopped": "red", "skipped": "dim"}


def _report(result: Any, doc: dict[str, Any], ctx: Any) -> None:
    steps = Table(title="Steps")
    for col in ("step", "status", "seconds", "result"):
        steps.add_column(col, justify="right" if col == "seconds" else "left", overflow="fold")
    for rec in result.steps:  # each line from its step's result type (a failed step: its error)
        style = _STATUS_STYLE.get(rec.status, "")
        line = f"[red]{rec.line[:80]}[/]" if rec.status == "failed" else rec.line
        steps.add_row(rec.name, f"[{style}]{rec.status}[/]", f"{rec.seconds:.2f}", line)
    steps.add_row("[bold]total", "", f"[bold]{doc['seconds']:.2f}", "")
    out.print(steps)
    ev = next((s["summary"] for s in doc["steps"] if s["name"] == "evaluate" and s["summary"]), None)
    if ev:
        metrics = Table(title="Holdout metrics vs gates")
        for col in ("metric", "value", "best achievable", "gate", "rows", "outcome"):
            metrics.add_column(col, justify="right" if col == "rows" else "left")
        best = ev.get("best_achievable") or {}
        gates = {g["metric"]: g for g in ev["gates"]}
        # the holdout metrics, then the gates on other values (the champion comparison)
        rows = [(k, v, gates.get(k)) for k, v in ev["metrics"].items()]
        rows += [(g["metric"], g["value"], g) for g in ev["gates"] if g["metric"] not in ev["metrics"]]
        for k, v, g in rows:
            outcome = g["outcome"] if g else ""
            color = {"pass": "green", "fail": "red", "inconclusive": "yellow"}.get(outcome, "")
            metrics.add_row(k, "-" if v is None else f"{v:+.4f}" if k.endswith("_vs_champion") else f"{v:.4f}",
                            f"{best[k]:.4f}" if k in best else "-", f"{g['comparator']} {g['threshold']:g}" if g else "-",
                            f"{g['samples']:,}" if g else "-", f"[{color}]{outcome}[/]" if outcome else "-")
        out.print(metrics)
        champ = ev.get("champion")
        if champ and champ.get("note"):
            out.print(f"[dim]champion comparison vs v{champ['version']}: {champ['note']}[/]")
    reg = next((s["summary"] for s in doc["steps"] if s["name"] == "register" and s["summary"]), None)
    if reg:
        again = ", already registered by an identical earlier run" if not reg.get("created", True) else ""
        if reg["status"] == "rejected":
            out.print(f"version: [bold]{ctx.spec.name} v{reg['version']}[/] [red]rejected[/]{again}; what serves is unchanged. Failed:")
            for line in reg.get("failed_gates", []):
                out.print(f"  [red]✗[/] {line}")
        elif reg.get("held"):
            out.print(f"version: [bold]{ctx.spec.name} v{reg['version']}[/] registered but [yellow]held[/] (not rolled out){again}:")
            for line in reg["held"]:
                out.print(f"  [yellow]?[/] {line}")
            out.print(f"  roll it out by hand after a look: stagewise registry promote {ctx.spec.name} {reg['version']} --env {ctx.settings.environment}")
        else:
            out.print(f"version: [bold]{ctx.spec.name} v{reg['version']}[/] ({reg['status']}, {reg['stage']}{again}) "
                      f"sha256 {reg['artifact_sha256'][:16]}…")
    roll = next((s["summary"] for s in doc["steps"] if s["name"] == "rollout" and s["summary"]), None)
    if roll:
        sv = roll["serving"]
        line = f"serving: champion v{sv['champion']}"
        if sv.get("challenger"):
            where = "shadow" if sv["shadow"] else f"{sv['weight']:g}%"
            line += f", challenger v{sv['challenger']} at {where}"
            line += " (paused)" if sv.get("paused") else ""
        color = {"rolled_back": "red", "advanced": "green", "completed": "green"}.get(roll["outcome"], "yellow")
        out.print(f"{line} · rollout [{color}]{roll['outcome'].replace('_', ' ')}[/]" + (f": {roll['reason']}" if roll.get("reason") else ""))
    outputs = Table(show_header=False, box=None, title="Outputs", title_justify="left")
    outputs.add_column("what", no_wrap=True)
    outputs.add_column("where", overflow="fold")
    shown: dict[str, str] = {}
    for s in doc["steps"]:
        for key in ("predictions_uri", "shadow_predictions_uri", "artifact_uri", "baseline_uri", "result_uri", "data_docs_uri", "data_docs_local"):
            if s["summary"].get(key):
                shown[key.replace("_uri", "").replace("_", " ")] = str(s["summary"][key])
        if (s["summary"].get("review_queue") or {}).get("uri"):
            shown["review queue"] = s["summary"]["review_queue"]["uri"]
    for what, where in shown.items():
        outputs.add_row(what, where)
    out.print(outputs)
    if doc.get("cost"):
        budget = f" [red]over the budget of ${doc['cost']['budget_usd']:g}[/]" if doc["cost"].get("over_budget") else ""
        out.print(f"[bold]cost[/] {doc['cost']['line']}{budget}")
    for a in doc["alerts"]:
        out.print(f"[yellow]alert published[/] to {a.get('topic_arn')}: {a.get('subject')} {a.get('error', '')}")
    if doc["exit_code"]:
        err.print(f"[bold red]run failed[/] (exit {doc['exit_code']}): {doc['error']}")
        val = next((s for s in doc["steps"] if s["name"] == "validate"), None)
        for line in (val or {}).get("summary", {}).get("failed_expectations", []):
            err.print(f"  [red]✗[/] {line}")
    elif ctx.clients.target.embedded:
        out.print("[dim]the embedded AWS keeps running: try `stagewise registry list`; stop it with `stagewise local down`[/]")
