"""The registry store contract (``stagewise.registry.store.RegistryStore``), run on both stores.

Every test runs on ``DynamoDBRegistryStore`` (a registry table of the module's own on the embedded AWS) and on
``InMemoryRegistryStore``: records read back as written, writes conditional on the model's revision,
one audit event per revision, idempotency tokens and replays, ``NotFound``/``AlreadyExists``, the
run lock (taken, refused, renewed, lapsed, released), and 16 threads racing on one model. The registry's rules rely on exactly this, so its rule tests can run
on the in-memory store. Each test uses its own model names (the module's tests share the table; it is
not the dev registry table, whose models other test files list: some records written here are
states the registry itself never writes).
"""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timezone
from typing import Callable

import pytest

from conftest import own_registry_table
from stagewise.registry.dynamodb import DynamoDBRegistryStore
from stagewise.registry.errors import AlreadyExists, Conflict, Locked, NotFound
from stagewise.registry.memory import InMemoryRegistryStore
from stagewise.registry.records import AuditEvent, Gate, GateResult, ModelRecord, RolloutState, RunLock, VersionRecord
from stagewise.registry.store import RegistryStore

AT = datetime(2026, 3, 1, 9, 30, tzinfo=timezone.utc)
THREADS = 16


@pytest.fixture(scope="module")
def contract_table(dev) -> str:
    return own_registry_table(dev, "contract")


@pytest.fixture(params=["dynamodb", "memory"])
def store(request: pytest.FixtureRequest) -> RegistryStore:
    if request.param == "dynamodb":
        dev = request.getfixturevalue("dev")  # the embedded AWS starts only for the DynamoDB runs
        return DynamoDBRegistryStore(dev.clients.client("dynamodb"), request.getfixturevalue("contract_table"))
    return InMemoryRegistryStore()


@pytest.fixture()
def name() -> str:
    return f"c-{uuid.uuid4().hex[:8]}"


def _tok() -> str:
    return uuid.uuid4().hex


def _model(name: str, kind: str = "model", **update) -> ModelRecord:
    gates = (Gate(metric="r2", comparator=">=", threshold=0.7, min_samples=100),)
    return ModelRecord(name=name, kind=kind, description=f"{name} for the contract", created_at=AT, updated_at=AT,
                       gates=gates, **update)


def _event(name: str, revision: int, action: str = "alias.set", **update) -> AuditEvent:
    fields = {"evidence": {"why": "contract"}, **update}
    return AuditEvent(model=name, event_id=uuid.uuid4().hex, revision=revision, at=AT, actor="contract", action=action,
                      **fields)


def _version(name: str, number: int) -> VersionRecord:
    gate = GateResult(metric="r2", comparator=">=", threshold=0.7, value=0.81, samples=500, min_samples=100, outcome="pass")
    return VersionRecord(model=name, version=number, created_at=AT, created_by="contract", status="registered",
                         artifact_uri=f"s3://b/{name}/v{number}.ubj", artifact_sha256=f"{number:064x}",
                         metrics={"r2": 0.81, "rmse": 0.07}, gates=(gate,), lineage={"data_sha256": "d" * 64, "seed": number})


def _create(store: RegistryStore, name: str, kind: str = "model") -> ModelRecord:
    model = _model(name, kind)
    assert store.create_model(model, _event(name, 0, "model.create")) == model
    return model


def _bumped(model: ModelRecord, **update) -> ModelRecord:
    """The head after one change: the next revision, with ``update`` applied."""
    return model.model_copy(update={"revision": model.revision + 1, **update})


def _commit(store: RegistryStore, head: ModelRecord, number: int, token: str | None = None):
    """Commit version ``number`` on top of ``head``; returns (the store's answer, new head, event)."""
    new = _bumped(head, latest_version=number, stages={**head.stages, number: "registered"})
    event = _event(head.name, new.revision, "version.register", version=number)
    return store.commit_version(_version(head.name, number), new, head.revision, event, token or _tok()), new, event


