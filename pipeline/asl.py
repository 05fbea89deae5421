"""Compile a pipeline definition to an Amazon States Language (ASL) state machine.

The same ``Pipeline`` the local runner executes in-process becomes, on AWS, a Step Functions state
machine with one ECS task per task group (``Pipeline.task_groups()``). The document is built by
small builder objects (``EcsTaskState``, ``DistributedMapState``, ``SnsPublishState``, ...) and
serialised once with ``to_json``.

The contract with the container (``stagewise-task``, the image's ENTRYPOINT):

* Execution input: ``{"run_id": "<id>", "data": "s3://bucket/key", "model": "engagement"}``, plus
  ``"trigger": "s3"|"schedule"`` from the S3 rule and the schedule: such a run first claims its
  input's content (``stagewise-task claim``, ``stagewise.registry.claims``) and ends in
  ``AlreadyProcessed`` if another execution owns it.
* Each task group ``g`` runs as ``stagewise-task g --run-id <id> --data <uri> --model <name> --env
  <env>`` (mapped groups add ``--partition <i> --partitions <n>``) on the task definition
  ``TASK_DEFINITIONS[g]``, started with ``ecs:runTask.waitForTaskToken`` on ``FARGATE_SPOT``.
* The task token is in the container's environment variable ``contract.Env.TASK_TOKEN``. The
  container must call ``SendTaskHeartbeat`` more often than every ``heartbeat_seconds`` (default
  300 s) and finish with ``SendTaskSuccess`` (output: a JSON object summarising the group; for the
  ``validate`` group it holds ``"partitions": [{"index": 0, "count": N}, ..., {"index": N-1,
  "count": N}]``, for a mapped group's partition ``"partition": {"index": i, "count": N}`` and
  ``"rows_scored"``) or ``SendTaskFailure`` with one of the error names below and a cause.
* The result of group ``g`` lands at ``$.results.<g>``; for a mapped group it is only
  ``{"partitions": N}`` (each partition's full result is its document in S3, which the ``report``
  group reads). Errors land at ``$.error`` (``{"Error", "Cause"}``), so ``run_id``, ``data`` and
  ``model`` survive to the alert.

The fanned-out group (``validate``, ``FANNED_OUT``) is, on AWS, up to three tasks: ``Validate``
(``--fan-out``: ingest and plan; an input of one partition, a CSV, or a suite with an expectation
that has no exact partition merge is validated there), the choice ``ValidateFannedOut`` (its
output's ``"validated": false``: the partitions are left to a Map), the Distributed Map
``ValidatePartitions`` (one ``--partition I --partitions N`` task per partition, each validating
its row groups only, read by ranged GETs) and ``ValidateMerge`` (``--merge``: the partial results
merged exactly, uniqueness and row count counted by DuckDB over the input, one result and Data
Docs published; fails closed like ``Validate``). The merge's output replaces the first task's at
``$.results.validate``, so the score Map reads the partitions from it.

The mapped group (``score``) is a Distributed Map (``ProcessorConfig`` ``DISTRIBUTED``): each
partition runs ``ScorePartition`` (and its on-demand fallback) as a ``STANDARD`` child workflow
execution, ``execution:<state machine>/Score:<id>`` (``Label`` = the state's name), at most
``scoringConcurrency`` (the stack setting, 1..1000) at a time. Its items come from ``ItemsPath``
``$.results.validate.partitions``, not an ``ItemReader``: the list is already in the execution's
input (the validate group's output, about 30 bytes a partition, so up to roughly 8,000 partitions
within the 256 KiB payload limit), which needs no manifest object in S3, no S3 permission on the
state machine's role and no change to the container contract; beyond that size the validate
group would write a JSON manifest and the Map would read it with an ``ItemReader``. The payload
stays bounded: a child execution returns only ``{"index", "rows_scored"}`` (``PARTITION_SUMMARY``)
and the Map keeps only their count (``MAP_SUMMARY``). ``ToleratedFailurePercentage`` is 0: a partition
that fails (after its Spot retries and on-demand fallback) publishes its own alert from its child
execution (``NotifyScorePartitionFailed``: run, partition, the task's error and cause) and fails
it (``ScorePartitionFailed``); that fails the Map Run with ``States.ExceedToleratedFailureThreshold``
(whose cause names no partition), caught to ``ScoreFailed`` without a second alert. Any other
error of the Map state goes to ``NotifyFailure``.

Control flow per ECS task: wait for another run's run lock (``RUN_LOCKED_RETRY``); retry Spot
interruptions, heartbeat timeouts and ECS API errors (1 + 2 attempts, exponential backoff), then fall back to an on-demand ``FARGATE`` copy of the state
(``<Name>OnDemand``). Validation and gate failures publish an alert to the SNS topic and fail the
execution with that error and the task's cause; anything else publishes a generic alert and fails
it with ``TaskError.PIPELINE_FAILED``, cause ``"<task's error>: <task's cause>"``. A Fail state's
error never comes from the task: Fail states must not raise ``States.*`` names (e.g. a final
``States.HeartbeatTimeout``).

Resource strings for service integrations (``arn:<partition>:states:::ecs:runTask...``) take the
partition from the environment's settings (``contract.states_integration``); every ARN of the
environment's own resources comes from the target.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stagewise.pipeline.asl_states import (
    ERROR_PATH, Argument, Catcher, ChoiceState, DistributedMapState, EcsLaunch, EcsTaskState, FailState, Intrinsic, JsonPath, Retrier,
    SnsPublishState, State, StateGraph, SucceedState, states_format,
)
from stagewise.pipeline.definition import FANNED_OUT, MAPPED_GROUPS, PIPELINE, TASK_DEFINITIONS, Pipeline, Step
from stagewise.platform.contract import TaskError
from stagewise.platform.resources import CONTAINER_NAME, EnvironmentResources
from stagewise.stacks.settings import EnvironmentSettings

HEARTBEAT_TIMEOUT = "States.HeartbeatTimeout"
ECS_API_ERROR = "ECS.AmazonECSException"
ALL_ERRORS = "States.ALL"
EXCEED_TOLERATED_FAILURE = "States.ExceedToleratedFailureThreshold"

SPOT = "FARGATE_SPOT"
ON_DEMAND = "FARGATE"
PARTITIONS_PATH = "$.results.validate.partitions"
"""Where a mapped group finds its partitions: the ``validate`` group's SendTaskSuccess output."""
PARTITION_SUMMARY = {"index.$": "$.partition.index", "rows_scored.$": "$.rows_scored"}
"""ResultSelector of a partition's task: what a child execution of the Map returns."""
MAP_SUMMARY = {"partitions.$": "States.ArrayLength($)"}
"""ResultSelector of a mapped group's Map state: ``$.results.<g>`` is ``{"partitions": <count>}``,
the same few bytes for any number of partitions (the partitions' results are in S3)."""
DONE = "Done"
TRIGGERED, CLAIM_STATE, CLAIMED, ALREADY_PROCESSED = "Triggered", "ClaimInput", "Claimed", "AlreadyProcessed"
"""The claim states that open every state machine (``_claim_states``)."""
CLAIM_GROUP = "claim"
"""The claim task's command (``stagewise-task claim``) and where its output lands (``$.results.claim``)."""

