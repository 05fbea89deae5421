"""`stagewise-task`, the job container's entrypoint, against the embedded AWS over HTTPS.

The task groups run as the state machine runs them: one ``main([...])`` per group, each building a
fresh context (a separate container on AWS), the input an ``s3://`` URI, the hand-over through the
run's ``state.json``. The SIGTERM case runs the installed ``stagewise-task`` as a real process.

The model is the engagement spec under its own name (``engagement-task``), so this module's
registry entries cannot collide with other modules' ``engagement`` runs on the shared embedded AWS.
Callbacks go to the embedded AWS's Step Functions through the real client (moto accepts any task
token while it does not execute state machines); a recording subclass keeps what was sent.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, engagement_spec
from stagewise.pipeline import entrypoint as ep
from stagewise.pipeline.definition import Step
from stagewise.pipeline.generator import generate_customers, write_dataset
from stagewise.pipeline.spec import load_spec
from stagewise.pipeline import scoring
from stagewise.pipeline.scoring.score import _version_stats
from stagewise.pipeline.task_callbacks import MAX_CAUSE
from stagewise.pipeline.task_state import RunState, StateError
from stagewise.pipeline.steps import GateRejected, RunContext
from stagewise.platform.runtime.idhash import hash_ids, read_id_salt
from stagewise.registry.dynamodb import DynamoDBRegistryStore
from stagewise.registry.errors import NotFound
from stagewise.registry.service import Registry
from stagewise.platform.contract import Env, ExitCode
from stagewise.platform.runtime.embedded import stagewise_home
from stagewise.platform.runtime.objects import sha256_file

ROWS = 20_000
MODEL = "engagement-task"
RUN = f"entry-{uuid.uuid4().hex[:8]}"
BAD_RUN = f"entry-bad-{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------------------------ helpers
@dataclass
class TaskRun:
    code: int
    sent: list[tuple]
    lines: list[dict]
    stdout: str

    def step(self, name: str, status: str) -> dict | None:
        return next((x for x in self.lines if x.get("step") == name and x.get("status") == status), None)

    def group(self, status: str) -> dict | None:
        return next((x for x in self.lines if x.get("event") == "group" and x.get("status") == status), None)


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def run_group(spec_path: Path, group: str, run_id: str, data: str, *extra: str) -> TaskRun:
    """``stagewise-task <group>`` in-process with a task token; what it sent and logged."""
    sent: list[tuple] = []

    class Recording(ep.StepFunctionsCallbacks):
        def success(self, output):
            sent.append(("success", output))
            super().success(output)

        def failure(self, error, cause):
            sent.append(("failure", error, cause))
            super().failure(error, cause)

        def heartbeat(self):
            sent.append(("heartbeat",))
            super().heartbeat()

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.setattr(ep, "StepFunctionsCallbacks", Recording)
        mp.setenv(Env.TASK_TOKEN, f"token-{group}-{uuid.uuid4().hex}")
        mp.setenv(Env.HEARTBEAT_SECONDS, "0.2")
        mp.delenv(Env.IN_AWS, raising=False)
        code = ep.main([group, "--run-id", run_id, "--data", data, "--model", str(spec_path), "--env", "dev",
                        "--project-dir", str(REPO), *extra])
    return TaskRun(code, sent, _json_lines(out.getvalue()), out.getvalue())


def _registry(dev) -> Registry:
    return Registry(DynamoDBRegistryStore(dev.clients.client("dynamodb"), dev.resources.registry_table.name))


def _versions(dev) -> list[int]:
    try:
        return [v.version for v in _registry(dev).list_versions(MODEL)]
    except NotFound:
        return []


def _state(dev, run_id: str) -> dict | None:
    key = f"runs/{MODEL}/{run_id}/state.json"
    try:
        return json.loads(dev.clients.client("s3").get_object(Bucket=dev.resources.data_bucket.name, Key=key)["Body"].read())
    except dev.clients.client("s3").exceptions.NoSuchKey:
        return None


# ----------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def spec_path(tmp_path_factory) -> Path:
    """The engagement spec under this module's own model name."""
    path = engagement_spec(tmp_path_factory.mktemp("spec"), MODEL)
    assert load_spec(path).name == MODEL
    return path


