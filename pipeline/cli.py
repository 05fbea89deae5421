"""The ``stagewise`` command line.

    stagewise run             run the whole pipeline (starts the embedded AWS if needed)
    stagewise score           score with the current rollout, without training
    stagewise explain         why a row (a customer) got its prediction (version, SHAP contributions)
    stagewise review          a run's review queue: the rows most worth a human look
    stagewise query           SQL over the results catalog (DuckDB; Athena on AWS)
    stagewise promote         copy a champion to the next account (dev -> test -> prod)
    stagewise agent ...       register LLM-agent versions
    stagewise alerts ...      alert e-mails: subscribe, list, tail (embedded AWS)
    stagewise dashboard       the environment's dashboard as a local HTML page
    stagewise data generate   make the synthetic customer-engagement dataset
    stagewise registry ...    read the registry (list, show)
    stagewise local ...       the embedded AWS (up, down, status)

Exit codes: 0 success; 1 unexpected error; 2 validation failed; 3 gate failed; 4 bad input or
configuration; 5 AWS unreachable; 6 conflict (retry); 7 invalid transition.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from stagewise.platform.cli import AWS_OPT, ENV_OPT, JSON_OPT, emit_json, err, fail, handles_errors, out
from stagewise.platform.contract import ExitCode
from stagewise.platform.runtime.local_cli import local_app
from stagewise.monitoring.alerts_cli import alerts_app
from stagewise.monitoring.cli import dashboard_command
from stagewise.registry.cli import agent_app, registry_app

app = typer.Typer(
    name="stagewise",
    help="Stagewise: train, validate, register and score models on AWS - or on a laptop against an embedded AWS.\n\n"
    "Exit codes: 0 ok, 1 unexpected error, 2 validation failed, 3 gate failed, 4 bad input/config, 5 AWS unreachable, 6 conflict (retry), 7 invalid transition.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Datasets: the synthetic customer-engagement generator.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(registry_app, name="registry")
app.add_typer(agent_app, name="agent")
app.add_typer(alerts_app, name="alerts")
app.command("dashboard")(dashboard_command)
app.add_typer(local_app, name="local")


def _version_callback(value: bool) -> None:
    if value:
        from importlib.metadata import version

        out.print(f"stagewise {version('stagewise')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."),
) -> None:
    """Stagewise command line."""


@data_app.command("generate")
@handles_errors
def data_generate(
    rows: int = typer.Option(100_000, "--rows", "-n", min=1, help="Number of customers."),
    seed: int = typer.Option(7, "--seed", help="Random seed: the same seed gives the same file."),
    out_path: Path = typer.Option(Path("data/customers.parquet"), "--out", "-o", help="Output parquet file."),
    label_noise: float = typer.Option(0.0, "--label-noise", min=0.0, max=1.0,
                                      help="Share of rows whose label is replaced by noise (labels broken upstream)."),
    drift: str = typer.Option("", "--drift", help="Covariate shift FEATURE=SHIFT,...: numeric features move SHIFT "
                              "standard deviations; categorical/boolean ones get a SHIFT share of rows set to their last value."),
    as_json: bool = JSON_OPT,
) -> None:
    """Generate the customer-engagement dataset of a hybrid social/gig app (parquet)."""
    from stagewise.pipeline.generator import (
        best_achievable_r2, generate_customers, parse_drift, with_drift, with_label_noise, write_dataset,
    )

    try:
        shifts = parse_drift(drift)
    except ValueError as e:
        fail(str(e), ExitCode.BAD_INPUT, as_json)

    t = time.perf_counter()
    with err.status(f"generating {rows:,} customers (seed {seed})"):
        df = generate_customers(rows, seed)
        if label_noise:
            df = with_label_noise(df, label_noise, seed)
        if shifts:
            df = with_drift(df, shifts, seed)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        digest = write_dataset(df, out_path)
    doc = {
        "path": str(out_path), "rows": len(df), "columns": len(df.columns), "seed": seed, "sha256": digest,
        "bytes": out_path.stat().st_size, "best_achievable_r2": round(best_achievable_r2(df), 4),
        "seconds": round(time.perf_counter() - t, 2),
    }
    if as_json:
        emit_json(doc)
    else:
        out.print(f"wrote {doc['rows']:,} rows x {doc['columns']} columns to [bold]{out_path}[/] "
                  f"({doc['bytes'] / 1e6:.1f} MB, sha256 {digest[:12]}…) in {doc['seconds']} s; "
                  f"best achievable R² {doc['best_achievable_r2']}")


DATA_OPT = typer.Option(None, "--data", "-d", help="Dataset (parquet or CSV), or an s3:// URI. [default: data/customers.parquet]")
MODEL_OPT = typer.Option(None, "--model", "-m", help="A spec YAML's path, a built-in spec's name, or a registered model's name "
                         "(its champion's spec). [default: engagement]")
RUN_ENV_OPT = typer.Option(None, "--env", "-e", help="Environment (stack): dev, test or prod. [default: dev]")
RUN_ACTOR_OPT = typer.Option(None, "--actor", help="Who runs it, for the audit (default: the assumed role's identity).")
PORT_OPT = typer.Option(None, "--port", help="Port for the embedded AWS if it has to be started.")
PROJECT_OPT = typer.Option(None, "--project-dir", help="Folder with Pulumi.<env>.yaml (default: found from cwd).")
RESUME_OPT = typer.Option(
    None, "--resume", metavar="RUN_ID|last",
    help="Finish an interrupted run (killed, SIGTERM, AWS unreachable) under its run id, with the model, data and "
    "environment it started with; `last` is the latest unfinished run. Steps are idempotent: the result is what an "
    "uninterrupted run would have made (no duplicate version, rollout counted once).",
)
DEFAULT_DATA, DEFAULT_MODEL, DEFAULT_ENV = Path("data/customers.parquet"), "engagement", "dev"


@app.command("run")
@handles_errors
def run(
    data: Optional[Path] = DATA_OPT, model: Optional[str] = MODEL_OPT, env: Optional[str] = RUN_ENV_OPT, aws: bool = AWS_OPT,
    actor: Optional[str] = RUN_ACTOR_OPT, port: Optional[int] = PORT_OPT, project_dir: Optional[Path] = PROJECT_OPT,
    resume: Optional[str] = RESUME_OPT, as_json: bool = JSON_OPT,
) -> None:
    """Run the pipeline: ingest, validate, train, evaluate, register, score, rollout, publish.

    A new version that passes its gates becomes champion (the first), challenger at the first step
    of the rollout plan, or candidate (while another rollout is in progress). Without --aws it runs
    against the embedded AWS (started if needed, and left running so that `stagewise registry ...`
    can read the result; stop it with `stagewise local down`).

    Exit codes: 0 ok, 1 a step failed, 2 validation failed, 3 gate failed, 4 bad input, 5 AWS
    unreachable, 143 stopped by SIGTERM. After 1, 5 or 143 (or a crash), `--resume RUN_ID` finishes the run.
    """
    from stagewise.pipeline.definition import PIPELINE

    _execute(PIPELINE, data, model, env, aws, actor, port, project_dir, as_json, resume)


@app.command("score")
@handles_errors
def score(
    data: Optional[Path] = DATA_OPT, model: Optional[str] = MODEL_OPT, env: Optional[str] = RUN_ENV_OPT, aws: bool = AWS_OPT,
    actor: Optional[str] = RUN_ACTOR_OPT, port: Optional[int] = PORT_OPT, project_dir: Optional[Path] = PROJECT_OPT,
    resume: Optional[str] = RESUME_OPT, as_json: bool = JSON_OPT,
) -> None:
    """Score with the current rollout, without training: ingest, validate, score, rollout, publish.

    Each run counts toward the bake of the rollout in progress; the controller then advances,
    holds or rolls back on the online gates, so repeated scoring runs walk a challenger through
    its plan. Exit codes as `stagewise run`; `--resume RUN_ID` finishes an interrupted run.
    """
    from stagewise.pipeline.definition import SCORING

    _execute(SCORING, data, model, env, aws, actor, port, project_dir, as_json, resume)


RESUMABLE_EXITS = frozenset({1, 5, 130, 143})
"""Exit codes after which ``--resume`` can finish the run (2 and 3 are verdicts on the data or
the model: resuming would reach the same one)."""


def _execute(pipeline: Any, data: Optional[Path], model: Optional[str], env: Optional[str], aws: bool, actor: Optional[str],
             port: Optional[int], project_dir: Optional[Path], as_json: bool, resume: Optional[str] = None) -> None:
    from stagewise.pipeline.journal import JournalError, RunJournal
    from stagewise.pipeline.runner import RunInterrupted, new_run_id, run_pipeline, sigterm_interrupts
    from stagewise.pipeline.spec import load_spec
    from stagewise.pipeline.steps import RunContext
    from stagewise.platform.runtime.embedded import stagewise_home
    from stagewise.platform.runtime.environment import connect

    command = "run" if pipeline.name == "stagewise" else "score"
    runs_dir = stagewise_home() / "runs"
    journal = None
    if resume:
        try:
            journal = RunJournal.load(runs_dir, resume)
            journal.check_resumable(command)
        except JournalError as e:
            fail(str(e), ExitCode.CONFLICT if "still running" in str(e) else ExitCode.BAD_INPUT, as_json)
        data, model, env, aws = _resumed_arguments(journal, data, model, env, aws, as_json)
    data, model, env = data or DEFAULT_DATA, model or DEFAULT_MODEL, env or DEFAULT_ENV
    source = str(data)
    if not source.startswith("s3:/") and not data.is_file():
        fail(f"input data {data} does not exist", ExitCode.BAD_INPUT, as_json,
             hint=f"generate it with `stagewise data generate --out {data}`, or pass --data FILE")
    if source.startswith("s3:/") and not source.startswith("s3://"):
        source = "s3://" + source[len("s3:/"):]  # Path() collapses the double slash
    elif not source.startswith("s3://"):
        source = str(data.resolve())
    if journal is not None and journal.doc.get("data_sha256") and not source.startswith("s3://"):
        from stagewise.platform.runtime.objects import sha256_file

        if sha256_file(Path(source)) != journal.doc["data_sha256"]:
            fail(f"{source} changed since run {journal.run_id} read it (sha256 differs): it cannot be resumed",
                 ExitCode.BAD_INPUT, as_json, hint="start a new run without --resume")
    from stagewise.pipeline import spec_store
    from stagewise.pipeline.spec import builtin_spec_names

    registered = not spec_store.is_spec_path(model) and model not in builtin_spec_names()
    spec = None if registered else load_spec(model)  # a bad spec file fails before anything starts
    with err.status(f"connecting to {env} ({'AWS' if aws else 'embedded AWS'})"):
        conn = connect(env, aws=aws, project_dir=project_dir, start_embedded=True, provision=True, port=port)
        identity = conn.clients.caller_identity()
    if spec is None:  # a model trained from its own spec file, named by its registered name
        from stagewise.platform.runtime.objects import ObjectStore

        spec = spec_store.resolve_spec(model, conn.registry, ObjectStore(conn.clients.client("s3")))
    run_id = journal.run_id if journal else new_run_id()
    workdir = runs_dir / run_id
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
            journal.update(step=name, data_sha256=ctx.memo.get("data_sha256", journal.doc.get("data_sha256")))

    try:
        with sigterm_interrupts():
            result = _run_with_progress(ctx, lambda c, **kw: run_pipeline(c, pipeline, **kw), quiet=as_json, track=track)
    except (RunInterrupted, KeyboardInterrupt) as e:
        code = ExitCode.SIGTERM if isinstance(e, RunInterrupted) else ExitCode.INTERRUPTED
        what = "SIGTERM" if isinstance(e, RunInterrupted) else "Ctrl-C"
        journal.update(status="interrupted", exit_code=code, error=f"{what} during step {journal.doc['step']}")
        fail(f"run {run_id} stopped by {what} during step {journal.doc['step']}; nothing half-done is visible",
             code, as_json, hint=f"finish it with `stagewise {command} --resume {run_id}`", run_id=run_id, status="interrupted")
    status = "succeeded" if result.exit_code == 0 else "failed" if result.exit_code in RESUMABLE_EXITS else "rejected"
    journal.update(status=status, exit_code=result.exit_code, error=result.error)
    doc = result.to_dict()
    doc["outputs"] = {"workdir": str(workdir), "journal": str(journal.path)}
    if result.exit_code in RESUMABLE_EXITS:
        doc["resume"] = f"stagewise {command} --resume {run_id}"
    if as_json:
        emit_json(doc)
    else:
        _report(doc, ctx)
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


@app.command("query")
@handles_errors
def query(
    sql: str = typer.Argument(..., help='SQL over the results catalog, e.g. "SELECT * FROM at_risk LIMIT 5".'),
    max_rows: int = typer.Option(50, "--max-rows", min=1, help="Rows to print (--json prints them all)."),
    env: str = ENV_OPT, aws: bool = AWS_OPT, project_dir: Optional[Path] = PROJECT_OPT, as_json: bool = JSON_OPT,
) -> None:
    """Query the results catalog with SQL (DuckDB, over the same Parquet files Athena reads on AWS).

    Tables: <model>_results, one per model with published results (e.g. engagement_results:
    customer_id_hash, run_id, prediction, in_training, the features, the label; partitions
    run_date, model_version). Views: those the models' specs declare (`views:` in the spec; the
    engagement spec's high_value, at_risk, model_performance). New results objects are copied to
    $STAGEWISE_HOME/cache/<env> first. The table is cut to the terminal's width (--json has every
    column and row). Exit 4 if the SQL fails (the message names the tables and views there are).
    """
    from stagewise.pipeline import catalog, spec_store
    from stagewise.platform.runtime.objects import ObjectStore
    from stagewise.platform.runtime.embedded import stagewise_home
    from stagewise.platform.runtime.environment import connect

    conn = connect(env, aws=aws, project_dir=project_dir)
    objects = ObjectStore(conn.clients.client("s3"))
    with err.status("syncing the results catalog"):
        models = catalog.sync(objects, conn.resources.data_bucket.name, stagewise_home() / "cache" / env)
        views = catalog.views(spec_store.catalog_specs(conn.registry, objects))
    db = catalog.connect(models, views)
    try:
        columns, rows = catalog.query(db, sql, None if as_json else max_rows + 1)
    except catalog.QueryError as e:
        fail(str(e), ExitCode.BAD_INPUT, as_json, hint="tables and views: " + (", ".join(db.names()) or "none yet"))
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
    from stagewise.pipeline import spec_store
    from stagewise.pipeline.spec import load_spec
    from stagewise.platform.runtime.objects import ObjectStore

    if spec_store.is_spec_path(model):
        spec = load_spec(model)
        return spec.name, spec, lambda version: spec
    objects = ObjectStore(conn.clients.client("s3"))
    current = spec_store.resolve_spec(model, conn.registry, objects)  # raises for an unknown name
    return model, current, lambda version: spec_store.version_spec(objects, version) or current


@app.command("explain")
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
    """
    from stagewise.pipeline import explain as ex
    from stagewise.platform.runtime.objects import ObjectStore
    from stagewise.platform.runtime.embedded import stagewise_home
    from stagewise.platform.runtime.environment import connect
    from stagewise.platform.runtime.idhash import read_id_salt

    conn = connect(env, aws=aws, project_dir=project_dir)
    name, _, spec_of = _spec_lookup(conn, model)
    registry = conn.registry
    try:
        result = ex.explain(ObjectStore(conn.clients.client("s3")), conn.resources.data_bucket.name, name, spec_of,
                            lambda n: registry.get_version(name, n), read_id_salt(conn.clients, conn.resources).key,
                            entity_id, stagewise_home() / "cache", run_id)
    except ex.ExplainError as e:
        fail(str(e), ExitCode.BAD_INPUT, as_json, hint="check the id against the input file (ids as written there); --run RUN_ID explains another run")
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


