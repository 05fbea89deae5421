"""CLI plumbing shared by every area's commands: the consoles, ``--json`` output, failing with an
exit code, the common options, and ``handles_errors``: the one place where errors become exit codes
(each ``StagewiseError`` carries its own, ``stagewise.platform.contract.ExitCode``).
"""

from __future__ import annotations

import functools
import json
import re
import sys
import inspect
from typing import Any, Callable, NoReturn, TypeVar

import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console

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


AWS_NOT_FOUND = ("NotFound", "NotFoundException", "AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")
AWS_BAD_REQUEST = ("InvalidParameter", "InvalidParameterValue", "ValidationError")
AWS_NO_ACCESS = ("AuthorizationError", "AccessDenied", "AccessDeniedException", "InvalidClientTokenId", "ExpiredToken",
                 "UnrecognizedClientException", "SignatureDoesNotMatch")


def handles_errors(fn: F) -> F:
    """Turn the errors of a command into a message and their exit code, the one place where that
    is decided: a ``StagewiseError`` exits with its own ``exit_code`` (and ``hint``; registry
    errors add their ``code_name``); a missing file with 4; an AWS error by its code (a missing
    resource or a refused parameter 4, denied access or bad credentials 5, anything else 1); an
    AWS endpoint that cannot be reached 5."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = bool(kwargs.get("as_json"))
        env = kwargs.get("env", "dev")
        try:
            return fn(*args, **kwargs)
        except StagewiseError as e:
            named = {"code_name": e.code} if e.code != StagewiseError.code else {}
            fail(str(e), e.exit_code, as_json, hint=e.hint, **named)
        except FileNotFoundError as e:
            fail(str(e), ExitCode.BAD_INPUT, as_json)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            text = f"{e.operation_name} failed: {code}: {e.response.get('Error', {}).get('Message', '')}"
            if code in AWS_NOT_FOUND:
                fail(text, ExitCode.BAD_INPUT, as_json, hint=f"deploy the stack first (`pulumi up -s {env}`), or check --env")
            if code in AWS_BAD_REQUEST:
                fail(text, ExitCode.BAD_INPUT, as_json)
            if code in AWS_NO_ACCESS:
                fail(text, ExitCode.AWS_UNREACHABLE, as_json,
                     hint=f"check your credentials and that the stack's role may call {e.operation_name}")
            fail(text, ExitCode.FAILED, as_json)
        except BotoCoreError as e:
            fail(f"AWS unreachable: {e}", ExitCode.AWS_UNREACHABLE, as_json)

    return wrapper  # type: ignore[return-value]


JSON_OPT = typer.Option(False, "--json", help="Print one machine-readable JSON document instead of tables.")
ENV_OPT = typer.Option("dev", "--env", "-e", help="Environment (stack): dev, test or prod.")
AWS_OPT = typer.Option(False, "--aws", help="Target the real AWS account through the stack's role instead of the embedded AWS.")
PROJECT_OPT = typer.Option(None, "--project-dir", help="Folder with Pulumi.<env>.yaml (default: found from cwd).")


def reflow(text: str | None) -> str | None:
    """A docstring as help text: each paragraph on one line, so the terminal wraps it at its own
    width, instead of the docstring's hard line breaks (typer keeps them). A paragraph whose lines
    are indented (an example) keeps its lines."""
    if not text:
        return text
    paragraphs = re.split(r"\n\s*\n", inspect.cleandoc(text))
    kept = [p if any(line.startswith("  ") for line in p.splitlines()) else " ".join(p.split()) for p in paragraphs]
    return "\n\n".join(kept)


def reflow_help(app: typer.Typer) -> None:
    """``reflow`` the help of every command and group of ``app``, recursively (called once by the
    root command after every area mounted its commands)."""
    app.info.help = reflow(app.info.help if isinstance(app.info.help, str) else None)
    for command in app.registered_commands:
        command.help = reflow(command.help if isinstance(command.help, str) else (command.callback.__doc__ if command.callback else None))
    for group in app.registered_groups:
        if group.typer_instance is not None:
            reflow_help(group.typer_instance)