@pytest.fixture(scope="module")
def inputs(dev, tmp_path_factory) -> dict:
    """The 20,000-customer dataset and a broken copy (column ``age`` dropped), uploaded to S3."""
    folder = tmp_path_factory.mktemp("entrypoint-data")
    df = generate_customers(ROWS, seed=31)
    good, bad = folder / "customers.parquet", folder / "customers-no-age.parquet"
    digest = write_dataset(df, good)
    df.drop(columns=["age"]).to_parquet(bad, index=False)
    s3, bucket = dev.clients.client("s3"), dev.resources.data_bucket.name
    uris = {}
    for name, path in (("good", good), ("bad", bad)):
        key = f"incoming/{RUN}/{path.name}"
        s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
        uris[name] = f"s3://{bucket}/{key}"
    return {"good": uris["good"], "bad": uris["bad"], "sha256": digest, "frame": df}


@pytest.fixture(scope="module")
def validated(dev, spec_path, inputs) -> TaskRun:
    return run_group(spec_path, "validate", RUN, inputs["good"])


@pytest.fixture(scope="module")
def interrupted(dev, spec_path, inputs, validated) -> dict:
    """``stagewise-task train`` as a real process, sent SIGTERM once its train step started."""
    assert validated.code == 0
    exe = Path(sys.executable).parent / "stagewise-task"
    assert exe.is_file(), f"{exe} missing: pip install -e '.[dev]'"
    before = _versions(dev)
    env = {**os.environ, Env.TASK_TOKEN: "token-sigterm"}
    env.pop(Env.IN_AWS, None)
    cmd = [str(exe), "train", "--run-id", RUN, "--data", inputs["good"], "--model", str(spec_path), "--env", "dev",
           "--project-dir", str(REPO)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                assert proc.poll() is None, f"stagewise-task exited early ({proc.returncode}): {seen}"
                continue
            seen.append(line)
            if '"step":"train","status":"started"' in line:
                break
        else:
            pytest.fail(f"the train step did not start within 60 s: {seen}")
        time.sleep(0.3)  # inside the boosting rounds
        t = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
        seconds = time.monotonic() - t
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(0.2)  # let the reader thread drain the pipe
    while not lines.empty():
        seen.append(lines.get())
    return {"code": code, "seconds": seconds, "lines": _json_lines("".join(seen)), "before": before, "after": _versions(dev)}


@pytest.fixture(scope="module")
def trained(dev, spec_path, inputs, interrupted) -> dict:
    """The interrupted group re-run to completion, then once more (a retry of a finished group)."""
    before = _versions(dev)
    first = run_group(spec_path, "train", RUN, inputs["good"])
    after_first = _versions(dev)
    again = run_group(spec_path, "train", RUN, inputs["good"])
    return {"before": before, "first": first, "after_first": after_first, "again": again, "after_again": _versions(dev)}


@pytest.fixture(scope="module")
def finished(dev, spec_path, inputs, trained) -> dict:
    """score (partition 0 of 1), then report."""
    score = run_group(spec_path, "score", RUN, inputs["good"], "--partition", "0", "--partitions", "1")
    report = run_group(spec_path, "report", RUN, inputs["good"])
    return {"score": score, "report": report}


# -------------------------------------------------------------------------------------- tests
def test_validate_reports_partitions_and_hands_over_the_input(dev, validated, inputs):
    assert validated.code == 0, validated.stdout[-3000:]
    heartbeats = [s for s in validated.sent if s[0] == "heartbeat"]
    assert heartbeats, "no heartbeat while validating (interval 0.2 s)"
    kind, output = validated.sent[-1]
    assert kind == "success" and [s[0] for s in validated.sent].count("success") == 1
    assert output["group"] == "validate" and output["rows"] == ROWS
    assert output["partitions"] == [{"index": 0, "count": 1}]  # 20,000 rows <= 1,000,000 per partition
    assert output["steps"]["validate"]["success"] is True

    state = _state(dev, RUN)
    handed = state["results"]  # the steps' typed results, as JSON
    assert handed["ingest"]["data_uri"] == inputs["good"] and handed["ingest"]["data_sha256"] == inputs["sha256"]
    assert handed["ingest"]["data_name"] == "customers.parquet"
    assert handed["validate"]["rows"] == ROWS and handed["validate"]["failed"] == 0
    assert state["groups"]["validate"]["status"] == "succeeded" and state["partitions"] == 1
    assert set(state["durations"]) == {"ingest", "validate"}
    assert [(x["step"], x["status"]) for x in validated.lines if x.get("status") == "succeeded" and "step" in x] == [
        ("ingest", "succeeded"), ("validate", "succeeded")]
    # the s3:// input was streamed to the task's disk and hashed there (never read into memory whole)
    local = stagewise_home() / "runs" / RUN / "validate" / "input" / inputs["sha256"] / "customers.parquet"
    assert local.is_file() and sha256_file(local) == inputs["sha256"]


def test_sigterm_stops_the_train_group_with_exit_143_and_registers_nothing(interrupted):
    assert interrupted["code"] == ExitCode.SIGTERM == 143
    assert interrupted["seconds"] < 120
    failed = next(x for x in interrupted["lines"] if x.get("event") == "group" and x.get("status") == "failed")
    assert failed["error"] == "Stagewise.SpotInterruption" and failed["exit_code"] == 143
    assert "during step train" in failed["cause"]
    assert not any(x.get("step") == "register" for x in interrupted["lines"])
    assert interrupted["after"] == interrupted["before"]


def test_rerunning_the_interrupted_group_registers_exactly_one_version(dev, trained):
    first = trained["first"]
    assert first.code == 0, first.stdout[-3000:]
    new = sorted(set(trained["after_first"]) - set(trained["before"]))
    assert len(new) == 1 and len(trained["after_first"]) == len(trained["before"]) + 1
    kind, output = first.sent[-1]
    assert kind == "success" and output["version"] == new[0]
    version = _registry(dev).get_version(MODEL, new[0])
    assert version.status == "registered" and version.lineage["run_id"] == RUN
    assert version.metrics["r2"] >= 0.70
    # a retry of the finished group sends the same output without training or registering again
    again = trained["again"]
    assert again.code == 0 and again.group("skipped") is not None
    assert again.step("train", "started") is None
    assert again.sent[-1] == ("success", output)
    assert trained["after_again"] == trained["after_first"]
    handed = _state(dev, RUN)["results"]
    for step, key in (("train", "artifact_sha256"), ("train", "artifact_prefix"), ("evaluate", "metrics"), ("evaluate", "gates"),
                      ("evaluate", "samples"), ("evaluate", "best_achievable"), ("register", "version")):
        assert key in handed[step], key
    assert handed["register"]["version"] == new[0]
    assert handed["train"]["artifact_sha256"] == version.artifact_sha256
    assert handed["evaluate"]["gates"][0]["metric"] == "r2" and handed["evaluate"]["gates"][0]["outcome"] == "pass"


def test_score_then_report_finish_the_run(dev, finished, trained, inputs):
    score, report = finished["score"], finished["report"]
    assert score.code == 0, score.stdout[-3000:]
    assert report.code == 0, report.stdout[-3000:]
    version = trained["first"].sent[-1][1]["version"]

    kind, out = score.sent[-1]
    assert kind == "success" and out["partition"] == {"index": 0, "count": 1} and out["rows_scored"] == ROWS
    assert "steps" not in out and len(json.dumps(out)) < 1024  # one per Map iteration in the execution's payload
    assert "/staging/" in out["staged_uri"]  # a Map task stages its part; the report group publishes
    s3, bucket = dev.clients.client("s3"), dev.resources.data_bucket.name
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"predictions/{MODEL}/run={RUN}/_manifest.json")["Body"].read())
    assert [p["key"] for p in manifest["parts"]] == [f"predictions/{MODEL}/run={RUN}/part-00000.parquet"]
    assert manifest["rows"] == ROWS and manifest["memo"]["rows_scored"] == ROWS
    created = _state(dev, RUN)["created_at"][:10]  # the execution name carries no date: the run's start does
    assert manifest["results"] and all(f"/run_date={created}/model_version=" in r["key"] for r in manifest["results"])
    queue = pd.read_parquet(io.BytesIO(s3.get_object(Bucket=bucket, Key=manifest["review_queue"]["key"])["Body"].read()))
    assert manifest["review_queue"]["rows"] == len(queue) == min(400, ROWS)  # merged from the partitions' documents
    assert queue["priority"].is_monotonic_decreasing and queue["reason"].notna().all()
    assert s3.list_objects_v2(Bucket=bucket, Prefix=f"staging/predictions/{MODEL}/run={RUN}/").get("KeyCount", 0) == 0
    raw = s3.get_object(Bucket=bucket, Key=manifest["parts"][0]["key"])["Body"].read()
    pred = pd.read_parquet(io.BytesIO(raw))
    assert len(pred) == ROWS and list(pred.columns) == ["customer_id_hash", "prediction", "model_version"]
    salt = read_id_salt(dev.clients, dev.resources)
    assert set(pred["customer_id_hash"]) == set(hash_ids(inputs["frame"]["customer_id"], salt.key))
    assert manifest["summary"]["id_hash"] == {"column": "customer_id_hash", **salt.describe()}
    assert version in set(pred["model_version"])

    kind, out = report.sent[-1]
    assert kind == "success" and out["group"] == "report"
    assert out["steps"]["publish"]["datapoints"] > 0
    state = _state(dev, RUN)
    scored = state["results"]["score"]
    assert scored["rows_scored"] == ROWS and sum(v["rows"] for k, v in scored["versions"].items() if not v.get("shadow")) == ROWS
    assert str(version) in scored["versions"] and "serving" in scored and "weights" in scored
    assert set(state["groups"]) == {"validate", "train", "report"}
    assert {"ingest", "validate", "train", "evaluate", "register", "score", "rollout", "publish"} <= set(state["durations"])

    cw = dev.clients.client("cloudwatch")
    now = datetime.now(timezone.utc)
    dims = [{"Name": "Environment", "Value": "dev"}, {"Name": "Model", "Value": MODEL}, {"Name": "Version", "Value": str(version)}]
    points = cw.get_metric_statistics(
        Namespace="Stagewise", MetricName="RowsScored", Dimensions=dims,
        StartTime=now - timedelta(hours=1), EndTime=now + timedelta(minutes=5), Period=3600, Statistics=["Sum"],
    )["Datapoints"]
    assert sum(p["Sum"] for p in points) >= (pred["model_version"] == version).sum() > 0
    # no PII in any log line of the run
    logged = "".join(r.stdout for r in (score, report, trained["first"]))
    assert not any(email in logged for email in inputs["frame"]["email"].head(200))


