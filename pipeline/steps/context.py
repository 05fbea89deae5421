"""A run's context: what every step is given, what stays in memory between steps, and how a step
stops a run.

``RunContext`` holds the run's identity, environment, clients, spec and input, the steps' typed
results so far (``results``, ``stagewise.pipeline.steps.results``) and, in-process only, the
objects too large or too Python to hand over (``work``: the input bytes and frame, the feature
matrix, the fitted model, the holdout, and per-run caches of versions, models and baselines).
A step that must end the run raises a ``PipelineStop`` with the exit code, the alert and its
partial result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from stagewise.monitoring.alerts import Alert, publish_alert
from stagewise.pipeline.version_files import load_artifact, load_baseline
from stagewise.pipeline.spec import ModelSpec
from stagewise.pipeline.steps.results import StepResult, StepResults
from stagewise.platform.contract import ExitCode
from stagewise.platform.resources import EnvironmentResources
from stagewise.platform.runtime.aws import AwsClients
from stagewise.platform.runtime.objects import ObjectStore
from stagewise.registry.dynamodb import registry_of
from stagewise.registry.records import VersionRecord
from stagewise.registry.service import Registry
from stagewise.stacks.settings import EnvironmentSettings

Progress = Callable[[int, int, str], None]


class PipelineStop(Exception):
    """A step decided the run must stop. Carries the process exit code, the alert to publish and
    the step's result so far (``result``; None when there is none)."""

    exit_code = ExitCode.FAILED

    def __init__(self, message: str, alert: Alert, result: StepResult | None = None) -> None:
        super().__init__(message)
        self.alert = alert
        self.result = result

    @property
    def summary(self) -> dict[str, Any]:
        """The step's JSON summary (``{}`` without a result)."""
        return self.result.summary() if self.result is not None else {}


class ValidationFailed(PipelineStop):
    """The input failed its expectation suite (or could not be read or split): nothing trains."""

    exit_code = ExitCode.VALIDATION_FAILED


class GateRejected(PipelineStop):
    """The new version failed an offline gate: it is recorded as rejected, nothing served changes."""

    exit_code = ExitCode.GATE_FAILED


@dataclass
class Workspace:
    """In-process objects steps share within one process (one ECS task on AWS); never handed over.

    Attributes:
        data_file: the input file on this machine (``ingest``: the local input, or an ``s3://``
            input streamed to the task's disk; the train task's verified download): read from
            disk by each step, never held in memory whole.
        frame: the validated input, conformed to the spec (``validate``), rows in file order.
        features: ``modeling.feature_matrix(frame)`` (``train``).
        model: the fitted XGBoost model (``train``).
        hold_idx: row positions of the holdout in ``frame`` (``train``, in memory), int array.
        holdout: the holdout rows (``train``): ``frame``'s rows in memory, or, when training
            streamed the input (``training_data``), the columns evaluation reads (id, features,
            target, split columns), index 0..n-1.
        holdout_features: ``modeling.feature_matrix(holdout)``, same rows.
        validation_partial: a validate Map task's partial result (``validate``, one partition;
            the entrypoint records it for the merge).
        validation_partials: every partition's partial result (the entrypoint hands them to the
            validate group's merge task).
        holdout_true, holdout_pred: the holdout's labels and the model's predictions, float arrays.
        versions, models, baselines: per-run caches: version number -> record, artifact sha256 ->
            fitted model, version number -> baseline statistics (versions are immutable).
    """

    data_file: Path | None = None
    frame: pd.DataFrame | None = None
    features: pd.DataFrame | None = None
    model: Any = None
    hold_idx: np.ndarray | None = None
    holdout: pd.DataFrame | None = None
    holdout_features: pd.DataFrame | None = None
    holdout_true: np.ndarray | None = None
    holdout_pred: np.ndarray | None = None
    versions: dict[int, VersionRecord] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)
    baselines: dict[int, dict[str, Any] | None] = field(default_factory=dict)
    validation_partial: dict[str, Any] | None = None
    validation_partials: list[dict[str, Any]] | None = None

    data_file_stamp: tuple[int, int] | None = None

    def release_rows(self) -> None:
        """Drop the input's rows held in memory (frame, feature matrix, holdout), e.g. before the
        score step's worker processes read the input from its file: after train and evaluate no
        step needs them, and the workers' memory adds to this process's."""
        import ctypes  # deferred: only here
        import gc

        self.frame = self.features = self.holdout = self.holdout_features = None
        gc.collect()
        import pyarrow  # deferred: as above

        pyarrow.default_memory_pool().release_unused()  # Arrow's allocator keeps freed buffers for reuse
        try:  # glibc keeps freed heap pages mapped: hand them back to the OS (malloc_trim(3); Linux only)
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (macOS, musl): the memory is reused, not returned
            pass

    @property
    def data(self) -> Path | None:
        """The ingested input's file on this machine, or None (not ingested here).

        Raises:
            RuntimeError: the local file's size or modification time is not what ``ingest``
                hashed (it was replaced mid-run): start a new run.
        """
        if self.data_file is None:
            return None
        st = self.data_file.stat()
        if self.data_file_stamp is not None and (st.st_size, st.st_mtime_ns) != self.data_file_stamp:
            raise RuntimeError(f"the input {self.data_file} changed after it was ingested (size or modification time): "
                               "start a new run on the file as it is now")
        return self.data_file