def _race(worker: Callable[[int], str]) -> list[str]:
    """Run ``worker(i)`` in 16 threads released together; their answers, in thread order."""
    barrier = threading.Barrier(THREADS)
    answers = [""] * THREADS

    def run(i: int) -> None:
        barrier.wait()
        try:
            answers[i] = worker(i)
        except Exception as e:  # noqa: BLE001 - an unexpected error is reported as the thread's answer
            answers[i] = repr(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


# ------------------------------------------------------------------------------------ models
def test_created_model_reads_back_as_written_with_its_event(store, name):
    model = _model(name, "agent", aliases={"stable": 1}, stages={1: "champion"}, champion_history=(1,))
    event = _event(name, 0, "model.create", after={"kind": "agent"})
    assert store.create_model(model, event) == model
    assert store.get_model(name) == model
    assert store.list_events(name) == [event]
    assert store.list_versions(name) == []


def test_creating_an_existing_model_is_already_exists_and_writes_nothing(store, name):
    first = _create(store, name)
    with pytest.raises(AlreadyExists, match=name):
        store.create_model(_model(name, "agent"), _event(name, 0, "model.create"))
    assert store.get_model(name) == first
    assert [e.action for e in store.list_events(name)] == ["model.create"]


def test_models_are_listed_by_name_across_kinds(store, name):
    for suffix, kind in (("-b", "model"), ("-a", "agent"), ("-c", "model")):
        _create(store, name + suffix, kind)
    mine = [m for m in store.list_models() if m.name.startswith(name)]
    assert [(m.name, m.kind) for m in mine] == [(name + "-a", "agent"), (name + "-b", "model"), (name + "-c", "model")]
    assert mine[0] == store.get_model(name + "-a")


def test_missing_records_are_not_found(store, name):
    with pytest.raises(NotFound, match="no model called"):
        store.get_model(name)
    with pytest.raises(NotFound, match="no model called"):  # the missing model is named, not the version
        store.get_version(name, 1)
    with pytest.raises(NotFound):
        store.update_model(_bumped(_model(name)), 0, _event(name, 1), _tok())
    with pytest.raises(NotFound):
        store.commit_version(_version(name, 1), _bumped(_model(name), latest_version=1), 0, _event(name, 1), _tok())
    assert store.list_versions(name) == [] and store.list_events(name) == []
    _create(store, name)
    with pytest.raises(NotFound, match="no version 7"):
        store.get_version(name, 7)
    assert not store.has_token(name, "never")
    with pytest.raises(NotFound, match="never used"):
        store.token_result(name, "never")
    assert [m.name for m in store.list_models() if m.name.startswith(name)] == [name]  # failed writes made nothing


# ---------------------------------------------------------------------------------- versions
def test_commit_version_writes_version_head_event_and_token_together(store, name):
    head = _create(store, name)
    (version, created), new, event = _commit(store, head, 1, token="tok-v1")
    assert created and version == _version(name, 1)
    assert store.get_version(name, 1) == version
    assert store.list_versions(name) == [version]
    assert store.get_model(name) == new
    assert store.list_events(name)[-1] == event and [e.revision for e in store.list_events(name)] == [0, 1]
    assert store.has_token(name, "tok-v1") and store.token_result(name, "tok-v1") == 1


def test_commit_version_replayed_with_its_token_returns_the_first_version_and_writes_nothing(store, name):
    head = _create(store, name)
    (first, _), new, _ = _commit(store, head, 1, token="tok-once")
    (again, created), _, _ = _commit(store, head, 1, token="tok-once")  # the same call, retried: stale revision
    assert not created and again == first
    (other, created), _, _ = _commit(store, new, 2, token="tok-once")  # the token wins over a new version
    assert not created and other == first
    assert store.get_model(name) == new
    assert [v.version for v in store.list_versions(name)] == [1]
    assert [e.revision for e in store.list_events(name)] == [0, 1]


def test_commit_version_on_a_moved_revision_is_a_conflict_and_writes_nothing(store, name):
    head = _create(store, name)
    _, new, _ = _commit(store, head, 1)
    with pytest.raises(Conflict, match="changed since revision 0"):
        _commit(store, head, 2, token="tok-stale")
    assert store.get_model(name) == new and not store.has_token(name, "tok-stale")
    assert [v.version for v in store.list_versions(name)] == [1]
    assert [e.revision for e in store.list_events(name)] == [0, 1]


def test_commit_version_with_a_taken_number_is_already_exists_and_writes_nothing(store, name):
    head = _create(store, name)
    _, new, _ = _commit(store, head, 1)
    with pytest.raises(AlreadyExists, match="already has version 1"):
        _commit(store, new, 1, token="tok-dup")
    assert store.get_model(name) == new and not store.has_token(name, "tok-dup")
    assert store.get_version(name, 1) == _version(name, 1)
    assert [e.revision for e in store.list_events(name)] == [0, 1]


def test_a_revision_with_an_event_already_is_a_conflict(store, name):
    head = _create(store, name)  # revision 0 has the creation event
    taken = _event(name, 0)
    with pytest.raises(Conflict):
        store.update_model(_bumped(head), 0, taken, _tok())
    with pytest.raises(Conflict):
        store.commit_version(_version(name, 1), _bumped(head, latest_version=1), 0, taken, _tok())
    assert store.get_model(name) == head and store.list_versions(name) == []
    assert [e.action for e in store.list_events(name)] == ["model.create"]


# ------------------------------------------------------------------------------ model head
def test_update_model_writes_head_event_and_token_together(store, name):
    head = _create(store, name)
    rollout = RolloutState(id="r1", challenger=2, baseline=1, plan=(10, 50, 100), step=0, weight=10.0, started_at=AT,
                           started_by="contract", step_started_at=AT, gates=head.gates)
    new = _bumped(head, aliases={"champion": 1, "challenger": 2}, rollout=rollout)
    event = _event(name, 1, "rollout.start", before={"serving": head.serving()}, after={"serving": new.serving()})
    assert store.update_model(new, 0, event, "tok-u1") == (new, True)
    assert store.get_model(name) == new
    assert store.list_events(name)[-1] == event
    assert store.has_token(name, "tok-u1") and store.token_result(name, "tok-u1") == 0


def test_update_model_replayed_with_its_token_returns_the_current_head_and_writes_nothing(store, name):
    head = _create(store, name)
    first = _bumped(head, aliases={"stable": 1})
    store.update_model(first, 0, _event(name, 1), "tok-u")
    assert store.update_model(first, 0, _event(name, 1), "tok-u") == (first, False)  # retried: stale revision
    second = _bumped(first, aliases={"stable": 2})
    assert store.update_model(second, 1, _event(name, 2), "tok-u") == (first, False)  # the token wins
    assert store.get_model(name) == first
    assert [e.revision for e in store.list_events(name)] == [0, 1]


def test_update_model_on_a_stale_revision_is_a_conflict_and_writes_nothing(store, name):
    head = _create(store, name)
    first = _bumped(head, aliases={"stable": 1})
    store.update_model(first, 0, _event(name, 1), _tok())
    with pytest.raises(Conflict, match="changed since revision 0"):
        store.update_model(_bumped(head, aliases={"stable": 9}), 0, _event(name, 1), "tok-stale")
    assert store.get_model(name) == first and not store.has_token(name, "tok-stale")
    assert [e.revision for e in store.list_events(name)] == [0, 1]


def test_events_and_versions_list_in_order_without_gaps(store, name):
    head = _create(store, name)
    events = store.list_events(name)
    for number in range(1, 12):  # past 9 -> 10, where text order and number order part
        (_, _), head, event = _commit(store, head, number)
        events.append(event)
        new = _bumped(head, aliases={"stable": number})
        events.append(_event(name, new.revision))
        store.update_model(new, head.revision, events[-1], _tok())
        head = new
    assert store.list_events(name) == events
    assert [e.revision for e in events] == list(range(23))
    assert [v.version for v in store.list_versions(name)] == list(range(1, 12))


def test_records_read_or_written_are_copies(store, name):
    model = _create(store, name)
    model.aliases["injected"] = 1  # the caller's record, after the write
    read = store.get_model(name)
    read.stages[99] = "champion"  # a record read, changed by the caller
    assert store.get_model(name) == _model(name)
    _commit(store, read.model_copy(update={"stages": {}, "aliases": {}}), 1)
    store.get_version(name, 1).metrics["r2"] = 1.0
    store.list_versions(name)[0].lineage["seed"] = 0
    store.list_events(name)[0].evidence["why"] = "changed"
    assert store.get_version(name, 1) == _version(name, 1)
    assert store.list_events(name)[0].evidence == {"why": "contract"}


# ------------------------------------------------------------------------------ concurrency
def test_16_threads_updating_from_one_revision_leave_one_winner_per_revision(store, name):
    _create(store, name)
    winners = []
    for round_ in range(3):
        start = store.get_model(name)
        tokens = [f"r{round_}-t{i}-{_tok()}" for i in range(THREADS)]
        events = [_event(name, start.revision + 1, evidence={"thread": i}) for i in range(THREADS)]

        def worker(i: int) -> str:
            try:
                store.update_model(_bumped(start, aliases={"writer": i}), start.revision, events[i], tokens[i])
            except Conflict:
                return "conflict"
            return "won"

        answers = _race(worker)
        assert answers.count("won") == 1 and answers.count("conflict") == THREADS - 1, answers
        won = answers.index("won")
        winners.append(events[won])
        assert store.get_model(name) == _bumped(start, aliases={"writer": won})
        assert [store.has_token(name, t) for t in tokens] == [i == won for i in range(THREADS)]
    assert store.list_events(name)[1:] == winners
    assert [e.revision for e in store.list_events(name)] == [0, 1, 2, 3]


def test_16_threads_retrying_on_conflict_lose_no_event(store, name):
    _create(store, name)
    tokens = [_tok() for _ in range(THREADS)]

    def worker(i: int) -> str:
        for attempt in range(10 * THREADS):
            head = store.get_model(name)
            try:
                store.update_model(_bumped(head, aliases={**head.aliases, f"t{i}": attempt}), head.revision,
                                   _event(name, head.revision + 1, evidence={"thread": i}), tokens[i])
            except Conflict:
                continue
            return "written"
        return "gave up"

    assert _race(worker) == ["written"] * THREADS
    head = store.get_model(name)
    events = store.list_events(name)
    assert head.revision == THREADS and [e.revision for e in events] == list(range(THREADS + 1))
    assert sorted(e.evidence["thread"] for e in events[1:]) == list(range(THREADS))  # each change once
    assert sorted(head.aliases) == sorted(f"t{i}" for i in range(THREADS))  # no change overwrote another
    assert all(store.has_token(name, t) for t in tokens)


def test_16_threads_committing_the_same_version_number_leave_one_version(store, name):
    start = _create(store, name)
    tokens = [_tok() for _ in range(THREADS)]

    def worker(i: int) -> str:
        try:
            _commit(store, start, 1, token=tokens[i])
        except Conflict:  # the head moved: reported before the taken version number
            return "conflict"
        return "won"

    answers = _race(worker)
    assert answers.count("won") == 1 and answers.count("conflict") == THREADS - 1, answers
    assert [v.version for v in store.list_versions(name)] == [1]
    assert store.get_model(name).revision == 1 and [e.revision for e in store.list_events(name)] == [0, 1]
    assert [store.has_token(name, t) for t in tokens] == [a == "won" for a in answers]


# -- the run lock ------------------------------------------------------------------------------
NOW = 1_790_000_000.0


def _lock(name: str, run_id: str, expires: float = NOW + 600) -> RunLock:
    return RunLock(model=name, run_id=run_id, command="run", holder="contract", host="h", pid=7, acquired_at=AT,
                   expires_epoch=expires)


def test_run_lock_is_taken_refused_renewed_and_released_by_its_holder_only(store, name):
    assert store.get_run_lock(name) is None
    store.acquire_run_lock(_lock(name, "run-a"), NOW)
    with pytest.raises(Locked) as refused:
        store.acquire_run_lock(_lock(name, "run-b"), NOW + 1)
    assert refused.value.exit_code == 6 and refused.value.lock.run_id == "run-a"
    store.acquire_run_lock(_lock(name, "run-a", expires=NOW + 900), NOW + 2)  # the same run renews
    assert store.get_run_lock(name).expires_epoch == NOW + 900
    assert store.release_run_lock(name, "run-b") is False  # not its lock: nothing changes
    assert store.get_run_lock(name).run_id == "run-a"
    assert store.release_run_lock(name, "run-a") is True and store.get_run_lock(name) is None
    store.acquire_run_lock(_lock(name, "run-b"), NOW + 3)
    assert store.get_run_lock(name) == _lock(name, "run-b")


def test_an_expired_run_lock_is_free_to_take(store, name):
    store.acquire_run_lock(_lock(name, "dead", expires=NOW + 10), NOW)
    with pytest.raises(Locked):
        store.acquire_run_lock(_lock(name, "late"), NOW + 9.5)
    store.acquire_run_lock(_lock(name, "late", expires=NOW + 700), NOW + 10)
    assert store.get_run_lock(name).run_id == "late"
    assert store.release_run_lock(name, "dead") is False


def test_the_run_lock_is_not_a_version_event_or_model(store, name):
    _create(store, name)
    store.acquire_run_lock(_lock(name, "run-a"), NOW)
    assert [m.name for m in store.list_models() if m.name == name] == [name]
    assert store.list_versions(name) == [] and [e.revision for e in store.list_events(name)] == [0]


def test_16_runs_racing_for_the_run_lock_leave_one_holder(store, name):
    answers = _race(lambda i: (store.acquire_run_lock(_lock(name, f"run-{i}"), NOW), "won")[1])
    assert answers.count("won") == 1, answers
    winner = answers.index("won")
    assert all("Locked" in a for i, a in enumerate(answers) if i != winner), answers
    assert store.get_run_lock(name).run_id == f"run-{winner}"
