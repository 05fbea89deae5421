"""The Amazon States Language building blocks the compiler (``stagewise.pipeline.asl``) assembles:
intrinsic functions (``States.Format``), retriers and catchers, and one small frozen builder per
state type (ECS task with a task token, SNS publish, Distributed Map, Fail, Succeed), each
rendering its own ASL object (``to_asl``) and naming the states it can go to (``transitions``).

Resource ARNs of service integrations take the partition from the launch or state
(``contract.states_integration``); the names of the container's environment variables are
``contract.Env``'s.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Union

from stagewise.platform.contract import Env, states_integration

RUN_TASK = "ecs:runTask.waitForTaskToken"
"""Step Functions' ECS integration, callback pattern: the container reports with the task token."""
SNS_PUBLISH = "sns:publish"
ERROR_PATH = "$.error"
_STATE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,79}$")
_LABEL_MAX = 40
_LABEL = re.compile(rf"^[A-Za-z0-9]{{1,{_LABEL_MAX}}}$")  # Map Run labels: no whitespace, wildcards or punctuation
_SUBJECT_MAX = 100  # SNS: subjects must be under 100 characters, ASCII, no line breaks


# --------------------------------------------------------------------------------------------
# Intrinsic functions


@dataclass(frozen=True)
class JsonPath:
    """A path argument of an intrinsic function (``$.run_id``, ``$$.Execution.Id``)."""

    path: str

    def render(self) -> str:
        """The path as written in an intrinsic function."""
        return self.path


@dataclass(frozen=True)
class FormatTemplate:
    """The template of ``States.Format``: a string literal whose ``{}`` are placeholders."""

    text: str

    def render(self) -> str:
        """The template as a quoted literal (``'`` and ``\\`` escaped, placeholders kept)."""
        return "'" + re.sub(r"([\\'])", r"\\\1", self.text) + "'"


@dataclass(frozen=True)
class Intrinsic:
    """An intrinsic function call such as ``States.Array('train', $.run_id)``.

    ``str`` arguments are string literals (quoted and escaped), ``JsonPath`` arguments are paths,
    ``Intrinsic`` arguments are nested calls.
    """

    function: str
    args: tuple["Argument", ...]

    def render(self) -> str:
        """The call as written in a ``.$`` field."""
        return f"{self.function}({', '.join(_render_argument(a) for a in self.args)})"


Argument = Union[str, JsonPath, FormatTemplate, Intrinsic]


def _render_argument(arg: Argument) -> str:
    if isinstance(arg, str):
        # ASL intrinsic string literals escape ' { } and \ with a backslash.
        return "'" + re.sub(r"([\\'{}])", r"\\\1", arg) + "'"
    return arg.render()


def states_format(template: str, *args: Argument) -> Intrinsic:
    """``States.Format(template, *args)``; each ``{}`` in ``template`` takes the next argument.

    Raises:
        ValueError: the number of ``{}`` differs from the number of arguments, or the template has
            a brace that is not part of a ``{}`` placeholder.
    """
    rest = template.replace("{}", "")
    if template.count("{}") != len(args) or "{" in rest or "}" in rest:
        raise ValueError(f"States.Format template {template!r} does not match its {len(args)} arguments")
    return Intrinsic("States.Format", (FormatTemplate(template), *args))


# --------------------------------------------------------------------------------------------
# Builders


class State(Protocol):
    """A state of the state machine: a name and its ASL object."""

    name: str

    def to_asl(self) -> dict[str, Any]:
        """The state's ASL object (without its name)."""
        ...

    def transitions(self) -> tuple[str, ...]:
        """Names of the states this one can move to (``Next`` and ``Catch`` targets)."""
        ...


@dataclass(frozen=True)
class Retrier:
    """One entry of a state's ``Retry`` list."""

    errors: tuple[str, ...]
    interval_seconds: int
    max_attempts: int
    backoff_rate: float = 2.0

    def to_asl(self) -> dict[str, Any]:
        """The retrier's ASL object."""
        return {
            "ErrorEquals": list(self.errors),
            "IntervalSeconds": self.interval_seconds,
            "MaxAttempts": self.max_attempts,
            "BackoffRate": self.backoff_rate,
        }


@dataclass(frozen=True)
class Catcher:
    """One entry of a state's ``Catch`` list; the error object goes to ``result_path``."""

    errors: tuple[str, ...]
    next: str
    result_path: str = ERROR_PATH

    def to_asl(self) -> dict[str, Any]:
        """The catcher's ASL object."""
        return {"ErrorEquals": list(self.errors), "ResultPath": self.result_path, "Next": self.next}


