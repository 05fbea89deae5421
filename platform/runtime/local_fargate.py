"""Local Fargate: the embedded AWS's ECS runs a task's container command as a local process.

moto's ECS records a ``RunTask`` and runs nothing (its tasks jump to ``STOPPED`` as they are
described). Installed in the embedded AWS's server process (``moto_server``), this makes a task on
a ``FARGATE`` or ``FARGATE_SPOT`` capacity provider (or launch type) run as the task would in ECS:

- **The command**: the container's ``entryPoint`` (default: the job image's, ``stagewise-task``,
  from ``Dockerfile``) followed by its ``command``, the ``containerOverrides`` command replacing it,
  as Docker does. Only the task definition's first (essential) container runs.
- **The environment**: the container definition's ``environment`` plus the overrides' (the
  overrides win), ``AWS_ENDPOINT_URL`` and ``AWS_CA_BUNDLE`` pointing at the embedded AWS, the
  region, and the **task role's credentials**: ``sts:AssumeRole`` of the overrides' or the task
  definition's ``taskRoleArn`` on the embedded AWS (a task without a role gets no credentials, as
  in ECS). Nothing of the server's own environment leaks in but ``PATH``, ``HOME``, ``LANG``,
  ``TMPDIR`` and ``PYTHON*`` variables. So ``STAGEWISE_IN_AWS=1`` from the task definition makes
  the entrypoint behave exactly as in ECS.
- **The working directory**: a fresh folder per task, ``$STAGEWISE_HOME/fargate/<task id>/``, holding
  the stack files (``Pulumi*.yaml``) the image copies to ``/app``.
- **The lifecycle**: ``PENDING`` (credentials, folder) -> ``RUNNING`` (the process started,
  ``startedAt``) -> ``STOPPED`` with the container's ``exitCode``, ``stopCode``
  ``EssentialContainerExited`` and ``stoppedReason`` "Essential container in task exited", as
  ``DescribeTasks`` shows them. ``StopTask`` sends SIGTERM to the process (PID 1 of a container),
  then SIGKILL to its process group after the container's ``stopTimeout`` (default 30 s, Fargate's
  default), ``stopCode`` ``UserInitiated`` with the given reason. A command that cannot start
  stops the task with ``stopCode`` ``TaskFailedToStart``.
- **Logs**: stdout and stderr go to ``$STAGEWISE_HOME/fargate/<task id>.log``.

Not reproduced: images (the local environment's installed code runs, whatever the image tag),
cpu/memory limits (recorded, not enforced), networking (the process shares the host's), the
metadata endpoint (``ECS_CONTAINER_METADATA_URI_V4``), Spot reclamation (send ``StopTask`` or SIGTERM
to stand in for it), CloudWatch Logs delivery (the log file instead), more than one container.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

DEFAULT_ENTRYPOINT = ("stagewise-task",)
"""The job image's ``ENTRYPOINT`` (``Dockerfile``): used when a container declares none."""
DEFAULT_STOP_TIMEOUT = 30.0
"""Seconds between SIGTERM and SIGKILL when a container declares no ``stopTimeout`` (Fargate's default)."""
_KEPT = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")
LOG_FOLDER = "fargate"


@dataclass
class LocalTask:
    """One task's local process and what ``DescribeTasks`` shows of it."""

    task_arn: str
    argv: list[str]
    env: dict[str, str]
    workdir: Path
    log: Path
    stop_timeout: float
    status: str = "PENDING"
    exit_code: int | None = None
    stop_code: str | None = None
    stopped_reason: str | None = None
    started_at: datetime | None = None
    stopped_at: datetime | None = None
    process: subprocess.Popen | None = None
    done: threading.Event = field(default_factory=threading.Event)
    on_change: Callable[[], None] | None = None
    """Called after every change of state (``install`` copies it onto moto's task there)."""

    def changed(self) -> None:
        if self.on_change is not None:
            self.on_change()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _env_list(items: list[dict[str, str]] | None) -> dict[str, str]:
    return {e["name"]: e["value"] for e in items or [] if "name" in e}


def default_entrypoint() -> list[str]:
    """The job image's entrypoint here: ``stagewise-task`` beside this interpreter (the virtualenv's),
    else on ``PATH``."""
    beside = Path(sys.executable).parent / DEFAULT_ENTRYPOINT[0]
    return [str(beside)] if beside.is_file() else list(DEFAULT_ENTRYPOINT)


