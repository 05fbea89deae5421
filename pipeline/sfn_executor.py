"""``stagewise run --executor state-machine``: the run as an execution of the environment's state
machine, the path users deploy, on the embedded AWS (local Fargate runs the tasks) or on AWS.

The CLI puts a local dataset under ``raw/<model>/<run id>/`` in the data bucket (not under
``incoming/``, where landing data starts a run of its own; an ``s3://`` URI is used as it is), starts an execution named after the run id with the contract's input
(``{"run_id", "data", "model"}``, ``pipeline/asl.py``), follows its event history (states entered
and exited, ECS tasks started and stopped, Map items done of total), and at the end reads the run's
``state.json`` (``pipeline/task_state.py``: every step's typed result and duration) to build the
same ``RunResult`` the in-process runner returns, so the run table and ``--json`` are the same.

Exit codes are the in-process runner's: an execution that fails with ``Stagewise.ValidationFailed``
exits 2, ``Stagewise.GateFailed`` 3, a run lock still held after the state machine's retries 6,
anything else 1 (resumable). ``--resume RUN_ID`` redrives the run's last execution on AWS
(``RedriveExecution``: failed states run again, succeeded ones do not); the embedded AWS (moto)
has no redrive, so there it starts a new execution of the same run (``<run id>-2``, ...), which
finishes the run because every task is idempotent per run id (a finished group is skipped).

The stack deploys the training pipeline's state machine only: ``stagewise score`` runs in-process.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from botocore.exceptions import ClientError

from stagewise.pipeline.runner import RunResult, StepRecord
from stagewise.pipeline.steps.results import StepResults
from stagewise.pipeline.task_state import RunState
from stagewise.platform.contract import ExitCode, TaskError

POLL_SECONDS = 1.0
"""Seconds between reads of the execution's history."""


FAILED_STEP = {TaskError.VALIDATION_FAILED: "validate", TaskError.GATE_FAILED: "register"}
"""The step a stopping error comes from (its task group reports it without saving its state)."""


class ExecutorError(RuntimeError):
    """The execution could not be started or followed (the message says why)."""


def execution_input(run_id: str, data_uri: str, model: str) -> dict[str, str]:
    """The state machine's input (the container contract in ``pipeline/asl.py``)."""
    return {"run_id": run_id, "data": data_uri, "model": model}


def stage_data(s3: Any, bucket: str, model: str, run_id: str, source: str) -> str:
    """The dataset as the tasks read it: ``source`` if it is an ``s3://`` URI, else a local file
    uploaded to ``s3://<bucket>/raw/<model>/<run id>/<name>`` (once: kept for a resume)."""
    if source.startswith("s3://"):
        return source
    path = Path(source)
    key = f"raw/{model}/{run_id}/{path.name}"
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError:
        s3.upload_file(str(path), bucket, key)
    return f"s3://{bucket}/{key}"


def start_execution(sfn: Any, state_machine_arn: str, name: str, doc: dict[str, str]) -> str:
    """Start an execution called ``name`` (the run id); if one of that name runs with the same
    input already (a retried start), its ARN. Returns the execution ARN.

    Raises:
        ExecutorError: the state machine does not exist (the stack is not deployed, or not
            provisioned on the embedded AWS).
    """
    try:
        return sfn.start_execution(stateMachineArn=state_machine_arn, name=name, input=json.dumps(doc))["executionArn"]
    except ClientError as e:
        code = e.response["Error"]["Code"]
        if code == "ExecutionAlreadyExists":
            return state_machine_arn.replace(":stateMachine:", ":execution:") + f":{name}"
        if code == "StateMachineDoesNotExist":
            raise ExecutorError(f"state machine {state_machine_arn} does not exist: deploy the stack (pulumi up), "
                                "or run on the embedded AWS, which provisions it") from e
        raise


def run_executions(sfn: Any, state_machine_arn: str, run_id: str) -> list[dict[str, Any]]:
    """The executions of run ``run_id`` (named ``<run id>`` or ``<run id>-<n>``), oldest first."""
    found = []
    for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=state_machine_arn):
        found += [e for e in page["executions"] if e["name"] == run_id or e["name"].startswith(f"{run_id}-")]
    return sorted(found, key=lambda e: e["startDate"])


def resume_execution(sfn: Any, state_machine_arn: str, run_id: str, embedded: bool) -> str:
    """Resume run ``run_id``: redrive its last execution (AWS), or start the next one with the same
    input (the embedded AWS has no redrive). Returns the execution ARN followed from here.

    Raises:
        ExecutorError: the run has no execution, or its last one succeeded or still runs.
    """
    executions = run_executions(sfn, state_machine_arn, run_id)
    if not executions:
        raise ExecutorError(f"run {run_id} has no execution of {state_machine_arn}")
    last = executions[-1]
    if last["status"] in ("RUNNING", "SUCCEEDED"):
        raise ExecutorError(f"run {run_id}'s execution {last['name']} is {last['status'].lower()}: nothing to resume")
    if not embedded:
        sfn.redrive_execution(executionArn=last["executionArn"])
        return last["executionArn"]
    doc = json.loads(sfn.describe_execution(executionArn=last["executionArn"])["input"])
    return start_execution(sfn, state_machine_arn, f"{run_id}-{len(executions) + 1}", doc)


