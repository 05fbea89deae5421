"""The contract between Stagewise's processes, written once.

What the CLI, the local runner, the ECS task entrypoint and the Step Functions state machine must
agree on, because it crosses a process boundary: the process exit codes (``ExitCode``), the base of
the errors that carry one (``StagewiseError``), the environment variable names (``Env``), the error
names a task reports to Step Functions and the state machine catches (``TaskError``), the SIGTERM
handling both the runner and the entrypoint use (``Sigterm``), and the ARNs of Step Functions'
service integrations, built from the partition (``states_integration``). Pure: no I/O, no AWS
SDK, no Pulumi; every layer may import it.
"""

from __future__ import annotations

import contextlib
import signal
from enum import IntEnum
from typing import Any, ClassVar, Iterator


class ExitCode(IntEnum):
    """Process exit codes, the same for every command and the container entrypoint."""

    OK = 0
    FAILED = 1
    """An unexpected error (an alert is published when the topic is reachable)."""
    VALIDATION_FAILED = 2
    """The input failed its expectation suite (or cannot be split): nothing trained or registered."""
    GATE_FAILED = 3
    """An offline gate rejected the new version: recorded as ``rejected``, nothing served changed."""
    BAD_INPUT = 4
    """Bad input or configuration: a stack file, a model spec, a missing file, an unknown model."""
    AWS_UNREACHABLE = 5
    """AWS (or the embedded AWS) could not be reached, or the stack's role could not be assumed."""
    CONFLICT = 6
    """The record changed since it was read: re-read and retry."""
    INVALID_TRANSITION = 7
    """The registry refused the state change."""
    INTERRUPTED = 130
    """Stopped by Ctrl-C (SIGINT), as a shell reports it."""
    SIGTERM = 128 + signal.SIGTERM
    """Stopped by SIGTERM (143): Fargate Spot's notice, ``docker stop``, ``kill``."""


RESUMABLE = frozenset({ExitCode.FAILED, ExitCode.AWS_UNREACHABLE, ExitCode.INTERRUPTED, ExitCode.SIGTERM})
"""Exit codes after which ``--resume`` can finish the run (2 and 3 are verdicts on the data or the
model: resuming would reach the same one)."""


class StagewiseError(Exception):
    """Base of the errors a command reports with their own exit code.

    Attributes:
        exit_code: what the process exits with (``ExitCode``).
        code: a stable machine-readable name (``--json`` output's ``code_name``).
        hint: what to do about it, when there is one thing to say.
    """

    exit_code: ExitCode = ExitCode.FAILED
    code = "StagewiseError"
    hint: str | None = None


class MissingExtra(StagewiseError, ImportError):
    """A laptop-only feature needs a package the lean install (the job image) leaves out: the
    embedded AWS (moto) or the data generator (faker) come with the ``local`` extra. Exit 4."""

    exit_code = ExitCode.BAD_INPUT
    hint = "pip install 'stagewise[local]' (`make run` and `make test` install it)"


class Env:
    """Environment variable names read by Stagewise's processes."""

    HOME = "STAGEWISE_HOME"
    """Local state: the embedded AWS's files, run folders and journals, caches (default ``./.stagewise``)."""
    EMBEDDED_PORT = "STAGEWISE_EMBEDDED_PORT"
    """The embedded AWS's port on 127.0.0.1 (default 5055)."""
    AWS_TIMEOUT = "STAGEWISE_AWS_TIMEOUT"
    """Connect and read timeout of every AWS call, seconds (default 60)."""
    ROWS_PER_PARTITION = "STAGEWISE_ROWS_PER_PARTITION"
    """Rows per scoring partition (default 1,000,000)."""
    FAILPOINTS = "STAGEWISE_FAILPOINTS"
    """Fault tests only: ``name=kill|term[@N],...`` (``stagewise.platform.runtime.failpoints``)."""
    FAULTS = "STAGEWISE_FAULTS"
    """Fault tests and drills only: a flaky AWS, injected into every client ``AwsClients`` makes, e.g.
    ``rate=0.05,services=s3+dynamodb,kinds=throttle+5xx+reset+timeout,seed=7``
    (``stagewise.platform.runtime.faults``). Unset or empty: off."""
    ENVIRONMENT = "STAGEWISE_ENV"
    """In a task container: the environment (``dev``, ``test``, ``prod``) it runs in."""
    IN_AWS = "STAGEWISE_IN_AWS"
    """In a task container: ``1`` (credentials come from the task role, not an assumed role)."""
    TASK_TOKEN = "STAGEWISE_TASK_TOKEN"
    """In a task container: the Step Functions task token to report with (``waitForTaskToken``)."""
    CAPACITY_PROVIDER = "STAGEWISE_CAPACITY_PROVIDER"
    """In a task container: ``FARGATE_SPOT`` or ``FARGATE`` (the on-demand fallback)."""
    HEARTBEAT_SECONDS = "STAGEWISE_HEARTBEAT_SECONDS"
    """In a task container: seconds between ``SendTaskHeartbeat`` calls."""
    LLM_BASE_URL = "STAGEWISE_LLM_BASE_URL"
    """An OpenAI-compatible chat-completions endpoint for agents whose model id starts ``ollama/``
    or ``openai-compatible/`` (default ``http://127.0.0.1:11434/v1``, Ollama's)."""
    LLM_API_KEY = "STAGEWISE_LLM_API_KEY"
    """The key that endpoint wants, if any (Ollama and llama.cpp's server want none)."""
    RUN_LOCK_SECONDS = "STAGEWISE_RUN_LOCK_SECONDS"
    """Seconds a run's lock on its model outlives the last renewal (``registry.runlock``; default 600)."""


