"""``stagewise local``: start, stop and inspect the embedded AWS (moto's server on 127.0.0.1)."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from stagewise.platform.cli import JSON_OPT, emit_json, handles_errors, out
from stagewise.platform.contract import Env, ExitCode
from stagewise.platform.declarations import role_name
from stagewise.platform.runtime.embedded import EmbeddedAWS, stagewise_home
from stagewise.platform.runtime.environment import connect
from stagewise.platform.runtime.local_iam import read_decisions, usage_report

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


@local_app.command("iam")
@handles_errors
def local_iam_report(
    env: str = typer.Option("dev", "--env", "-e", help="Environment (stack): dev, test or prod."),
    as_json: bool = JSON_OPT,
) -> None:
    """The least-privilege report of the embedded AWS: per task role and the state machine role,
    the actions its policy grants, the actions calls used (allowed), the actions refused, and the
    granted ones no call used. The embedded AWS records every decision it makes for these roles
    (``stagewise run --executor state-machine`` runs under them).

    Examples:

      stagewise local iam
      stagewise local iam --env test --json
    """
    conn = connect(env, start_embedded=False)
    iam, account = conn.clients.client("iam"), conn.settings.account_id
    documents = {}
    for role in (role_name(env, r) for r in ("validate-task", "train-task", "score-task", "state-machine")):
        names = iam.list_role_policies(RoleName=role)["PolicyNames"]
        docs = [iam.get_role_policy(RoleName=role, PolicyName=n)["PolicyDocument"] for n in names]
        documents[role] = [json.loads(d) if isinstance(d, str) else d for d in docs]
    decisions = [d for d in read_decisions(stagewise_home()) if d["account"] == account]
    rows = usage_report(decisions, documents)
    if as_json:
        emit_json({"environment": env, "account": account, "roles": rows})
        return
    table = Table(title=f"Least privilege, {env} ({account}): what the embedded AWS saw")
    for col in ("role", "granted", "used", "refused", "granted, never used"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["role"], "\n".join(r["granted"]), "\n".join(r["used"]) or "-", "\n".join(r["denied"]) or "-",
                      "\n".join(r["unused"]) or "-")
    out.print(table)