_NOTIFY_RETRY_INTERVAL_SECONDS = 5
_MAX_CHILD_EXECUTIONS = 10_000  # a Distributed Map's MaxConcurrency limit (0 would mean that many)


# --------------------------------------------------------------------------------------------
# Target: everything environment-specific


@dataclass(frozen=True)
class StateMachineTarget:
    """Everything environment-specific the state machine needs.

    Attributes:
        cluster_arn: the ECS cluster (capacity providers ``FARGATE_SPOT`` and ``FARGATE``).
        task_definition_arns: task definition name (``validate``, ``train``, ``score``; see
            ``TASK_DEFINITIONS``) -> task definition ARN.
        subnets: subnets of the tasks' ENIs (awsvpc networking).
        security_groups: security groups of the tasks' ENIs.
        alert_topic_arn: the SNS topic validation, gate and step failures are published to.
        environment: ``dev``, ``test`` or ``prod`` (passed to the container as ``--env``).
        scoring_concurrency: how many partitions a mapped group runs at once (its Distributed
            Map's ``MaxConcurrency``, 1..10000; from the stack setting ``scoringConcurrency``).
        partition: the ARN partition of the account (``aws``, ``aws-cn``, ``aws-us-gov``; from the
            settings' role ARN), for the service integrations' resource ARNs.
        container_name: the container whose command and environment are overridden.
        heartbeat_seconds: a task that sends no heartbeat for this long fails with
            ``States.HeartbeatTimeout`` (and is retried, then run on demand).
        retry_interval_seconds: wait before the first retry of a Spot interruption, heartbeat
            timeout or ECS API error; doubled before the second.
    """

    cluster_arn: str
    task_definition_arns: dict[str, str]
    subnets: tuple[str, ...]
    security_groups: tuple[str, ...]
    alert_topic_arn: str
    environment: str
    scoring_concurrency: int
    partition: str
    container_name: str = CONTAINER_NAME
    heartbeat_seconds: int = 300
    retry_interval_seconds: int = 30