@app.command("review")
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
    """
    import io

    import pandas as pd

    from stagewise.pipeline import explain as ex
    from stagewise.platform.runtime.objects import ObjectStore
    from stagewise.platform.runtime.environment import connect

    conn = connect(env, aws=aws, project_dir=project_dir)
    name, spec, _ = _spec_lookup(conn, model)
    objects, bucket = ObjectStore(conn.clients.client("s3")), conn.resources.data_bucket.name
    try:
        manifest = ex.latest_manifest(objects, bucket, name, run_id)
    except ex.ExplainError as e:
        fail(str(e), ExitCode.BAD_INPUT, as_json, hint="score the model first: stagewise run / stagewise score")
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


@agent_app.command("ask")
@handles_errors
def agent_ask(
    name: str = typer.Argument(..., help="The agent, e.g. engagement-analyst."),
    question: str = typer.Argument(..., help="What to ask, in plain words."),
    env: str = ENV_OPT, aws: bool = AWS_OPT, project_dir: Optional[Path] = PROJECT_OPT, as_json: bool = JSON_OPT,
) -> None:
    """Ask an analyst agent (its champion version): Bedrock's Converse API with the agent's prompt,
    model and tools (query_results, feature_statistics, explain_prediction).

    Needs --aws: the embedded AWS has no Bedrock runtime (exit 5); locally use the tools directly,
    `stagewise query` and `stagewise explain`.
    """
    from stagewise.pipeline import analyst, spec_store
    from stagewise.pipeline.spec import load_spec
    from stagewise.platform.runtime.objects import ObjectStore, S3Uri
    from stagewise.platform.runtime.embedded import stagewise_home
    from stagewise.platform.runtime.environment import connect
    from stagewise.platform.runtime.idhash import read_id_salt

    conn = connect(env, aws=aws, project_dir=project_dir)
    registry = conn.registry
    version = registry.champion(name)
    if version is None or version.agent is None:
        fail(f"{name!r} has no champion agent version", ExitCode.BAD_INPUT, as_json,
             hint="register one: stagewise agent register NAME --prompt FILE --model-id ID --tool query_results ...")
    if conn.embedded:
        fail("the embedded AWS has no Bedrock runtime, so the agent cannot call its model here", ExitCode.AWS_UNREACHABLE, as_json,
             hint="ask with --aws (Bedrock in the stack's account), or run its tools yourself: `stagewise query`, `stagewise explain`")
    objects = ObjectStore(conn.clients.client("s3"))
    uri = S3Uri.parse(version.agent.prompt_uri)
    prompt = objects.get_bytes(uri.bucket, uri.key, expect_sha256=version.agent.prompt_sha256).decode()
    tools = analyst.AnalystTools(
        objects, conn.resources.data_bucket.name, registry.get_version, registry.champion,
        read_id_salt(conn.clients, conn.resources).key, stagewise_home() / "cache" / env,
        spec_of=lambda v: spec_store.version_spec(objects, v) or load_spec(v.model),
        specs=lambda: spec_store.catalog_specs(registry, objects))
    answer = analyst.converse(conn.clients.client("bedrock-runtime"), version.agent, prompt, question, tools)
    if as_json:
        emit_json({"agent": name, "version": version.version, "answer": answer.text, "tool_calls": answer.tool_calls,
                   "turns": answer.turns, "usage": answer.usage})
    else:
        out.print(answer.text)
        err.print(f"[dim]{name} v{version.version} · {answer.turns} turn(s) · tools: "
                  f"{', '.join(c['tool'] for c in answer.tool_calls) or 'none'}[/]")


@app.command("promote")
@handles_errors
def promote(
    model: str = typer.Argument(..., help="Model or agent name, e.g. engagement."),
    version: int = typer.Argument(..., help="The version to promote: it must be the champion in --from."),
    source: str = typer.Option(..., "--from", help="Source environment (dev or test)."),
    target: str = typer.Option(..., "--to", help="Target environment (test or prod)."),
    approver: Optional[str] = typer.Option(None, "--approver", help="Who approved it (required for prod; audited in both)."),
    reason: Optional[str] = typer.Option(None, "--reason", help="Why (required for prod; audited in both)."),
    actor: Optional[str] = RUN_ACTOR_OPT,
    aws: bool = AWS_OPT,
    project_dir: Optional[Path] = PROJECT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Promote a champion version to the next account without retraining: copy and verify its
    artifact, baseline and validation report, register it with lineage, start the target's rollout.

    Runs as each environment's promoter role. Re-running is safe: a completed promotion is a no-op.
    """
    from stagewise.pipeline.spec import SpecError, load_spec
    from stagewise.platform.runtime.environment import connect
    from stagewise.platform.resources import environment_resources
    from stagewise.registry.promotion import promote as run_promotion
    from stagewise.registry.service import RolloutPlan
    from stagewise.stacks.settings import load_settings

    conns = {}
    for env in (source, target):
        role = environment_resources(load_settings(env, project_dir)).promoter_role_arn
        conns[env] = connect(env, aws=aws, project_dir=project_dir, provision=not aws, role_arn=role)
    settings = conns[target].settings
    try:
        steps = load_spec(model).rollout.plan_for(target, settings.rollout_plan)
    except SpecError:
        steps = settings.rollout_plan
    plan = RolloutPlan(steps=tuple(steps), bake_minutes=settings.bake.min_minutes, bake_runs=settings.bake.min_scoring_runs)
    result = run_promotion(conns[source], conns[target], model, version,
                           actor=actor or conns[source].clients.caller_identity()["Arn"],
                           approver=approver, reason=reason, plan=plan)
    if as_json:
        emit_json(result.to_dict())
        return
    again = " (already promoted: nothing to do)" if not result.created else ""
    out.print(f"{model} {source} v{result.source_version} -> {target} v{result.target_version} ({result.stage}){again}; "
              f"sha256 {result.artifact_sha256[:16]}… verified on {len(result.copied)} objects")


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


