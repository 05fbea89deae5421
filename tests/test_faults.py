"""Faults mid-run (issue 8): real `stagewise run` processes are killed at several points (SIGKILL,
SIGTERM, a scoring worker killed, the embedded AWS frozen or stopped); `stagewise run --resume`
then finishes the run, and what it leaves equals what an uninterrupted run leaves.

Every scenario has its own model (the engagement spec renamed, dev plan [50, 100]) on its own
embedded AWS (a second server, so freezing or stopping it disturbs no other test module):

1. setup, in-process: a training run on ``a.parquet`` registers v1 (champion);
2. the faulted run: ``stagewise run --data b.parquet`` (3,000 rows in 3 row groups, scored as 3
   partitions in a pool of 2 worker processes) dies at a failpoint
   (``stagewise.platform.runtime.failpoints``) or is signalled from outside;
3. ``stagewise run --resume <run id>`` finishes it.

The reference model gets steps 1 and 2 without a fault. Compared, with model names and times taken
out: every version (status, artifact sha256, metrics, gates), the model record (stages, champion
history, rollout step, weight, runs counted, revision), the audit trail's actions, the published
predictions (every row once, routed by the model's rollout, each value exactly what its version's
artifact predicts), the predictions' manifest and the evaluation kept beside the artifact, the
published validation result and Data Docs (through their manifest; nothing staged left), and the
CloudWatch sums of the run's counts (each run's outcome counted once: a resumed run does not send
its data points again; a failed attempt adds one ``PipelineFailed``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import _free_port, engagement_spec, private_embedded_aws
from stagewise.pipeline import modeling, scoring
from stagewise.pipeline.definition import TRAINING
from stagewise.pipeline.generator import generate_customers
from stagewise.pipeline.journal import RunJournal
from stagewise.pipeline.runner import new_run_id, run_pipeline
from stagewise.pipeline.scoring import load_artifact
from stagewise.pipeline.spec import load_spec
from stagewise.monitoring import metrics
from stagewise.pipeline.steps import RunContext
from stagewise.pipeline.steps.intake import validation_prefix
from stagewise.platform.runtime.objects import StorageError
from stagewise.platform.runtime.embedded import EmbeddedAWS
from stagewise.platform.runtime.idhash import hash_ids, read_id_salt
from stagewise.registry import routing
from stagewise.platform.contract import Env

ROWS, GROUP = 3_000, 1_000
STAGEWISE = str(Path(sys.executable).parent / "stagewise")


class Faults:
    """The module's own embedded AWS, its STAGEWISE_HOME, data and connection."""

    def __init__(self, home: Path, port: int, folder: Path) -> None:
        self.home, self.port, self.folder = home, port, folder
        self.server = EmbeddedAWS(home)
        self.env = {**os.environ, "STAGEWISE_HOME": str(home), "STAGEWISE_EMBEDDED_PORT": str(port),
                    Env.ROWS_PER_PARTITION: str(GROUP)}
        self.env.pop(Env.FAILPOINTS, None)
        self.conn: Any = None

    def connect(self) -> None:
        with private_embedded_aws(self.home, self.port, self.server) as conn:
            self.conn = conn

    @property
    def runs(self) -> Path:
        return self.home / "runs"

    def spec(self, model: str) -> Path:
        return engagement_spec(self.folder, model, plan="{dev: [50, 100]}")

    def setup_model(self, model: str) -> Path:
        """v1, trained in-process on ``a.parquet``: the champion the faulted run starts from."""
        spec_path = self.spec(model)
        run_id = new_run_id()
        ctx = RunContext(run_id=run_id, settings=self.conn.settings, resources=self.conn.resources, clients=self.conn.clients,
                         spec=load_spec(spec_path), data_source=str(self.folder / "a.parquet"),
                         workdir=self.folder / "work" / run_id, actor="test")
        result = run_pipeline(ctx, TRAINING)
        assert result.exit_code == 0, result.error
        return spec_path

    def start(self, spec_path: Path, *args: str, failpoints: str | None = None, **env: str) -> subprocess.Popen:
        cmd = [STAGEWISE, "run", "--model", str(spec_path), "--data", str(self.folder / "b.parquet"), "--json", *args]
        extra = {Env.FAILPOINTS: failpoints} if failpoints else {}
        return subprocess.Popen(cmd, env={**self.env, **extra, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=self.folder)

    def run(self, spec_path: Path, *args: str, failpoints: str | None = None, **env: str) -> tuple[int, dict | None]:
        proc = self.start(spec_path, *args, failpoints=failpoints, **env)
        stdout, stderr = proc.communicate(timeout=300)
        try:
            return proc.returncode, json.loads(stdout)
        except ValueError:
            return proc.returncode, None

    def resume(self, run_id: str) -> dict:
        proc = subprocess.run([STAGEWISE, "run", "--resume", run_id, "--json"], env=self.env, capture_output=True,
                              text=True, cwd=self.folder, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return json.loads(proc.stdout)

    def journal_of(self, spec_path: Path, before: set[str]) -> RunJournal:
        """The journal of the one run of ``spec_path`` started since ``before`` (run ids)."""
        found = [j for j in RunJournal.all(self.runs) if j.run_id not in before and j.doc["model"] == str(spec_path)]
        assert len(found) == 1, [j.doc for j in found]
        return found[0]

    def objects(self, spec_path: Path) -> Any:
        """S3 access through the module's connection."""
        return RunContext(run_id="-", settings=self.conn.settings, resources=self.conn.resources, clients=self.conn.clients,
                          spec=load_spec(spec_path), data_source="", workdir=self.folder, actor="test").objects

    def run_ids(self) -> set[str]:
        return {j.run_id for j in RunJournal.all(self.runs)}

    def wait_for_step(self, spec_path: Path, before: set[str], proc: subprocess.Popen, step: str, timeout: float = 120) -> RunJournal:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"the run ended before step {step}: {proc.communicate()}"
            journals = [j for j in RunJournal.all(self.runs) if j.run_id not in before and j.doc["model"] == str(spec_path)]
            if journals and journals[0].doc["step"] == step:
                return journals[0]
            time.sleep(0.05)
        raise AssertionError(f"step {step} not reached in {timeout} s")

    # ------------------------------------------------------------------------------ what is left
    def snapshot(self, model: str, run_id: str) -> dict[str, Any]:
        """Everything a reader can see of the model and the run, without names and times."""
        from stagewise.registry.dynamodb import DynamoDBRegistryStore
        from stagewise.registry.service import Registry

        clients, res = self.conn.clients, self.conn.resources
        reg = Registry(DynamoDBRegistryStore(clients.client("dynamodb"), res.registry_table.name))
        m = reg.get_model(model)
        r = m.rollout
        versions = [
            {"version": v.version, "status": v.status, "artifact_sha256": v.artifact_sha256, "metrics": v.metrics,
             "gates": [(g.metric, g.comparator, g.threshold, g.value, g.outcome) for g in v.gates],
             "data_sha256": v.lineage.get("data_sha256")}
            for v in reg.list_versions(model)
        ]
        objects = self.objects(self.folder / f"{model}.yaml")
        bucket = res.data_bucket.name
        manifest = scoring.read_manifest(objects, bucket, model, run_id)
        assert manifest is not None, f"run {run_id} of {model} published no predictions"
        s3 = clients.client("s3")
        staged = s3.list_objects_v2(Bucket=bucket, Prefix=f"staging/predictions/{model}/").get("KeyCount", 0)
        validation = objects.read_published(bucket, validation_prefix(model, run_id))
        assert validation is not None, f"run {run_id} of {model} published no validation result"
        names = [f["key"].split(f"/{run_id}/", 1)[1] for f in validation["files"]]
        validation_staged = s3.list_objects_v2(Bucket=bucket, Prefix=f"staging/validation/{model}/").get("KeyCount", 0)
        latest = reg.get_version(model, m.latest_version)
        key = latest.artifact_uri.split("/", 3)[3].rsplit("/", 1)[0] + "/metrics.json"
        evaluation = json.loads(s3.get_object(Bucket=res.artifact_bucket.name, Key=key)["Body"].read())
        return {
            "versions": versions,
            "model": {"latest_version": m.latest_version, "revision": m.revision, "aliases": m.aliases,
                      "stages": {int(k): v for k, v in m.stages.items()}, "champion_history": list(m.champion_history)},
            "rollout": None if r is None else {"challenger": r.challenger, "plan": list(r.plan), "step": r.step, "weight": r.weight,
                                                "step_runs": r.step_runs, "runs_counted": len(r.evaluated_runs)},
            "history": [(e.action, e.version, e.revision) for e in reg.history(model)],
            "predictions": scoring.read_predictions(objects, bucket, model, run_id),
            "routing": (model, manifest["memo"]["serving"]["rollout_id"]),
            "manifest": {"rows": manifest["rows"], "parts": [p["key"].rsplit("/", 1)[1] for p in manifest["parts"]],
                         "weights": manifest["memo"]["weights"],
                         "results": sorted(r["version"] for r in manifest["results"]),
                         "serving": {k: v for k, v in manifest["memo"]["serving"].items() if k != "rollout_id"}},
            "staged_leftovers": staged + validation_staged,
            "evaluation": evaluation,
            "validation": {"result": "result.json" in names, "data_docs_index": "data-docs/index.html" in names,
                           "all_listed": sorted(f["key"] for f in validation["files"]) == sorted(
                               k for k in objects.keys(bucket, validation_prefix(model, run_id) + "/") if not k.endswith("/_manifest.json"))},
            "metric_sums": self.metric_sums(model),
        }

    def metric_sums(self, model: str) -> dict[str, float]:
        """The CloudWatch Sum of the run-count metrics over every data point of ``model``."""
        cw, ns = self.conn.clients.client("cloudwatch"), self.conn.resources.metrics_namespace
        now = pd.Timestamp.now(tz="UTC").to_pydatetime()
        sums = {}
        for name in (metrics.PIPELINE_SUCCEEDED, metrics.PIPELINE_FAILED, metrics.ROWS_VALIDATED, metrics.ROWS_SCORED):
            total = 0.0
            for metric in cw.list_metrics(Namespace=ns, MetricName=name)["Metrics"]:
                if {"Name": "Model", "Value": model} in metric["Dimensions"]:
                    stats = cw.get_metric_statistics(Namespace=ns, MetricName=name, Dimensions=metric["Dimensions"],
                                                     StartTime=now - pd.Timedelta(days=1), EndTime=now + pd.Timedelta(hours=1),
                                                     Period=86400, Statistics=["Sum"])
                    total += sum(p["Sum"] for p in stats["Datapoints"])
            sums[name] = total
        return sums


@pytest.fixture(scope="module")
def faults(tmp_path_factory, embedded):  # after the session's server: the module's is a second one
    folder = tmp_path_factory.mktemp("faults")
    f = Faults(folder / "home", _free_port(), folder)
    generate_customers(ROWS, seed=1).to_parquet(folder / "a.parquet", index=False)
    pq.write_table(pa.Table.from_pandas(generate_customers(ROWS, seed=2), preserve_index=False), folder / "b.parquet",
                   row_group_size=GROUP)
    f.connect()
    yield f
    f.server.down()


@pytest.fixture(scope="module")
def reference(faults) -> dict[str, Any]:
    """The same two runs without a fault."""
    model = "engagement-fault-ref"
    spec_path = faults.setup_model(model)
    code, doc = faults.run(spec_path)
    assert code == 0, doc
    assert doc["steps"][5]["summary"]["partitions"] == {"count": 3, "scored": [0, 1, 2], "processes": 2}
    snap = faults.snapshot(model, doc["run_id"])
    # what each version predicts for every row of b.parquet (the artifacts are the same bytes in every scenario)
    spec = load_spec(spec_path)
    frame = pd.read_parquet(faults.folder / "b.parquet")
    X = modeling.feature_matrix(frame, spec)
    objects = faults.objects(spec_path)
    snap["expected"] = {v["version"]: modeling.predict(load_artifact(objects, _version(faults, model, v["version"]), {}), X, spec)
                        for v in snap["versions"]}
    snap["ids"] = frame["customer_id"].to_numpy()
    snap["hashed_ids"] = hash_ids(snap["ids"], read_id_salt(faults.conn.clients, faults.conn.resources).key)
    check_predictions(snap, snap)
    # v2 served 50 % of this run; the run that registered it is not evidence for it (issue 14): held
    assert snap["manifest"]["weights"] == {"1": 50.0, "2": 50.0} and snap["model"]["champion_history"] == [1]
    assert [a for a, _, _ in snap["history"]] == ["model.create", "version.register", "version.register", "rollout.hold"]
    assert [v["version"] for v in snap["versions"]] == [1, 2]
    return snap


def check_predictions(snapshot: dict[str, Any], reference: dict[str, Any]) -> None:
    """The run's published predictions are the clean run's: every row of the input once, in input
    order, routed as the model's rollout routes it (a hash of model, rollout id and key: the
    rollout id differs between models, so which rows a version serves does too), each predicted
    exactly as that version's artifact predicts it."""
    pred = snapshot["predictions"]
    model, rollout_id = snapshot["routing"]
    assert pred["customer_id_hash"].tolist() == reference["hashed_ids"].tolist()
    to_v2 = routing.to_challenger(model, rollout_id, 50.0, reference["ids"])
    assert pred["model_version"].tolist() == np.where(to_v2, 2, 1).tolist()
    expected = np.where(to_v2, reference["expected"][2], reference["expected"][1])
    assert np.array_equal(pred["prediction"].to_numpy(), expected)


def assert_same(snapshot: dict[str, Any], reference: dict[str, Any]) -> None:
    check_predictions(snapshot, reference)
    assert snapshot["staged_leftovers"] == 0
    skip = {"predictions", "routing", "expected", "ids", "hashed_ids"}
    assert {k: v for k, v in snapshot.items() if k not in skip} == {k: v for k, v in reference.items() if k not in skip}


def _version(faults: Faults, model: str, number: int) -> Any:
    from stagewise.registry.dynamodb import DynamoDBRegistryStore
    from stagewise.registry.service import Registry

    return Registry(DynamoDBRegistryStore(faults.conn.clients.client("dynamodb"),
                                          faults.conn.resources.registry_table.name)).get_version(model, number)


def _served(faults: Faults, model: str) -> dict[str, Any]:
    from stagewise.registry.dynamodb import DynamoDBRegistryStore
    from stagewise.registry.service import Registry

    reg = Registry(DynamoDBRegistryStore(faults.conn.clients.client("dynamodb"), faults.conn.resources.registry_table.name))
    return {"serving": reg.get_model(model).serving(), "versions": len(reg.list_versions(model))}


# failpoint -> (exit code of the faulted run, step the journal shows, version 2 registered by then?, published?)
KILLS = {
    "validate.result-written=kill": (-9, "validate", False, False),
    "validate.file-published=kill@3": (-9, "validate", False, False),  # 3 validation files copied, no manifest
    "train.uploaded=kill": (-9, "train", False, False),
    "register.done=kill": (-9, "register", True, False),
    "score.partition-staged=kill@2": (1, "score", True, False),  # a pool worker dies: the step fails
    "score.part-published=kill@2": (-9, "score", True, False),  # 2 of 3 parts copied, no manifest
    "score.published=kill": (-9, "score", True, True),  # manifest written, staging not yet cleaned
    "rollout.evaluated=kill": (-9, "rollout", True, True),  # the registry recorded the run (a hold); no metrics
    "publish.after-metrics=kill": (-9, "publish", True, True),  # metrics sent; the resumed run must not send them again
    "train.uploaded=term": (143, "train", False, False),  # Spot's notice: stop cleanly
}


# `make test` runs this module in two halves of consecutive tests (about equal time), each on a
# pytest-xdist worker of its own with its own embedded AWS and reference runs (tests/conftest.py,
# PARTS). The server-stopping test, last, ends the second half.
@pytest.mark.parametrize("failpoint", list(KILLS))
def test_a_run_killed_at_a_failpoint_resumes_to_the_clean_result(faults, reference, failpoint):
    code, step, registered, published = KILLS[failpoint]
    model = "engagement-fault-" + failpoint.replace(".", "-").replace("=", "-").replace("@", "-")
    spec_path = faults.setup_model(model)
    before_ids, served_before = faults.run_ids(), _served(faults, model)

    returncode, doc = faults.run(spec_path, failpoints=failpoint)

    assert returncode == code, doc
    journal = faults.journal_of(spec_path, before_ids)
    assert journal.doc["step"] == step
    assert journal.doc["status"] == {-9: "running", 1: "failed", 143: "interrupted"}[code]
    if code == 143:
        assert doc["status"] == "interrupted" and doc["hint"] == f"finish it with `stagewise run --resume {journal.run_id}`"
    if code == 1:
        assert "BrokenProcessPool" in doc["error"] and doc["resume"] == f"stagewise run --resume {journal.run_id}"
    # no partial output: predictions are readable only once published, and only in full
    objects = faults.objects(spec_path)
    bucket = faults.conn.resources.data_bucket.name
    if published:
        assert len(scoring.read_predictions(objects, bucket, model, journal.run_id)) == ROWS
    else:
        with pytest.raises(StorageError, match="no published predictions"):
            scoring.read_predictions(objects, bucket, model, journal.run_id)
    if not registered:  # nothing served changed, no version was added
        assert _served(faults, model) == served_before
    # no partial validation output either: its result and Data Docs are visible once published, in full
    assert (objects.read_published(bucket, validation_prefix(model, journal.run_id)) is None) == (step == "validate")

    resumed = faults.resume(journal.run_id)

    assert resumed["run_id"] == journal.run_id and resumed["status"] == "succeeded"
    register = next(s for s in resumed["steps"] if s["name"] == "register")["summary"]
    assert register["version"] == 2 and register["created"] is (not registered)  # never a duplicate version
    if published:  # scored once: the resumed run reports what was published, routed as it was then
        assert next(s for s in resumed["steps"] if s["name"] == "score")["summary"]["already_published"] is True
    assert RunJournal.load(faults.runs, journal.run_id).doc["status"] == "succeeded"
    if failpoint.startswith("publish."):
        assert next(s for s in resumed["steps"] if s["name"] == "publish")["summary"]["already_sent"] is True
    snapshot = faults.snapshot(model, journal.run_id)
    attempts_failed = 1 if code == 1 else 0  # the worker's death failed a step: that attempt counted once
    assert snapshot["metric_sums"][metrics.PIPELINE_FAILED] == reference["metric_sums"][metrics.PIPELINE_FAILED] + attempts_failed
    snapshot["metric_sums"][metrics.PIPELINE_FAILED] -= attempts_failed
    assert_same(snapshot, reference)


def test_sigterm_from_outside_stops_the_run_within_the_spot_notice(faults, reference):
    model = "engagement-fault-sigterm"
    spec_path = faults.setup_model(model)
    before_ids = faults.run_ids()
    proc = faults.start(spec_path)
    journal = faults.wait_for_step(spec_path, before_ids, proc, "train")
    time.sleep(0.3)  # inside the boosting rounds
    t = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=120)
    stopped_in = time.monotonic() - t

    assert proc.returncode == 143 and stopped_in < 120  # Fargate Spot's notice is 120 s
    doc = json.loads(stdout)
    assert doc["status"] == "interrupted" and "SIGTERM" in doc["error"]
    assert RunJournal.load(faults.runs, journal.run_id).doc["status"] == "interrupted"
    assert_same(faults.snapshot(model, faults.resume(journal.run_id)["run_id"]), reference)


def test_embedded_aws_frozen_mid_run_fails_with_exit_5_and_resumes(faults, reference):
    """AWS stops answering (the server process is frozen with SIGSTOP): calls time out, the run
    exits 5 naming the cause; when AWS answers again the resumed run ends as a clean one."""
    model = "engagement-fault-frozen"
    spec_path = faults.setup_model(model)
    before_ids = faults.run_ids()
    proc = faults.start(spec_path, STAGEWISE_AWS_TIMEOUT="2")
    journal = faults.wait_for_step(spec_path, before_ids, proc, "train")
    pid = faults.server.status().pid
    os.kill(pid, signal.SIGSTOP)
    try:
        stdout, _ = proc.communicate(timeout=180)
    finally:
        os.kill(pid, signal.SIGCONT)

    assert proc.returncode == 5
    doc = json.loads(stdout)
    assert "AWS could not be reached" in doc["error"] and doc["resume"] == f"stagewise run --resume {journal.run_id}"
    assert any("error" in a for a in doc["alerts"])  # the alert could not be sent either, and says so
    assert_same(faults.snapshot(model, faults.resume(journal.run_id)["run_id"]), reference)


def test_embedded_aws_stopped_mid_run_fails_fast_with_exit_5(faults, reference):
    """The embedded AWS is shut down mid-run (`stagewise local down`): the run fails within
    seconds with exit 5. Its state was in memory and is gone; after `stagewise local up` the
    resumed run starts the environment over and completes. (Runs last: it empties the server.)"""
    model = "engagement-fault-stopped"
    spec_path = faults.setup_model(model)
    before_ids = faults.run_ids()
    proc = faults.start(spec_path)
    journal = faults.wait_for_step(spec_path, before_ids, proc, "train")
    t = time.monotonic()
    assert faults.server.down()
    stdout, _ = proc.communicate(timeout=120)

    assert proc.returncode == 5 and time.monotonic() - t < 60
    doc = json.loads(stdout)
    assert "AWS could not be reached" in doc["error"]
    faults.connect()  # `stagewise local up`: an empty embedded AWS
    resumed = faults.resume(journal.run_id)
    register = next(s for s in resumed["steps"] if s["name"] == "register")["summary"]
    assert register["version"] == 1 and register["stage"] == "champion"