def test_invalid_input_fails_validation_with_exit_2_and_nothing_is_registered(dev, spec_path, inputs, finished):
    before = _versions(dev)
    run = run_group(spec_path, "validate", BAD_RUN, inputs["bad"])
    assert run.code == ExitCode.VALIDATION_FAILED == 2
    kind, error, cause = run.sent[-1]
    assert (kind, error) == ("failure", "Stagewise.ValidationFailed")
    assert "age" in cause and len(cause) <= MAX_CAUSE
    assert run.step("validate", "stopped") is not None
    assert _state(dev, BAD_RUN) is None  # nothing to hand over
    # the next group of that run has no validated input: a step failure, exit 1
    train = run_group(spec_path, "train", BAD_RUN, inputs["bad"])
    assert train.code == 1 and train.sent[-1][:2] == ("failure", "Stagewise.StepFailed")
    assert "no validated input" in train.sent[-1][2]
    assert _versions(dev) == before


def test_a_gate_failure_is_reported_as_gate_failed_with_exit_3(dev, spec_path, inputs, validated, monkeypatch, tmp_path):
    spec = load_spec(spec_path)
    ctx = RunContext(run_id=RUN, settings=dev.settings, resources=dev.resources, clients=dev.clients, spec=spec,
                     data_source=inputs["good"], workdir=tmp_path, actor="test")

    def reject(c: RunContext) -> dict:
        raise GateRejected("version 9 failed its offline gate(s)", c.alert("gate.failed", "Offline gate failed", "r2 0.41 < 0.70", "retrain"))

    monkeypatch.setitem(ep.GROUPS, "train", (Step("register", "rejects", reject, task="train"),))
    state = RunState.load(dev.clients.client("s3"), dev.resources.data_bucket.name, MODEL, "gate-run")
    state.doc = json.loads(json.dumps(_state(dev, RUN)))  # a validated run whose train group has not finished
    state.doc["groups"].pop("train", None)
    sent: list[tuple] = []

    class Recorder(ep.NoCallbacks):
        def failure(self, error, cause):
            sent.append((error, cause))

    with contextlib.redirect_stdout(io.StringIO()), pytest.raises(ep.TaskFailed) as failed:
        ep.run_task("train", ctx, state, Recorder())
    assert failed.value.exit_code == ExitCode.GATE_FAILED == 3
    assert sent == [("Stagewise.GateFailed", failed.value.cause)] and "r2 0.41 < 0.70" in sent[0][1]