# --------------------------------------------------------------------------------------------
# The pipeline's state machine


@dataclass(frozen=True)
class _Failure:
    """A failure path: which errors lead to it, its alert and its Fail state."""

    errors: tuple[str, ...]
    notify: str
    fail: str
    what: str  # for the subject: "<pipeline>: <what>"
    message: str  # States.Format template
    args: tuple[str, ...]  # its arguments: paths into the state's input or the context object
    error: str  # Error of the Fail state
    cause_with_error: bool  # Cause of the Fail state: "<task's error>: <task's cause>", else the task's cause


_FAILURES = (
    _Failure(
        (TaskError.VALIDATION_FAILED,),
        "NotifyValidationFailed",
        "ValidationFailed",
        "validation failed",
        "run {} of model {} stopped: the data at {} failed validation. {} Execution: {}",
        ("$.run_id", "$.model", "$.data", "$.error.Cause", "$$.Execution.Id"),
        TaskError.VALIDATION_FAILED,
        False,
    ),
    _Failure(
        (TaskError.GATE_FAILED,),
        "NotifyGateFailed",
        "GateFailed",
        "gate failed",
        "run {} of model {} on {} stopped: the offline gate rejected the new version. {} Execution: {}",
        ("$.run_id", "$.model", "$.data", "$.error.Cause", "$$.Execution.Id"),
        TaskError.GATE_FAILED,
        False,
    ),
    _Failure(
        (ALL_ERRORS,),
        "NotifyFailure",
        "PipelineFailed",
        "pipeline failed",
        "run {} of model {} on {} failed with {}. {} Execution: {}",
        ("$.run_id", "$.model", "$.data", "$.error.Error", "$.error.Cause", "$$.Execution.Id"),
        TaskError.PIPELINE_FAILED,
        True,
    ),
)


def state_name(group: str) -> str:
    """The state name of a task group: ``train`` -> ``Train``."""
    return group[:1].upper() + group[1:]


