"""The local run journal: what a ``stagewise run``/``score`` was asked to do and how far it got.

Each run started from the command line writes ``$STAGEWISE_HOME/runs/<run id>/run.json`` (replaced
atomically at each step, so a crash leaves the last complete version)::

    {"run_id": "...", "command": "run" | "score", "model": "engagement" | "path/to/spec.yaml",
     "data": "/abs/path.parquet" | "s3://...", "env": "dev", "aws": false,
     "status": "running" | "succeeded" | "failed" | "interrupted" | "rejected", "step": "score",
     "exit_code": null | int, "error": null | str, "data_sha256": "...", "pid": 1234,
     "host": "laptop", "attempts": 1, "started_at": "...", "updated_at": "..."}

``stagewise run --resume RUN_ID`` (or ``--resume last``) runs an unfinished run again under the
same run id, with the model, data and environment it was started with. Every step is idempotent
per run id (content-addressed inputs and artifacts, the registry's idempotency tokens, predictions
published through a manifest, the rollout controller counting a run once), so the resumed run ends
where a run that was never interrupted would have.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stagewise.platform.contract import Env, ExitCode, StagewiseError
from stagewise.platform.runtime.aws import utc_now

JOURNAL = "run.json"
UNFINISHED = ("running", "failed", "interrupted")


class JournalError(StagewiseError, ValueError):
    """No such run, or it cannot be resumed (the message says why and what to do). Exit 4."""

    exit_code = ExitCode.BAD_INPUT


class RunStillRunning(JournalError):
    """The run is still running in another process: wait for it or stop it first. Exit 6."""

    exit_code = ExitCode.CONFLICT


@dataclass
class RunJournal:
    """One run's journal file (``path``) and its document (``doc``)."""

    path: Path
    doc: dict[str, Any]

    @classmethod
    def create(cls, workdir: Path, run_id: str, command: str, model: str, data: str, env: str, aws: bool) -> "RunJournal":
        """A new journal for a run about to start (written at once)."""
        now = utc_now().isoformat()
        journal = cls(workdir / JOURNAL, {
            "run_id": run_id, "command": command, "model": model, "data": data, "env": env, "aws": aws,
            "status": "running", "step": None, "exit_code": None, "error": None, "data_sha256": None,
            "pid": os.getpid(), "host": socket.gethostname(), "attempts": 1, "started_at": now, "updated_at": now,
        })
        journal.save()
        return journal

    @classmethod
    def load(cls, runs_dir: Path, run_id: str) -> "RunJournal":
        """The journal of ``run_id`` under ``runs_dir`` (``$STAGEWISE_HOME/runs``); ``"last"``
        is the most recently started unfinished run.

        Raises:
            JournalError: there is no such run (or no unfinished run for ``last``).
        """
        if run_id == "last":
            found = [j for j in cls.all(runs_dir) if j.doc["status"] in UNFINISHED]
            if not found:
                raise JournalError(f"no unfinished run in {runs_dir}: nothing to resume")
            return max(found, key=lambda j: j.doc["started_at"])
        path = runs_dir / run_id / JOURNAL
        if not path.is_file():
            raise JournalError(f"no run {run_id!r} in {runs_dir} (runs started from this folder's {Env.HOME} "
                               "have a run.json there)")
        return cls(path, json.loads(path.read_text()))

    @classmethod
    def all(cls, runs_dir: Path) -> list["RunJournal"]:
        """Every run's journal under ``runs_dir`` (unreadable ones skipped)."""
        journals = []
        for path in sorted(runs_dir.glob(f"*/{JOURNAL}")):
            try:
                journals.append(cls(path, json.loads(path.read_text())))
            except (OSError, ValueError):
                continue
        return journals

    @property
    def run_id(self) -> str:
        return self.doc["run_id"]

    def alive(self) -> bool:
        """True if the process that last ran it is still running on this host."""
        if self.doc.get("host") != socket.gethostname() or not self.doc.get("pid"):
            return False
        try:
            os.kill(int(self.doc["pid"]), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def check_resumable(self, command: str) -> None:
        """Refuse to resume a run that finished, is still running, or was another command's.

        Raises:
            JournalError: the message says why.
        """
        status = self.doc["status"]
        if self.doc["command"] != command:
            raise JournalError(f"run {self.run_id} is a `stagewise {self.doc['command']}` run: resume it with "
                               f"`stagewise {self.doc['command']} --resume {self.run_id}`")
        if status == "succeeded":
            raise JournalError(f"run {self.run_id} already succeeded: there is nothing to resume")
        if status == "rejected":
            raise JournalError(f"run {self.run_id} was rejected (exit {self.doc.get('exit_code')}: the data failed validation "
                               "or the version its gate); resuming reaches the same verdict: fix the cause and start a new run")
        if status == "running" and self.alive():
            raise RunStillRunning(f"run {self.run_id} is still running (pid {self.doc['pid']}); wait for it or stop it first")

    def resume(self) -> None:
        """Mark the run as running again in this process."""
        self.update(status="running", exit_code=None, error=None, pid=os.getpid(), host=socket.gethostname(),
                    attempts=int(self.doc.get("attempts", 1)) + 1)

    def update(self, **fields: Any) -> None:
        """Change fields and write the journal."""
        self.doc.update(fields)
        self.save()

    def save(self) -> None:
        """Write the document atomically (a temporary file, then ``os.replace``)."""
        self.doc["updated_at"] = utc_now().isoformat()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=self.path.parent, delete=False, suffix=".tmp") as tmp:
            json.dump(self.doc, tmp, indent=1)
        os.replace(tmp.name, self.path)
