"""The container entrypoint: ``stagewise-task <group>`` runs one task group of the pipeline.

On AWS the state machine runs each task group of ``PIPELINE.task_groups()`` in its own ECS Fargate
(Spot) task, through the ``ecs:runTask.waitForTaskToken`` integration::

    stagewise-task validate --run-id R --data s3://bucket/key --model engagement --env dev
    stagewise-task train    --run-id R --data s3://bucket/key --model engagement --env dev
    stagewise-task score    --run-id R --data ... --partition I --partitions N   (a Map over partitions)
    stagewise-task report   --run-id R --data ...

The group's steps are the same step functions the local runner executes (``run_pipeline`` runs
them here too, so alerts and failure metrics are the same); only the hand-over between groups
differs. Contract with the state machine (env ``STAGEWISE_TASK_TOKEN`` holds the task token; without
it the callbacks are skipped and everything else is the same):

    success         SendTaskSuccess(output = the group's JSON summary); ``validate`` adds
                    ``"partitions": [{"index": i, "count": N}, ...]``, N = ceil(rows /
                    $STAGEWISE_ROWS_PER_PARTITION (default 1,000,000)), at least 1 and at most
                    one per Parquet row group (``stagewise.pipeline.scoring.plan_partitions``).
    failure         SendTaskFailure(error, cause <= 32,768 characters):
                      Stagewise.ValidationFailed  exit 2   the input failed its expectation suite
                      Stagewise.GateFailed        exit 3   the new version failed an offline gate
                      Stagewise.SpotInterruption  exit 143 SIGTERM (Fargate Spot's 2-minute notice)
                      Stagewise.StepFailed        exit 1   anything else (4: bad arguments, settings
                                                           or spec; 5: AWS unreachable, as the CLI)
    while working   SendTaskHeartbeat every 60 s from a daemon thread (the state's HeartbeatSeconds
                    is 300); ``STAGEWISE_HEARTBEAT_SECONDS`` overrides the interval.

State between groups (separate containers) is one JSON document per run,
``s3://<data bucket>/runs/<model>/<run id>/state.json``: the JSON-safe memo entries later groups
need (``HANDOVER``), step durations, and each finished group's output. It is written with S3
conditional writes (``If-None-Match: *`` when new, ``If-Match: <ETag>`` after), so a concurrent
writer fails instead of losing an update. Score partitions run concurrently and each writes its
own ``score/part-<I>-of-<N>.json`` next to it and leaves its predictions part staged; ``report``
merges them into the state and first publishes the staged parts (parts to their final keys, then
the manifest: ``stagewise.pipeline.scoring.publish_predictions``). Large
objects are not in the state: ``train`` re-reads the input from ``data_uri`` (its sha256
verified) and re-parses it; a ``score`` partition downloads the input to local disk (streamed,
sha256 verified) and reads only its own row groups; models load from the registry's artifact URIs.

Re-running a group is idempotent: a group (or score partition) that already finished is not run
again, its recorded output is sent again; an interrupted one runs from its start (the registry's
register step is idempotent by token, and the rollout controller by run id).

Logs: one JSON line on stdout per step start and end (``step``, ``status``, ``seconds``,
``summary``), throttled progress lines, and one line per group outcome; CloudWatch Logs collects
stdout. Summaries hold counts, metrics and URIs, never row values, so no PII column is logged.

In the ECS task (``STAGEWISE_IN_AWS=1``, set by the task definition) AWS calls use the task role's
credentials as they are; everywhere else ``connect`` assumes the stack's role (``--aws``) or
targets the embedded AWS.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from stagewise.monitoring import metrics as m
from stagewise.pipeline import modeling
from stagewise.pipeline.definition import MAPPED_GROUPS, PIPELINE, Pipeline, Step
from stagewise.pipeline.handover import SCORE_KEYS, decode as _decode, dumps as _dumps, encode as _encode
from stagewise.pipeline.runner import StepRecord, run_pipeline
from stagewise.pipeline.scoring import (  # noqa: F401 - re-exported: the task's partition contract
    DEFAULT_ROWS_PER_PARTITION,
    merge_partitions,
    merge_version_stats,
    partition_count,
    plan_source,
    publish_predictions,
    rows_per_partition,
)
from stagewise.pipeline.steps import (
    GateRejected, RunContext, ValidationFailed, challenger_observations, input_reference, predictions_summary, read_table,
    review_queue,
)
from stagewise.platform.contract import Env, ExitCode, Sigterm, StagewiseError, TaskError
from stagewise.platform.runtime.objects import S3Uri, sha256_file
from stagewise.platform.runtime.aws import utc_now

HEARTBEAT_SECONDS = 60.0
PROGRESS_SECONDS = 30.0
MAX_CAUSE = 32_768  # SendTaskFailure: cause at most 32,768 characters
MAX_ERROR = 256  # SendTaskFailure: error at most 256 characters
MAX_OUTPUT_BYTES = 256 * 1024 - 1024  # Step Functions payloads are at most 256 KiB (UTF-8)

GROUPS: dict[str, tuple[Step, ...]] = dict(PIPELINE.task_groups())
"""Task group name -> its steps, in order (``validate``, ``train``, ``score``, ``report``)."""

HANDOVER: dict[str, tuple[str, ...]] = {
    "validate": ("data_uri", "data_sha256", "data_name", "validation"),
    "train": ("artifact_sha256", "artifact_prefix", "metrics", "gates", "samples", "best", "version", "champion"),
    "score": SCORE_KEYS,
    "report": ("decision", "drift"),
}
"""The memo entries each group hands to later groups through ``state.json`` (``report`` also
records the merged score entries)."""

NEEDS_FRAME = frozenset({"train"})
"""Groups whose steps need the parsed input (``ctx.memo["frame"]``): re-read from ``data_uri``. A
score partition reads only its own row groups (``stagewise.pipeline.scoring``)."""


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


class StateError(RuntimeError):
    """The run's state is missing, inconsistent with this task, or changed by another writer."""


