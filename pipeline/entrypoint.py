"""The container entrypoint: ``stagewise-task <group>`` runs one task group of the pipeline.

On AWS the state machine runs each task group of ``PIPELINE.task_groups()`` in its own ECS Fargate
(Spot) task, through the ``ecs:runTask.waitForTaskToken`` integration::

    stagewise-task validate --run-id R --data s3://bucket/key --model engagement --env dev --fan-out
    stagewise-task validate --run-id R --data ... --partition I --partitions N   (a Map, when N > 1)
    stagewise-task validate --run-id R --data ... --merge                        (then the verdict)
    stagewise-task train    --run-id R --data s3://bucket/key --model engagement --env dev
    stagewise-task score    --run-id R --data ... --partition I --partitions N   (a Map over partitions)
    stagewise-task report   --run-id R --data ...      (and ``claim``, a triggered run's first: claim_task)

The group's steps are the same step functions the local runner executes (``run_pipeline`` runs
them here too, so alerts and failure metrics are the same); only the hand-over between groups
differs: the steps' typed results travel in the run's ``state.json`` (``stagewise.pipeline
.task_state``). Contract with the state machine (the names are ``stagewise.platform.contract``'s
``Env`` and ``TaskError``; without a task token the callbacks are skipped and everything else is
the same):

    success         SendTaskSuccess(output = the group's JSON summary); ``validate`` adds
                    ``"partitions": [{"index": i, "count": N}, ...]``, N = ceil(rows / rows per
                    partition (default 1,000,000)), at least 1 and at most one per Parquet row group,
                    and ``"validated"``: false from ``--fan-out`` when the partitions are left to
                    a Map (each ``--partition`` task's output: ``partition`` and ``rows``; its
                    partial result is its document in S3) and the ``--merge`` task decides.
    failure         SendTaskFailure(error, cause <= 32,768 characters): TaskError.VALIDATION_FAILED
                    (exit 2), GATE_FAILED (exit 3), SPOT_INTERRUPTION (SIGTERM: Fargate Spot's
                    notice, exit 143), RUN_LOCKED (another run holds the model's run lock: exit 6),
                    STEP_FAILED (anything else: exit 1, or 4 for bad arguments, settings or spec, 5
                    for AWS unreachable, as the CLI).
    while working   SendTaskHeartbeat every ``Env.HEARTBEAT_SECONDS`` s (task definition: a fifth of the
                    stack's ``taskHeartbeatSeconds``, the state's HeartbeatSeconds; unset: 60 s).

One run at a time per model: each task takes the model's run lock for its run id (a later group
or a parallel partition of the same run re-enters it) and renews it while it works; the ``report``
group, or a failure the state machine does not retry, releases it; an abandoned run's lock lapses
(``stagewise.registry.runlock``). Re-running a group is idempotent: a group (or score partition) that already finished is not run
again, its recorded output is sent again; an interrupted one runs from its start (registration is
idempotent by token, the rollout controller by run id). Large objects are not in the state:
``train`` re-reads the input (its sha256 verified), a ``score`` partition downloads it and reads
only its own row groups. Logs: one JSON line on stdout per step start and end (summaries hold
counts, metrics and URIs, never row values), throttled progress lines, one line per outcome.

In the ECS task (``Env.IN_AWS`` is ``1``, set by the task definition) AWS calls use the task role's
credentials as they are; everywhere else ``connect`` assumes the stack's role (``--aws``) or
targets the embedded AWS.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from stagewise.monitoring import metrics as m
from stagewise.pipeline import claim_task
from stagewise.pipeline.definition import MAPPED_GROUPS, PIPELINE, Pipeline, Step
from stagewise.pipeline.inputs import local_input
from stagewise.pipeline.runner import StepRecord, run_pipeline
from stagewise.pipeline.scoring import plan_source, publish_predictions, rows_per_partition
from stagewise.pipeline.spec import load_spec
from stagewise.pipeline.steps import (
    GateRejected, RunContext, StepResults, ValidationFailed, input_reference, predictions_summary, review_queue,
)
from stagewise.pipeline.steps.results import Scored
from stagewise.pipeline.task_args import GROUPS, HEARTBEAT_SECONDS, UsageError, parse
from stagewise.pipeline.task_callbacks import MAX_OUTPUT_BYTES, Callbacks, Heartbeat, NoCallbacks, StepFunctionsCallbacks
from stagewise.pipeline.task_state import RunState, StateError, dumps, merge_score_partitions
from stagewise.platform.contract import Env, ExitCode, Sigterm, StagewiseError, TaskError
from stagewise.platform.resources import environment_resources
from stagewise.platform.runtime.aws import AwsClients, AwsTarget, utc_now
from stagewise.platform.runtime.embedded import stagewise_home
from stagewise.platform.runtime.environment import Environment, connect
from stagewise.platform.runtime.objects import sha256_file
from stagewise.registry.dynamodb import registry_of
from stagewise.registry.errors import Locked
from stagewise.registry.runlock import DEFAULT_TTL_SECONDS, RunLease
from stagewise.stacks.settings import load_settings

PROGRESS_SECONDS = 30.0

LAST_GROUP = list(GROUPS)[-1]

NEEDS_FRAME = frozenset({"train"})
"""Groups whose steps need the ingested input (``ctx.work.data_file``: downloaded to the task's disk
as a stream, its sha256 verified): train reads it
whole or by partitions (``training_data``). A score partition reads only its own row groups
(``stagewise.pipeline.scoring``)."""


# ------------------------------------------------------------------------------------- errors
class SpotInterruption(BaseException):
    """SIGTERM arrived: Fargate Spot's two-minute notice (or ``StopTask``).

    A ``BaseException``, like ``KeyboardInterrupt``, so that no ``except Exception`` in a step or
    in the runner mistakes it for a step failure: it unwinds to ``run_task``, which reports it.
    """


class TaskFailed(Exception):
    """The group failed and the failure was reported; ``exit_code`` is the process's exit code."""

    def __init__(self, error: str, cause: str, exit_code: int) -> None:
        super().__init__(f"{error}: {cause.splitlines()[0] if cause else ''}")
        self.error, self.cause, self.exit_code = error, cause, exit_code


