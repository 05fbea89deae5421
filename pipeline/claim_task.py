"""The ``claim`` task: the first state of a triggered execution claims its input (``stagewise.registry.claims``).

Run by the state machine's ``ClaimInput`` state (an ECS task on the ``validate`` task definition
and role, started only when the execution input names a ``trigger``)::

    stagewise-task claim --run-id R --data s3://bucket/incoming/engagement/x.parquet --model engagement \\
        --env dev --execution <execution ARN> --trigger s3

It streams the object once to compute its sha256, claims that content for the execution, and
reports ``{"claimed": true|false, "owner": <execution ARN>, "data_sha256", "run_id"}`` with
SendTaskSuccess; the state machine runs the pipeline only when ``claimed`` is true, and otherwise
ends in ``AlreadyProcessed``. Exit codes as ``stagewise-task``: 0 reported (claimed or not), 1 the
claim failed (SendTaskFailure ``Stagewise.StepFailed``), 4 bad arguments, 5 AWS unreachable.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Callable

from stagewise.pipeline.spec import load_spec
from stagewise.platform.contract import ExitCode, StagewiseError, TaskError
from stagewise.platform.runtime.objects import S3Uri
from stagewise.registry.claims import claim_input, new_claim

CHUNK_BYTES = 8 * 1024 * 1024
"""Read size while hashing the object (bytes): memory stays flat in the object's size."""


def object_sha256(s3: Any, uri: str) -> str:
    """sha256 (hex) of the S3 object at ``uri``, streamed in ``CHUNK_BYTES`` reads.

    Raises:
        ValueError: ``uri`` is not an ``s3://`` URI.
        botocore.exceptions.ClientError: the object is missing or unreadable.
    """
    where = S3Uri.parse(uri)
    digest = hashlib.sha256()
    for chunk in s3.get_object(Bucket=where.bucket, Key=where.key)["Body"].iter_chunks(CHUNK_BYTES):
        digest.update(chunk)
    return digest.hexdigest()


def build_parser() -> argparse.ArgumentParser:
    """The ``stagewise-task claim`` arguments."""
    p = argparse.ArgumentParser(prog="stagewise-task claim", description=__doc__.split("\n\n")[0])
    p.add_argument("--run-id", required=True)
    p.add_argument("--data", "-d", required=True, help="the input's s3:// URI")
    p.add_argument("--model", "-m", default="engagement")
    p.add_argument("--env", "-e", default="dev")
    p.add_argument("--execution", required=True, help="the claiming execution's ARN ($$.Execution.Id)")
    p.add_argument("--trigger", default="s3", help="what started the execution: s3 or schedule")
    p.add_argument("--project-dir", type=Path)
    p.add_argument("--aws", action="store_true")
    p.add_argument("--actor")
    return p


def main(argv: list[str], connect: Callable[[argparse.Namespace], Any], callbacks: Callable[[Any], Any]) -> int:
    """Claim the input and report it (module docstring).

    Args:
        argv: the arguments after ``claim``.
        connect: ``args -> Environment`` (the entrypoint's: the task role in ECS, else ``connect``).
        callbacks: ``clients -> Callbacks`` (Step Functions through the task token, or none).
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        return ExitCode.BAD_INPUT if e.code else ExitCode.OK
    conn = None
    try:
        model = load_spec(args.model).name
        conn = connect(args)
        sha = object_sha256(conn.clients.client("s3"), args.data)
        claim = new_claim(model, sha, args.data, args.execution, args.run_id, args.trigger)
        claimed, holder = claim_input(conn.clients.client("dynamodb"), conn.resources.registry_table.name, claim)
    except Exception as e:  # noqa: BLE001 - reported to the state machine, then the exit code
        code = e.exit_code if isinstance(e, StagewiseError) else ExitCode.BAD_INPUT if isinstance(e, ValueError) else ExitCode.FAILED
        cause = f"claiming {args.data} failed: {type(e).__name__}: {e}"
        print(f"stagewise-task: {cause}", file=sys.stderr)
        callbacks(conn.clients if conn else None).failure(TaskError.STEP_FAILED, cause)
        return code
    output = {"claimed": claimed, "owner": holder.owner, "run_id": holder.run_id, "data_sha256": sha,
              "claimed_at": holder.claimed_at.isoformat()}
    print(json.dumps({"event": "claim", **output, "data": args.data}), flush=True)
    callbacks(conn.clients).success(output)
    return ExitCode.OK