def _flow(next_state: str | None) -> dict[str, Any]:
    return {"Next": next_state} if next_state else {"End": True}


def _handlers(retry: Sequence[Retrier], catch: Sequence[Catcher]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if retry:
        out["Retry"] = [r.to_asl() for r in retry]
    if catch:
        out["Catch"] = [c.to_asl() for c in catch]
    return out


@dataclass(frozen=True)
class EcsLaunch:
    """Where and how ECS tasks start: cluster, awsvpc network, container, heartbeat, and the
    partition of the service integration's ARN."""

    cluster_arn: str
    subnets: tuple[str, ...]
    security_groups: tuple[str, ...]
    container_name: str
    heartbeat_seconds: int
    partition: str


@dataclass(frozen=True)
class EcsTaskState:
    """A Task state running one ECS task and waiting for its task token.

    The container gets ``command`` as its arguments and the token in ``Env.TASK_TOKEN``;
    ``result_selector`` keeps part of its SendTaskSuccess output.
    """

    name: str
    comment: str
    launch: EcsLaunch
    task_definition_arn: str
    capacity_provider: str
    command: Intrinsic
    next: str | None
    result_path: str | None = None
    result_selector: dict[str, str] | None = None
    retry: tuple[Retrier, ...] = ()
    catch: tuple[Catcher, ...] = ()

    def to_asl(self) -> dict[str, Any]:
        """The Task state's ASL object."""
        state: dict[str, Any] = {
            "Type": "Task",
            "Comment": self.comment,
            "Resource": states_integration(self.launch.partition, RUN_TASK),
            "Parameters": {
                "Cluster": self.launch.cluster_arn,
                "TaskDefinition": self.task_definition_arn,
                "CapacityProviderStrategy": [{"CapacityProvider": self.capacity_provider, "Weight": 1}],
                "NetworkConfiguration": {
                    "AwsvpcConfiguration": {
                        "Subnets": list(self.launch.subnets),
                        "SecurityGroups": list(self.launch.security_groups),
                        "AssignPublicIp": "ENABLED",
                    }
                },
                "PropagateTags": "TASK_DEFINITION",
                "Overrides": {
                    "ContainerOverrides": [
                        {
                            "Name": self.launch.container_name,
                            "Command.$": self.command.render(),
                            "Environment": [
                                {"Name": Env.TASK_TOKEN, "Value.$": "$$.Task.Token"},
                                {"Name": Env.CAPACITY_PROVIDER, "Value": self.capacity_provider},
                            ],
                        }
                    ]
                },
            },
            "HeartbeatSeconds": self.launch.heartbeat_seconds,
        }
        if self.result_selector is not None:
            state["ResultSelector"] = dict(self.result_selector)
        if self.result_path is not None:
            state["ResultPath"] = self.result_path
        return {**state, **_handlers(self.retry, self.catch), **_flow(self.next)}

    def transitions(self) -> tuple[str, ...]:
        """``Next`` and the ``Catch`` targets."""
        return tuple(filter(None, (self.next, *(c.next for c in self.catch))))


@dataclass(frozen=True)
class SnsPublishState:
    """A Task state publishing ``message`` to an SNS topic; its input passes through unchanged."""

    name: str
    comment: str
    topic_arn: str
    subject: str
    message: Intrinsic
    next: str
    partition: str
    retry: tuple[Retrier, ...] = ()
    catch: tuple[Catcher, ...] = ()

    def to_asl(self) -> dict[str, Any]:
        """The Task state's ASL object."""
        if len(self.subject) >= _SUBJECT_MAX or not self.subject.isascii() or "\n" in self.subject:
            raise ValueError(f"SNS subject must be ASCII, one line, under {_SUBJECT_MAX} characters: {self.subject!r}")
        state = {
            "Type": "Task",
            "Comment": self.comment,
            "Resource": states_integration(self.partition, SNS_PUBLISH),
            "Parameters": {"TopicArn": self.topic_arn, "Subject": self.subject, "Message.$": self.message.render()},
            "ResultPath": None,
        }
        return {**state, **_handlers(self.retry, self.catch), **_flow(self.next)}

    def transitions(self) -> tuple[str, ...]:
        """``Next`` and the ``Catch`` targets."""
        return (self.next, *(c.next for c in self.catch))


@dataclass(frozen=True)
class StateGraph:
    """States and where execution starts: a state machine's or a Map iteration's body."""

    start_at: str
    states: tuple["State", ...]

    def to_asl(self) -> dict[str, Any]:
        """``{"StartAt": ..., "States": {...}}``.

        Raises:
            ValueError: duplicate or invalid state names, or a transition to a state not in this graph.
        """
        names = [s.name for s in self.states]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate state names: {duplicates}")
        bad = [n for n in names if not _STATE_NAME.match(n)]
        if bad:
            raise ValueError(f"invalid state names (letters and digits, at most 80): {bad}")
        targets = {self.start_at, *(t for s in self.states for t in s.transitions())}
        missing = sorted(targets - set(names))
        if missing:
            raise ValueError(f"transitions to states that do not exist: {missing}")
        return {"StartAt": self.start_at, "States": {s.name: s.to_asl() for s in self.states}}

    def all_names(self) -> list[str]:
        """Names of these states and of the states nested in them (Map iterations)."""
        out: list[str] = []
        for s in self.states:
            out.append(s.name)
            if isinstance(s, DistributedMapState):
                out.extend(s.iteration.all_names())
        return out


@dataclass(frozen=True)
class DistributedMapState:
    """A Map state in ``DISTRIBUTED`` mode: each item at ``items_path`` runs ``iteration`` as a child
    workflow execution of ``execution_type`` (``STANDARD``: iterations wait on long ECS tasks).

    The child executions are named ``execution:<state machine>/<label>:<id>`` (the state machine's
    role must be allowed to start, describe and stop them). ``tolerated_failure_percentage`` 0
    fails the Map Run, and so this state (``States.ExceedToleratedFailureThreshold``), when one
    child execution fails. ``result_selector`` replaces the array of the child executions'
    outputs before it is written to ``result_path``.
    """

    name: str
    comment: str
    label: str
    items_path: str
    item_selector: dict[str, str]
    iteration: StateGraph
    max_concurrency: int
    next: str | None
    result_path: str | None = None
    result_selector: dict[str, str] | None = None
    catch: tuple[Catcher, ...] = ()
    execution_type: str = "STANDARD"
    tolerated_failure_percentage: int = 0

    def to_asl(self) -> dict[str, Any]:
        """The Map state's ASL object.

        Raises:
            ValueError: a label that is not 1-40 letters and digits.
        """
        if not _LABEL.match(self.label):
            raise ValueError(f"Map Run label must be 1-{_LABEL_MAX} letters and digits: {self.label!r}")
        state: dict[str, Any] = {
            "Type": "Map",
            "Comment": self.comment,
            "Label": self.label,
            "ItemsPath": self.items_path,
            "ItemSelector": dict(self.item_selector),
            "MaxConcurrency": self.max_concurrency,
            "ToleratedFailurePercentage": self.tolerated_failure_percentage,
            "ItemProcessor": {
                "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": self.execution_type},
                **self.iteration.to_asl(),
            },
        }
        if self.result_selector is not None:
            state["ResultSelector"] = dict(self.result_selector)
        if self.result_path is not None:
            state["ResultPath"] = self.result_path
        return {**state, **_handlers((), self.catch), **_flow(self.next)}

    def transitions(self) -> tuple[str, ...]:
        """``Next`` and the ``Catch`` targets (the iteration's own transitions stay inside it)."""
        return tuple(filter(None, (self.next, *(c.next for c in self.catch))))