# ------------------------------------------------------------------------------------ SIGTERM
_SIGTERM = Sigterm(SpotInterruption)
"""The task's SIGTERM handling (``contract.Sigterm``); ``main`` installs a fresh one."""


# ---------------------------------------------------------------------------------------- log
class _Log:
    """One JSON object per line on stdout, each carrying the run id and group."""

    def __init__(self, **base: Any) -> None:
        self.base = base

    def __call__(self, **fields: Any) -> None:
        line = {"ts": utc_now().isoformat(timespec="milliseconds"), **self.base, **fields}
        sys.stdout.write(dumps(line) + "\n")
        sys.stdout.flush()


def _publish_capacity_metric(ctx: RunContext, name: str, group: str) -> None:
    """Count a Spot interruption or an on-demand fallback of ``group`` (never raises: the task's
    outcome matters more than the metric)."""
    try:
        dims = {**m.model_dimensions(ctx.settings.environment, ctx.spec.name), "Step": group}
        m.publish(ctx.clients.client("cloudwatch"), [m.Datum(name, 1, "Count", dims)], ctx.resources.metrics_namespace)
    except Exception:  # noqa: BLE001
        pass


# ------------------------------------------------------------------------------------ the core
def run_task(group: str, ctx: RunContext, state: RunState, callbacks: Callbacks, merge: bool = False) -> dict[str, Any]:
    """Run the steps of task group ``group`` for ``ctx`` and report the outcome to ``callbacks``.

    Restores what earlier groups handed over (``state``), runs the group's steps with the local
    runner, records the hand-over, then sends ``success(output)``. A group (or score partition)
    that already finished is not run again: its recorded output is sent again.

    Args:
        group: ``validate``, ``train``, ``score`` or ``report``.
        ctx: a fresh context; for ``score``, ``ctx.partition = (index, count)``; for ``validate``,
            ``ctx.fan_out`` (the first task of a fanned-out validation) or ``ctx.partition`` (one
            task of its Map).
        state: the run's state, as loaded at the start of the task.
        callbacks: where to report (Step Functions, or ``NoCallbacks``).
        merge: the validate group's merge task (its partitions' results merged, published, decided).

    Returns:
        The output sent with ``success``.

    Raises:
        TaskFailed: the group failed (``ValidationFailed`` -> exit 2, ``GateRejected`` -> 3,
            SIGTERM -> 143, anything else -> 1); the failure was sent to ``callbacks`` first.
    """
    if group not in GROUPS:
        raise ValueError(f"unknown task group {group!r}; one of {', '.join(GROUPS)}")
    partition = (ctx.partition or (0, 1)) if group in MAPPED_GROUPS else ctx.partition
    log = _Log(run_id=ctx.run_id, group=group, **({"partition": list(partition)} if partition else {}))
    interval = float(os.environ.get(Env.HEARTBEAT_SECONDS, HEARTBEAT_SECONDS))
    current = {"step": None}
    t0 = time.perf_counter()
    log(event="group", status="started")
    failure: TaskFailed | None = None
    output: dict[str, Any] = {}
    if os.environ.get(Env.CAPACITY_PROVIDER) == "FARGATE":  # the state machine's on-demand fallback
        _publish_capacity_metric(ctx, m.ON_DEMAND_FALLBACKS, group)
    with Heartbeat(callbacks, interval, log, _SIGTERM):
        try:
            done = state.finished_partition(group, *partition) if partition else state.finished(group)
            done = done or (state.fanned_out() if ctx.fan_out else None)
            if done is not None:
                log(event="group", status="skipped", reason="already finished; sending its recorded output again")
                output = done
            else:
                _restore(group, ctx, state, later=bool(partition) or merge)
                result, raised = _run_steps(group, ctx, log, current, only_validate=group == "validate" and (bool(partition) or merge))
                if result.exit_code != 0:
                    raise _task_failure(group, ctx, result, raised)
                output = _output(group, ctx, result, state, partition)
                with _SIGTERM.deferred():
                    _record(group, ctx, state, output, partition, result)
        except SpotInterruption:
            where = f"during step {current['step']}" if current["step"] else "before its steps started"
            with _SIGTERM.deferred():
                _publish_capacity_metric(ctx, m.SPOT_INTERRUPTIONS, group)
            failure = TaskFailed(TaskError.SPOT_INTERRUPTION, (
                f"SIGTERM received {where} of group {group} (run {ctx.run_id}): Fargate Spot reclaimed the task or it "
                "was stopped. The group stopped cleanly without recording a result; re-running it is safe "
                "(finished groups are skipped, the registry's register step is idempotent)."
            ), ExitCode.SIGTERM)
        except TaskFailed as e:
            failure = e
        except Exception as e:  # noqa: BLE001 - restoring or recording the state failed
            failure = TaskFailed(TaskError.STEP_FAILED, (
                f"group {group} of run {ctx.run_id} failed: {type(e).__name__}: {e}\n\n{traceback.format_exc(limit=8)}"
            ), ExitCode.FAILED)
            with _SIGTERM.deferred():
                ctx.send_alert(ctx.alert(
                    "step.failed", f"Task group {group} failed", f"{type(e).__name__}: {e}",
                    f"Read the error above and the task's log; fix the cause and re-run the group (stagewise-task "
                    f"{group} --run-id {ctx.run_id} ...): finished groups are skipped, registration is idempotent.",
                    version=ctx.results.register.version if ctx.results.register else None,
                ))
    # the heartbeat thread has stopped: the outcome is the last callback of the task
    seconds = round(time.perf_counter() - t0, 3)
    with _SIGTERM.deferred():
        if failure is not None:
            log(event="group", status="failed", error=failure.error, exit_code=failure.exit_code, seconds=seconds,
                cause=failure.cause[:4000])
            _notify(log, callbacks.failure, failure.error, failure.cause)
        else:
            _notify(log, callbacks.success, output)
            log(event="group", status="succeeded", seconds=seconds, output=output)
        _SIGTERM.disarm()  # reported: a later SIGTERM changes nothing
    if failure is not None:
        raise failure
    return output


