"""A flaky AWS (issue 16): real `stagewise run` and `stagewise score` processes with faults injected
into their AWS calls at the botocore layer (``Env.FAULTS``, ``stagewise.platform.runtime.faults``:
throttling, 5xx, connections reset before the request arrived, responses lost after the request
was applied) end as clean ones end.

The scenarios reuse ``tests/test_faults.py``'s module of its own (a second embedded AWS, the
engagement spec renamed per model, v1 trained in-process without faults, then a run on
``b.parquet`` that registers v2 as a 50 % challenger) and its comparison with the clean run
(``assert_same``: versions, stages, rollout, audit trail actions, predictions, manifest, staged
leftovers and whatever else it compares). The clean reference also gets a `stagewise score` of
``b.parquet``. A failed attempt counts one more ``PipelineFailed`` by design; nothing else may differ.

- 5 % of the attempts on every service fail: the run and the score finish unaided (exit 0), with
  the clean results.
- 20 %: each either finishes so, or stops with exit 5 and `--resume` (AWS healthy again) finishes
  it to the clean results. One that stops before its journal exists (provisioning, the caller
  identity) did nothing, and is started again.

Each process prints its counts and writes them to ``$STAGEWISE_HOME/faults``; the test prints the
sums (``pytest -s``: AWS attempts, faults per kind, runs finished unaided) and puts them in its
assertion messages. The injector itself: the spec, the draw, each fault as botocore sees it, and a
lost response to a conditional write (the manifest: the run is still published, and cleaned up).
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError
from botocore.httpsession import URLLib3Session

from stagewise.monitoring.metrics import PIPELINE_FAILED
from stagewise.pipeline.scoring.publish import MANIFEST, publish_predictions, published_prefix, read_manifest, staging_prefix
from stagewise.platform.contract import Env, ExitCode
from stagewise.platform.runtime.aws import AwsClients, unreachable
from stagewise.platform.runtime.faults import KINDS, FaultInjector, FaultReport, FaultSpec, FaultSpecError
from stagewise.platform.runtime.objects import ObjectStore
from stagewise.registry.errors import RegistryError
from test_faults import STAGEWISE, Faults, assert_same, faults, reference  # noqa: F401 - faults, reference: fixtures

TALLY: dict[str, dict[str, Any]] = {}
FAILED_ATTEMPTS: dict[str, int] = {}


def _cli(f: Faults, command: str, spec_path: Path | None, resume: str | None = None,
         fault_spec: str | None = None) -> tuple[int, dict[str, Any], FaultReport]:
    """``stagewise <command> --json`` (on ``b.parquet``, or ``--resume``) with ``fault_spec`` injected;
    returns the exit code, the JSON document and the sum of the fault reports of its processes."""
    args = ["--resume", resume] if resume else ["--model", str(spec_path), "--data", str(f.folder / "b.parquet")]
    folder = f.home / "faults"
    before = set(FaultReport.read_all(folder))
    env = {**f.env, **({Env.FAULTS: fault_spec} if fault_spec else {})}
    proc = subprocess.run([STAGEWISE, command, "--json", *args], env=env, capture_output=True, text=True,
                          cwd=f.folder, timeout=600)
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        doc = {"error": "no JSON document"}
    doc["stderr"] = proc.stderr[-3000:]
    total = FaultReport(fault_spec or "", 0, [STAGEWISE, command], {}, {}, {})
    for name, report in FaultReport.read_all(folder).items():
        if name not in before:
            for service, n in report.attempts.items():
                total.attempts[service] = total.attempts.get(service, 0) + n
            for kind, n in report.injected.items():
                total.injected[kind] = total.injected.get(kind, 0) + n
    return proc.returncode, doc, total


@pytest.fixture(scope="module")
def reference_score(faults, reference) -> dict[str, Any]:
    """A clean `stagewise score` of ``b.parquet`` after the reference model's clean run."""
    code, doc, _ = _cli(faults, "score", faults.folder / "engagement-fault-ref.yaml")
    assert code == 0, f"{doc.get('error')}\n{doc['stderr']}"
    snap = faults.snapshot("engagement-fault-ref", doc["run_id"])
    snap.update({k: reference[k] for k in ("expected", "ids", "hashed_ids")})
    return snap