def task_command(group: str, environment: str, partitioned: bool = False, flag: str | None = None) -> Intrinsic:
    """The container's arguments for ``group``: ``States.Array('<group>', '--run-id', $.run_id, ...)``
    (``stagewise.pipeline.task_args`` parses them).

    Partitioned commands add ``--partition`` and ``--partitions`` from ``$.partition`` (numbers,
    formatted as strings: ECS commands are lists of strings); ``flag`` (``--fan-out``, ``--merge``)
    is added last.
    """
    args: list[Argument] = [
        group,
        "--run-id", JsonPath("$.run_id"),
        "--data", JsonPath("$.data"),
        "--model", JsonPath("$.model"),
        "--env", environment,
    ]  # fmt: skip
    if partitioned:
        args += [
            "--partition", states_format("{}", JsonPath("$.partition.index")),
            "--partitions", states_format("{}", JsonPath("$.partition.count")),
        ]  # fmt: skip
    if flag:
        args.append(flag)
    return Intrinsic("States.Array", tuple(args))


def map_run_labels(pipeline: Pipeline = PIPELINE) -> tuple[str, ...]:
    """The ``Label`` of each Distributed Map in ``pipeline``'s state machine (one per mapped group,
    its state name, and one per fanned-out group, ``<Group>Partitions``): the ``<label>`` of its
    child executions' ARNs, ``arn:<partition>:states:<region>:<account>:execution:<state machine>/<label>:<id>``."""
    groups = [g for g, _ in pipeline.task_groups()]
    return tuple(fanned_map_name(g) for g in groups if g in FANNED_OUT) + tuple(state_name(g) for g in groups if g in MAPPED_GROUPS)


def fanned_map_name(group: str) -> str:
    """The Distributed Map of a fanned-out group: ``validate`` -> ``ValidatePartitions``; its
    merge task is ``<Group>Merge``, its first task's choice ``<Group>FannedOut``."""
    return f"{state_name(group)}Partitions"


def _describe(steps: Sequence[Step]) -> str:
    return "; ".join(f"{st.name}: {st.description}" for st in steps)


RUN_LOCKED_RETRY = Retrier((TaskError.RUN_LOCKED,), interval_seconds=60, max_attempts=20, backoff_rate=1.0)
"""Another run (a manual one, when the schedule fires) holds the model's run lock: wait for it,
trying every minute for 20 minutes (``stagewise.registry.runlock``; its lock lapses 10 minutes
after its holder dies)."""


def _task_retry(target: StateMachineTarget) -> tuple[Retrier, ...]:
    return (
        RUN_LOCKED_RETRY,
        Retrier(
            (TaskError.SPOT_INTERRUPTION, HEARTBEAT_TIMEOUT, ECS_API_ERROR),
            interval_seconds=target.retry_interval_seconds,
            max_attempts=2,
            backoff_rate=2.0,
        ),
    )


def _failure_catch() -> tuple[Catcher, ...]:
    return tuple(Catcher(f.errors, f.notify) for f in _FAILURES)


def _task_pair(
    name: str,
    comment: str,
    launch: EcsLaunch,
    task_definition_arn: str,
    command: Intrinsic,
    target: StateMachineTarget,
    next_state: str | None,
    result_path: str | None,
    catch: tuple[Catcher, ...],
    result_selector: dict[str, str] | None = None,
) -> tuple[EcsTaskState, EcsTaskState]:
    """The Spot state ``name`` and its on-demand fallback ``<name>OnDemand``."""
    fallback = f"{name}OnDemand"
    retry = _task_retry(target)
    spot = EcsTaskState(
        name=name,
        comment=comment,
        launch=launch,
        task_definition_arn=task_definition_arn,
        capacity_provider=SPOT,
        command=command,
        next=next_state,
        result_path=result_path,
        result_selector=result_selector,
        retry=retry,
        catch=(Catcher((TaskError.SPOT_INTERRUPTION, HEARTBEAT_TIMEOUT), fallback), *catch),
    )
    on_demand = dataclasses.replace(
        spot, name=fallback, capacity_provider=ON_DEMAND, catch=catch,
        comment=f"On-demand FARGATE fallback of {name} after Spot interruptions or heartbeat timeouts. {comment}",
    )
    return spot, on_demand