@dataclass
class Followed:
    """What following an execution saw: its final description and every history event."""

    execution: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)


def describe_event(event: dict[str, Any]) -> str | None:
    """One progress line for a history event worth showing, or None."""
    kind = event["type"]
    if kind.endswith("StateEntered") and kind not in ("SucceedStateEntered", "FailStateEntered"):
        return f"{event['stateEnteredEventDetails']['name']}: entered"
    if kind == "TaskSubmitted":
        details = event["taskSubmittedEventDetails"]
        if details.get("resourceType") == "ecs":
            task = (json.loads(details.get("output") or "{}").get("Tasks") or [{}])[0]
            return f"  ECS task started: {task.get('TaskArn', '?').rsplit('/', 1)[-1]} ({task.get('CapacityProviderName', '')})"
    if kind == "TaskFailed":
        details = event["taskFailedEventDetails"]
        return f"  task failed: {details.get('error')}: {(details.get('cause') or '')[:160]}"
    if kind == "MapRunStarted":
        arn = event["mapRunStartedEventDetails"]["mapRunArn"]
        return f"  map run started: {arn.rsplit(':', 1)[-1]}"
    if kind in ("MapRunSucceeded", "MapRunFailed"):
        return f"  map run {kind[6:].lower()}"
    if kind.endswith("StateExited"):
        return f"{event['stateExitedEventDetails']['name']}: done"
    return None


def follow(sfn: Any, execution_arn: str, on_line: Callable[[str], None] = lambda _: None,
           timeout: float = 24 * 3600.0, poll: float = POLL_SECONDS) -> Followed:
    """Read the execution's history until it ends, calling ``on_line`` for each event worth showing
    and, while a Map Run is in progress, with its items done of total.

    Raises:
        ExecutorError: it did not end within ``timeout`` seconds (it keeps running).
    """
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    map_runs: dict[str, tuple[int, int]] = {}
    while True:
        execution = sfn.describe_execution(executionArn=execution_arn)
        events, token = [], None
        while True:
            page = sfn.get_execution_history(executionArn=execution_arn, maxResults=1000, **({"nextToken": token} if token else {}))
            events += page["events"]
            token = page.get("nextToken")
            if not token:
                break
        for event in events[len(seen):]:
            line = describe_event(event)
            if line:
                on_line(line)
            if event["type"] == "MapRunStarted":
                map_runs[event["mapRunStartedEventDetails"]["mapRunArn"]] = (-1, -1)
        seen = events
        for arn, last in list(map_runs.items()):
            run = sfn.describe_map_run(mapRunArn=arn)
            now = (run["itemCounts"]["succeeded"], run["itemCounts"]["total"])
            if now != last:
                on_line(f"  map items done: {now[0]} of {now[1]}")
                map_runs[arn] = now
            if run["status"] != "RUNNING":
                del map_runs[arn]
        if execution["status"] != "RUNNING":
            return Followed(execution, seen)
        if time.monotonic() > deadline:
            raise ExecutorError(f"execution {execution_arn} still runs after {timeout:.0f} s; follow it in the console")
        time.sleep(poll)


def exit_code(execution: dict[str, Any]) -> int:
    """The in-process runner's exit code for an ended execution (module docstring)."""
    if execution["status"] == "SUCCEEDED":
        return ExitCode.OK
    return TaskError.exit_code(execution.get("error") or "", execution.get("cause") or "")


def run_result(execution: dict[str, Any], state: RunState, pipeline: Any, environment: str, account_id: str,
               started: float) -> RunResult:
    """The in-process runner's ``RunResult`` for an ended execution: each step's typed result and
    duration from the run's ``state.json``. When the execution failed, the failed step is the one
    its error names (``FAILED_STEP``: the steps before it succeeded, though a failed group saves no
    results), else the first step without a result; the steps after it are skipped."""
    results = StepResults.from_json(state.doc.get("results", {}))
    durations = state.doc.get("durations", {})
    code = exit_code(execution)
    error = None if code == 0 else f"{execution.get('error')}: {execution.get('cause') or ''}".strip()
    names = [step.name for step in pipeline.steps]
    failed_at = FAILED_STEP.get(execution.get("error") or "")
    records, failed = [], False
    for step in pipeline.steps:
        result = getattr(results, step.name, None)
        before_failure = failed_at in names and names.index(step.name) < names.index(failed_at)
        if result is not None or (code and before_failure):
            records.append(StepRecord(step.name, "succeeded", float(durations.get(step.name, 0.0)), result))
        elif code and not failed:
            records.append(StepRecord(step.name, "failed", 0.0, None, error))
            failed = True
        else:
            records.append(StepRecord(step.name, "skipped"))
    start = execution.get("startDate")
    return RunResult(run_id=state.run_id, environment=environment, account_id=account_id, model=state.model,
                     exit_code=code, steps=records, alerts=[], started_at=start.isoformat() if start else "",
                     seconds=time.monotonic() - started, error=error)
