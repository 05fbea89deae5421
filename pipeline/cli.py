"""The ``stagewise`` command: the root of the command line.

Each area keeps its own commands (``pipeline.run_cli``, ``results_cli``, ``data_cli``,
``promote_cli``, ``registry.cli``, ``monitoring.cli`` and ``alerts_cli``,
``platform.runtime.local_cli``); this module mounts them, and gives every command's help one
shape (``reflow_help``). Errors become exit codes in one place, ``stagewise.platform.cli
.handles_errors``; the codes are ``stagewise.platform.contract.ExitCode``.
"""

from __future__ import annotations

from importlib.metadata import version as package_version

import typer

from stagewise.monitoring.alerts_cli import alerts_app
from stagewise.monitoring.cli import dashboard_command
from stagewise.pipeline.fleet_cli import fleet_command
from stagewise.pipeline.data_cli import data_app
from stagewise.pipeline.promote_cli import promote
from stagewise.pipeline.results_cli import agent_ask, agent_evaluate, agent_evaluate_rollout, explain, query, review
from stagewise.pipeline.run_cli import run, score
from stagewise.platform.cli import out, reflow_help
from stagewise.platform.runtime.local_cli import local_app
from stagewise.registry.cli import agent_app, registry_app

app = typer.Typer(
    name="stagewise",
    help="Stagewise: train, validate, register and score models on AWS, or on a laptop against an embedded AWS.\n\n"
    "Exit codes: 0 ok, 1 unexpected error, 2 validation failed, 3 gate failed, 4 bad input or configuration, "
    "5 AWS unreachable, 6 conflict (retry), 7 invalid transition, 130/143 stopped by Ctrl-C/SIGTERM.\n\n"
    "Examples:\n\n"
    "  stagewise run --data data/customers.parquet\n"
    "  stagewise registry list",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("run")(run)
app.command("score")(score)
app.command("query")(query)
app.command("explain")(explain)
app.command("review")(review)
app.command("promote")(promote)
app.command("dashboard")(dashboard_command)
app.command("fleet")(fleet_command)
agent_app.command("ask")(agent_ask)
agent_app.command("evaluate")(agent_evaluate)
agent_app.command("evaluate-rollout")(agent_evaluate_rollout)
app.add_typer(data_app, name="data")
app.add_typer(registry_app, name="registry")
app.add_typer(agent_app, name="agent")
app.add_typer(alerts_app, name="alerts")
app.add_typer(local_app, name="local")


def _version_callback(value: bool) -> None:
    if value:
        out.print(f"stagewise {package_version('stagewise')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."),
) -> None:
    """Stagewise command line."""


reflow_help(app)


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