def _check(pipeline: Pipeline, target: StateMachineTarget) -> list[tuple[str, tuple[Step, ...]]]:
    groups = pipeline.task_groups()
    if not groups:
        raise ValueError(f"pipeline {pipeline.name!r} has no steps")
    seen: set[str] = set()
    for group, _ in groups:
        if group in seen:
            raise ValueError(
                f"task group {group!r} appears twice in pipeline {pipeline.name!r}; its steps must be consecutive"
            )
        seen.add(group)
        if group in MAPPED_GROUPS and "validate" not in seen:
            raise ValueError(
                f"mapped group {group!r} needs the partitions of the validate group ({PARTITIONS_PATH}), "
                f"which must run before it"
            )
        definition = TASK_DEFINITIONS.get(group)
        if definition is None:
            raise ValueError(f"task group {group!r} has no task definition in TASK_DEFINITIONS")
        if definition not in target.task_definition_arns:
            raise ValueError(
                f"no task definition ARN for {definition!r} (task group {group!r}); "
                f"the target has {sorted(target.task_definition_arns)}"
            )
    if not target.subnets:
        raise ValueError("the target has no subnets; awsvpc tasks need at least one")
    if not 1 <= target.scoring_concurrency <= _MAX_CHILD_EXECUTIONS:
        raise ValueError(f"scoring_concurrency must be 1..{_MAX_CHILD_EXECUTIONS}, got {target.scoring_concurrency}")
    return groups


def _error_and_cause() -> str:
    """A Fail state's ``CausePath``: ``"<error>: <cause>"`` of the caught error at ``$.error``."""
    return states_format("{}: {}", JsonPath(f"{ERROR_PATH}.Error"), JsonPath(f"{ERROR_PATH}.Cause")).render()


def _partition_failure(notify: str, fail: str) -> _Failure:
    """The failure path of a mapped group's partition (in its child execution, whose input is the
    Map's item: ``run_id``, ``data``, ``model``, ``partition``): the alert names the partition and
    carries its own error and cause, which the Map Run's ``States.ExceedToleratedFailureThreshold``
    does not. Its ``Execution`` is the child execution's ARN on AWS (the parent's on moto's engine)."""
    return _Failure(
        (ALL_ERRORS,), notify, fail, "partition failed",
        "run {} of model {} on {} failed: partition {} (of {}, counted from 0) failed with {}. {} Execution: {}",
        ("$.run_id", "$.model", "$.data", "$.partition.index", "$.partition.count", "$.error.Error", "$.error.Cause",
         "$$.Execution.Id"),
        TaskError.PIPELINE_FAILED, True,
    )


def _failure_path(f: _Failure, pipeline_name: str, target: StateMachineTarget) -> tuple[State, State]:
    """The alert (an SNS publish, retried; a failed publish still ends in the Fail state) and the
    Fail state of failure ``f``."""
    env = target.environment
    notify = SnsPublishState(
        name=f.notify,
        comment=f"Alert the {env} alert topic: {f.what}. A failed publish still ends in {f.fail}.",
        topic_arn=target.alert_topic_arn,
        subject=f"[Stagewise {env}] {pipeline_name}: {f.what}",
        message=states_format(f"Stagewise {env}: {f.message}", *(JsonPath(a) for a in f.args)),
        next=f.fail,
        partition=target.partition,
        retry=(Retrier(("States.TaskFailed",), _NOTIFY_RETRY_INTERVAL_SECONDS, max_attempts=3),),
        catch=(Catcher((ALL_ERRORS,), f.fail, result_path="$.notify_error"),),
    )
    cause = _error_and_cause() if f.cause_with_error else f"{ERROR_PATH}.Cause"
    return notify, FailState(name=f.fail, comment=f"The run stopped: {f.what}.", error=f.error, cause_path=cause)


