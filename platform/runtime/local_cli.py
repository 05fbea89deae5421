"""``stagewise local``: start, stop and inspect the embedded AWS (moto's server on 127.0.0.1)."""

from __future__ import annotations

import typer
from rich.table import Table

from stagewise.platform.cli import JSON_OPT, emit_json, handles_errors, out
from stagewise.platform.contract import Env, ExitCode
from stagewise.platform.runtime.embedded import EmbeddedAWS

local_app = typer.Typer(help="The embedded AWS (moto's server on 127.0.0.1) that runs Stagewise without an AWS account.", no_args_is_help=True)


@local_app.command("up")
@handles_errors
def local_up(
    port: int = typer.Option(None, "--port", "-p", help=f"TCP port on 127.0.0.1 (default 5055 or ${Env.EMBEDDED_PORT})."),
    as_json: bool = JSON_OPT,
) -> None:
    """Start the embedded AWS in the background (no-op if it is running).

    Examples:

      stagewise local up --port 5055
    """
    was = EmbeddedAWS().status().running
    st = EmbeddedAWS().up(port=port)
    if as_json:
        emit_json({**st.to_dict(), "already_running": was})
    else:
        out.print(f"embedded AWS {'already ' if was else ''}running at [bold]{st.endpoint}[/] (pid {st.pid}); stop it with `stagewise local down`")


@local_app.command("down")
@handles_errors
def local_down(as_json: bool = JSON_OPT) -> None:
    """Stop the embedded AWS. Everything it held (registry, buckets, metrics) is lost.

    Examples:

      stagewise local down
    """
    stopped = EmbeddedAWS().down()
    if as_json:
        emit_json({"stopped": stopped})
    else:
        out.print("embedded AWS stopped" if stopped else "embedded AWS was not running")


@local_app.command("status")
@handles_errors
def local_status(as_json: bool = JSON_OPT) -> None:
    """Show whether the embedded AWS runs, where, and its log file. Exit 0 if running, 5 if not.

    Examples:

      stagewise local status --json
    """
    st = EmbeddedAWS().status()
    if as_json:
        emit_json(st.to_dict())
    else:
        table = Table(show_header=False, box=None)
        table.add_row("running", "[green]yes[/]" if st.running else "[red]no[/]")
        for k in ("endpoint", "pid", "port", "log"):
            table.add_row(k, str(getattr(st, k) or "-"))
        out.print(table)
    if not st.running:
        raise typer.Exit(ExitCode.AWS_UNREACHABLE)