def test_state_is_written_only_if_nobody_wrote_it_since_it_was_read(dev):
    s3, bucket = dev.clients.client("s3"), dev.resources.data_bucket.name
    run_id = f"entry-race-{uuid.uuid4().hex[:8]}"
    first, second = (RunState.load(s3, bucket, MODEL, run_id) for _ in range(2))
    first.doc["results"]["who"] = "first"
    first.save()
    second.doc["results"]["who"] = "second"
    with pytest.raises(StateError, match="changed by another task"):
        second.save()  # created meanwhile: If-None-Match fails
    again = RunState.load(s3, bucket, MODEL, run_id)
    first.doc["results"]["who"] = "first, updated"
    first.save()
    with pytest.raises(StateError):
        again.save()  # updated meanwhile: If-Match on the old ETag fails
    assert RunState.load(s3, bucket, MODEL, run_id).doc["results"]["who"] == "first, updated"


def test_bad_arguments_exit_4():
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        assert ep.main(["score", "--run-id", "r", "--data", "s3://b/k", "--partition", "1"]) == 4
        assert ep.main(["train", "--run-id", "r", "--data", "s3://b/k", "--partition", "0", "--partitions", "2"]) == 4
        assert ep.main(["score", "--run-id", "r", "--data", "s3://b/k", "--partition", "2", "--partitions", "2"]) == 4
        assert ep.main(["deploy", "--run-id", "r", "--data", "s3://b/k"]) == 4
    assert "--partitions" in err.getvalue()


