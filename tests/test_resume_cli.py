"""`stagewise run --resume` refuses what it cannot resume, with a message and a meaningful exit code
(before connecting to any AWS). Resuming real interrupted runs is in ``tests/test_faults.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stagewise.pipeline.cli import app
from stagewise.pipeline.journal import RunJournal

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    data = tmp_path / "input.csv"
    data.write_text("a,b\n1,2\n")
    return tmp_path


def _journal(home: Path, run_id: str, **fields) -> RunJournal:
    j = RunJournal.create(home / "runs" / run_id, run_id, "run", "engagement", str(home / "input.csv"), "dev", False)
    j.update(**fields)
    return j


def _resume(home: Path, *args: str) -> tuple[int, dict]:
    result = runner.invoke(app, [*args, "--json"], env={"STAGEWISE_HOME": str(home)})
    return result.exit_code, json.loads(result.stdout)


def test_a_finished_run_is_not_resumed(home):
    _journal(home, "r-done", status="succeeded", exit_code=0)
    code, doc = _resume(home, "run", "--resume", "r-done")
    assert code == 4 and "already succeeded" in doc["error"]


def test_a_rejected_run_is_not_resumed(home):
    _journal(home, "r-rejected", status="rejected", exit_code=2)
    code, doc = _resume(home, "run", "--resume", "r-rejected")
    assert code == 4 and "same verdict" in doc["error"]


def test_a_run_still_running_is_a_conflict(home):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        _journal(home, "r-busy", status="running", pid=sleeper.pid)
        code, doc = _resume(home, "run", "--resume", "r-busy")
        assert code == 6 and f"still running (pid {sleeper.pid})" in doc["error"]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_unknown_run_other_command_other_data_and_changed_input_are_refused(home):
    code, doc = _resume(home, "run", "--resume", "nope")
    assert code == 4 and "no run 'nope'" in doc["error"]
    _journal(home, "r-score", command="score", status="failed", exit_code=1)
    code, doc = _resume(home, "run", "--resume", "r-score")
    assert code == 4 and "stagewise score --resume r-score" in doc["error"]
    _journal(home, "r-1", status="failed", exit_code=5, data_sha256="0" * 64)
    other = home / "other.csv"
    other.write_text("a\n1\n")
    code, doc = _resume(home, "run", "--resume", "r-1", "--data", str(other))
    assert code == 4 and "was started with --data" in doc["error"]
    code, doc = _resume(home, "run", "--resume", "r-1")  # the input is not what the run read
    assert code == 4 and "changed since run r-1 read it" in doc["error"] and "without --resume" in doc["hint"]


def test_last_is_the_latest_unfinished_run(home):
    _journal(home, "r-old", status="failed", exit_code=1, started_at="2026-11-01T00:00:00+00:00")
    _journal(home, "r-new", status="interrupted", exit_code=143, started_at="2026-11-02T00:00:00+00:00")
    _journal(home, "r-ok", status="succeeded", exit_code=0, started_at="2026-11-03T00:00:00+00:00")
    _journal(home, "r-bad", status="rejected", exit_code=2, started_at="2026-11-04T00:00:00+00:00")
    assert RunJournal.load(home / "runs", "last").run_id == "r-new"
    for run_id in ("r-old", "r-new"):
        (home / "runs" / run_id / "run.json").unlink()
    code, doc = _resume(home, "run", "--resume", "last")
    assert code == 4 and "no unfinished run" in doc["error"]


def test_malformed_failpoints_are_refused_with_the_entry_named():
    from stagewise.platform.runtime.failpoints import FailpointError, parse

    assert parse("a=kill,b=term@2") == {"a": (9, 1), "b": (15, 2)}
    for bad in ("a", "a=explode", "a=kill@0", "=kill"):
        with pytest.raises(FailpointError, match="is not NAME=ACTION"):
            parse(bad)
    assert os.environ.get("STAGEWISE_FAILPOINTS") is None  # inert in the suite