def _restore(group: str, ctx: RunContext, state: RunState, later: bool = False) -> None:
    """Put what earlier groups handed over back into ``ctx``: their steps' results, durations, the
    input frame (``NEEDS_FRAME``); for ``report``, the score partitions merged and published; for
    a later task of a fanned-out validation (``later``: a partition, or the merge), what its first
    task recorded, and for the merge every partition's partial result."""
    doc = state.doc
    if group == "validate" and later:
        if state.fanned_out() is None:
            raise StateError(f"run {ctx.run_id} has no fanned-out validation in {state.uri}: run `stagewise-task validate "
                             f"--fan-out --run-id {ctx.run_id} ...` first")
        if ctx.partition is None:  # the merge
            ctx.work.validation_partials = [d["partial"] for d in state.partitions("validate")]
    elif group != "validate" and state.finished("validate") is None:
        raise StateError(
            f"run {ctx.run_id} has no validated input in {state.uri}: run `stagewise-task validate --run-id "
            f"{ctx.run_id} ...` first"
        )
    if group != "validate" or later:
        if doc.get("spec_digest") != ctx.spec.digest() or doc.get("environment") != ctx.settings.environment:
            raise StateError(
                f"run {ctx.run_id} was validated with another model spec or environment than this task's "
                "(was the image replaced mid-run?); start a new run"
            )
    ctx.results = StepResults.from_json(doc.get("results", {}))
    ctx.durations.update(doc["durations"])
    if group in NEEDS_FRAME:
        ingested = ctx.needs("ingest")
        path = local_input(ctx.objects, ingested.data_uri, ingested.data_sha256, ingested.data_name, ctx.workdir)  # streamed
        st = path.stat()
        ctx.work.data_file, ctx.work.data_file_stamp = path, (st.st_size, st.st_mtime_ns)  # train reads it (training_data)
    if group == "report":
        docs = state.score_partitions()
        ctx.results.score = publish_score_partitions(ctx, docs, started_at=doc.get("created_at"))
        ctx.durations["score"] = max(d["durations"].get("score", 0.0) for d in docs)  # the Map's wall time