@dataclass(frozen=True)
class FailState:
    """Ends the execution as failed with ``error``; the cause comes from ``cause_path`` (a path or
    an intrinsic function of the state's input)."""

    name: str
    comment: str
    error: str
    cause_path: str

    def to_asl(self) -> dict[str, Any]:
        """The Fail state's ASL object."""
        return {"Type": "Fail", "Comment": self.comment, "Error": self.error, "CausePath": self.cause_path}

    def transitions(self) -> tuple[str, ...]:
        """A Fail state has none."""
        return ()


@dataclass(frozen=True)
class SucceedState:
    """Ends the execution as succeeded."""

    name: str
    comment: str

    def to_asl(self) -> dict[str, Any]:
        """The Succeed state's ASL object."""
        return {"Type": "Succeed", "Comment": self.comment}

    def transitions(self) -> tuple[str, ...]:
        """A Succeed state has none."""
        return ()




@dataclass(frozen=True)
class ChoiceState:
    """Branches on the state's input: the first rule whose condition holds (an ASL comparison such
    as ``{"Variable": "$.trigger", "IsPresent": true}``) names the next state, else ``default``."""

    name: str
    comment: str
    rules: tuple[tuple[Mapping[str, Any], str], ...]
    default: str

    def to_asl(self) -> dict[str, Any]:
        """The Choice state's ASL object."""
        return {"Type": "Choice", "Comment": self.comment,
                "Choices": [{**condition, "Next": target} for condition, target in self.rules], "Default": self.default}

    def transitions(self) -> tuple[str, ...]:
        """Every rule's target and the default."""
        return (*(target for _, target in self.rules), self.default)