def claim_command(environment: str) -> Intrinsic:
    """The claim task's arguments: ``claim --run-id .. --data .. --model .. --env <env> --execution
    $$.Execution.Id --trigger $.trigger`` (``stagewise.pipeline.claim_task``)."""
    return Intrinsic("States.Array", (
        CLAIM_GROUP, "--run-id", JsonPath("$.run_id"), "--data", JsonPath("$.data"), "--model", JsonPath("$.model"),
        "--env", environment, "--execution", JsonPath("$$.Execution.Id"), "--trigger", JsonPath("$.trigger"),
    ))


def _claim_states(first: str, launch: EcsLaunch, target: StateMachineTarget) -> list[State]:
    """``Triggered`` (an input with a ``trigger``, from the S3 rule or the schedule, is claimed;
    any other goes to ``first``), ``ClaimInput`` (+ its on-demand fallback) on the validate task
    definition, ``Claimed`` (``$.results.claim.claimed``: run ``first``, else ``AlreadyProcessed``)."""
    arn = target.task_definition_arns[TASK_DEFINITIONS["validate"]]
    return [
        ChoiceState(TRIGGERED, "Runs started by data landing or by the schedule claim their input first; others run.",
                    (({"Variable": "$.trigger", "IsPresent": True}, CLAIM_STATE),), first),
        *_task_pair(CLAIM_STATE, "Claim the input's content (sha256) for this execution: stagewise.registry.claims.",
                    launch, arn, claim_command(target.environment), target, next_state=CLAIMED,
                    result_path=f"$.results.{CLAIM_GROUP}", catch=(Catcher((ALL_ERRORS,), "NotifyFailure"),)),
        ChoiceState(CLAIMED, "Run only if this execution holds the claim.",
                    (({"Variable": f"$.results.{CLAIM_GROUP}.claimed", "BooleanEquals": True}, first),), ALREADY_PROCESSED),
        SucceedState(ALREADY_PROCESSED, "Another execution claimed this content ($.results.claim.owner): no second run."),
    ]


def compile_pipeline(pipeline: Pipeline, target: StateMachineTarget) -> dict[str, Any]:
    """The ASL document of ``pipeline`` for ``target``.

    States, in order: ``Triggered`` -> ``ClaimInput`` -> ``Claimed`` -> ``AlreadyProcessed`` (an
    input with a ``trigger`` claims its content first, ``_claim_states``); per task group ``g`` a
    Task state ``G`` (``Train``, ``Report``) and its on-demand fallback ``GOnDemand``; for a mapped
    group a Distributed Map ``G`` whose child executions run ``GPartition`` (``_map_states``); for
    a fanned-out group ``G``, ``GFannedOut``, ``GPartitions``, ``GMerge`` (``_fanned_out_states``);
    then ``Done``; then the failure paths ``NotifyValidationFailed`` -> ``ValidationFailed``,
    ``NotifyGateFailed`` -> ``GateFailed``, ``NotifyFailure`` -> ``PipelineFailed``.

    Args:
        pipeline: the pipeline definition (``PIPELINE`` or ``SCORING``).
        target: the environment's cluster, task definitions, network and alert topic.

    Returns:
        The state machine definition as a JSON-ready dict (``to_json`` serialises it).

    Raises:
        ValueError: the pipeline has no steps, a group has no task definition ARN, a mapped group
            runs before ``validate``, the target has no subnets, its scoring concurrency is not
            1..10000, or the result would be invalid
            (duplicate state names, dangling transitions, subject too long).
    """
    groups = _check(pipeline, target)
    env = target.environment
    launch = EcsLaunch(
        cluster_arn=target.cluster_arn,
        subnets=tuple(target.subnets),
        security_groups=tuple(target.security_groups),
        container_name=target.container_name,
        heartbeat_seconds=target.heartbeat_seconds,
        partition=target.partition,
    )
    names = [state_name(g) for g, _ in groups]
    states: list[State] = []
    for i, (group, steps) in enumerate(groups):
        name = names[i]
        next_state = names[i + 1] if i + 1 < len(names) else DONE
        arn = target.task_definition_arns[TASK_DEFINITIONS[group]]
        comment = _describe(steps)
        if group in MAPPED_GROUPS:
            states.extend(_map_states(name, f"{name}Partition", f"{target.scoring_concurrency} child executions at a time; "
                                      f"any failed partition fails it. {comment}", launch, arn,
                                      task_command(group, env, partitioned=True), target, pipeline.name,
                                      next_state=next_state, result_path=f"$.results.{group}",
                                      result_selector=PARTITION_SUMMARY))
        elif group in FANNED_OUT:
            states.extend(_fanned_out_states(group, name, comment, launch, arn, target, pipeline.name, next_state))
        else:
            states.extend(
                _task_pair(
                    name,
                    comment,
                    launch,
                    arn,
                    task_command(group, env),
                    target,
                    next_state=next_state,
                    result_path=f"$.results.{group}",
                    catch=_failure_catch(),
                )
            )
    states = [*_claim_states(names[0], launch, target), *states]
    states.append(SucceedState(DONE, f"Every task group of {pipeline.name} succeeded; results are under $.results."))
    for f in _FAILURES:
        states.extend(_failure_path(f, pipeline.name, target))
    graph = StateGraph(start_at=TRIGGERED, states=tuple(states))
    all_names = graph.all_names()
    nested_duplicates = sorted({n for n in all_names if all_names.count(n) > 1})
    if nested_duplicates:
        raise ValueError(f"state names must be unique across the state machine: {nested_duplicates}")
    return {
        "Comment": (
            f"Stagewise pipeline {pipeline.name!r} in {env}: {' -> '.join(names)}. Compiled by "
            f"stagewise.pipeline.asl from stagewise.pipeline.definition; change the definition, not this document."
        ),
        **graph.to_asl(),
    }