def publish_score_partitions(ctx: RunContext, docs: list[dict[str, Any]], started_at: str | None = None) -> Scored:
    """Publish what the Map's partitions staged (``scoring.publish_predictions``): the first thing
    the report group does, once every partition has finished. Idempotent (a published run is left
    as it is). ``started_at``: the run's ``state.json`` ``created_at`` (the results' date
    partition when the run id does not carry the time).

    Returns:
        The whole run's score result, as its manifest records it.
    """
    merged = merge_score_partitions(docs)
    results = [Scored.model_validate(d["result"]) for d in docs]
    parts = [{"index": d["output"]["partition"]["index"], "rows_scored": r.rows_scored, "staged_uri": r.staged_uri,
              "staged_shadow_uri": r.staged_shadow_uri, "staged_results": r.staged_results} for d, r in zip(docs, results)]
    fields = merged.handover() | predictions_summary(ctx.data_bucket, ctx.spec.name, ctx.run_id, len(docs),
                                                     any(p["staged_shadow_uri"] for p in parts))
    queue = review_queue(ctx.spec, [r.review_candidates for r in results])
    if queue is not None:
        fields["review_queue"] = {"rows": len(queue), "reasons": queue["reason"].value_counts().to_dict()}
    scored = Scored.model_validate(fields)
    manifest = publish_predictions(ctx.objects, ctx.data_bucket, ctx.spec.name, ctx.run_id, parts, scored.handover(),
                                   scored.summary(), data=input_reference(ctx.needs("ingest")), started_at=started_at,
                                   review_queue=queue)
    return Scored.model_validate(manifest["memo"])  # what was published (an earlier attempt's, if one got there first)


def _run_steps(group: str, ctx: RunContext, log: _Log, current: dict[str, Any], only_validate: bool = False) -> tuple[Any, dict[str, Any]]:
    """The group's steps through the local runner (same alerts and failure metrics), each step's
    exception kept so the failure can be reported with its type, alert and traceback
    (``only_validate``: the validate step alone, for a validation partition or merge task)."""
    failure: dict[str, Any] = {}

    def keep(run: Any) -> Any:
        def wrapped(c: RunContext) -> dict[str, Any]:
            try:
                return run(c)
            except Exception as e:
                failure.update(exc=e, traceback=traceback.format_exc(limit=8))
                raise
        return wrapped

    last = {"t": 0.0}

    def progress(done: int, total: int, message: str) -> None:
        now = time.monotonic()
        if now - last["t"] >= PROGRESS_SECONDS or (total > 1 and done == total):
            last["t"] = now
            log(step=current["step"], status="progress", done=done, total=total, message=message)

    def on_step(name: str, phase: str, rec: StepRecord | None) -> None:
        if phase == "start":
            current["step"] = name
            last["t"] = time.monotonic()
            log(step=name, status="started")
        else:
            assert rec is not None
            log(step=name, status=rec.status, seconds=round(rec.seconds, 3), summary=rec.summary, error=rec.error)

    ctx.progress = progress
    steps = tuple(Step(st.name, st.description, keep(st.run), st.task) for st in GROUPS[group]
                  if not only_validate or st.name == "validate")
    result = run_pipeline(ctx, Pipeline(f"{PIPELINE.name}-{group}", steps), on_step=on_step)
    current["step"] = None
    return result, failure