def container_command(container: dict[str, Any], override: dict[str, Any]) -> list[str]:
    """``entryPoint`` (or the job image's) + the override's ``command`` or the container's, as Docker joins them."""
    entry = list(container.get("entryPoint") or default_entrypoint())
    return entry + list(override.get("command") or container.get("command") or [])


def container_environment(container: dict[str, Any], override: dict[str, Any]) -> dict[str, str]:
    """The container's ``environment`` with the override's on top (names -> values)."""
    return {**_env_list(container.get("environment")), **_env_list(override.get("environment"))}


class LocalFargate:
    """Runs the embedded ECS's Fargate tasks as local processes (module docstring).

    Args:
        endpoint: the embedded AWS's URL, for the tasks' AWS calls and the role's credentials.
        ca_bundle: its certificate (PEM path), for the tasks to verify it.
        home: ``$STAGEWISE_HOME`` (task folders and logs go under ``fargate/``).
        project_dir: where the stack files (``Pulumi*.yaml``) are copied from.
    """

    def __init__(self, endpoint: str, ca_bundle: str | None, home: Path, project_dir: Path | None) -> None:
        self.endpoint, self.ca_bundle, self.home, self.project_dir = endpoint, ca_bundle, home, project_dir
        self.tasks: dict[str, LocalTask] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ starting
    def credentials(self, role_arn: str | None, region: str) -> dict[str, str]:
        """The task role's credentials as environment variables (empty without a role)."""
        if not role_arn:
            return {}
        import boto3

        sts = boto3.session.Session(aws_access_key_id="ecs-agent", aws_secret_access_key="ecs-agent",
                                    region_name=region).client("sts", endpoint_url=self.endpoint,
                                                               verify=self.ca_bundle or True)
        c = sts.assume_role(RoleArn=role_arn, RoleSessionName="ecs-task")["Credentials"]
        return {"AWS_ACCESS_KEY_ID": c["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": c["SecretAccessKey"],
                "AWS_SESSION_TOKEN": c["SessionToken"]}

    def start(self, task: Any, task_definition: Any, on_change: Callable[[], None] | None = None) -> LocalTask:
        """Start ``task`` (moto's ``Task``) of ``task_definition`` in a thread; returns its record
        (``on_change`` is called after each change of its state)."""
        container = task_definition.container_definitions[0]
        overrides = task.overrides or {}
        override = next((o for o in overrides.get("containerOverrides", []) if o.get("name") == container.get("name")), {})
        region = task.region_name
        base = {k: v for k, v in os.environ.items() if k in _KEPT or k.startswith("PYTHON")}
        env = {**base, **container_environment(container, override), "AWS_ENDPOINT_URL": self.endpoint,
               "AWS_REGION": region, "AWS_DEFAULT_REGION": region}
        if self.ca_bundle:
            env["AWS_CA_BUNDLE"] = self.ca_bundle
        folder = self.home / LOG_FOLDER
        local = LocalTask(task_arn=task.task_arn, argv=container_command(container, override), env=env,
                          workdir=folder / task.id, log=folder / f"{task.id}.log",
                          stop_timeout=float(container.get("stopTimeout") or DEFAULT_STOP_TIMEOUT), on_change=on_change)
        role = overrides.get("taskRoleArn") or getattr(task_definition, "task_role_arn", None)
        with self._lock:
            self.tasks[task.task_arn] = local
        threading.Thread(target=self._run, args=(local, role, region), daemon=True, name=f"fargate-{task.id}").start()
        return local

    def _run(self, local: LocalTask, role: str | None, region: str) -> None:
        try:
            local.env.update(self.credentials(role, region))
            local.workdir.mkdir(parents=True, exist_ok=True)
            for stack_file in sorted(self.project_dir.glob("Pulumi*.yaml")) if self.project_dir else []:
                shutil.copy2(stack_file, local.workdir / stack_file.name)
            with open(local.log, "ab") as out:
                local.process = subprocess.Popen(local.argv, env=local.env, cwd=local.workdir, stdout=out,
                                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        except Exception as e:  # noqa: BLE001 - the task fails to start; DescribeTasks says why
            local.exit_code, local.stop_code = None, "TaskFailedToStart"
            local.stopped_reason = f"CannotStartContainerError: {type(e).__name__}: {e}"[:255]
            self._stopped(local)
            return
        local.status, local.started_at = "RUNNING", _now()
        local.changed()
        code = local.process.wait()
        local.exit_code = code if code >= 0 else 128 - code  # killed by signal N: 128 + N, as Docker reports
        if local.stop_code is None:
            local.stop_code, local.stopped_reason = "EssentialContainerExited", "Essential container in task exited"
        self._stopped(local)

    def _stopped(self, local: LocalTask) -> None:
        local.status, local.stopped_at = "STOPPED", _now()
        local.changed()
        local.done.set()

    # ------------------------------------------------------------------ stopping
    def stop(self, task_arn: str, reason: str | None) -> LocalTask | None:
        """``StopTask``: SIGTERM now, SIGKILL to the process group after the stop timeout."""
        local = self.tasks.get(task_arn)
        if local is None or local.done.is_set():
            return local
        local.stop_code, local.stopped_reason = "UserInitiated", reason or "Task stopped by user"
        local.changed()
        proc = local.process
        if proc is not None and proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                return local
            threading.Thread(target=self._kill_after, args=(local,), daemon=True).start()
        return local

    def _kill_after(self, local: LocalTask) -> None:
        if not local.done.wait(local.stop_timeout) and local.process is not None:
            try:
                os.killpg(local.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop every running task (the server is going away): SIGTERM, then SIGKILL after ``timeout``."""
        running = [t for t in self.tasks.values() if t.process is not None and t.process.poll() is None]
        for t in running:
            t.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        for t in running:
            t.done.wait(max(0.0, deadline - time.monotonic()))
            if not t.done.is_set():
                try:
                    os.killpg(t.process.pid, signal.SIGKILL)  # type: ignore[union-attr]
                except ProcessLookupError:
                    pass


def install(fargate: LocalFargate) -> Callable[[], None]:
    """Hook ``fargate`` into moto's ECS backend (``run_task``, ``stop_task``) and make its tasks
    report the local process's state; returns a function undoing it."""
    from moto.ecs import models

    backend_cls, task_cls = models.EC2ContainerServiceBackend, models.Task
    original_run, original_stop = backend_cls.run_task, backend_cls.stop_task
    original_status = task_cls.last_status

    def run_task(self: Any, *args: Any, **kwargs: Any) -> list[Any]:
        tasks = original_run(self, *args, **kwargs)
        for task in tasks:
            if task.container_instance_arn is None:  # Fargate (EC2 tasks stay moto's)
                task._local = fargate.start(task, self.describe_task_definition(task.task_definition_arn),
                                            on_change=lambda t=task: _show(t))
                _show(task)
        return tasks

    def stop_task(self: Any, cluster_str: str, task_str: str, reason: str) -> Any:
        found = [t for tasks in self.tasks.values() for arn, t in tasks.items() if arn == task_str or arn.endswith("/" + task_str)]
        if found and getattr(found[0], "_local", None) is not None:
            fargate.stop(found[0].task_arn, reason)
            _show(found[0])
            return found[0]
        return original_stop(self, cluster_str, task_str, reason)

    def last_status(self: Any) -> str:
        local = getattr(self, "_local", None)
        if local is None:
            return original_status.fget(self)
        _show(self)
        return local.status

    backend_cls.run_task, backend_cls.stop_task = run_task, stop_task
    task_cls.last_status = property(last_status, original_status.fset)

    def undo() -> None:
        backend_cls.run_task, backend_cls.stop_task = original_run, original_stop
        task_cls.last_status = original_status

    return undo


def _show(task: Any) -> None:
    """Copy the local process's state onto moto's task and container (what the response serialises)."""
    local: LocalTask | None = getattr(task, "_local", None)
    if local is None:  # a change before run_task stored the record: run_task shows it next
        return
    task.desired_status = "STOPPED" if local.stop_code or local.status == "STOPPED" else "RUNNING"
    task.stopped_reason = local.stopped_reason or ""
    task.stop_code = local.stop_code
    task.started_at = local.started_at
    task.stopped_at = local.stopped_at
    task.stopping_at = local.stopped_at
    for container in task.containers:
        container.last_status = local.status
        container.exitCode = local.exit_code
        container.exit_code = local.exit_code
        container.reason = local.stopped_reason if local.stop_code == "TaskFailedToStart" else None