class CallbackError(RuntimeError):
    """A Step Functions callback (SendTask*) was refused: the token is invalid or timed out."""


class _UsageError(Exception):
    """Bad command-line arguments."""


# ---------------------------------------------------------------------------------- callbacks
class Callbacks(Protocol):
    """Where a group reports to: the Step Functions task token, or nowhere (run by hand)."""

    def success(self, output: dict[str, Any]) -> None: ...

    def failure(self, error: str, cause: str) -> None: ...

    def heartbeat(self) -> None: ...


class NoCallbacks:
    """No task token: nothing to report to."""

    def success(self, output: dict[str, Any]) -> None:
        pass

    def failure(self, error: str, cause: str) -> None:
        pass

    def heartbeat(self) -> None:
        pass


class StepFunctionsCallbacks:
    """SendTaskSuccess / SendTaskFailure / SendTaskHeartbeat for one task token (one injected
    ``stepfunctions`` client; throttling is retried by the client's ``standard`` retry mode).

    Raises:
        CallbackError: Step Functions refused the call (``TaskTimedOut``, ``InvalidToken``, ...).
    """

    def __init__(self, sfn: Any, token: str) -> None:
        self.sfn, self.token = sfn, token

    def success(self, output: dict[str, Any]) -> None:
        self._call("send_task_success", output=_dumps(output))

    def failure(self, error: str, cause: str) -> None:
        self._call("send_task_failure", error=error[:MAX_ERROR], cause=cause[:MAX_CAUSE])

    def heartbeat(self) -> None:
        self._call("send_task_heartbeat")

    def _call(self, operation: str, **kwargs: Any) -> None:
        try:
            getattr(self.sfn, operation)(taskToken=self.token, **kwargs)
        except (ClientError, BotoCoreError) as e:
            raise CallbackError(f"{operation} failed: {e}") from e


