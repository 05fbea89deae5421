"""Two runs at once on one model (issue 16): the run lock (``stagewise.registry.runlock``).

The lease's rules run on the in-memory store with a fake clock (waiting, renewing, lapsing, a dead
holder on this machine); then real ``stagewise run`` and ``score`` processes are started together
against the embedded AWS: without ``--wait`` exactly one runs and the other exits 6 naming the
holder; with ``--wait`` they run one after the other, the same data makes one version, and the
audit trail stays gap-free.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from conftest import REPO, engagement_spec
from stagewise.pipeline.generator import generate_customers, write_dataset
from stagewise.registry.dynamodb import DynamoDBRegistryStore
from stagewise.registry.errors import Locked
from stagewise.registry.memory import InMemoryRegistryStore
from stagewise.registry.records import RunLock
from stagewise.registry.runlock import RunLease

STAGEWISE = str(Path(sys.executable).parent / "stagewise")


class Clock:
    def __init__(self) -> None:
        self.now = 1_790_000_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _lease(store, run_id: str, clock: Clock, ttl: float = 60.0) -> RunLease:
    return RunLease(store, "m", run_id, "run", holder="arn:test", ttl=ttl, clock=clock, sleep=clock.sleep)


# ------------------------------------------------------------------------------ the lease's rules
def test_a_second_run_is_refused_with_exit_6_naming_the_holder():
    store, clock = InMemoryRegistryStore(), Clock()
    _lease(store, "run-a", clock).acquire(renew=False)
    with pytest.raises(Locked) as refused:
        _lease(store, "run-b", clock).acquire()
    message = str(refused.value)
    assert refused.value.exit_code == 6 and "run run-a" in message and "stagewise run" in message
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in message and "lapses in 60 s" in message
    assert "--wait" in refused.value.hint


def test_a_waiting_run_takes_the_lock_when_the_holder_releases_it():
    store, clock = InMemoryRegistryStore(), Clock()
    first = _lease(store, "run-a", clock)
    first.acquire(renew=False)
    told = []
    second = _lease(store, "run-b", clock)
    real_sleep = second._sleep

    def sleep(seconds: float) -> None:
        real_sleep(seconds)
        if clock.now >= 1_790_000_010:  # the first run finishes 10 s in
            first.release()

    second._sleep = sleep
    lock = second.acquire(wait=30, on_wait=told.append, renew=False)
    assert lock.run_id == "run-b" and 10 <= second.waited <= 12
    assert [t.run_id for t in told] == ["run-a"]  # told once whom it waits for


def test_waiting_gives_up_after_wait_seconds():
    store, clock = InMemoryRegistryStore(), Clock()
    _lease(store, "run-a", clock, ttl=600).acquire(renew=False)
    with pytest.raises(Locked, match=r"waited 2\d s"):
        _lease(store, "run-b", clock).acquire(wait=20)
    assert store.get_run_lock("m").run_id == "run-a"


def test_an_unrenewed_lock_lapses_after_its_ttl_and_the_same_run_reenters():
    store, clock = InMemoryRegistryStore(), Clock()
    _lease(store, "run-a", clock, ttl=60).acquire(renew=False)
    _lease(store, "run-a", clock).acquire(renew=False)  # the next task group of the same run
    clock.now += 61
    assert _lease(store, "run-b", clock).acquire(renew=False).run_id == "run-b"


def test_renewal_keeps_the_lock_past_its_ttl_and_release_frees_it():
    store = InMemoryRegistryStore()
    lease = RunLease(store, "m", "run-a", ttl=0.3)
    lease.acquire()
    first = store.get_run_lock("m").expires_epoch
    threading.Event().wait(0.5)  # two renewals (every 0.1 s)
    assert store.get_run_lock("m").expires_epoch > first and lease.lost is None
    assert lease.release() is True and store.get_run_lock("m") is None


def test_a_lock_left_by_a_dead_process_on_this_machine_is_broken_at_once():
    store, clock = InMemoryRegistryStore(), Clock()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    stale = RunLock(model="m", run_id="killed", host=socket.gethostname(), pid=pid,
                    acquired_at=datetime.now().astimezone(), expires_epoch=clock.now + 600)
    store.acquire_run_lock(stale, clock.now)
    assert _lease(store, "run-b", clock).acquire(renew=False).run_id == "run-b"
    # a live process's lock, or another machine's, is not broken
    for host, live in ((socket.gethostname(), os.getppid()), ("another-host", pid)):
        store.release_run_lock("m", "run-b")
        store.acquire_run_lock(stale.model_copy(update={"host": host, "pid": live}), clock.now)
        with pytest.raises(Locked):
            _lease(store, "run-c", clock).acquire(renew=False)
        store.release_run_lock("m", "killed")


# ------------------------------------------------------------------- real processes at once
@pytest.fixture(scope="module")
def concurrent(dev, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("concurrent")
    spec = engagement_spec(folder, "concurrent", plan="{dev: [50, 100]}")
    data = {}
    for name, seed in (("a", 1), ("b", 2), ("c", 3)):
        data[name] = folder / f"{name}.parquet"
        write_dataset(generate_customers(2_000, seed=seed), data[name])
    code, doc = _together([("run", data["a"])], spec, folder)[0]
    assert code == 0, doc
    return {"spec": spec, "data": data, "folder": folder, "store": DynamoDBRegistryStore(
        dev.clients.client("dynamodb"), dev.resources.registry_table.name)}


def _together(commands: list[tuple[str, Path]], spec: Path, folder: Path, *args: str) -> list[tuple[int, dict]]:
    """Start every ``stagewise <command> --data <path>`` at once; their exit codes and JSON."""
    procs = [subprocess.Popen([STAGEWISE, command, "--project-dir", str(REPO), "--model", str(spec), "--data", str(path),
                               "--json", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=folder)
             for command, path in commands]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        try:
            out.append((p.returncode, json.loads(stdout)))
        except ValueError:
            out.append((p.returncode, {"stdout": stdout[-2000:], "stderr": stderr[-2000:]}))
    return out


def _window(doc: dict) -> tuple[datetime, datetime]:
    start = datetime.fromisoformat(doc["started_at"])
    return start, start + timedelta(seconds=doc["seconds"])


def _audit_is_gap_free(store, model: str) -> list[str]:
    events = store.list_events(model)
    assert [e.revision for e in events] == list(range(len(events)))
    assert store.get_model(model).revision == events[-1].revision
    return [e.action for e in events]


def test_two_runs_at_once_one_runs_the_other_exits_6(concurrent):
    store, before = concurrent["store"], len(concurrent["store"].list_versions("concurrent"))
    results = _together([("run", concurrent["data"]["b"])] * 2, concurrent["spec"], concurrent["folder"])
    codes = sorted(code for code, _ in results)
    assert codes == [0, 6], results
    (_, ran), (_, refused) = sorted(results, key=lambda r: r[0])
    assert f"is busy: run {ran['run_id']} (stagewise run" in refused["error"] and "--wait" in refused["hint"]
    assert len(store.list_versions("concurrent")) == before + 1
    assert store.get_run_lock("concurrent") is None  # released when the run finished
    _audit_is_gap_free(store, "concurrent")


def test_with_wait_two_runs_on_the_same_data_run_in_turn_and_make_one_version(concurrent):
    store, before = concurrent["store"], len(concurrent["store"].list_versions("concurrent"))
    results = _together([("run", concurrent["data"]["c"])] * 2, concurrent["spec"], concurrent["folder"], "--wait", "300")
    assert [code for code, _ in results] == [0, 0], results
    first, second = sorted((doc for _, doc in results), key=lambda d: d["started_at"])
    assert _window(first)[1] <= _window(second)[0]  # one after the other, not interleaved
    versions = [next(s["summary"] for s in d["steps"] if s["name"] == "register") for d in (first, second)]
    assert versions[0]["version"] == versions[1]["version"] and [v["created"] for v in versions] == [True, False]
    assert len(store.list_versions("concurrent")) == before + 1  # no duplicate version for the same data
    _audit_is_gap_free(store, "concurrent")


def test_with_wait_two_scoring_runs_each_count_once_in_turn(concurrent):
    store = concurrent["store"]
    assert store.get_model("concurrent").rollout is not None  # v2 from the first test rolls out at 50 %
    seen = len(store.list_events("concurrent"))
    results = _together([("score", concurrent["data"]["a"])] * 2, concurrent["spec"], concurrent["folder"], "--wait", "300")
    assert [code for code, _ in results] == [0, 0], results
    first, second = sorted((doc for _, doc in results), key=lambda d: d["started_at"])
    assert _window(first)[1] <= _window(second)[0]
    _audit_is_gap_free(store, "concurrent")
    counted = [e.evidence.get("run") for e in store.list_events("concurrent")[seen:] if e.action.startswith("rollout.")]
    assert counted == [first["run_id"], second["run_id"]]  # each run counted once, in the order they ran
