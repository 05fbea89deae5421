"""The local runner: executes the pipeline definition in-process against the embedded AWS (or AWS).

``run_pipeline`` runs the steps in order, times each, and on a ``PipelineStop`` (invalid data,
rejected version) or an unexpected error publishes the alert and the metrics a failed run emits,
then returns a ``RunResult`` whose ``exit_code`` the CLI exits with:

    0  succeeded
    1  a step failed unexpectedly (alert published when the topic was reachable)
    2  validation failed: nothing trained or registered
    3  an offline gate failed: the version is recorded as rejected, nothing served changed
    5  AWS (or the embedded AWS) could not be reached mid-run

A SIGTERM (a Spot interruption, ``kill``, ``docker stop``) while ``sigterm_interrupts()`` is active
raises ``RunInterrupted`` in the step that is running: it unwinds out of ``run_pipeline`` (no
step failure, no alert) so the caller can record the run as interrupted and exit 143. Nothing a
step leaves half-done is visible (predictions are published through a manifest, registry writes
are transactions), and re-running the run under its run id finishes it.
"""

from __future__ import annotations

import time
import traceback
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from stagewise.monitoring import metrics as m
from stagewise.pipeline.definition import PIPELINE, Pipeline
from stagewise.pipeline.steps import (
    PipelineStop, RunContext, StepResult, StepResults, attempt_metrics, run_metrics, send_run_metrics,
)
from stagewise.platform.contract import RESUMABLE, ExitCode, Sigterm
from stagewise.pipeline.version_files import tampered_alert
from stagewise.platform.runtime.aws import unreachable, utc_now
from stagewise.platform.runtime.objects import ChecksumMismatch


class RunInterrupted(BaseException):
    """SIGTERM arrived during a run (``sigterm_interrupts``). A ``BaseException``, like
    ``KeyboardInterrupt``, so no ``except Exception`` in a step mistakes it for a failure."""


def sigterm_interrupts() -> Any:
    """A context manager: while inside, SIGTERM raises ``RunInterrupted`` in the main thread (at
    the next Python instruction: within a boosting round or a scoring batch, far inside Spot's
    120-second notice); the previous handler is restored on exit (``contract.Sigterm``)."""
    return Sigterm(RunInterrupted).installed()


@dataclass
class StepRecord:
    """How one step went: ``status`` is ``succeeded``, ``failed``, ``stopped`` or ``skipped``;
    ``result`` is what it returned (or, stopped, what it had so far)."""

    name: str
    status: str
    seconds: float = 0.0
    result: StepResult | None = None
    error: str | None = None

    @property
    def summary(self) -> dict[str, Any]:
        """The result's JSON summary (``{}`` without a result)."""
        return self.result.summary() if self.result is not None else {}

    @property
    def line(self) -> str:
        """One line for the run table: the error of a failed step, else the result's own line."""
        if self.status == "failed" and self.error:
            return self.error
        return self.result.line() if self.result is not None else ""