@dataclass
class RunContext:
    """Everything a step needs for one run.

    Attributes:
        run_id: unique id of the run (``20261122T041500Z-1a2b3c``).
        data_source: a local file path or an ``s3://`` URI of the input (parquet or CSV).
        workdir: local folder for the run's files (Data Docs copy, model file).
        actor: who runs it (the assumed role's ARN, or ``--actor``).
        results: the steps' typed results so far.
        work: in-process objects (``Workspace``).
        partition: ``(index, count)`` when this process scores, or validates, one partition of a
            Map (AWS).
        fan_out: the validate step only plans an input of several partitions and leaves them to
            an AWS Distributed Map (the state machine's first validate task, ``--fan-out``).
        alerts: what ``send_alert`` published (or failed to), in order.
        progress: ``progress(done, total, message)`` for long steps.
        durations: step name -> seconds.
    """

    run_id: str
    settings: EnvironmentSettings
    resources: EnvironmentResources
    clients: AwsClients
    spec: ModelSpec
    data_source: str
    workdir: Path
    actor: str
    results: StepResults = field(default_factory=StepResults)
    work: Workspace = field(default_factory=Workspace)
    partition: tuple[int, int] | None = None
    fan_out: bool = False
    alerts: list[dict[str, Any]] = field(default_factory=list)
    progress: Progress = lambda done, total, message: None
    durations: dict[str, float] = field(default_factory=dict)

    @property
    def objects(self) -> ObjectStore:
        """S3 access for the run."""
        return ObjectStore(self.clients.client("s3"))

    @property
    def registry(self) -> Registry:
        """The environment's registry (``registry_of``)."""
        return registry_of(self)

    @property
    def data_bucket(self) -> str:
        return self.resources.data_bucket.name

    @property
    def artifact_bucket(self) -> str:
        return self.resources.artifact_bucket.name

    def needs(self, step: str) -> Any:
        """The result of an earlier ``step`` of this run.

        Raises:
            RuntimeError: that step has not run (a step was called out of order).
        """
        result = getattr(self.results, step)
        if result is None:
            raise RuntimeError(f"run {self.run_id}: the {step} step has not run, and a later step needs its result")
        return result

    def send_alert(self, alert: Alert) -> dict[str, Any]:
        """Publish ``alert`` to the environment's topic now; the outcome is kept in ``alerts`` (a
        failure to publish is recorded, never raised over the failure being reported)."""
        entry: dict[str, Any] = {"event": alert.event, "subject": alert.subject, "topic_arn": self.resources.alert_topic_arn}
        try:
            entry["message_id"] = publish_alert(self.clients.client("sns"), self.resources.alert_topic_arn, alert)
        except Exception as e:  # noqa: BLE001
            entry["error"] = f"alert not published: {e}"
        self.alerts.append(entry)
        return entry

    def alert(self, event: str, title: str, details: str, next_steps: str, **kw: Any) -> Alert:
        """An alert about this run, filled with its environment, model and run id."""
        return Alert(
            event=event, title=title, environment=self.settings.environment, model=self.spec.name,
            details=details, next_steps=next_steps, run_id=self.run_id, **kw,
        )

    def version(self, number: int) -> VersionRecord:
        """Version ``number`` of the run's model, read from the registry once per run (versions are
        immutable, so the cached record never goes stale)."""
        if number not in self.work.versions:
            self.work.versions[number] = self.registry.get_version(self.spec.name, number)
        return self.work.versions[number]

    def model_of(self, version: VersionRecord) -> Any:
        """The fitted model of a registered version, its artifact's sha256 verified (cached per run;
        the model trained in this run is not downloaded again).

        Raises:
            StorageError: the artifact is missing or its bytes differ from the registered sha256.
        """
        trained = self.results.train
        if trained is not None and version.artifact_sha256 == trained.artifact_sha256 and self.work.model is not None:
            self.work.models.setdefault(version.artifact_sha256, self.work.model)
        return load_artifact(self.objects, version, self.work.models)

    def baseline_of(self, version: VersionRecord) -> dict[str, Any] | None:
        """The baseline statistics stored with ``version`` (``baseline.json``, its sha256 verified
        when recorded), cached per run; None if the version has none (e.g. registered by hand).

        Raises:
            ChecksumMismatch: the baseline's bytes differ from the recorded sha256.
        """
        if version.version not in self.work.baselines:
            self.work.baselines[version.version] = load_baseline(self.objects, version)
        return self.work.baselines[version.version]