def test_partition_count_follows_rows_per_partition(monkeypatch):
    monkeypatch.delenv(Env.ROWS_PER_PARTITION, raising=False)
    assert scoring.rows_per_partition() == 1_000_000
    monkeypatch.setenv(Env.ROWS_PER_PARTITION, "8000")
    assert scoring.partition_count(ROWS, scoring.rows_per_partition()) == 3
    assert scoring.partition_count(16_000, 8000) == 2 and scoring.partition_count(0, 8000) == 1
    monkeypatch.setenv(Env.ROWS_PER_PARTITION, "0")
    with pytest.raises(ValueError):
        scoring.rows_per_partition()


def test_merged_partition_stats_equal_the_stats_of_all_rows():
    rng = np.random.default_rng(5)
    y = rng.uniform(0, 1, 3000)
    pred = np.clip(y + rng.normal(0, 0.1, 3000), 0, 1)
    parts = []
    for idx in np.array_split(np.arange(3000), 3):
        stats = _version_stats(pred[idx], y[idx])
        stats.update(label_sum=float(y[idx].sum()), label_sum_sq=float((y[idx] ** 2).sum()))
        parts.append({"2": stats})
    merged = scoring.merge_version_stats(parts)["2"]
    whole = _version_stats(pred, y)
    assert merged["rows"] == whole["rows"] == 3000 and merged["labeled"] == whole["labeled"]
    for key in ("mean_prediction", "mae", "rmse", "r2"):
        assert math.isclose(merged[key], whole[key], rel_tol=1e-9), key
    for p in parts:  # without the labels' sums R² cannot be merged: its gates become inconclusive
        del p["2"]["label_sum"]
    assert scoring.merge_version_stats(parts)["2"]["r2"] is None


