"""The pipeline's steps, each ``step(ctx: RunContext) -> <its result>``: ``ingest``, ``validate``
(``intake``), ``train``, ``evaluate``, ``register`` (``training``), ``score`` (``score``),
``monitor``, ``rollout``, ``publish`` (``report``). Steps read earlier steps' typed results from
``ctx.results`` and return their own (``results``); in-process objects live in ``ctx.work``
(``context``). A step that must end the run raises a ``PipelineStop`` (``ValidationFailed``: exit
2; ``GateRejected``: exit 3).

S3 layout (bucket names from ``stagewise.platform.resources``)::

    data bucket      raw/<model>/<data sha256>/<file name>             the input, content-addressed
                     validation/<model>/<run id>/result.json           GE validation result
                     validation/<model>/<run id>/data-docs/...         GE Data Docs (HTML)
                     staging/predictions/<model>/run=<run id>/part-00000.parquet  (until every part is scored)
                     predictions/<model>/run=<run id>/part-00000.parquet, _manifest.json  (published)
                     results/<model>/run_date=<date>/model_version=<n>/...   the results catalog
    artifact bucket  models/<model>/<artifact sha256>/model.ubj        XGBoost model (UBJSON)
                     models/<model>/<artifact sha256>/metrics.json, feature_importance.json, baseline.json
                     models/<model>/specs/<spec sha256>.json           the spec a version was trained with
"""

from stagewise.pipeline.steps.context import GateRejected, PipelineStop, RunContext, ValidationFailed, Workspace
from stagewise.pipeline.steps.intake import ingest, validate
from stagewise.pipeline.steps.report import attempt_metrics, monitor, publish, rollout, run_metrics, send_run_metrics
from stagewise.pipeline.steps.results import StepResult, StepResults
from stagewise.pipeline.steps.score import challenger_observations, input_reference, predictions_summary, review_queue, score
from stagewise.pipeline.steps.training import evaluate, register, train

__all__ = [
    "GateRejected", "PipelineStop", "RunContext", "StepResult", "StepResults", "ValidationFailed", "Workspace",
    "challenger_observations", "evaluate", "ingest", "input_reference", "monitor", "predictions_summary", "publish",
    "register", "review_queue", "rollout", "run_metrics", "score", "train", "validate", "attempt_metrics", "send_run_metrics",
]