def _flaky(f: Faults, command: str, spec_path: Path, model: str, fault_spec: str, clean: dict[str, Any],
           tally: dict[str, Any]) -> None:
    """One faulted run of ``command``: it finishes, or exits 5 and is resumed; either way its
    result is ``clean``'s. Counts go to ``tally``."""
    code, doc, report = _cli(f, command, spec_path, fault_spec=fault_spec)
    tally["runs"] += 1
    tally["attempts"] += sum(report.attempts.values())
    for kind, n in report.injected.items():
        tally["faults"][kind] = tally["faults"].get(kind, 0) + n
    numbers = f"{command} with {fault_spec}: exit {code}, {report.line if report.attempts else 'no report'}"
    if code == 0:
        tally["unaided"] += 1
    else:
        assert code == ExitCode.AWS_UNREACHABLE, f"{numbers}: {doc.get('error')}\n{doc['stderr']}"
        if doc.get("run_id") is None:  # stopped before its journal existed: nothing happened, start it again
            tally["restarted"] += 1
            code, doc, _ = _cli(f, command, spec_path)
        else:
            assert doc["resume"] == f"stagewise {command} --resume {doc['run_id']}", numbers
            tally["resumed"] += 1
            FAILED_ATTEMPTS[model] = FAILED_ATTEMPTS.get(model, 0) + 1
            code, doc, _ = _cli(f, command, None, resume=doc["run_id"])
        assert code == 0, f"{numbers}; then: {doc.get('error')}\n{doc['stderr']}"
    snapshot = f.snapshot(model, doc["run_id"])
    sums = snapshot.get("metric_sums")
    if sums is not None and FAILED_ATTEMPTS.get(model):  # each failed attempt is counted as one (steps/report.py)
        assert sums[PIPELINE_FAILED] > clean["metric_sums"][PIPELINE_FAILED], numbers
        sums[PIPELINE_FAILED] = clean["metric_sums"][PIPELINE_FAILED]
    assert_same(snapshot, clean)


def _summary(rate: str) -> str:
    t = TALLY[rate]
    faults_line = ", ".join(f"{k} {t['faults'].get(k, 0)}" for k in KINDS)
    return (f"flaky AWS at {rate}: {t['unaided']}/{t['runs']} runs finished unaided ({t['resumed']} resumed after exit 5, "
            f"{t['restarted']} restarted); {t['attempts']} AWS attempts, {sum(t['faults'].values())} faults ({faults_line})")


# rate -> the seed of each command's faults (the draw is a hash of the seed and the call: the same seed
# gives the same faults). At 5 % these inject faults of every kind; at 20 % the run's stops with exit 5
# (a CopyObject of the validation step fails 4 times) and is resumed, the score's finishes unaided.
SCENARIOS = {"5%": (0.05, {"run": 3, "score": 1}), "20%": (0.2, {"run": 9, "score": 5})}


@pytest.mark.parametrize("rate", list(SCENARIOS))
def test_runs_on_a_flaky_aws_end_as_clean_runs(faults, reference, reference_score, rate):
    share, seeds = SCENARIOS[rate]
    model = f"engagement-flaky-{rate[:-1]}"
    spec_path = faults.setup_model(model)
    tally = TALLY.setdefault(rate, {"runs": 0, "unaided": 0, "resumed": 0, "restarted": 0, "attempts": 0, "faults": {}})

    for command, seed in seeds.items():
        _flaky(faults, command, spec_path, model, f"rate={share},seed={seed}",
               reference if command == "run" else reference_score, tally)

    print("\n" + _summary(rate))
    assert tally["faults"].get("timeout", 0) > 0 and len(tally["faults"]) >= 3, _summary(rate)  # the test can fail
    if rate == "5%":
        assert tally["unaided"] == tally["runs"], _summary(rate)


# ------------------------------------------------------------------------------ the injector itself
def test_a_fault_spec_is_parsed_and_a_malformed_one_names_the_variable(faults, monkeypatch):
    spec = FaultSpec.parse("rate=0.2,services=s3+dynamodb,kinds=throttle+timeout,seed=7")
    assert spec == FaultSpec(0.2, frozenset({"s3", "dynamodb"}), ("throttle", "timeout"), 7)
    assert FaultSpec.parse("") == FaultSpec(0.05, None, KINDS, 0)
    for bad in ("rate=2", "rate=x", "kinds=throttle+flood", "seed=x", "colour=red", "services=s3++sns", "rate"):
        with pytest.raises(FaultSpecError, match=Env.FAULTS) as caught:
            FaultSpec.parse(bad)
        assert caught.value.exit_code == ExitCode.BAD_INPUT and repr(bad) in str(caught.value)
    monkeypatch.setenv(Env.FAULTS, "rate=5%")  # every process's clients come from AwsClients: it refuses first
    with pytest.raises(FaultSpecError, match="needs a rate between 0 and 1"):
        AwsClients(faults.conn.clients.target)


def test_the_draw_is_deterministic_per_seed_and_takes_its_share():
    def draws(seed: int) -> list[Any]:
        inj = FaultInjector(FaultSpec(0.2, seed=seed))
        return [inj.draw("s3", op) for _ in range(500) for op in ("PutObject", "GetObject")]

    first = draws(7)
    assert first == draws(7) and first != draws(8)
    assert 0.15 < sum(d is not None for d in first) / len(first) < 0.25
    assert {d[0] for d in first if d is not None} == set(KINDS)
    only = FaultInjector(FaultSpec(1.0, services=frozenset({"dynamodb"})))
    assert only.draw("s3", "PutObject") is None and only.draw("dynamodb", "GetItem") is not None


