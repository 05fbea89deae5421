"""CLI plumbing shared by every command group, and ``stagewise local`` (the embedded AWS).

Exit codes used by every command:
    0 success; 1 unexpected error; 2 validation failed; 3 gate failed;
    4 bad input or configuration (settings, spec, file, unknown model/version);
    5 AWS unreachable (embedded AWS not running, role not assumable);
    6 conflict: the record changed since it was read (re-read and retry);
    7 invalid transition: the registry refused the state change (e.g. advancing a rolled-back version).
"""

from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from stagewise.platform.runtime.aws import AwsAccessError
from stagewise.platform.runtime.embedded import EmbeddedAWS, EmbeddedAWSError

EXIT_ERROR = 1
EXIT_BAD_INPUT = 4
EXIT_AWS = 5
EXIT_CONFLICT = 6

out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def emit_json(doc: Any) -> None:
    """Print one JSON document to stdout (nothing else goes to stdout with ``--json``)."""
    sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")


def fail(message: str, code: int, as_json: bool = False, hint: str | None = None, **extra: Any) -> NoReturn:
    """Report an error (as JSON on stdout with ``--json``, else in red on stderr) and exit ``code``."""
    if as_json:
        emit_json({"error": message, "exit_code": code, **({"hint": hint} if hint else {}), **extra})
    else:
        err.print(f"[bold red]error:[/] {message}")
        if hint:
            err.print(f"[dim]hint:[/] {hint}")
    raise typer.Exit(code)


def handles_errors(fn: F) -> F:
    """Turn the known error types of a command into a message and a meaningful exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from stagewise.pipeline.spec import SpecError
        from stagewise.registry.errors import RegistryError
        from stagewise.stacks.settings import SettingsError

        as_json = bool(kwargs.get("as_json"))
        try:
            return fn(*args, **kwargs)
        except (SettingsError, SpecError, FileNotFoundError) as e:
            fail(str(e), EXIT_BAD_INPUT, as_json)
        except RegistryError as e:  # each error of the family carries its exit code
            fail(str(e), e.exit_code, as_json, hint=e.hint, code_name=e.code)
        except (EmbeddedAWSError, AwsAccessError) as e:
            fail(str(e), EXIT_AWS, as_json)

    return wrapper  # type: ignore[return-value]


JSON_OPT = typer.Option(False, "--json", help="Print one machine-readable JSON document instead of tables.")
ENV_OPT = typer.Option("dev", "--env", "-e", help="Environment (stack): dev, test or prod.")
AWS_OPT = typer.Option(False, "--aws", help="Target the real AWS account through the stack's role instead of the embedded AWS.")

local_app = typer.Typer(help="The embedded AWS (moto's server on 127.0.0.1) that runs Stagewise without an AWS account.", no_args_is_help=True)


@local_app.command("up")
@handles_errors
def local_up(
    port: int = typer.Option(None, "--port", "-p", help="TCP port on 127.0.0.1 (default 5055 or $STAGEWISE_EMBEDDED_PORT)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Start the embedded AWS in the background (no-op if it is running)."""
    was = EmbeddedAWS().status().running
    st = EmbeddedAWS().up(port=port)
    if as_json:
        emit_json({**st.to_dict(), "already_running": was})
    else:
        out.print(f"embedded AWS {'already ' if was else ''}running at [bold]{st.endpoint}[/] (pid {st.pid}); stop it with `stagewise local down`")


@local_app.command("down")
@handles_errors
def local_down(as_json: bool = JSON_OPT) -> None:
    """Stop the embedded AWS. Everything it held (registry, buckets, metrics) is lost."""
    stopped = EmbeddedAWS().down()
    if as_json:
        emit_json({"stopped": stopped})
    else:
        out.print("embedded AWS stopped" if stopped else "embedded AWS was not running")


@local_app.command("status")
@handles_errors
def local_status(as_json: bool = JSON_OPT) -> None:
    """Show whether the embedded AWS runs, where, and its log file. Exit 0 if running, 5 if not."""
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
        raise typer.Exit(EXIT_AWS)
