"""``stagewise registry``: read the model registry of an environment."""

from __future__ import annotations

from typing import Any, Optional

import typer
from rich.table import Table

from stagewise.platform.cli import AWS_OPT, ENV_OPT, JSON_OPT, emit_json, handles_errors, out
from stagewise.platform.environment import connect
from stagewise.registry.dynamodb import DynamoDBRegistryStore
from stagewise.registry.records import VersionRecord
from stagewise.registry.service import Registry

registry_app = typer.Typer(help="Read the model registry: models, versions, lineage, aliases.", no_args_is_help=True)


def _registry(env: str, aws: bool) -> Registry:
    conn = connect(env, aws=aws)
    return Registry(DynamoDBRegistryStore(conn.clients.client("dynamodb"), conn.resources.registry_table.name))


@registry_app.command("list")
@handles_errors
def list_models(env: str = ENV_OPT, aws: bool = AWS_OPT, as_json: bool = JSON_OPT) -> None:
    """List models and agents with their versions and aliases."""
    reg = _registry(env, aws)
    rows = []
    for model in reg.list_models():
        versions = reg.list_versions(model.name)
        rows.append({
            "name": model.name,
            "kind": model.kind,
            "latest_version": model.latest_version,
            "aliases": model.aliases,
            "revision": model.revision,
            "updated_at": model.updated_at.isoformat(),
            "versions": [
                {"version": v.version, "status": v.status, "created_at": v.created_at.isoformat(), "metrics": v.metrics,
                 "artifact_sha256": v.artifact_sha256}
                for v in versions
            ],
        })
    if as_json:
        emit_json({"environment": env, "models": rows})
        return
    if not rows:
        out.print(f"no models registered in {env}; run `stagewise run` to train and register one")
        return
    table = Table(title=f"Registry ({env})")
    for col in ("model", "kind", "versions", "champion", "aliases", "updated (UTC)"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["name"], r["kind"], str(len(r["versions"])), str(r["aliases"].get("champion", "-")),
            ", ".join(f"{k}={v}" for k, v in sorted(r["aliases"].items())) or "-", r["updated_at"][:19],
        )
    out.print(table)


@registry_app.command("show")
@handles_errors
def show(
    model: str = typer.Argument(..., help="Model name, e.g. engagement."),
    version: Optional[int] = typer.Argument(None, help="Version number; omit for the model and all its versions."),
    env: str = ENV_OPT,
    aws: bool = AWS_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Show a model (aliases, versions) or one version (metrics, gates, lineage, artifact)."""
    reg = _registry(env, aws)
    if version is not None:
        v = reg.get_version(model, version)
        if as_json:
            emit_json({"environment": env, **v.model_dump(mode="json")})
        else:
            _print_version(v)
        return
    record = reg.get_model(model)
    versions = reg.list_versions(model)
    if as_json:
        emit_json({"environment": env, **record.model_dump(mode="json"), "versions": [v.model_dump(mode="json") for v in versions]})
        return
    out.print(f"[bold]{record.name}[/] ({record.kind}) in {env} · revision {record.revision} · aliases "
              f"{', '.join(f'{k}={v}' for k, v in sorted(record.aliases.items())) or 'none'}")
    table = Table()
    for col in ("version", "status", "created (UTC)", "metrics", "artifact sha256"):
        table.add_column(col)
    for v in versions:
        table.add_row(str(v.version), v.status, v.created_at.isoformat()[:19], _fmt_metrics(v.metrics), v.artifact_sha256[:16] + "…")
    out.print(table)


def _fmt_metrics(metrics: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items())


def _print_version(v: VersionRecord) -> None:
    table = Table(show_header=False, title=f"{v.model} version {v.version}")
    table.add_column("field", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_row("status", v.status)
    table.add_row("created", f"{v.created_at.isoformat()} by {v.created_by}")
    table.add_row("metrics", _fmt_metrics(v.metrics))
    for g in v.gates:
        table.add_row("gate", f"{g.metric} {g.comparator} {g.threshold}: {g.value:.4f} -> {g.outcome}" if g.value is not None else f"{g.metric}: {g.outcome}")
    table.add_row("artifact", f"{v.artifact_uri}\nsha256 {v.artifact_sha256}")
    table.add_row("baseline", v.baseline_uri or "-")
    for k, val in v.lineage.items():
        table.add_row(f"lineage.{k}", str(val))
    out.print(table)