@dataclass
class RunResult:
    """The outcome of a run (what ``stagewise run --json`` prints)."""

    run_id: str
    environment: str
    account_id: str
    model: str
    exit_code: int
    steps: list[StepRecord]
    alerts: list[dict[str, Any]]
    started_at: str
    seconds: float
    error: str | None = None

    @property
    def status(self) -> str:
        """``succeeded`` or ``failed``."""
        return "succeeded" if self.exit_code == 0 else "failed"

    def step(self, name: str) -> StepRecord | None:
        """The record of step ``name`` (None if the run never reached it)."""
        return next((s for s in self.steps if s.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready document."""
        return {
            "run_id": self.run_id,
            "status": self.status,
            "exit_code": self.exit_code,
            "environment": self.environment,
            "account_id": self.account_id,
            "model": self.model,
            "started_at": self.started_at,
            "seconds": round(self.seconds, 3),
            "error": self.error,
            "steps": [
                {"name": s.name, "status": s.status, "seconds": round(s.seconds, 3), "summary": s.summary, "error": s.error}
                for s in self.steps
            ],
            "alerts": self.alerts,
        }


def new_run_id() -> str:
    """A sortable unique run id: ``<UTC time>-<6 hex>``."""
    return f"{utc_now():%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


StepHook = Callable[[str, str, StepRecord | None], None]


def run_pipeline(ctx: RunContext, pipeline: Pipeline = PIPELINE, on_step: StepHook | None = None) -> RunResult:
    """Run every step of ``pipeline`` in order for ``ctx``.

    Args:
        ctx: the run's context (settings, clients, spec, input).
        pipeline: the definition to execute.
        on_step: called as ``on_step(step_name, "start" | "end", record)`` for progress displays.

    Returns:
        The run's result; never raises for a step failure (the failure is in the result).
    """
    started = utc_now().isoformat()
    t0 = time.perf_counter()
    records: list[StepRecord] = []
    exit_code, error = 0, None
    hook = on_step or (lambda *_: None)
    for st in pipeline.steps:
        hook(st.name, "start", None)
        t = time.perf_counter()
        try:
            result = st.run(ctx)
            ctx.results.set(st.name, result)
            rec = StepRecord(st.name, "succeeded", time.perf_counter() - t, result)
        except PipelineStop as stop:
            rec = StepRecord(st.name, "stopped", time.perf_counter() - t, stop.result, str(stop))
            if isinstance(stop.result, StepResults.TYPES[st.name]):  # e.g. the failed validation, for the metrics
                ctx.results.set(st.name, stop.result)
            exit_code, error = stop.exit_code, str(stop)
            ctx.send_alert(stop.alert)
        except Exception as e:  # noqa: BLE001 - any failure of a step is reported, alerted, exit 1 (5: AWS unreachable)
            rec = StepRecord(st.name, "failed", time.perf_counter() - t, None, f"{type(e).__name__}: {e}")
            exit_code, error = 1, f"step {st.name} failed: {type(e).__name__}: {e}"
            if unreachable(e):
                exit_code = ExitCode.AWS_UNREACHABLE
                error = (f"step {st.name} failed: AWS could not be reached ({type(e).__name__}: {e}); when it is back, "
                         "re-run this run (nothing it did is lost or half-visible)")
            if isinstance(e, ChecksumMismatch):  # a registered file was changed: say so, not "a step failed"
                ctx.send_alert(tampered_alert(e, ctx.settings.environment, ctx.spec.name, ctx.run_id, f"step {st.name}"))
            else:
                ctx.send_alert(ctx.alert(
                    "step.failed", f"Step {st.name} failed", f"{type(e).__name__}: {e}\n\n{traceback.format_exc(limit=5)}",
                    "Read the error above; fix the cause and re-run `stagewise run` (steps are idempotent: a re-run "
                    "does not duplicate versions).", version=ctx.results.register.version if ctx.results.register else None,
                ))
        ctx.durations[st.name] = rec.seconds
        records.append(rec)
        hook(st.name, "end", rec)
        if exit_code != 0:
            break
    if exit_code != 0:
        for st in pipeline.steps[len(records):]:
            records.append(StepRecord(st.name, "skipped"))
        try:  # a rejected run's data once; a resumable attempt's failure every attempt (steps/report.py)
            if exit_code in RESUMABLE:
                m.publish(ctx.clients.client("cloudwatch"), attempt_metrics(ctx), ctx.resources.metrics_namespace)
            else:
                send_run_metrics(ctx, run_metrics(ctx, succeeded=False))
        except Exception as e:  # noqa: BLE001 - the failure being reported matters more
            ctx.alerts.append({"event": "metrics.failed", "error": str(e)})
    alerts = ctx.alerts
    return RunResult(
        run_id=ctx.run_id, environment=ctx.settings.environment, account_id=ctx.settings.account_id,
        model=ctx.spec.name, exit_code=exit_code, steps=records, alerts=alerts, started_at=started,
        seconds=time.perf_counter() - t0, error=error,
    )

