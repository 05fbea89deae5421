"""CLI plumbing shared by every area's commands: the consoles, ``--json`` output, failing with an
exit code, the common options, and ``handles_errors``: the one place where errors become exit codes
(each ``StagewiseError`` carries its own, ``stagewise.platform.contract.ExitCode``).
"""

from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from stagewise.platform.contract import ExitCode, StagewiseError

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
    """Turn the errors of a command into a message and their exit code: a ``StagewiseError``
    exits with its own ``exit_code`` (and ``hint``; registry errors add their ``code_name``), a
    missing file with 4."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = bool(kwargs.get("as_json"))
        try:
            return fn(*args, **kwargs)
        except StagewiseError as e:
            named = {"code_name": e.code} if e.code != StagewiseError.code else {}
            fail(str(e), e.exit_code, as_json, hint=e.hint, **named)
        except FileNotFoundError as e:
            fail(str(e), ExitCode.BAD_INPUT, as_json)

    return wrapper  # type: ignore[return-value]


JSON_OPT = typer.Option(False, "--json", help="Print one machine-readable JSON document instead of tables.")
ENV_OPT = typer.Option("dev", "--env", "-e", help="Environment (stack): dev, test or prod.")
AWS_OPT = typer.Option(False, "--aws", help="Target the real AWS account through the stack's role instead of the embedded AWS.")