def _task_failure(group: str, ctx: RunContext, result: Any, failure: dict[str, Any]) -> TaskFailed:
    """The error name, cause and exit code of a failed group run."""
    exc = failure.get("exc")
    failed = next((s for s in result.steps if s.status in ("failed", "stopped")), None)
    step = failed.name if failed else "?"
    if isinstance(exc, ValidationFailed):
        return TaskFailed(TaskError.VALIDATION_FAILED, exc.alert.body(), result.exit_code)
    if isinstance(exc, GateRejected):
        return TaskFailed(TaskError.GATE_FAILED, exc.alert.body(), result.exit_code)
    detail = failure.get("traceback", "")
    return TaskFailed(TaskError.STEP_FAILED, f"step {step} of group {group} (run {ctx.run_id}) failed: {result.error}\n\n{detail}", ExitCode.FAILED)


def _output(group: str, ctx: RunContext, result: Any, state: RunState, partition: tuple[int, int] | None) -> dict[str, Any]:
    """The JSON summary of a finished group (what SendTaskSuccess carries; at most 256 KiB)."""
    out: dict[str, Any] = {
        "run_id": ctx.run_id, "group": group, "model": ctx.spec.name, "environment": ctx.settings.environment,
        "state_uri": state.uri, "steps": {s.name: s.summary for s in result.steps},
    }
    res = ctx.results
    if group == "validate":
        validated = ctx.needs("validate")
        if partition is not None:  # one Map task: small (the partial result is in its document)
            out.pop("steps")
            out.update(partition={"index": partition[0], "count": partition[1]}, rows=validated.rows)
            return json.loads(dumps(out))
        per_partition = rows_per_partition(ctx.settings.rows_per_partition)
        ingested = ctx.needs("ingest")
        if validated.pending:
            count = validated.partitions
        elif ctx.work.validation_partials is not None:  # the merge: the plan the Map validated (and score will map)
            count = len(ctx.work.validation_partials)
        else:
            count = plan_source(ctx.work.data or b"", ingested.data_name, per_partition).count
        out.update(rows=validated.rows, rows_per_partition=per_partition, validated=not validated.pending,
                   partitions=[{"index": i, "count": count} for i in range(count)])
    elif group == "train":
        out["version"] = res.register.version if res.register else None
    elif group == "score":
        # one output per Map iteration lands in the execution's payload: keep it small (the step's
        # full result is in the partition's document and the log)
        assert partition is not None
        scored = ctx.needs("score")
        out.pop("steps")
        out.update(partition={"index": partition[0], "count": partition[1]}, rows_scored=scored.rows_scored,
                   staged_uri=scored.staged_uri, staged_shadow_uri=scored.staged_shadow_uri, id_hash=scored.id_hash,
                   staged_results=scored.staged_results)
    else:
        out.update(outcome=res.rollout.outcome if res.rollout else "no_rollout", serving=res.score.serving if res.score else None)
    out = json.loads(dumps(out))
    if len(dumps(out).encode()) > MAX_OUTPUT_BYTES and "steps" in out:  # full summaries: state.json and the log
        out["steps"] = {name: {"truncated": True} for name in out["steps"]}
    return out


