"""The job image installs only what a job needs (``pip install .``, no extras): the embedded AWS
(moto), the data generator's faker and the Pulumi SDK are not there. Here the container entrypoint
runs in a process that cannot import them: ``--help``, then a real ``validate`` group against the
session's embedded AWS (a separate process, as on a laptop)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO
from stagewise.pipeline.generator import generate_customers, write_dataset

LEFT_OUT = ("moto", "faker", "cfnlint", "pulumi", "pulumi_aws", "pulumi_docker_build", "sympy", "networkx")
LEAN = f"""
import sys

class LeftOut:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {LEFT_OUT!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not in the lean install)", name=name)

sys.meta_path.insert(0, LeftOut())
from stagewise.pipeline.entrypoint import main
code = main(sys.argv[1:])
assert not any(m.split(".")[0] in {LEFT_OUT!r} for m in sys.modules), sorted(m for m in sys.modules if m.split(".")[0] in {LEFT_OUT!r})
sys.exit(code)
"""


def _task(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", LEAN, *args], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ})


def test_the_entrypoint_needs_no_emulator_generator_or_pulumi():
    done = _task("--help")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage: stagewise-task" in done.stdout and "SendTaskFailure" in done.stdout


def test_a_task_group_runs_with_the_lean_set(dev, tmp_path):
    data = tmp_path / "customers.parquet"
    write_dataset(generate_customers(2_000, seed=5), data)
    done = _task("validate", "--run-id", "lean-validate", "--data", str(data), "--env", "dev", "--project-dir", str(REPO))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    outcome = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")][-1]
    assert outcome["event"] == "group" and outcome["status"] == "succeeded" and outcome["output"]["rows"] == 2_000
