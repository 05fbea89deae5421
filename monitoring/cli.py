"""``stagewise dashboard``: the environment's CloudWatch dashboard as a local HTML page.

Registered on the root app by ``pipeline/cli.py`` (``app.command("dashboard")(dashboard_command)``).
"""

from __future__ import annotations

import webbrowser
from pathlib import Path
from typing import Optional

import typer

from stagewise.monitoring.preview import collect_preview, write_preview
from stagewise.platform.cli import AWS_OPT, ENV_OPT, JSON_OPT, emit_json, err, handles_errors
from stagewise.platform.cli import out as console
from stagewise.platform.runtime.environment import connect


@handles_errors
def dashboard_command(
    env: str = ENV_OPT,
    open_browser: bool = typer.Option(False, "--open", help="Open the page in the default web browser."),
    out: Path = typer.Option(Path(".stagewise/dashboards"), "--out", "-o", help="Folder to write dashboard-<env>.html into."),
    hours: float = typer.Option(24.0, "--hours", min=0.01, help="Time range: the last HOURS hours."),
    aws: bool = AWS_OPT,
    project_dir: Optional[Path] = typer.Option(None, "--project-dir", help="Folder with Pulumi.<env>.yaml (default: found from cwd)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Render the environment's CloudWatch dashboard, with its data, as one self-contained HTML page.

    The widgets are the ones the stack deploys; the data comes from the environment's account
    (the embedded AWS, or the real account with --aws). The page loads nothing from the network.
    Without --aws the embedded AWS must be running (`stagewise run` leaves it up).

    Examples:

      stagewise dashboard --env dev --open
      stagewise dashboard --env prod --hours 72
    """
    conn = connect(env, aws=aws, project_dir=project_dir)
    with err.status(f"reading the {env} dashboard's metrics ({'AWS' if aws else 'embedded AWS'})"):
        preview = collect_preview(conn, hours)
        path = write_preview(preview, out, env)
    if open_browser:
        webbrowser.open(path.resolve().as_uri())
    if as_json:
        emit_json({
            "path": str(path), "widgets": len(preview.body.get("widgets", [])), "charts": preview.charts,
            "series": preview.series, "datapoints": preview.datapoints, "hours": hours,
            "notes": {str(i): note for i, note in preview.notes.items()},
        })
    else:
        console.print(str(path), markup=False, highlight=False, soft_wrap=True)
        err.print(f"[dim]{preview.charts} charts, {preview.series} series, {preview.datapoints} datapoints over the last {hours:g} h[/]")
