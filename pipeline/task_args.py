"""The command line of ``stagewise-task`` (the job container's entrypoint): the one place its
arguments, and what the state machine passes in them, are written (``asl.task_command`` builds
the same commands). ``stagewise.pipeline.entrypoint`` runs what it parses.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stagewise.pipeline.definition import FANNED_OUT, MAPPED_GROUPS, PIPELINE, Step
from stagewise.platform.contract import Env, TaskError

HEARTBEAT_SECONDS = 60.0
"""Default interval between heartbeats (``Env.HEARTBEAT_SECONDS`` overrides it)."""

GROUPS: dict[str, tuple[Step, ...]] = dict(PIPELINE.task_groups())
"""Task group name -> its steps, in order (``validate``, ``train``, ``score``, ``report``)."""


class UsageError(Exception):
    """Bad command-line arguments (exit 4)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    """The ``stagewise-task`` argument parser (its ``--help`` states the contract)."""
    contract = (
        f"Contract with the state machine (the task token is in ${Env.TASK_TOKEN}; without it no callback is sent):\n"
        "  success    SendTaskSuccess(output = the group's JSON summary); validate adds the partitions to score\n"
        f"  failure    SendTaskFailure(error, cause): {TaskError.VALIDATION_FAILED} (exit 2), {TaskError.GATE_FAILED} (exit 3),\n"
        f"             {TaskError.SPOT_INTERRUPTION} (SIGTERM, exit 143), {TaskError.STEP_FAILED} (anything else: exit 1;\n"
        "             4 bad arguments, settings or spec; 5 AWS unreachable)\n"
        f"  heartbeat  SendTaskHeartbeat every {HEARTBEAT_SECONDS:g} s while working (${Env.HEARTBEAT_SECONDS} overrides)"
    )
    p = _Parser(
        prog="stagewise-task",
        description="Run one task group of the Stagewise pipeline (the job container's entrypoint).",
        epilog=contract,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("group", choices=list(GROUPS), help="task group: " + "; ".join(
        f"{g} ({', '.join(st.name for st in steps)})" for g, steps in GROUPS.items()))
    p.add_argument("--run-id", required=True, help="the run (the state machine's execution name); groups of one run share it")
    p.add_argument("--data", "-d", required=True, help="the input: an s3:// URI (or a local parquet/CSV file)")
    p.add_argument("--model", "-m", default="engagement", help="built-in spec name or path to a spec YAML")
    p.add_argument("--env", "-e", default="dev", help="environment (stack): dev, test or prod")
    p.add_argument("--partition", type=int, help="score, validate: this task's partition index (0-based)")
    p.add_argument("--partitions", type=int, help="score, validate: the number of partitions")
    p.add_argument("--fan-out", action="store_true",
                   help="validate only: ingest and plan; an input of several partitions is left to a Map of "
                        "`validate --partition I --partitions N` tasks and a `validate --merge` task")
    p.add_argument("--merge", action="store_true",
                   help="validate only: merge the partitions' results (every one finished), publish, decide")
    p.add_argument("--actor", help="who runs it, for the audit (default: the caller's AWS identity)")
    p.add_argument("--project-dir", type=Path, help="folder with Pulumi.<env>.yaml (default: found from cwd)")
    p.add_argument("--aws", action="store_true",
                   help="outside AWS: target the real account through the stack's role instead of the embedded AWS")
    return p


def parse(argv: list[str] | None) -> argparse.Namespace:
    """``argv`` parsed and checked.

    Raises:
        UsageError: an unknown group or option, or options that do not go together.
        SystemExit: ``--help`` (exit 0).
    """
    args = build_parser().parse_args(argv)
    if (args.partition is None) != (args.partitions is None):
        raise UsageError("--partition and --partitions go together")
    partitioned = MAPPED_GROUPS | FANNED_OUT
    if args.partitions is not None:
        if args.group not in partitioned:
            raise UsageError(f"--partition/--partitions apply to {', '.join(sorted(partitioned))} only")
        if args.partitions < 1 or not 0 <= args.partition < args.partitions:
            raise UsageError(f"need 0 <= --partition < --partitions, got {args.partition} of {args.partitions}")
    if (args.fan_out or args.merge) and args.group not in FANNED_OUT:
        raise UsageError(f"--fan-out/--merge apply to {', '.join(sorted(FANNED_OUT))} only")
    if sum((args.fan_out, args.merge, args.partition is not None)) > 1:
        raise UsageError("--fan-out, --merge and --partition are three different tasks: give one")
    if not args.run_id.strip() or "/" in args.run_id:
        raise UsageError(f"--run-id {args.run_id!r} must be non-empty and contain no '/'")
    return args
