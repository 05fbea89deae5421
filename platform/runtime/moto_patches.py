"""moto's Step Functions engine put right where it differs from Step Functions, in one place.

The embedded AWS (``moto_server``) applies these in its server process; tests that run a private
in-process moto server apply them the same way (``apply`` returns the undo). Each patch names what
moto 5.2 does and what AWS does instead. The state machine itself is never changed for moto.

1. **ECS parameters and responses** (``StateTaskServiceEcs._normalise_parameters`` /
   ``_normalise_response``): moto passes the ASL names (``Cluster``, ``TaskDefinition``) to botocore
   unconverted (a ``KeyError`` that surfaces as ``States.Runtime``) and reads the ``RunTask``
   response by ASL names (``Tasks``). Step Functions converts both through the service's API
   model; so do these, through botocore's ECS model (as LocalStack's engine, which moto's is taken
   from, does).
2. **``CapacityProviderStrategy``** is dropped from ``RunTask`` by moto's list of supported
   parameters; Step Functions passes it (Fargate Spot, then on-demand, depends on it).
3. **Service calls as the execution role** (``boto_client_for`` of the ECS and SNS integrations):
   moto calls ``http://localhost:$MOTO_PORT`` with dummy keys, so in moto's default account
   123456789012 and, on the embedded AWS (HTTPS only), not at all. Step Functions acts as the state
   machine's role: here ``sts:AssumeRole`` of that role on the server itself, over its own scheme.
4. **``States.HeartbeatTimeout``** (``StateTaskServiceEcs._from_error``): moto reports a heartbeat
   timeout of a ``.waitForTaskToken`` ECS task as a generic task failure; Step Functions reports
   ``TaskTimedOut`` with ``States.HeartbeatTimeout``, which the state machine's ``Retry`` matches.
5. **``SendTaskFailure``'s ``cause``** is dropped by moto's handler; Step Functions keeps it (the
   alert and ``DescribeExecution`` show the task's own error).
6. **``ToleratedFailurePercentage``**: moto ignores it (a failed Map item becomes ``null`` and the
   Map Run succeeds). After the Map Run, failed and timed-out items over the percentage fail it
   with ``States.ExceedToleratedFailureThreshold``, as Step Functions does (``ToleratedFailureCount``,
   which the state machine does not declare, stays unenforced).
7. **``"ToleratedFailurePercentage": 0``**: moto's grammar wants a NUMBER token (``0.0``) and rejects
   the integer, which is valid ASL; its lexer reads that integer as a number.

8. **Task-level sizes** (``EC2ContainerServiceBackend._calculate_task_resource_requirements``):
   moto's ``RunTask`` adds up each container's ``memory`` and fails (a ``TypeError``, HTTP 500) when
   a container declares none. Fargate needs only the task's ``cpu`` and ``memory``, as the stack
   declares them; a container without sizes counts the task's.

9. **A task token per attempt** (``StateTaskService._eval_execution`` of the ECS integration): moto
   creates a ``.waitForTaskToken`` state's token once and keeps it, and its callback endpoint, for
   every ``Retry`` attempt, so the retry at once sees the failed attempt's ``SendTaskFailure`` again
   (and the next one the previous attempt's late ``SendTaskSuccess``). Step Functions gives each
   attempt a new token: a late callback of an earlier attempt changes nothing.

10. **Percentile statistics** (``cloudwatch.models.Statistics.get_statistics_for_type``): moto
   answers ``GetMetricData`` with ``Stat`` ``p95`` (any ``pNN``) by failing (HTTP 500); CloudWatch
   returns the percentile of the period's values. Here: numpy's linear-interpolation percentile of
   the raw values (CloudWatch's own is an approximation over its stored distribution; on a few
   hundred values they agree to well under a millisecond of latency).

11. **``ListMetrics`` lists each metric once** (``CloudWatchBackend.get_filtered_metrics``): moto
   compares dimension lists pair by pair (``are_dimensions_same``), so a metric with two or more
   dimensions is never recognised as listed already: it appears once per datum ever put, and the
   listing is quadratic in the datums (with the agents' per-call latencies, a minute and more per
   page: the tests' CloudWatch calls timed out). CloudWatch lists each metric (namespace, name,
   dimension set) once; so does this, in one pass.

12. **EventBridge rules start state machines** (``events.models.Rule.send_to_targets``): moto
   delivers a rule's matching events to logs, SQS, other buses and API destinations only, and
   applies no input transformer to S3's events. EventBridge starts a ``states`` target's execution
   as the target's role with the transformed input: so does this (asynchronously, as the
   ``RoleArn``, on this server), so an object put under ``incoming/<model>/`` starts the pipeline.
   (moto's ``GetBucketNotificationConfiguration`` also omits ``EventBridgeConfiguration``; S3 returns it.)

moto is pinned to ``PINNED`` in ``pyproject.toml`` (the ``local`` extra). ``fingerprint()`` hashes
the source of every moto function these replace or wrap; ``tests/test_moto_patches.py`` compares it
with ``FINGERPRINT`` and fails, naming the function, when moto changes underneath a patch.
"""