def _report(doc: dict[str, Any], ctx: Any) -> None:
    steps = Table(title="Steps")
    for col in ("step", "status", "seconds", "result"):
        steps.add_column(col, justify="right" if col == "seconds" else "left", overflow="fold")
    for s in doc["steps"]:
        style = _STATUS_STYLE.get(s["status"], "")
        steps.add_row(s["name"], f"[{style}]{s['status']}[/]", f"{s['seconds']:.2f}", _step_line(s))
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
    for a in doc["alerts"]:
        out.print(f"[yellow]alert published[/] to {a.get('topic_arn')}: {a.get('subject')} {a.get('error', '')}")
    if doc["exit_code"]:
        err.print(f"[bold red]run failed[/] (exit {doc['exit_code']}): {doc['error']}")
        val = next((s for s in doc["steps"] if s["name"] == "validate"), None)
        for line in (val or {}).get("summary", {}).get("failed_expectations", []):
            err.print(f"  [red]✗[/] {line}")
    elif ctx.clients.target.embedded:
        out.print("[dim]the embedded AWS keeps running: try `stagewise registry list`; stop it with `stagewise local down`[/]")


def _step_line(s: dict[str, Any]) -> str:
    if s["error"] and s["status"] == "failed":
        return f"[red]{s['error'][:80]}[/]"
    sm = s["summary"]
    match s["name"]:
        case "ingest":
            return f"{sm.get('bytes', 0) / 1e6:.1f} MB, sha256 {sm.get('data_sha256', '')[:12]}…" if sm else ""
        case "validate":
            return f"{sm.get('rows', 0):,} rows, {sm.get('evaluated', 0)} expectations, {sm.get('failed', 0)} failed" if sm else ""
        case "train":
            return f"{sm['train_rows']:,} train / {sm['holdout_rows']:,} holdout rows" if sm else ""
        case "evaluate":
            if not sm:
                return ""
            failed = [g["metric"] for g in sm.get("gates", []) if g["outcome"] == "fail" or (
                g["outcome"] == "inconclusive" and g.get("on_inconclusive", "reject") == "reject")]
            if failed:
                return "gates failed: " + ", ".join(failed)
            return f"inconclusive: {', '.join(sm['gates_held'])}" if sm.get("gates_held") else "gates passed"
        case "register":
            if not sm:
                return ""
            if sm["status"] == "rejected":
                return f"version {sm['version']} rejected"
            return f"version {sm['version']} held (not rolled out)" if sm.get("held") else f"version {sm['version']} registered as {sm['stage']}"
        case "score":
            if not sm:
                return ""
            parts = [f"{v['rows']:,} v{k}" + (" (shadow)" if v.get("shadow") else "") for k, v in sm["versions"].items()]
            queue = sm.get("review_queue")
            return f"{sm['rows_scored']:,} rows: " + ", ".join(parts) + (f"; {queue['rows']} to review" if queue else "")
        case "monitor":
            if not sm:
                return ""
            drifted = sorted({f for v in sm.get("versions", {}).values() for f in v["drifted"]})
            return f"drift in {', '.join(drifted)} (alert sent)" if drifted else "no drift"
        case "rollout":
            return sm.get("outcome", "").replace("_", " ") if sm else ""
        case "publish":
            return f"{sm['datapoints']} datapoints to {sm['namespace']}" if sm else ""
    return ""


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