def _record(group: str, ctx: RunContext, state: RunState, output: dict[str, Any], partition: tuple[int, int] | None,
            result: Any) -> None:
    """Record the hand-over: a score partition's own document (its ``Scored``), or the run's
    ``state.json`` (every result so far)."""
    now = utc_now().isoformat()
    names = [st.name for st in GROUPS[group]] + (["score"] if group == "report" else [])
    durations = {n: ctx.durations[n] for n in names if n in ctx.durations}
    if partition is not None:
        state.save_partition(group, *partition, {
            "finished_at": now, "result": ctx.needs(GROUPS[group][-1].name).handover(), "durations": durations, "output": output,
            "steps": {s.name: s.summary for s in result.steps},
            **({"partial": ctx.work.validation_partial} if group == "validate" else {}),
        })
        return
    state.doc["results"] = ctx.results.to_json()
    state.doc["durations"].update(durations)
    if group == "validate":
        state.doc.update(
            environment=ctx.settings.environment, account_id=ctx.settings.account_id, spec_digest=ctx.spec.digest(),
            partitions=len(output["partitions"]), created_at=state.doc.get("created_at", now),
        )
    pending = group == "validate" and ctx.needs("validate").pending  # the Map and merge task decide
    if pending:
        state.doc["results"].pop("validate", None)  # no verdict yet: readers of the state see none
    state.doc["groups"][group] = {"status": "fanned_out" if pending else "succeeded", "finished_at": now, "output": output}
    state.save()


def _notify(log: _Log, send: Any, *args: Any) -> None:
    """Send a callback; a refused one is logged (the outcome stands; Step Functions retries or
    times the state out on its own)."""
    try:
        send(*args)
    except Exception as e:  # noqa: BLE001 - never let reporting mask what happened
        log(event="callback", status="failed", error=str(e))


# ------------------------------------------------------------------------------------------ CLI
def in_aws() -> bool:
    """True inside the ECS task (``STAGEWISE_IN_AWS=1``, set by the task definition)."""
    return os.environ.get(Env.IN_AWS) == "1"


def _connect(args: argparse.Namespace) -> Any:
    if in_aws():
        # In the ECS task: the task role's credentials as they are (the container credential
        # provider), no AssumeRole: AwsTarget.role_arn=None means "the default credential chain".

        settings = load_settings(args.env, args.project_dir)
        target = AwsTarget(settings.region, role_arn=None, session_name=settings.role.session_name)
        return Environment(settings, environment_resources(settings), AwsClients(target), [])
    return connect(args.env, aws=args.aws, project_dir=args.project_dir)


def _callbacks(clients: Any | None) -> Callbacks:
    """Step Functions callbacks if a task token is set, through ``clients`` (or, in the ECS task
    before clients exist, the default credential chain); else ``NoCallbacks``."""
    token = os.environ.get(Env.TASK_TOKEN)
    if not token:
        return NoCallbacks()
    try:
        if clients is not None:
            return StepFunctionsCallbacks(clients.client("stepfunctions"), token)
    except Exception:  # noqa: BLE001 - fall back to the task role below
        pass
    if in_aws():
        import boto3

        return StepFunctionsCallbacks(boto3.client("stepfunctions"), token)
    return NoCallbacks()


def _setup_exit_code(e: BaseException) -> int:
    """A setup failure's exit code: the error's own (settings, spec, AWS access), 4 for bad
    arguments or a missing file, else 1."""
    if isinstance(e, StagewiseError):
        return e.exit_code
    if isinstance(e, (FileNotFoundError, UsageError)):
        return ExitCode.BAD_INPUT
    return ExitCode.FAILED


def main(argv: list[str] | None = None) -> int:
    """``stagewise-task GROUP --run-id R --data URI [--model M] [--env E] [--partition I --partitions N]``.

    Returns:
        The exit code: 0 ok, 1 failed, 2 validation failed, 3 gate failed, 4 bad arguments or
        configuration, 5 AWS unreachable, 143 SIGTERM.
    """
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["claim"]:  # a triggered execution's first state (stagewise.pipeline.claim_task)
        return claim_task.main(argv[1:], _connect, _callbacks)
    global _SIGTERM
    _SIGTERM = Sigterm(SpotInterruption)
    with _SIGTERM.installed():
        clients, log = None, _Log()
        try:
            try:
                args = parse(argv)
                log = _Log(run_id=args.run_id, group=args.group)
                ctx, clients = _context(args)
                state = RunState.load(ctx.clients.client("s3"), ctx.data_bucket, ctx.spec.name, args.run_id)
                _check_data(args.data, args.group, state)
                callbacks = _callbacks(clients)
                lease = _run_lock(args.group, ctx)
            except SystemExit as e:  # --help
                return int(e.code or 0)
            except Locked as e:  # another run is working on this model: the state machine retries later
                _setup_failed(log, clients, TaskError.RUN_LOCKED, str(e), ExitCode.CONFLICT)
                return ExitCode.CONFLICT
            except Exception as e:  # noqa: BLE001 - arguments, settings, spec, AWS access, state
                code = _setup_exit_code(e)
                _setup_failed(log, clients, TaskError.STEP_FAILED, f"the task could not start: {type(e).__name__}: {e}", code)
                return code
            return _run_group(args.group, ctx, state, callbacks, lease, log, merge=args.merge)
        except SpotInterruption:  # while starting, or in run_task before it reported (it disarms then)
            _setup_failed(log, clients, TaskError.SPOT_INTERRUPTION, "SIGTERM before the group ran or reported", ExitCode.SIGTERM)
            return ExitCode.SIGTERM


