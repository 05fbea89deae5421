"""How an ECS task reports to the Step Functions state machine: the task-token callbacks
(``SendTaskSuccess``, ``SendTaskFailure``, ``SendTaskHeartbeat``) and the heartbeat thread.

Without a task token (a group run by hand) the callbacks do nothing (``NoCallbacks``); everything
else is the same. The error names a task reports are ``stagewise.platform.contract.TaskError``.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Callable, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from stagewise.platform.contract import Sigterm

MAX_CAUSE = 32_768  # SendTaskFailure: cause at most 32,768 characters
MAX_ERROR = 256  # SendTaskFailure: error at most 256 characters
MAX_OUTPUT_BYTES = 256 * 1024 - 1024  # Step Functions payloads are at most 256 KiB (UTF-8)


class CallbackError(RuntimeError):
    """A Step Functions callback (SendTask*) was refused: the token is invalid or timed out."""


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
        self._call("send_task_success", output=json.dumps(output, default=str, separators=(",", ":")))

    def failure(self, error: str, cause: str) -> None:
        self._call("send_task_failure", error=error[:MAX_ERROR], cause=cause[:MAX_CAUSE])

    def heartbeat(self) -> None:
        self._call("send_task_heartbeat")

    def _call(self, operation: str, **kwargs: Any) -> None:
        try:
            getattr(self.sfn, operation)(taskToken=self.token, **kwargs)
        except (ClientError, BotoCoreError) as e:
            raise CallbackError(f"{operation} failed: {e}") from e


class Heartbeat:
    """Calls ``callbacks.heartbeat()`` every ``interval`` seconds from a daemon thread while
    inside; leaving waits for a heartbeat in flight (SIGTERM deferred meanwhile) so it never
    races the final callback. A failed heartbeat is logged, never raised."""

    def __init__(self, callbacks: Callbacks, interval: float, log: Callable[..., None], sigterm: Sigterm) -> None:
        self.callbacks, self.interval, self.log, self.sigterm = callbacks, interval, log, sigterm
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stagewise-heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        with self.sigterm.deferred():
            self._stop.set()
            self._thread.join(timeout=10)  # a heartbeat in flight finishes before the final callback

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.callbacks.heartbeat()
            except Exception as e:  # noqa: BLE001 - a missed heartbeat must not kill the work
                self.log(event="heartbeat", status="failed", error=str(e))