# ------------------------------------------------------------------------------------ the image
def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    text, out, buf = (REPO / "Dockerfile").read_text(), [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        buf = f"{buf} {line}" if buf else line
        if buf.endswith("\\"):
            buf = buf[:-1].rstrip()
            continue
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def test_dockerfile_builds_a_small_non_root_cpu_only_job_image():
    ins = _dockerfile()
    froms = [a for i, a in ins if i == "FROM"]
    assert len(froms) >= 2 and all(a.split()[0] == "python:3.11-slim" for a in froms)  # multi-stage, slim
    runtime = max(k for k, (i, _) in enumerate(ins) if i == "FROM")
    final = ins[runtime:]
    runs = " ".join(a for i, a in ins if i == "RUN")
    assert "xgboost_cpu-" in runs and "^xgboost-[0-9]" in runs  # the CPU wheel is required, the GPU one refused
    assert not any(extra in runs for extra in ("[deploy]", "[dev]", ".[", "pulumi"))
    deps = (REPO / "pyproject.toml").read_text().split("[project.optional-dependencies]")[0]
    assert '"xgboost-cpu' in deps and '"xgboost>' not in deps and '"xgboost=' not in deps
    users = [a for i, a in final if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert [a for i, a in final if i == "ENTRYPOINT"] == ['["stagewise-task"]']
    env = " ".join(a for i, a in final if i == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "PYTHONUNBUFFERED=1" in env
    copied = " ".join(a for i, a in final if i == "COPY")
    for stack in ("Pulumi.yaml", "Pulumi.dev.yaml", "Pulumi.test.yaml", "Pulumi.prod.yaml"):
        assert stack in copied
    # every path the image copies from the build context exists and is not excluded by .dockerignore
    ignored = {x.strip() for x in (REPO / ".dockerignore").read_text().splitlines() if x.strip() and not x.startswith("#")}
    assert {".venv", "data", ".stagewise", "node_modules", "tests", ".git"} <= ignored
    for i, args in ins:
        if i == "COPY" and "--from" not in args:
            for src in args.split()[:-1]:
                assert (REPO / src).exists(), src
                assert src.rstrip("/") not in ignored, src


def test_the_builder_stage_context_is_enough_to_build_the_package(tmp_path):
    """The files the builder stage copies build a wheel with the entrypoint, its console script and
    the built-in specs (no Docker engine here: the wheel is built from the same files)."""
    ins = _dockerfile()
    builder = ins[: max(k for k, (i, _) in enumerate(ins) if i == "FROM")]
    context = tmp_path / "src"
    for i, args in builder:
        if i == "COPY":
            *sources, dest = args.split()
            for src in sources:
                target = context / dest / Path(src).name if dest.endswith("/") and not src.endswith("/") else context / dest
                if (REPO / src).is_dir():
                    shutil.copytree(REPO / src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), dirs_exist_ok=True)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(REPO / src, target)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir", str(tmp_path / "w"), str(context)],
        capture_output=True, text=True, timeout=120,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "w").glob("stagewise-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert {"stagewise/pipeline/entrypoint.py", "stagewise/pipeline/specs/engagement.yaml", "stagewise/stacks/settings.py"} <= names
    assert "stagewise-task = stagewise.pipeline.entrypoint:main" in entry_points


def _metric_sum(dev, name: str, model: str, step: str) -> float:
    from datetime import datetime, timedelta, timezone

    now = datetime.now(timezone.utc)
    dims = [{"Name": "Environment", "Value": "dev"}, {"Name": "Model", "Value": model}, {"Name": "Step", "Value": step}]
    points = dev.clients.client("cloudwatch").get_metric_statistics(
        Namespace="Stagewise", MetricName=name, Dimensions=dims, StartTime=now - timedelta(hours=1),
        EndTime=now + timedelta(minutes=5), Period=3600, Statistics=["Sum"])["Datapoints"]
    return sum(p["Sum"] for p in points)


def test_spot_interruptions_and_on_demand_fallbacks_are_counted(dev, spec_path, inputs, interrupted, monkeypatch):
    """The dashboard's Spot widgets: a SIGTERM counts a SpotInterruption of its task group, and a
    task started by the state machine's on-demand fallback (STAGEWISE_CAPACITY_PROVIDER=FARGATE)
    counts an OnDemandFallback."""
    model = load_spec(spec_path).name
    assert _metric_sum(dev, "SpotInterruptions", model, "train") >= 1
    monkeypatch.setenv("STAGEWISE_CAPACITY_PROVIDER", "FARGATE")
    run = run_group(spec_path, "validate", f"fallback-{uuid.uuid4().hex[:8]}", inputs["good"])
    assert run.code == 0
    assert _metric_sum(dev, "OnDemandFallbacks", model, "validate") >= 1


def test_validation_fans_out_to_partition_tasks_then_the_merge_decides(dev, tmp_path, monkeypatch):
    """The validate group as the state machine runs it for an input of several partitions:
    ``--fan-out`` ingests and plans (no verdict: nothing later may start), one task per partition
    (a re-run is skipped), then ``--merge``: one verdict, published; a merge before every
    partition finished is refused. An id duplicated across the two partitions fails the merge
    with exit 2, as whole-file validation would. Each run has a model of its own (a run keeps
    its model's run lock until its last group)."""
    monkeypatch.setenv(Env.ROWS_PER_PARTITION, "10000")
    spec_path, model = engagement_spec(tmp_path, f"{MODEL}-fan"), f"{MODEL}-fan"
    s3, bucket = dev.clients.client("s3"), dev.resources.data_bucket.name
    df = generate_customers(ROWS, seed=32)
    uris = {}
    for name in ("good", "dup"):
        frame = df.copy()
        if name == "dup":
            frame.loc[ROWS - 1, "customer_id"] = frame.loc[0, "customer_id"]  # partition 0 and partition 1
        path = tmp_path / f"{name}.parquet"
        frame.to_parquet(path, index=False, row_group_size=5_000)  # 4 row groups: 2 partitions of 10,000 rows
        key = f"incoming/fan-out/{name}.parquet"
        s3.upload_file(str(path), bucket, key)
        uris[name] = f"s3://{bucket}/{key}"

    run_id = f"entry-fan-{uuid.uuid4().hex[:8]}"
    first = run_group(spec_path, "validate", run_id, uris["good"], "--fan-out")
    assert first.code == 0, first.stdout[-3000:]
    output = first.sent[-1][1]
    assert (output["validated"], output["rows"], output["partitions"]) == (False, ROWS, [{"index": i, "count": 2} for i in (0, 1)])
    state_of = lambda: json.loads(s3.get_object(Bucket=bucket, Key=f"runs/{model}/{run_id}/state.json")["Body"].read())  # noqa: E731
    state = state_of()
    assert state["groups"]["validate"]["status"] == "fanned_out" and "validate" not in state["results"]
    early = run_group(spec_path, "train", run_id, uris["good"])
    assert early.code == ExitCode.FAILED and "no validated input" in early.sent[-1][2]
    too_soon = run_group(spec_path, "validate", run_id, uris["good"], "--merge")
    assert too_soon.code == ExitCode.FAILED and "validate partitions of run" in too_soon.sent[-1][2]

    parts = [run_group(spec_path, "validate", run_id, uris["good"], "--partition", str(i), "--partitions", "2") for i in (0, 1)]
    for i, part in enumerate(parts):
        assert part.code == 0, part.stdout[-3000:]
        assert {k: part.sent[-1][1][k] for k in ("partition", "rows")} == {"partition": {"index": i, "count": 2}, "rows": 10_000}
    again = run_group(spec_path, "validate", run_id, uris["good"], "--partition", "1", "--partitions", "2")
    assert again.code == 0 and again.group("skipped") and again.sent[-1][1] == parts[1].sent[-1][1]
    # the input (uploaded without sha256 metadata) is pinned by the ETag the first task hashed: the first
    # task streamed it to its disk, each partition read only its row groups by ranged GETs, none downloaded it
    work = stagewise_home() / "runs" / run_id
    assert (work / "validate" / "input").is_dir() and state["results"]["ingest"]["data_etag"]
    assert not any((work / f"validate-{i:05d}" / "input").exists() for i in (0, 1))

    merge = run_group(spec_path, "validate", run_id, uris["good"], "--merge")
    assert merge.code == 0, merge.stdout[-3000:]
    output = merge.sent[-1][1]
    assert (output["validated"], output["rows"], len(output["partitions"])) == (True, ROWS, 2)
    assert output["steps"]["validate"]["success"] is True and output["steps"]["validate"]["partitions"] == 2
    state = state_of()
    assert state["groups"]["validate"]["status"] == "succeeded" and state["results"]["validate"]["rows"] == ROWS
    result = json.loads(s3.get_object(Bucket=bucket, Key=f"validation/{model}/{run_id}/result.json")["Body"].read())
    assert result["success"] is True and result["meta"]["partitions"] == {"count": 2, "rows": [10_000, 10_000]}

    run_id, spec_path = f"entry-fan-dup-{uuid.uuid4().hex[:8]}", engagement_spec(tmp_path, f"{MODEL}-fan-dup")
    assert run_group(spec_path, "validate", run_id, uris["dup"], "--fan-out").code == 0
    for i in (0, 1):  # each partition alone holds no duplicate
        part = run_group(spec_path, "validate", run_id, uris["dup"], "--partition", str(i), "--partitions", "2")
        assert part.code == 0, part.stdout[-3000:]
    merge = run_group(spec_path, "validate", run_id, uris["dup"], "--merge")
    assert merge.code == ExitCode.VALIDATION_FAILED, merge.stdout[-3000:]
    kind, error, cause = merge.sent[-1]
    assert (kind, error) == ("failure", "Stagewise.ValidationFailed") and "customer_id" in cause
    state = json.loads(s3.get_object(Bucket=bucket, Key=f"runs/{MODEL}-fan-dup/{run_id}/state.json")["Body"].read())
    assert state["groups"]["validate"]["status"] == "fanned_out"  # no verdict recorded: nothing may follow


def test_a_partition_that_cannot_be_read_fails_the_merge_with_exit_2(dev, tmp_path, monkeypatch):
    """Row group 2 (partition 1's first) is corrupt: partition 0 validates; partition 1's task
    records what it could not read and succeeds (the Map goes on); the merge fails the run with
    ``Stagewise.ValidationFailed`` naming it, as a local run of the same file would."""
    import pyarrow.parquet as pq

    monkeypatch.setenv(Env.ROWS_PER_PARTITION, "10000")
    model = f"{MODEL}-fan-corrupt"
    spec_path = engagement_spec(tmp_path, model)
    path = tmp_path / "corrupt.parquet"
    generate_customers(ROWS, seed=33).to_parquet(path, index=False, row_group_size=5_000, compression="snappy")
    column = pq.ParquetFile(path).metadata.row_group(2).column(pq.ParquetFile(path).schema_arrow.get_field_index("age"))
    raw = bytearray(path.read_bytes())
    start = column.data_page_offset
    raw[start:start + column.total_compressed_size] = b"\xff" * column.total_compressed_size
    path.write_bytes(bytes(raw))
    s3, bucket = dev.clients.client("s3"), dev.resources.data_bucket.name
    s3.upload_file(str(path), bucket, "incoming/fan-out/corrupt.parquet")
    uri = f"s3://{bucket}/incoming/fan-out/corrupt.parquet"

    run_id = f"entry-fan-corrupt-{uuid.uuid4().hex[:8]}"
    assert run_group(spec_path, "validate", run_id, uri, "--fan-out").code == 0
    parts = [run_group(spec_path, "validate", run_id, uri, "--partition", str(i), "--partitions", "2") for i in (0, 1)]
    assert [p.code for p in parts] == [0, 0], parts[1].stdout[-3000:]
    assert parts[1].step("validate", "succeeded")["summary"]["success"] is False
    merge = run_group(spec_path, "validate", run_id, uri, "--merge")
    assert merge.code == ExitCode.VALIDATION_FAILED, merge.stdout[-3000:]
    kind, error, cause = merge.sent[-1]
    assert (kind, error) == ("failure", "Stagewise.ValidationFailed")
    assert "could not be read" in cause and "partition 2/2" in cause