from __future__ import annotations

import hashlib
import inspect
from typing import Any, Callable

import numpy as np

PINNED = "5.2"
"""The moto minor version these patches were written against."""

FINGERPRINT = {
    "StateTaskServiceEcs._normalise_parameters": "dece59e76fd5e746",
    "StateTaskServiceEcs._normalise_response": "00e0b0a50b1dd4ba",
    "StateTaskServiceEcs._from_error": "1b5fce8960778380",
    "state_task_service_ecs.boto_client_for": "1f44dc2ac8aa2179",
    "state_task_service_sns.boto_client_for": "1f44dc2ac8aa2179",
    "StepFunctionResponse.send_task_failure": "f0fed5e805768377",
    "DistributedIterationComponent._map_run": "e45cb604929ff346",
    "asl_parser.ASLLexer.nextToken": "ba8579d02932b8e9",
    "EC2ContainerServiceBackend._calculate_task_resource_requirements": "4c4587f8d68da43a",
    "StateTaskService._eval_execution": "81a8da94bfdb59ff",
    "StateTaskServiceCallback._eval_body": "1565ede7010df6af",
    "cloudwatch.Statistics.get_statistics_for_type": "d10becd72eee65f1",
    "CloudWatchBackend.get_filtered_metrics": "63270f556ea9d022",
    "events.Rule.send_to_targets": "472e002e2dab8a59",
    "S3Response.get_bucket_notification": "82884034c1654e24",
}
"""sha256 (first 16 hex) of the source of each patched moto function at moto 5.2.5."""


