"""Every command's ``--help`` reads as written: its paragraphs wrap at the terminal's width (not at
the docstring's line breaks), and it ends with examples of the command itself."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from stagewise.pipeline.cli import app


def _commands(typer_app, prefix=()):
    for command in typer_app.registered_commands:
        yield (*prefix, command.name)
    for group in typer_app.registered_groups:
        yield from _commands(group.typer_instance, (*prefix, group.name))


COMMANDS = sorted(_commands(app))


def test_every_command_is_covered():
    assert len(COMMANDS) >= 29 and ("run",) in COMMANDS and ("registry", "promote") in COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_wraps_at_the_terminal_width_and_ends_with_examples(command):
    runner = CliRunner()
    narrow = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "60"}, terminal_width=60)
    wide = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "160"}, terminal_width=160)
    assert narrow.exit_code == wide.exit_code == 0, narrow.output
    text = narrow.output.split("╭─")[0]  # the description, before the options panel
    assert max(len(line) for line in text.splitlines()) <= 60
    examples = text.split("Examples:")
    assert len(examples) == 2, f"{' '.join(command)}: no Examples section"
    assert examples[1].strip().startswith(f"stagewise {command[0]}"), examples[1]
    wide_examples = [line.strip() for line in wide.output.split("╭─")[0].split("Examples:")[1].splitlines() if line.strip()]
    assert wide_examples and all(line.startswith(f"stagewise {command[0]}") for line in wide_examples), wide_examples
    # at 160 columns a paragraph is one line: the docstring's own line breaks are gone
    described = [p for p in re.split(r"\n\s*\n", wide.output.split("╭─")[0].split("Examples:")[0]) if p.strip()]
    assert all(len(p.strip().splitlines()) <= 2 or max(map(len, p.splitlines())) > 120 for p in described[1:]), described