def _map_states(name: str, inner: str, comment: str, launch: EcsLaunch, arn: str, command: Intrinsic,
                target: StateMachineTarget, pipeline_name: str, next_state: str, result_path: str,
                result_selector: dict[str, str]) -> list[State]:
    """A Distributed Map ``name`` over the validate group's partitions whose child executions run
    ``inner`` (and ``<inner>OnDemand``), then ``<name>Failed``: a failed partition alerts from its
    child execution with its own error and fails it, which fails the Map Run, caught to
    ``<name>Failed`` without a second alert."""
    notify, failed = f"Notify{inner}Failed", f"{inner}Failed"
    iteration = StateGraph(
        start_at=inner,
        states=(
            *_task_pair(
                inner, f"One partition. {comment}", launch, arn, command, target, next_state=None, result_path=None,
                catch=(Catcher((ALL_ERRORS,), notify),),  # alert with its own error, then fail the child
                result_selector=result_selector,  # a child execution's output: a few numbers
            ),
            *_failure_path(_partition_failure(notify, failed), pipeline_name, target),
        ),
    )
    return [
        DistributedMapState(
            name=name,
            comment=f"Distributed Map over the input's partitions, {comment}",
            label=name,
            items_path=PARTITIONS_PATH,
            item_selector={"run_id.$": "$.run_id", "data.$": "$.data", "model.$": "$.model", "partition.$": "$$.Map.Item.Value"},
            iteration=iteration,
            max_concurrency=target.scoring_concurrency,
            next=next_state,
            result_path=result_path,
            result_selector=MAP_SUMMARY,
            # the failed partition alerted with its own error: no second, generic alert
            catch=(Catcher((EXCEED_TOLERATED_FAILURE,), f"{name}Failed"), Catcher((ALL_ERRORS,), "NotifyFailure")),
        ),
        FailState(
            name=f"{name}Failed", comment=f"A partition of {name} failed; its child execution alerted with its error.",
            error=TaskError.PIPELINE_FAILED, cause_path=_error_and_cause(),
        ),
    ]