def _targets() -> dict[str, Any]:
    """The moto objects patched, by the names ``FINGERPRINT`` uses (imported late: moto is a
    laptop-only dependency)."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration import (
        distributed_iteration_component as distributed,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_ecs as ecs_task,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_sns as sns_task,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service as task_service,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_callback as callback_task,
    )
    from moto.stepfunctions.parser.asl.parse import asl_parser
    from moto.stepfunctions.responses import StepFunctionResponse

    from moto.ecs.models import EC2ContainerServiceBackend

    from moto.cloudwatch.models import CloudWatchBackend, Statistics

    from moto.events.models import Rule
    from moto.s3.responses import S3Response

    ecs = ecs_task.StateTaskServiceEcs
    return {
        "events.Rule.send_to_targets": Rule.send_to_targets,
        "S3Response.get_bucket_notification": S3Response.get_bucket_notification,
        "CloudWatchBackend.get_filtered_metrics": CloudWatchBackend.get_filtered_metrics,
        "cloudwatch.Statistics.get_statistics_for_type": Statistics.get_statistics_for_type,
        "StateTaskService._eval_execution": task_service.StateTaskService._eval_execution,
        "StateTaskServiceCallback._eval_body": callback_task.StateTaskServiceCallback._eval_body,
        "EC2ContainerServiceBackend._calculate_task_resource_requirements":
            EC2ContainerServiceBackend._calculate_task_resource_requirements,
        "StateTaskServiceEcs._normalise_parameters": ecs._normalise_parameters,
        "StateTaskServiceEcs._normalise_response": ecs._normalise_response,
        "StateTaskServiceEcs._from_error": ecs._from_error,
        "state_task_service_ecs.boto_client_for": ecs_task.boto_client_for,
        "state_task_service_sns.boto_client_for": sns_task.boto_client_for,
        "StepFunctionResponse.send_task_failure": StepFunctionResponse.send_task_failure,
        "DistributedIterationComponent._map_run": distributed.DistributedIterationComponent._map_run,
        "asl_parser.ASLLexer.nextToken": asl_parser.ASLLexer.nextToken,
    }


def fingerprint() -> dict[str, str]:
    """sha256 (first 16 hex) of the source of each moto function the patches replace or wrap, as
    installed now (call it before ``apply``: after, some names point at the patches)."""
    return {name: hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()[:16] for name, fn in _targets().items()}


class _Undo:
    """Attribute changes that can be undone in reverse order."""

    def __init__(self) -> None:
        self._saved: list[tuple[Any, str, Any]] = []

    def setattr(self, owner: Any, name: str, value: Any) -> None:
        # a class's own attribute as stored (a staticmethod stays one when it is put back)
        raw = vars(owner)[name] if isinstance(owner, type) and name in vars(owner) else getattr(owner, name)
        self._saved.append((owner, name, raw))
        setattr(owner, name, value)

    def setitem(self, mapping: dict, key: Any, value: Any) -> None:
        self._saved.append((mapping, key, mapping[key]))
        mapping[key] = value

    def __call__(self) -> None:
        while self._saved:
            owner, name, value = self._saved.pop()
            if isinstance(owner, dict):
                owner[name] = value
            else:
                setattr(owner, name, value)


def apply(endpoint: str, verify: bool | str = True) -> Callable[[], None]:
    """Apply the patches (module docstring) to moto in this process; returns a function undoing them.

    Args:
        endpoint: the server's own URL (``https://127.0.0.1:PORT`` on the embedded AWS): where the
            engine's service calls go, as the execution role.
        verify: TLS verification for those calls (the embedded AWS's certificate file).

    Raises:
        RuntimeError: the installed moto is not the pinned minor version.
    """
    import boto3
    import botocore.session
    import moto
    from moto.core.responses import EmptyResult
    from moto.stepfunctions.parser.api import HistoryEventType, MapRunFailedEventDetails, TaskTimedOutEventDetails
    from moto.stepfunctions.parser.asl.antlr.runtime.ASLLexer import ASLLexer
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
        FailureEvent,
        FailureEventException,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import StatesErrorNameType
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration import (
        distributed_iteration_component as distributed,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_ecs as ecs_task,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_sns as sns_task,
    )
    from moto.stepfunctions.parser.asl.eval.callback.callback import HeartbeatTimeoutError
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails
    from moto.stepfunctions.parser.asl.parse import asl_parser
    from moto.stepfunctions.responses import StepFunctionResponse

    if not moto.__version__.startswith(PINNED + "."):
        raise RuntimeError(f"moto {moto.__version__} is installed; the engine patches are written for moto {PINNED}.x "
                           "(pyproject.toml pins it): reinstall with `make install`")
    ecs_model = botocore.session.get_session().get_service_model("ecs")
    undo = _Undo()

    # 1. parameters and responses through botocore's ECS model
    def normalise_parameters(self: Any, parameters: dict, boto_service_name: Any = None, service_action_name: Any = None) -> None:
        self._to_boto_request(parameters, ecs_model.operation_model("RunTask").input_shape)

    def normalise_response(self: Any, response: Any, boto_service_name: Any = None, service_action_name: Any = None) -> None:
        operation = "DescribeTasks" if service_action_name == "describe_tasks" else "RunTask"
        self._from_boto_response(response, ecs_model.operation_model(operation).output_shape)

    # 3. service calls as the execution role, on this server
    def client_as_execution_role(region: str, service: str, state_credentials: Any = None) -> Any:
        session = boto3.session.Session(aws_access_key_id="engine", aws_secret_access_key="engine", region_name=region)
        role = session.client("sts", endpoint_url=endpoint, verify=verify).assume_role(
            RoleArn=state_credentials.role_arn, RoleSessionName="stepfunctions"
        )["Credentials"]
        return session.client(service, endpoint_url=endpoint, verify=verify, aws_access_key_id=role["AccessKeyId"],
                              aws_secret_access_key=role["SecretAccessKey"], aws_session_token=role["SessionToken"])

    # 4. a heartbeat timeout is States.HeartbeatTimeout
    ecs_from_error = ecs_task.StateTaskServiceEcs._from_error

    def from_error(self: Any, env: Any, ex: Exception) -> Any:
        if not isinstance(ex, HeartbeatTimeoutError):
            return ecs_from_error(self, env, ex)
        error = StatesErrorName(typ=StatesErrorNameType.StatesHeartbeatTimeout)
        details = TaskTimedOutEventDetails(
            resourceType=self._get_sfn_resource_type(), resource=self._get_sfn_resource(), error=error.error_name
        )
        return FailureEvent(env, error, HistoryEventType.TaskTimedOut, EventDetails(taskTimedOutEventDetails=details))

    # 5. SendTaskFailure keeps its cause
    def send_task_failure(self: Any) -> Any:
        self.stepfunction_backend.send_task_failure(
            self._get_param("taskToken"), error=self._get_param("error"), cause=self._get_param("cause")
        )
        return EmptyResult()

    # 6. the Map Run fails over its tolerated failure percentage
    map_run = distributed.DistributedIterationComponent._map_run

    def map_run_within_tolerance(self: Any, env: Any, eval_input: Any) -> None:
        map_run(self, env=env, eval_input=eval_input)
        record = eval_input.map_run_record
        failed = record.item_counter.failed.get() + record.item_counter.timed_out.get()
        total, tolerated = record.item_counter.total.get(), record.tolerated_failure_percentage
        if failed and failed * 100 > tolerated * total:
            error = StatesErrorName(typ=StatesErrorNameType.StatesExceedToleratedFailureThreshold)
            details = MapRunFailedEventDetails(
                error=error.error_name, cause=f"{failed} of {total} items failed; the tolerated failure percentage is {tolerated:g}"
            )
            raise FailureEventException(
                FailureEvent(env, error, HistoryEventType.MapRunFailed, EventDetails(mapRunFailedEventDetails=details))
            )

    # 7. an integer ToleratedFailurePercentage is a number
    class Lexer(ASLLexer):
        """moto's grammar takes ToleratedFailurePercentage as a NUMBER token only; read its integer as one."""

        previous: tuple[int, int] = (0, 0)

        def nextToken(self) -> Any:
            token = super().nextToken()
            if token.type == ASLLexer.INT and self.previous == (ASLLexer.TOLERATEDFAILUREPERCENTAGE, ASLLexer.COLON):
                token.type = ASLLexer.NUMBER
            self.previous = (self.previous[1], token.type)
            return token

    # 8. a Fargate container without sizes counts the task's
    from moto.ecs.models import EC2ContainerServiceBackend

    requirements = EC2ContainerServiceBackend._calculate_task_resource_requirements

    def task_level_sizes(task_definition: Any) -> dict[str, Any]:
        containers = task_definition.container_definitions
        if all(c.get("memory") or c.get("memoryReservation") or c.get("Memory") or c.get("MemoryReservation")
               for c in containers):
            return requirements(task_definition)
        return {"CPU": int(task_definition.cpu or 0), "MEMORY": int(task_definition.memory or 0), "PORTS": [], "PORTS_UDP": []}

    undo.setattr(EC2ContainerServiceBackend, "_calculate_task_resource_requirements", staticmethod(task_level_sizes))

    # 10. percentile statistics from the period's raw values
    from moto.cloudwatch.models import Statistics

    statistic = Statistics.get_statistics_for_type

    def statistic_or_percentile(self: Any, stat: str) -> Any:
        if stat.startswith("p") and stat[1:].replace(".", "", 1).isdigit():
            values = self.metric_single_values_list
            return float(np.percentile(values, float(stat[1:]))) if values else None
        return statistic(self, stat)

    undo.setattr(Statistics, "get_statistics_for_type", statistic_or_percentile)

    # 11. ListMetrics: each metric once, in one pass
    from moto.cloudwatch.models import CloudWatchBackend

    def filtered_metrics_once(self: Any, metric_name: Any, namespace: Any, dimensions: Any) -> list[Any]:
        seen: set[tuple[Any, ...]] = set()
        listed = []
        for datum in self.get_all_metrics():
            if not datum.filter(namespace=namespace, name=metric_name, dimensions=dimensions):
                continue
            key = (datum.namespace, datum.name, frozenset((d.name, d.value) for d in datum.dimensions or []))
            if key not in seen:
                seen.add(key)
                listed.append(datum)
        return listed

    undo.setattr(CloudWatchBackend, "get_filtered_metrics", filtered_metrics_once)

    # 12. a rule's state machine target starts an execution, with the input transformer applied
    import json
    import threading
    import uuid

    from moto.events.models import Rule
    from moto.events.utils import EventTemplateParser
    from moto.utilities.arns import parse_arn

    send_to_targets = Rule.send_to_targets

    def send_to_targets_and_state_machines(self: Any, original_event: Any, transform_input: bool = True) -> None:
        machines = [t for t in self.targets if parse_arn(t["Arn"]).service == "states"]
        others = [t for t in self.targets if t not in machines]
        if others:  # moto's own delivery (it raises NotImplementedError for a states target)
            every, self.targets = self.targets, others
            try:
                send_to_targets(self, original_event, transform_input)
            finally:
                self.targets = every
        if not machines or not self.event_pattern.matches_event(original_event):
            return
        # moto gives every S3 event the same id; EventBridge a new one, as the run id needs
        event = {"ingestion-time": original_event.get("time"), **original_event, "id": str(uuid.uuid4())}
        for target in machines:
            transformer = target.get("InputTransformer", {})
            body = EventTemplateParser.parse(input_template=transformer.get("InputTemplate"),
                                             input_paths_map=transformer.get("InputPathsMap", {}), event=event)
            # asynchronous, as EventBridge delivers: the PutObject that raised the event returns first
            threading.Thread(target=_start_execution, daemon=True, name="eventbridge-target", args=(
                client_as_execution_role, parse_arn(target["Arn"]).region, target,
                body if isinstance(body, str) else json.dumps(body))).start()

    undo.setattr(Rule, "send_to_targets", send_to_targets_and_state_machines)

    # 12. (and GetBucketNotificationConfiguration shows EventBridgeConfiguration when it is set)
    from moto.core.responses import ActionResult
    from moto.s3.responses import S3Response

    get_notification = S3Response.get_bucket_notification

    def get_notification_with_eventbridge(self: Any) -> Any:
        config = self.backend.get_bucket_notification_configuration(self.bucket_name)
        if config is None or config.event_bridge is None:
            return get_notification(self)
        self.data["Action"] = "GetBucketNotificationConfiguration"
        arns = {"TopicConfigurations": ("TopicArn", config.topic), "QueueConfigurations": ("QueueArn", config.queue),
                "LambdaFunctionConfigurations": ("LambdaFunctionArn", config.cloud_function)}
        result: dict[str, Any] = {key: [{"Id": n.id, arn: n.arn, "Events": n.events} for n in items]
                                  for key, (arn, items) in arns.items()}
        return self.serialized(ActionResult({**result, "EventBridgeConfiguration": {}}))

    undo.setattr(S3Response, "get_bucket_notification", get_notification_with_eventbridge)

    # 9. each attempt of a .waitForTaskToken ECS task has its own token (the attempt runs in a
    # frame whose context object is its own copy: the new token is this attempt's only)
    eval_execution = ecs_task.StateTaskServiceEcs._eval_execution

    def eval_with_a_fresh_token(self: Any, env: Any) -> None:
        if self.resource.condition == "waitForTaskToken":
            env.callback_pool_manager.add(env.states.context_object.update_task_token())
        eval_execution(self, env)

    undo.setattr(ecs_task.StateTaskServiceEcs, "_eval_execution", eval_with_a_fresh_token)
    undo.setattr(asl_parser, "ASLLexer", Lexer)
    undo.setattr(distributed.DistributedIterationComponent, "_map_run", map_run_within_tolerance)
    undo.setattr(ecs_task.StateTaskServiceEcs, "_normalise_parameters", normalise_parameters)
    undo.setattr(ecs_task.StateTaskServiceEcs, "_normalise_response", normalise_response)
    undo.setattr(ecs_task.StateTaskServiceEcs, "_from_error", from_error)
    supported = ecs_task._SUPPORTED_API_PARAM_BINDINGS  # 2. CapacityProviderStrategy passed through
    undo.setitem(supported, "runtask", supported["runtask"] | {"CapacityProviderStrategy"})
    undo.setattr(ecs_task, "boto_client_for", client_as_execution_role)
    undo.setattr(sns_task, "boto_client_for", client_as_execution_role)
    undo.setattr(StepFunctionResponse, "send_task_failure", send_task_failure)
    return undo


def _start_execution(client_for: Callable[..., Any], region: str, target: dict[str, Any], body: str) -> None:
    """StartExecution of ``target``'s state machine as the target's role (patch 12), retried as
    EventBridge retries a failed delivery (three tries here); a delivery that still fails is
    dropped, as EventBridge drops it after its retry policy (no dead-letter queue declared)."""
    import sys
    import time
    import uuid
    from types import SimpleNamespace

    role = SimpleNamespace(role_arn=target["RoleArn"])  # what boto_client_for's state_credentials carries
    name = str(uuid.uuid4())  # one per delivery: a retry of it that did start reports ExecutionAlreadyExists
    for attempt in range(3):
        try:
            # a name as Step Functions generates one (moto would name every unnamed execution "None")
            client_for(region, "stepfunctions", role).start_execution(stateMachineArn=target["Arn"], input=body, name=name)
            return
        except Exception as e:  # noqa: BLE001 - EventBridge retries any failed delivery
            if "ExecutionAlreadyExists" in str(e):  # an earlier try of this delivery started it
                return
            print(f"eventbridge: StartExecution of {target['Arn']} failed (attempt {attempt + 1}): {e}", file=sys.stderr)
            time.sleep(0.5 * 2**attempt)