@pytest.mark.parametrize("kind", KINDS)
def test_each_fault_is_what_aws_answers_and_botocore_retries_it(faults, kind):
    """Every attempt fails (rate 1): the error botocore gives up with is AWS's own for that fault,
    after all the attempts of the client's retry configuration; a lost response (``timeout``) was
    applied on the server all the same; the runner reports each as AWS unreachable (exit 5)."""
    clients = AwsClients(faults.conn.clients.target)
    injector = FaultInjector(FaultSpec(1.0, kinds=(kind,)))
    s3, ddb, sns = (clients.client(s) for s in ("s3", "dynamodb", "sns"))
    for service, client in (("s3", s3), ("dynamodb", ddb), ("sns", sns)):
        injector.attach(client, service, clients.target.ca_bundle, 5)
    bucket, key = faults.conn.resources.data_bucket.name, f"flaky/{kind}"
    calls = {
        "s3": lambda: s3.put_object(Bucket=bucket, Key=key, Body=b"applied"),
        "dynamodb": lambda: ddb.get_item(TableName=faults.conn.resources.registry_table.name,
                                         Key={"pk": {"S": "MODEL#none"}, "sk": {"S": "MODEL"}}),
        "sns": lambda: sns.publish(TopicArn=faults.conn.resources.alert_topic_arn, Message="flaky"),
    }
    answers = {  # (status, code) AWS answers with, by service
        "throttle": {"s3": {(503, "SlowDown")}, "sns": {(400, "Throttling")},
                     "dynamodb": {(400, "ThrottlingException"), (400, "ProvisionedThroughputExceededException")}},
        "5xx": {"s3": {(500, "InternalError"), (503, "ServiceUnavailable")}, "sns": {(500, "InternalFailure"), (503, "ServiceUnavailable")},
                "dynamodb": {(500, "InternalServerError"), (503, "ServiceUnavailable")}},
    }

    def failure(call: Any) -> BaseException | None:
        try:
            call()
        except (ClientError, ConnectionClosedError, ReadTimeoutError) as e:
            return e
        return None

    with ThreadPoolExecutor(len(calls)) as pool:  # at once: a throttled call backs off for seconds
        errors = dict(zip(calls, pool.map(failure, calls.values())))
    for service, error in errors.items():
        assert error is not None, f"{service}: no error"
        if kind in answers:
            assert (error.response["ResponseMetadata"]["HTTPStatusCode"], error.response["Error"]["Code"]) in answers[kind][service]
        else:
            assert isinstance(error, ConnectionClosedError if kind == "reset" else ReadTimeoutError)
        wrapped = RegistryError("registry write failed")
        wrapped.__cause__ = error
        assert unreachable(error) and unreachable(wrapped), error  # the runner exits 5, resumable
    attempts = injector.report().attempts
    assert attempts["s3"] == attempts["sns"] == s3.meta.config.retries["total_max_attempts"] > 1, attempts
    stored = faults.conn.clients.client("s3").list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount", 0)
    assert stored == (1 if kind == "timeout" else 0)  # only a lost response reached the server


def test_a_lost_response_to_the_manifest_write_leaves_no_staged_parts(faults):
    """The manifest's PutObject (``If-None-Match: *``) is applied, its response lost; botocore retries
    it and meets its own object (412). It is this call's write (same bytes): the run is published,
    with this manifest, and its staging is cleaned up as usual (before the fix, publish took it for
    another attempt's and left the staged parts behind)."""
    target = faults.conn.clients.target
    s3 = AwsClients(target).client("s3")  # a client of its own: the hook stays on it
    session, lost = URLLib3Session(verify=target.ca_bundle), []

    def lose_the_manifest_response(request: Any, event_name: str, **_: Any) -> None:
        if event_name.endswith(".PutObject") and request.url.endswith("/" + MANIFEST) and not lost:
            lost.append(request.url)
            session.send(request).content  # applied on the server
            raise ReadTimeoutError(endpoint_url=request.url, error="injected: response lost")

    s3.meta.events.register("before-send", lose_the_manifest_response)
    objects, bucket, model = ObjectStore(s3), faults.conn.resources.data_bucket.name, "engagement-flaky-publish"
    staged = f"{staging_prefix(model, 'r1')}/part-00000.parquet"
    objects.put_bytes(bucket, staged, b"part")
    part = {"index": 0, "rows_scored": 1, "staged_uri": f"s3://{bucket}/{staged}", "staged_shadow_uri": None, "staged_results": {}}

    manifest = publish_predictions(objects, bucket, model, "r1", [part], memo={}, summary={})

    if not lost or manifest["parts"] != [{"key": f"predictions/{model}/run=r1/part-00000.parquet", "rows": 1}]:
        pytest.fail(f"the scenario did not happen: lost {lost}, manifest {manifest}")  # not the expected failure
    left = s3.list_objects_v2(Bucket=bucket, Prefix=staging_prefix(model, "r1") + "/").get("KeyCount", 0)
    assert left == 0, f"{left} staged part(s) left after publishing"
    stored = read_manifest(objects, bucket, model, "r1")
    assert stored is not None and stored["published_at"] == manifest["published_at"]  # this call's manifest
    # another writer's object stays another's: a conditional write of different bytes is refused
    assert not objects.put_new(bucket, f"{published_prefix(model, 'r1')}/{MANIFEST}", b"{}")
