"""``stagewise fleet``: every model and agent in dev, test and prod side by side, in the terminal,
as ``--json``, and as pages (``fleet.html`` and one ``model-<name>.html`` per model).

Each environment is read through its own read-only ``reader`` role (``monitoring.fleet``); on the
embedded AWS the environment's stack is provisioned first, as ``run --executor state-machine``
does, so that role exists and the embedded IAM holds it to its policy.
"""

from __future__ import annotations

import webbrowser
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from stagewise.monitoring import fleet
from stagewise.monitoring.fleet_page import cell_lines, page_name, render_fleet, render_model
from stagewise.platform.cli import AWS_OPT, JSON_OPT, PROJECT_OPT, emit_json, err, fail, handles_errors, out
from stagewise.platform.contract import ExitCode
from stagewise.platform.resources import environment_resources
from stagewise.platform.runtime.environment import connect
from stagewise.stacks.settings import ENVIRONMENTS, load_settings


def _reader(env: str, aws: bool, project_dir: Optional[Path]) -> tuple[fleet.EnvironmentView, Any]:
    """Connect to ``env`` as its reader role and read it: ``(its view, the connection)``; an
    environment that cannot be reached comes back with its error (and no connection)."""
    settings = load_settings(env, project_dir)
    try:
        if not aws:
            from stagewise.pipeline.local_stack import provision_stack  # deferred: the ASL compiler and dashboard builders

            provision_stack(connect(env, project_dir=project_dir, provision=True))
        conn = connect(env, aws=aws, project_dir=project_dir, role_arn=environment_resources(settings).reader_role_arn,
                       session_name=f"stagewise-{env}-fleet")
    except Exception as e:  # noqa: BLE001 - shown in the environment's column, the others still read
        return fleet.EnvironmentView(env, settings.account_id, settings.region, error=f"{type(e).__name__}: {e}"), None
    return fleet.read_environment(conn), conn


def _comparisons(views: list[fleet.EnvironmentView], conns: dict[str, Any], name: str) -> dict:
    """Per environment, its challenger (else newest version) against its champion (else the one
    before), through the reader role's S3 read of baselines and feature importances (``conns``:
    environment -> its reader connection)."""
    found = {}
    for v in views:
        model = v.models.get(name)
        if not model or len(model["versions"]) < 2:
            found[v.environment] = None
            continue
        by = {x["version"]: x for x in model["versions"]}
        sv = model["serving"]
        b = by.get(sv["challenger"]) or model["versions"][-1]
        a = by.get(sv["champion"]) if sv["champion"] != b["version"] else None
        a = a or next(x for x in reversed(model["versions"]) if x["version"] != b["version"])
        s3 = conns[v.environment].clients.client("s3")
        found[v.environment] = fleet.compare_versions(a, b, lambda uri, what: fleet.artifact_json(s3, uri, what))
    return found


@handles_errors
def fleet_command(
    envs: str = typer.Option(",".join(ENVIRONMENTS), "--envs", help="Environments to read, in order (comma-separated)."),
    out_dir: Path = typer.Option(Path(".stagewise/fleet"), "--out", "-o", help="Folder for fleet.html and the model pages."),
    pages: bool = typer.Option(True, "--pages/--no-pages", help="Write the pages (fleet.html, model-<name>.html)."),
    open_browser: bool = typer.Option(False, "--open", help="Open fleet.html in the default web browser."),
    aws: bool = AWS_OPT, project_dir: Optional[Path] = PROJECT_OPT, as_json: bool = JSON_OPT,
) -> None:
    """Show every model and agent in every environment side by side: champion and challenger with
    traffic weights, rollout step and last gate values, last run, open alarms, drift, and the
    promotion path of each serving version back to where it was trained.

    Each environment is read as its stack's read-only reader role (never the deployer or promoter).
    Exit 0 when every environment was read, 5 when one could not be (its column says why).

    Examples:

      stagewise fleet
      stagewise fleet --envs dev,prod --json
      stagewise fleet --out site/ --open
    """
    names = [e.strip() for e in envs.split(",") if e.strip()]
    unknown = [e for e in names if e not in ENVIRONMENTS]
    if unknown or not names:
        fail(f"--envs {envs!r}: unknown environment(s) {unknown}; use {', '.join(ENVIRONMENTS)}", ExitCode.BAD_INPUT, as_json)
    now = datetime.now(timezone.utc)
    with err.status(f"reading {', '.join(names)} as each account's reader role"):
        read = [_reader(e, aws, project_dir) for e in names]
    views, conns = [v for v, _ in read], {v.environment: c for v, c in read}
    written: dict[str, str] = {}
    if pages:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "fleet.html").write_text(render_fleet(views, now), encoding="utf-8")
        written["fleet"] = str(out_dir / "fleet.html")
        for name in sorted({n for v in views for n in v.models}):
            path = out_dir / page_name(name)
            path.write_text(render_model(name, views, _comparisons(views, conns, name), now), encoding="utf-8")
            written[name] = str(path)
    code = ExitCode.AWS_UNREACHABLE if any(v.error for v in views) else ExitCode.OK
    if as_json:
        emit_json({"generated": now.isoformat(), "environments": [v.to_dict() for v in views], "pages": written})
        raise typer.Exit(code)
    _print(views)
    if written:
        out.print(f"pages: {written['fleet']} (+{len(written) - 1} model pages)", markup=False, highlight=False, soft_wrap=True)
        if open_browser:
            webbrowser.open(Path(written["fleet"]).resolve().as_uri())
    raise typer.Exit(code)


def _print(views: list[fleet.EnvironmentView]) -> None:
    table = Table(title="Stagewise fleet", show_lines=True)
    table.add_column("model / agent", no_wrap=True)
    for v in views:
        table.add_column(f"{v.environment} ({v.account_id})", overflow="fold")
    style = {"ok": "green", "bad": "red", "dim": "dim", "warn": "yellow"}
    for name in sorted({n for v in views for n in v.models}):
        row = [name]
        for v in views:
            if v.error:
                row.append(f"[red]not readable: {v.error}[/]")
            elif name not in v.models:
                row.append("[dim]not registered[/]")
            else:
                row.append("\n".join(f"[{style[c]}]{t}[/]" if c in style else t for c, t in cell_lines(v.models[name])))
        table.add_row(*row)
    out.print(table)
    for v in views:
        if v.error:
            err.print(f"[red]{v.environment} could not be read[/]: {v.error}")
