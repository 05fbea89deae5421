"""``stagewise promote``: copy a champion to the next account (dev -> test -> prod) with its lineage."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from stagewise.pipeline.run_cli import RUN_ACTOR_OPT
from stagewise.pipeline.spec import SpecError, load_spec
from stagewise.pipeline.version_files import reporting_tampered
from stagewise.platform.cli import AWS_OPT, JSON_OPT, PROJECT_OPT, emit_json, handles_errors, out
from stagewise.platform.resources import environment_resources
from stagewise.platform.runtime.environment import connect
from stagewise.registry.promotion import promote as run_promotion
from stagewise.registry.service import RolloutPlan
from stagewise.stacks.settings import load_settings


@handles_errors
def promote(
    model: str = typer.Argument(..., help="Model or agent name, e.g. engagement."),
    version: int = typer.Argument(..., help="The version to promote: it must be the champion in --from."),
    source: str = typer.Option(..., "--from", help="Source environment (dev or test)."),
    target: str = typer.Option(..., "--to", help="Target environment (test or prod)."),
    approver: Optional[str] = typer.Option(None, "--approver", help="Who approved it (required for prod; audited in both)."),
    reason: Optional[str] = typer.Option(None, "--reason", help="Why (required for prod; audited in both)."),
    actor: Optional[str] = RUN_ACTOR_OPT,
    aws: bool = AWS_OPT,
    project_dir: Optional[Path] = PROJECT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Promote a champion version to the next account without retraining: copy and verify its
    artifact, baseline and validation report, register it with lineage, start the target's rollout.

    Runs as each environment's promoter role. Re-running is safe: a completed promotion is a no-op.

    Examples:

      stagewise promote engagement 1 --from dev --to test
      stagewise promote engagement 1 --from test --to prod --approver "Ada Lovelace" --reason "clean week"
    """

    conns = {}
    for env in (source, target):
        role = environment_resources(load_settings(env, project_dir)).promoter_role_arn
        conns[env] = connect(env, aws=aws, project_dir=project_dir, provision=not aws, role_arn=role)
    settings = conns[target].settings
    try:
        steps = load_spec(model).rollout.plan.get(target)  # type: ignore[call-overload]
    except SpecError:
        steps = None  # not a built-in spec: the target stack's plan
    plan = RolloutPlan.for_environment(settings, steps)
    with reporting_tampered(conns[source], model, f"promoting it to {target}"):
        result = run_promotion(conns[source], conns[target], model, version,
                               actor=actor or conns[source].clients.caller_identity()["Arn"],
                               approver=approver, reason=reason, plan=plan)
    if as_json:
        emit_json(result.to_dict())
        return
    again = " (already promoted: nothing to do)" if not result.created else ""
    out.print(f"{model} {source} v{result.source_version} -> {target} v{result.target_version} ({result.stage}){again}; "
              f"sha256 {result.artifact_sha256[:16]}… verified on {len(result.copied)} objects")