def _run_group(group: str, ctx: RunContext, state: RunState, callbacks: Callbacks, lease: RunLease, log: _Log,
               merge: bool = False) -> int:
    """``run_task``, then free the model's run lock if the execution is over: its last group
    succeeded, or the group failed in a way the state machine does not retry (anything but
    SIGTERM, which it retries on Spot and then on demand); otherwise keep it for the next group or
    the retry. A redriven execution takes it again (the same run id)."""
    finished = False
    try:
        run_task(group, ctx, state, callbacks, merge=merge)
        finished = group == LAST_GROUP
        return ExitCode.OK
    except TaskFailed as e:
        finished = e.exit_code != ExitCode.SIGTERM
        return e.exit_code
    finally:
        lease.stop()
        if finished:
            try:
                lease.release()
            except Exception as e:  # noqa: BLE001 - AWS unreachable: the lock lapses by itself
                log(event="run_lock", status="not released", error=str(e))


def _context(args: argparse.Namespace) -> tuple[RunContext, Any]:
    spec = load_spec(args.model)
    conn = _connect(args)
    actor = args.actor or conn.clients.caller_identity()["Arn"]
    part = f"-{args.partition:05d}" if args.partition is not None else ""
    workdir = stagewise_home() / "runs" / args.run_id / f"{args.group}{part}"
    workdir.mkdir(parents=True, exist_ok=True)
    source = args.data if args.data.startswith("s3://") else str(Path(args.data))
    ctx = RunContext(
        run_id=args.run_id, settings=conn.settings, resources=conn.resources, clients=conn.clients, spec=spec,
        data_source=source, workdir=workdir, actor=actor,
    )
    if args.group in MAPPED_GROUPS:
        ctx.partition = (args.partition or 0, args.partitions or 1)
    elif args.partition is not None:  # one task of a fanned-out validation's Map
        ctx.partition = (args.partition, args.partitions)
    ctx.fan_out = args.fan_out
    return ctx, conn.clients


def _run_lock(group: str, ctx: RunContext) -> RunLease:
    """Take (or, for a later group or a partition of the same run, re-enter) the model's run lock
    and renew it while the task works.

    Raises:
        Locked: another run holds it.
    """
    ttl = float(os.environ.get(Env.RUN_LOCK_SECONDS, DEFAULT_TTL_SECONDS))
    lease = RunLease(registry_of(ctx).store, ctx.spec.name, ctx.run_id, command=group, holder=ctx.actor, ttl=ttl)
    lease.acquire()
    return lease


def _check_data(data: str, group: str, state: RunState) -> None:
    """Later groups must be given the input the run validated (same URI, or a file of the same sha256)."""
    if group == "validate" or state.finished("validate") is None:
        return
    ingested = state.doc["results"]["ingest"]
    same = data == ingested["data_uri"] if data.startswith("s3://") else (
        Path(data).is_file() and sha256_file(Path(data)) == ingested["data_sha256"])
    if not same:
        raise StateError(f"run {state.run_id} validated {ingested['data_uri']} (sha256 {ingested['data_sha256'][:12]}…), not {data}")


def _setup_failed(log: _Log, clients: Any, error: str, cause: str, code: int) -> None:
    """Report a task that failed outside ``run_task`` (while starting)."""
    with _SIGTERM.deferred():
        log(event="group", status="failed", error=error, exit_code=code, cause=cause)
        print(f"stagewise-task: {cause}", file=sys.stderr)
        _notify(log, _callbacks(clients).failure, error, cause)
        _SIGTERM.disarm()


if __name__ == "__main__":
    sys.exit(main())