class _Heartbeat:
    """Calls ``callbacks.heartbeat()`` every ``interval`` seconds from a daemon thread."""

    def __init__(self, callbacks: Callbacks, interval: float, log: "_Log") -> None:
        self.callbacks, self.interval, self.log = callbacks, interval, log
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stagewise-heartbeat", daemon=True)

    def __enter__(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        with _SIGTERM.deferred():
            self._stop.set()
            self._thread.join(timeout=10)  # a heartbeat in flight finishes before the final callback

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.callbacks.heartbeat()
            except Exception as e:  # noqa: BLE001 - a missed heartbeat must not kill the work
                self.log(event="heartbeat", status="failed", error=str(e))


# ------------------------------------------------------------------------------------ SIGTERM
_SIGTERM = Sigterm(SpotInterruption)


# ---------------------------------------------------------------------------------------- log
class _Log:
    """One JSON object per line on stdout, each carrying the run id and group."""

    def __init__(self, **base: Any) -> None:
        self.base = base

    def __call__(self, **fields: Any) -> None:
        line = {"ts": utc_now().isoformat(timespec="milliseconds"), **self.base, **fields}
        sys.stdout.write(_dumps(line) + "\n")
        sys.stdout.flush()


# -------------------------------------------------------------------------------------- state
_PART = re.compile(r"part-(\d{5})-of-(\d{5})\.json$")


@dataclass
class RunState:
    """The run's ``state.json`` in the data bucket, and the score partitions' documents.

    Attributes:
        s3: a boto3 S3 client.
        bucket: the environment's data bucket.
        model, run_id: whose state it is.
        doc: the document (``memo``, ``durations``, ``groups``, ``partitions``, identity fields).
        etag: the ETag read (None: the object does not exist yet).
    """

    s3: Any
    bucket: str
    model: str
    run_id: str
    doc: dict[str, Any] = field(default_factory=dict)
    etag: str | None = None

    @property
    def prefix(self) -> str:
        return f"runs/{self.model}/{self.run_id}"

    @property
    def key(self) -> str:
        return f"{self.prefix}/state.json"

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @classmethod
    def load(cls, s3: Any, bucket: str, model: str, run_id: str) -> "RunState":
        """The run's state (an empty one if no group has finished yet)."""
        state = cls(s3, bucket, model, run_id)
        try:
            obj = s3.get_object(Bucket=bucket, Key=state.key)
        except ClientError as e:
            if e.response["Error"]["Code"] in ("NoSuchKey", "404"):
                state.doc = {"schema": 1, "run_id": run_id, "model": model, "memo": {}, "durations": {}, "groups": {}}
                return state
            raise
        state.doc, state.etag = json.loads(obj["Body"].read()), obj["ETag"]
        return state

    def finished(self, group: str) -> dict[str, Any] | None:
        """The recorded output of ``group`` if it finished, else None."""
        entry = self.doc["groups"].get(group)
        return entry["output"] if entry and entry.get("status") == "succeeded" else None

    def save(self) -> None:
        """Write the document: only if nobody wrote it since it was read (S3 conditional write).

        Raises:
            StateError: another writer changed (or created) it first.
        """
        self.doc["updated_at"] = utc_now().isoformat()
        condition = {"IfMatch": self.etag} if self.etag else {"IfNoneMatch": "*"}
        try:
            resp = self.s3.put_object(
                Bucket=self.bucket, Key=self.key, Body=_dumps(self.doc).encode(), ContentType="application/json", **condition
            )
        except ClientError as e:
            if e.response["Error"]["Code"] in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise StateError(
                    f"{self.uri} was changed by another task of run {self.run_id} since it was read; "
                    "this task's result was not recorded (re-run the group)"
                ) from e
            raise
        self.etag = resp["ETag"]

    # score partitions: one document each, written by one Map iteration (no shared writes)
    def partition_key(self, index: int, count: int) -> str:
        return f"{self.prefix}/score/part-{index:05d}-of-{count:05d}.json"

    def finished_partition(self, index: int, count: int) -> dict[str, Any] | None:
        """The recorded output of score partition ``index`` of ``count``, or None."""
        doc = self._get_json(self.partition_key(index, count))
        return doc["output"] if doc else None

    def save_partition(self, index: int, count: int, doc: dict[str, Any]) -> None:
        self.s3.put_object(
            Bucket=self.bucket, Key=self.partition_key(index, count), Body=_dumps(doc).encode(), ContentType="application/json"
        )

    def score_partitions(self) -> list[dict[str, Any]]:
        """The documents of a complete set of score partitions (the count ``validate`` planned,
        or else the only complete set).

        Raises:
            StateError: no complete set (a partition did not finish).
        """
        found: dict[int, set[int]] = {}
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{self.prefix}/score/")
        for page in pages:
            for obj in page.get("Contents", []):
                if m := _PART.search(obj["Key"]):
                    found.setdefault(int(m.group(2)), set()).add(int(m.group(1)))
        complete = [n for n, done in found.items() if done == set(range(n))]
        planned = self.doc.get("partitions")
        if planned in complete:
            count = planned
        elif len(complete) == 1:
            count = complete[0]
        else:
            have = ", ".join(f"{len(d)} of {n}" for n, d in sorted(found.items())) or "none"
            raise StateError(f"score partitions of run {self.run_id} are incomplete (planned {planned}; finished: {have})")
        return [self._get_json(self.partition_key(i, count)) for i in range(count)]  # type: ignore[misc]

    def _get_json(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except ClientError as e:
            if e.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return None
            raise


def merge_score_partitions(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The score group's memo entries (JSON form) for the whole input, from its partitions'.

    Raises:
        StateError: the partitions scored with different rollouts (the rollout changed mid-run).
    """
    memos = [d["memo"] for d in docs]
    if len(memos) == 1:
        return memos[0]
    first = memos[0]
    if any(m.get("rollout_id") != first.get("rollout_id") or m.get("weights") != first.get("weights") for m in memos):
        raise StateError("the score partitions were routed with different rollouts; re-run the scoring")
    merged = merge_partitions(memos)
    return {
        "rows_scored": merged["rows_scored"],
        "per_version": merged["per_version"],
        "weights": first["weights"],
        "observations": challenger_observations(merged["per_version"], first["serving"]),
        "rollout_id": first.get("rollout_id"),
        "serving": first["serving"],
        "drift_counts": merged["drift_counts"],
    }


def _publish_capacity_metric(ctx: RunContext, name: str, group: str) -> None:
    """Count a Spot interruption or an on-demand fallback of ``group`` (never raises: the task's
    outcome matters more than the metric)."""
    try:
        dims = {**m.model_dimensions(ctx.settings.environment, ctx.spec.name), "Step": group}
        m.publish(ctx.clients.client("cloudwatch"), [m.Datum(name, 1, "Count", dims)], ctx.resources.metrics_namespace)
    except Exception:  # noqa: BLE001
        pass


# ------------------------------------------------------------------------------------ the core
def run_task(group: str, ctx: RunContext, state: RunState, callbacks: Callbacks) -> dict[str, Any]:
    """Run the steps of task group ``group`` for ``ctx`` and report the outcome to ``callbacks``.

    Restores what earlier groups handed over (``state``), runs the group's steps with the local
    runner, records the hand-over, then sends ``success(output)``. A group (or score partition)
    that already finished is not run again: its recorded output is sent again.

    Args:
        group: ``validate``, ``train``, ``score`` or ``report``.
        ctx: a fresh context; for ``score``, ``ctx.memo["partition"] = (index, count)``.
        state: the run's state, as loaded at the start of the task.
        callbacks: where to report (Step Functions, or ``NoCallbacks``).

    Returns:
        The output sent with ``success``.

    Raises:
        TaskFailed: the group failed (``ValidationFailed`` -> exit 2, ``GateRejected`` -> 3,
            SIGTERM -> 143, anything else -> 1); the failure was sent to ``callbacks`` first.
    """
    if group not in GROUPS:
        raise ValueError(f"unknown task group {group!r}; one of {', '.join(GROUPS)}")
    partition = tuple(ctx.memo.get("partition", (0, 1))) if group in MAPPED_GROUPS else None
    log = _Log(run_id=ctx.run_id, group=group, **({"partition": list(partition)} if partition else {}))
    interval = float(os.environ.get(Env.HEARTBEAT_SECONDS, HEARTBEAT_SECONDS))
    current = {"step": None}
    t0 = time.perf_counter()
    log(event="group", status="started")
    failure: TaskFailed | None = None
    output: dict[str, Any] = {}
    if os.environ.get(Env.CAPACITY_PROVIDER) == "FARGATE":  # the state machine's on-demand fallback
        _publish_capacity_metric(ctx, m.ON_DEMAND_FALLBACKS, group)
    with _Heartbeat(callbacks, interval, log):
        try:
            done = state.finished_partition(*partition) if partition else state.finished(group)
            if done is not None:
                log(event="group", status="skipped", reason="already finished; sending its recorded output again")
                output = done
            else:
                _restore(group, ctx, state)
                result, raised = _run_steps(group, ctx, log, current)
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
                    version=ctx.memo.get("version"),
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


def _restore(group: str, ctx: RunContext, state: RunState) -> None:
    """Put what earlier groups handed over back into ``ctx`` (and the input frame, if needed)."""
    doc = state.doc
    if group != "validate":
        if state.finished("validate") is None:
            raise StateError(
                f"run {ctx.run_id} has no validated input in {state.uri}: run `stagewise-task validate --run-id "
                f"{ctx.run_id} ...` first"
            )
        if doc.get("spec_digest") != ctx.spec.digest() or doc.get("environment") != ctx.settings.environment:
            raise StateError(
                f"run {ctx.run_id} was validated with another model spec or environment than this task's "
                "(was the image replaced mid-run?); start a new run"
            )
    for key, value in doc["memo"].items():
        ctx.memo[key] = _decode(key, value)
    ctx.durations.update(doc["durations"])
    if group in NEEDS_FRAME:
        uri = S3Uri.parse(ctx.memo["data_uri"])
        data = ctx.objects.get_bytes(uri.bucket, uri.key, expect_sha256=ctx.memo["data_sha256"])
        ctx.memo["frame"] = modeling.conform(read_table(data, ctx.memo["data_name"]), ctx.spec)  # as validate read it
    if group == "report":
        docs = state.score_partitions()
        merged = merge_score_partitions(docs)
        for key, value in merged.items():
            ctx.memo[key] = _decode(key, value)
        ctx.durations["score"] = max(d["durations"].get("score", 0.0) for d in docs)  # the Map's wall time
        publish_score_partitions(ctx, docs, merged, started_at=doc.get("created_at"))


def publish_score_partitions(ctx: RunContext, docs: list[dict[str, Any]], merged: dict[str, Any],
                             started_at: str | None = None) -> dict[str, Any]:
    """Publish what the Map's partitions staged (``scoring.publish_predictions``): the first thing
    the report group does, once every partition has finished. Idempotent (a published run is
    left as it is). ``started_at``: the run's ``state.json`` ``created_at`` (the results' date
    partition when the run id does not carry the time). Returns the manifest."""
    parts = [{"index": d["output"]["partition"]["index"], "rows_scored": d["output"]["rows_scored"],
              "staged_uri": d["output"]["staged_uri"], "staged_shadow_uri": d["output"].get("staged_shadow_uri"),
              "staged_results": d["output"].get("staged_results") or {}}
             for d in docs]
    summary = {
        "rows_scored": merged["rows_scored"], "serving": merged["serving"], "versions": merged["per_version"],
        "partitions": {"count": len(docs), "scored": [p["index"] for p in parts], "processes": len(docs)},
        "id_hash": docs[0]["output"].get("id_hash"),
        **predictions_summary(ctx.data_bucket, ctx.spec.name, ctx.run_id, len(docs), any(p["staged_shadow_uri"] for p in parts)),
    }
    queue = review_queue(ctx.spec, [d.get("review") or [] for d in docs])
    if queue is not None:
        summary["review_queue"] = {"rows": len(queue), "reasons": queue["reason"].value_counts().to_dict()}
    return publish_predictions(ctx.objects, ctx.data_bucket, ctx.spec.name, ctx.run_id, parts, _encode(merged), _encode(summary),
                               data=input_reference(ctx), started_at=started_at, review_queue=queue)


def _run_steps(group: str, ctx: RunContext, log: _Log, current: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The group's steps through the local runner (same alerts and failure metrics), each step's
    exception kept so the failure can be reported with its type, alert and traceback."""
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
    steps = tuple(Step(st.name, st.description, keep(st.run), st.task) for st in GROUPS[group])
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
    if group == "validate":
        rows = int(ctx.memo["validation"]["rows"])
        count = plan_source(ctx.memo["data_bytes"], ctx.memo["data_name"]).count
        out.update(rows=rows, rows_per_partition=rows_per_partition(),
                   partitions=[{"index": i, "count": count} for i in range(count)])
    elif group == "train":
        out["version"] = ctx.memo.get("version")
    elif group == "score":
        # one output per Map iteration lands in the execution's payload: keep it small (the step's
        # full summary is in the partition's document and the log)
        assert partition is not None
        summary = out.pop("steps")["score"]
        out.update(partition={"index": partition[0], "count": partition[1]}, rows_scored=summary["rows_scored"],
                   staged_uri=summary["staged_uri"], staged_shadow_uri=summary.get("staged_shadow_uri"),
                   id_hash=summary["id_hash"], staged_results=summary["staged_results"])
    else:
        out.update(outcome=ctx.memo.get("decision", "no_rollout"), serving=ctx.memo.get("serving"))
    out = _encode(out)
    if len(_dumps(out).encode()) > MAX_OUTPUT_BYTES and "steps" in out:  # full summaries: state.json and the log
        out["steps"] = {name: {"truncated": True} for name in out["steps"]}
    return out


def _record(group: str, ctx: RunContext, state: RunState, output: dict[str, Any], partition: tuple[int, int] | None,
            result: Any) -> None:
    """Record the hand-over: a score partition's own document, or the run's ``state.json``."""
    now = utc_now().isoformat()
    names = [st.name for st in GROUPS[group]] + (["score"] if group == "report" else [])
    durations = {n: ctx.durations[n] for n in names if n in ctx.durations}
    if partition is not None:
        memo = {k: _encode(ctx.memo[k]) for k in HANDOVER["score"] if k in ctx.memo}
        state.save_partition(*partition, {
            "finished_at": now, "memo": memo, "durations": durations, "output": output,
            "review": _encode(ctx.memo.get("review_candidates") or []),
            "steps": _encode({s.name: s.summary for s in result.steps}),
        })
        return
    keys = HANDOVER[group] + (HANDOVER["score"] if group == "report" else ())
    state.doc["memo"].update({k: _encode(ctx.memo[k]) for k in keys if k in ctx.memo})
    state.doc["durations"].update(durations)
    if group == "validate":
        state.doc.update(
            environment=ctx.settings.environment, account_id=ctx.settings.account_id, spec_digest=ctx.spec.digest(),
            partitions=len(output["partitions"]), created_at=state.doc.get("created_at", now),
        )
    state.doc["groups"][group] = {"status": "succeeded", "finished_at": now, "output": output}
    state.save()


def _notify(log: _Log, send: Any, *args: Any) -> None:
    """Send a callback; a refused one is logged (the outcome stands; Step Functions retries or
    times the state out on its own)."""
    try:
        send(*args)
    except Exception as e:  # noqa: BLE001 - never let reporting mask what happened
        log(event="callback", status="failed", error=str(e))


# ------------------------------------------------------------------------------------------ CLI
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    """The ``stagewise-task`` argument parser (its ``--help`` states the contract)."""
    doc = __doc__ or ""
    contract = doc[doc.index("Contract with"): doc.index("State between")].strip()
    p = _Parser(
        prog="stagewise-task",
        description="Run one task group of the Stagewise pipeline (the job container's entrypoint).",
        epilog=contract,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("group", choices=list(GROUPS), help="task group: " + "; ".join(
        f"{g} ({', '.join(st.name for st in steps)})" for g, steps in GROUPS.items()))
    p.add_argument("--run-id", required=True, help="the run (the state machine's execution name); groups of one run share it")
    p.add_argument("--data", "-d", required=True, help="the input: an s3:// URI (or a local parquet/CSV file)")
    p.add_argument("--model", "-m", default="engagement", help="built-in spec name or path to a spec YAML")
    p.add_argument("--env", "-e", default="dev", help="environment (stack): dev, test or prod")
    p.add_argument("--partition", type=int, help="score only: this task's partition index (0-based)")
    p.add_argument("--partitions", type=int, help="score only: the number of partitions")
    p.add_argument("--actor", help="who runs it, for the audit (default: the caller's AWS identity)")
    p.add_argument("--project-dir", type=Path, help="folder with Pulumi.<env>.yaml (default: found from cwd)")
    p.add_argument("--aws", action="store_true",
                   help="outside AWS: target the real account through the stack's role instead of the embedded AWS")
    return p


def _parse(argv: list[str] | None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if (args.partition is None) != (args.partitions is None):
        raise _UsageError("--partition and --partitions go together")
    if args.partitions is not None:
        if args.group not in MAPPED_GROUPS:
            raise _UsageError(f"--partition/--partitions apply to {', '.join(sorted(MAPPED_GROUPS))} only")
        if args.partitions < 1 or not 0 <= args.partition < args.partitions:
            raise _UsageError(f"need 0 <= --partition < --partitions, got {args.partition} of {args.partitions}")
    if not args.run_id.strip() or "/" in args.run_id:
        raise _UsageError(f"--run-id {args.run_id!r} must be non-empty and contain no '/'")
    return args


def in_aws() -> bool:
    """True inside the ECS task (``STAGEWISE_IN_AWS=1``, set by the task definition)."""
    return os.environ.get(Env.IN_AWS) == "1"


def _connect(args: argparse.Namespace) -> Any:
    from stagewise.platform.runtime.environment import Environment, connect

    if in_aws():
        # In the ECS task: the task role's credentials as they are (the container credential
        # provider), no AssumeRole: AwsTarget.role_arn=None means "the default credential chain".
        from stagewise.platform.runtime.aws import AwsClients, AwsTarget
        from stagewise.platform.resources import environment_resources
        from stagewise.stacks.settings import load_settings

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
    if isinstance(e, (FileNotFoundError, _UsageError)):
        return ExitCode.BAD_INPUT
    return ExitCode.FAILED


def main(argv: list[str] | None = None) -> int:
    """``stagewise-task GROUP --run-id R --data URI [--model M] [--env E] [--partition I --partitions N]``.

    Returns:
        The exit code: 0 ok, 1 failed, 2 validation failed, 3 gate failed, 4 bad arguments or
        configuration, 5 AWS unreachable, 143 SIGTERM.
    """
    global _SIGTERM
    _SIGTERM = Sigterm(SpotInterruption)
    previous = signal.signal(signal.SIGTERM, _SIGTERM.handle)
    clients, log = None, _Log()
    try:
        try:
            args = _parse(argv)
            log = _Log(run_id=args.run_id, group=args.group)
            ctx, clients = _context(args)
            state = RunState.load(ctx.clients.client("s3"), ctx.data_bucket, ctx.spec.name, args.run_id)
            _check_data(args.data, args.group, state)
            callbacks = _callbacks(clients)
        except SystemExit as e:  # --help
            return int(e.code or 0)
        except Exception as e:  # noqa: BLE001 - arguments, settings, spec, AWS access, state
            code = _setup_exit_code(e)
            _setup_failed(log, clients, TaskError.STEP_FAILED, f"the task could not start: {type(e).__name__}: {e}", code)
            return code
        try:
            run_task(args.group, ctx, state, callbacks)
            return ExitCode.OK
        except TaskFailed as e:
            return e.exit_code
    except SpotInterruption:  # while starting, or in run_task before it reported (it disarms then)
        _setup_failed(log, clients, TaskError.SPOT_INTERRUPTION, "SIGTERM received before the group ran or reported; nothing was recorded",
                      ExitCode.SIGTERM)
        return ExitCode.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)


def _context(args: argparse.Namespace) -> tuple[RunContext, Any]:
    from stagewise.pipeline.spec import load_spec
    from stagewise.platform.runtime.embedded import stagewise_home

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
        ctx.memo["partition"] = (args.partition or 0, args.partitions or 1)
    return ctx, conn.clients


def _check_data(data: str, group: str, state: RunState) -> None:
    """Later groups must be given the input the run validated (same URI, or a file of the same sha256)."""
    if group == "validate" or state.finished("validate") is None:
        return
    memo = state.doc["memo"]
    same = data == memo["data_uri"] if data.startswith("s3://") else (
        Path(data).is_file() and sha256_file(Path(data)) == memo["data_sha256"])
    if not same:
        raise StateError(f"run {state.run_id} validated {memo['data_uri']} (sha256 {memo['data_sha256'][:12]}…), not {data}")


def _setup_failed(log: _Log, clients: Any, error: str, cause: str, code: int) -> None:
    """Report a task that failed outside ``run_task`` (while starting)."""
    with _SIGTERM.deferred():
        log(event="group", status="failed", error=error, exit_code=code, cause=cause)
        print(f"stagewise-task: {cause}", file=sys.stderr)
        _notify(log, _callbacks(clients).failure, error, cause)
        _SIGTERM.disarm()


if __name__ == "__main__":
    sys.exit(main())