class TaskError:
    """Error names a task reports with ``SendTaskFailure`` and the state machine catches."""

    VALIDATION_FAILED = "Stagewise.ValidationFailed"
    """The data failed the model spec's expectation suite."""
    GATE_FAILED = "Stagewise.GateFailed"
    """An offline gate rejected the new version."""
    SPOT_INTERRUPTION = "Stagewise.SpotInterruption"
    """The task got SIGTERM: Fargate Spot reclaimed it (retried on Spot, then on demand)."""
    RUN_LOCKED = "Stagewise.RunLocked"
    """Another run holds the model's run lock (exit 6): retried every minute for 20 minutes."""
    STEP_FAILED = "Stagewise.StepFailed"
    """Any other failure of a step."""
    PIPELINE_FAILED = "Stagewise.PipelineFailed"
    """The execution's error after any failure but validation or a gate (the cause names the task's error)."""

    @classmethod
    def exit_code(cls, error: str, cause: str = "") -> int:
        """The exit code of a run whose execution failed with ``error`` and ``cause``, as the
        in-process runner exits: validation 2, gate 3, a run lock still held (the cause starts with
        ``RUN_LOCKED``) 6, anything else 1 (resumable)."""
        if error == cls.VALIDATION_FAILED:
            return ExitCode.VALIDATION_FAILED
        if error == cls.GATE_FAILED:
            return ExitCode.GATE_FAILED
        if error == cls.RUN_LOCKED or cause.startswith(cls.RUN_LOCKED):
            return ExitCode.CONFLICT
        return ExitCode.FAILED


class Sigterm:
    """Turns SIGTERM into an exception in the main thread (Python runs signal handlers there,
    between bytecodes: within a boosting round or a scoring batch, far inside Spot's 120 seconds).

    The exception is raised once. Inside ``deferred()`` (writing state, sending a callback) the
    signal is only recorded, so that work finishes; after ``disarm()`` (the outcome is reported)
    likewise. Inside ``native()`` (a native library that calls back into Python, e.g. XGBoost
    building a DMatrix through ctypes) it is held and raised at the next ``checkpoint()`` or on
    leaving: an exception raised inside a ctypes callback is printed and lost, and the library may
    then crash. ``received`` says whether it came. ``Sigterm.active`` is the installed instance.

    Args:
        exception: the ``BaseException`` subclass to raise (a ``BaseException``, like
            ``KeyboardInterrupt``, so no ``except Exception`` mistakes it for a step failure).
    """

    active: ClassVar["Sigterm | None"] = None

    def __init__(self, exception: type[BaseException]) -> None:
        self.exception = exception
        self.received = False
        self.armed = True
        self._deferred = 0
        self._native = 0
        self._held = False

    def handle(self, signum: int, frame: Any) -> None:
        """The signal handler."""
        first = not self.received
        self.received = True
        if first and self.armed and self._deferred == 0:
            if self._native:
                self._held = True  # raised at the next checkpoint, outside the library's callback
                return
            raise self.exception("SIGTERM received")

    def checkpoint(self) -> None:
        """Raise a SIGTERM held during ``native()`` (call it where Python is in control, e.g. from
        an XGBoost training callback between boosting rounds)."""
        if self._held and self.armed and self._deferred == 0:
            self._held = False
            raise self.exception("SIGTERM received")

    def disarm(self) -> None:
        """From now on only record the signal."""
        self.armed = False

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """While inside, a SIGTERM is recorded, not raised."""
        self._deferred += 1
        try:
            yield
        finally:
            self._deferred -= 1

    @contextlib.contextmanager
    def native(self) -> Iterator[None]:
        """While inside, a SIGTERM is held until ``checkpoint()`` or the exit from the block."""
        self._native += 1
        try:
            yield
        finally:
            self._native -= 1
        if self._native == 0:
            self.checkpoint()

    @contextlib.contextmanager
    def installed(self) -> Iterator["Sigterm"]:
        """Install ``handle`` for SIGTERM while inside (and make this ``Sigterm.active``); the
        previous handler is restored after."""
        previous, before = signal.signal(signal.SIGTERM, self.handle), Sigterm.active
        Sigterm.active = self
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, previous)
            Sigterm.active = before


@contextlib.contextmanager
def native_code() -> Iterator[None]:
    """``Sigterm.active.native()``, or nothing when no handler is installed: wrap calls into a
    native library that calls back into Python (XGBoost's DMatrix construction, ``fit``, ``predict``)."""
    if Sigterm.active is None:
        yield
        return
    with Sigterm.active.native():
        yield


def sigterm_checkpoint() -> None:
    """``Sigterm.active.checkpoint()``: raise a SIGTERM held during ``native_code()``, if any."""
    if Sigterm.active is not None:
        Sigterm.active.checkpoint()


def states_integration(partition: str, action: str) -> str:
    """A Step Functions service integration's resource ARN, e.g.
    ``states_integration("aws", "ecs:runTask.waitForTaskToken")`` ->
    ``arn:aws:states:::ecs:runTask.waitForTaskToken``; the partition comes from the environment's
    settings (``EnvironmentSettings.partition``), never written as ``aws``."""
    return f"arn:{partition}:states:::{action}"