def _fanned_out_states(group: str, name: str, comment: str, launch: EcsLaunch, arn: str, target: StateMachineTarget,
                       pipeline_name: str, next_state: str) -> list[State]:
    """A fanned-out group (``FANNED_OUT``; the module docstring): ``<Name>`` (``--fan-out``), the
    choice ``<Name>FannedOut``, the Map ``<Name>Partitions`` and ``<Name>Merge`` (``--merge``)."""
    choice, map_name, merge = f"{name}FannedOut", fanned_map_name(group), f"{name}Merge"
    validated = f"$.results.{group}.validated"
    return [
        *_task_pair(name, f"{comment}. Plans the input's partitions; validates an input of one partition here.", launch, arn,
                    task_command(group, target.environment, flag="--fan-out"), target, next_state=choice,
                    result_path=f"$.results.{group}", catch=_failure_catch()),
        ChoiceState(choice, f"Left to {map_name} and {merge} when the first task did not validate the input itself.",
                    (({"And": [{"Variable": validated, "IsPresent": True}, {"Variable": validated, "BooleanEquals": False}]},
                      map_name),), next_state),
        *_map_states(map_name, f"{name}Partition", f"{target.scoring_concurrency} child executions at a time, each validating "
                     f"its partition's row groups; any failed partition fails it.", launch, arn,
                     task_command(group, target.environment, partitioned=True), target, pipeline_name, next_state=merge,
                     result_path=f"$.results.{group}_partitions", result_selector={"index.$": "$.partition.index", "rows.$": "$.rows"}),
        *_task_pair(merge, f"The partitions' results merged exactly, whole-column expectations counted, Data Docs published; "
                    f"fails closed. {comment}", launch, arn, task_command(group, target.environment, flag="--merge"), target,
                    next_state=next_state, result_path=f"$.results.{group}", catch=_failure_catch()),
    ]


def to_json(asl: Mapping[str, Any]) -> str:
    """The ASL document as JSON (the ``definition`` of ``CreateStateMachine`` / Pulumi's state machine)."""
    return json.dumps(asl, indent=2, ensure_ascii=False)


def target_for_environment(
    settings: EnvironmentSettings,
    resources: EnvironmentResources,
    task_definition_arns: Mapping[str, str],
    subnets: Sequence[str],
    security_groups: Sequence[str],
) -> StateMachineTarget:
    """The target of an environment: its cluster ARN and alert topic from ``resources``, its scoring
    concurrency, task heartbeat and retry interval from ``settings``, and the given task definition
    ARNs and network."""
    return StateMachineTarget(
        cluster_arn=resources.arn("ecs", f"cluster/{resources.compute.cluster}"),
        task_definition_arns=dict(task_definition_arns),
        subnets=tuple(subnets),
        security_groups=tuple(security_groups),
        alert_topic_arn=resources.alert_topic_arn,
        environment=settings.environment,
        scoring_concurrency=settings.scoring_concurrency,
        partition=settings.partition,
        heartbeat_seconds=settings.task_heartbeat_seconds,
        retry_interval_seconds=settings.task_retry_interval_seconds,
    )


def compile_for_environment(
    settings: EnvironmentSettings,
    resources: EnvironmentResources,
    task_definition_arns: Mapping[str, str],
    subnets: Sequence[str],
    security_groups: Sequence[str],
    pipeline: Pipeline = PIPELINE,
) -> dict[str, Any]:
    """``compile_pipeline(pipeline, target_for_environment(...))``.

    Args:
        settings: the environment's settings (environment name, scoring concurrency).
        resources: the environment's resource names (cluster, alert topic).
        task_definition_arns: ``{"validate": arn, "train": arn, "score": arn}``.
        subnets: subnets of the tasks.
        security_groups: security groups of the tasks.
        pipeline: ``PIPELINE`` (default) or ``SCORING``.

    Raises:
        ValueError: as ``compile_pipeline``.
    """
    target = target_for_environment(settings, resources, task_definition_arns, subnets, security_groups)
    return compile_pipeline(pipeline, target)
