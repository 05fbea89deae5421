"""Staged rollout on the registry: concurrency, idempotency, transitions, the controller's gates
and bake, shadow mode, and routing shares.

These are the registry's rules, so they run on the in-memory store, without the embedded AWS; that
DynamoDB keeps the same store contract (conditional writes, tokens, races between 16 threads) is
``tests/test_store_contract.py``, run on both stores."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from stagewise.registry import routing
from stagewise.registry.errors import Conflict, InvalidTransition
from stagewise.registry.memory import InMemoryRegistryStore
from stagewise.registry.records import Gate, GateResult
from stagewise.registry.service import Registry, RolloutPlan

PASS = GateResult(metric="r2", comparator=">=", threshold=0.7, value=0.8, samples=500, min_samples=100, outcome="pass")
FAIL = GateResult(metric="r2", comparator=">=", threshold=0.7, value=0.4, samples=500, min_samples=100, outcome="fail")
ONLINE = (Gate(metric="r2", comparator=">=", threshold=0.7, min_samples=1000),)
GOOD = {"r2": (0.81, 5000)}
BAD = {"r2": (0.31, 5000)}
FEW = {"r2": (0.81, 20)}


class Clock:
    """A settable UTC clock, so bake minutes can be tested without sleeping."""

    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def registry(clock) -> Registry:
    return Registry(InMemoryRegistryStore(), clock=clock)


@pytest.fixture()
def name() -> str:
    return f"r-{uuid.uuid4().hex[:8]}"


def _version(registry, name, gates=(PASS,), plan=None):
    return registry.register_version(
        name, artifact_uri=f"s3://b/{uuid.uuid4().hex}", artifact_sha256=uuid.uuid4().hex * 2, metrics={"r2": gates[0].value},
        gates=list(gates), lineage={}, actor="tester", token=uuid.uuid4().hex, rollout=plan, online_gates=ONLINE,
    )


def _tok() -> str:
    return uuid.uuid4().hex


def _with_rollout(registry, name, steps=(10, 50, 100), bake_runs=1, shadow=False):
    _version(registry, name)  # v1: champion
    reg = _version(registry, name, plan=RolloutPlan(steps, bake_runs=bake_runs, shadow=shadow))
    return reg


# --------------------------------------------------------------------------- concurrency
def test_16_threads_promoting_and_rolling_back_leave_one_winner(registry, name):
    _version(registry, name)  # v1 champion
    registry.promote(name, _version(registry, name).version.version, RolloutPlan((100,)), actor="t", token=_tok())  # v2 champion, v1 known-good
    candidate = _version(registry, name).version.version  # v3, registered
    start = registry.get_model(name)
    events_before = len(registry.history(name))
    barrier = threading.Barrier(16)
    outcomes: list[str] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        barrier.wait()
        try:
            if i % 2:
                registry.promote(name, candidate, RolloutPlan((10, 50, 100)), actor=f"t{i}", token=_tok(),
                                 expected_revision=start.revision)
            else:
                registry.rollback(name, actor=f"t{i}", token=_tok(), reason="race", expected_revision=start.revision)
            result = "won"
        except Conflict:
            result = "conflict"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("won") == 1 and outcomes.count("conflict") == 15
    after = registry.get_model(name)
    assert after.revision == start.revision + 1
    events = registry.history(name)
    assert len(events) == events_before + 1
    assert events[-1].before["serving"] == start.serving()
    assert events[-1].after["serving"] == after.serving()


def test_concurrent_changes_without_expected_revision_lose_no_event(registry, name):
    _with_rollout(registry, name)
    start = registry.get_model(name)
    events_before = len(registry.history(name))
    wins, errors = [], []
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def worker(i: int) -> None:
        barrier.wait()
        for _ in range(3):
            try:
                op = registry.pause if i % 2 else registry.resume
                op(name, actor=f"t{i}", token=_tok())
                with lock:
                    wins.append(i)
            except Exception as e:  # noqa: BLE001 - anything but these two is a test failure below
                with lock:
                    errors.append(type(e).__name__ if isinstance(e, (Conflict, InvalidTransition)) else repr(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    end = registry.get_model(name)
    events = registry.history(name)[events_before:]
    assert end.revision == start.revision + len(wins) == start.revision + len(events)
    # the audit chain is unbroken: each event starts where the previous one ended
    for prev, nxt in zip(events, events[1:]):
        assert prev.after["serving"] == nxt.before["serving"]
    assert wins and set(errors) <= {"Conflict", "InvalidTransition"}


# --------------------------------------------------------------------- idempotency, transitions
def test_retried_call_with_same_token_acts_once(registry, name):
    _version(registry, name)
    v2 = _version(registry, name).version.version
    before = len(registry.history(name))
    first = registry.promote(name, v2, RolloutPlan((10, 50, 100)), actor="t", token="promote-once")
    again = registry.promote(name, v2, RolloutPlan((10, 50, 100)), actor="t", token="promote-once")
    assert again.revision == first.revision and again.rollout.id == first.rollout.id
    assert len(registry.history(name)) == before + 1


def test_illegal_transitions_are_refused(registry, name):
    _with_rollout(registry, name)
    registry.rollback(name, actor="t", token=_tok(), reason="bad canary")
    rejected = _version(registry, name, gates=(FAIL,)).version.version
    model = registry.get_model(name)
    assert model.stages[2] == "rolled_back" and model.champion == 1 and model.rollout is None
    with pytest.raises(InvalidTransition, match="no rollout in progress"):
        registry.advance(name, actor="t", token=_tok())
    with pytest.raises(InvalidTransition, match="rolled back"):
        registry.promote(name, 2, RolloutPlan((10, 100)), actor="t", token=_tok())
    with pytest.raises(InvalidTransition, match="rejected"):
        registry.promote(name, rejected, RolloutPlan((10, 100)), actor="t", token=_tok())
    with pytest.raises(InvalidTransition, match="managed by rollouts"):
        registry.set_alias(name, "champion", 1, actor="t", token=_tok())
    assert registry.get_model(name).revision == model.revision  # nothing was written


def test_candidate_waits_while_a_rollout_is_in_progress(registry, name):
    _with_rollout(registry, name)
    reg = _version(registry, name, plan=RolloutPlan((10, 50, 100)))
    assert reg.stage == "candidate" and reg.model.rollout.challenger == 2


# ------------------------------------------------------------------------------ controller
def test_controller_advances_after_bake_and_crowns_at_100(registry, name, clock):
    _with_rollout(registry, name, bake_runs=2)
    assert registry.evaluate_rollout(name, GOOD, actor="ctl", run_token="run-1").outcome == "held"
    assert registry.evaluate_rollout(name, GOOD, actor="ctl", run_token="run-1").outcome == "already_counted"
    d = registry.evaluate_rollout(name, GOOD, actor="ctl", run_token="run-2")
    assert d.outcome == "advanced" and d.model.rollout.weight == 50
    assert registry.evaluate_rollout(name, FEW, actor="ctl", run_token="run-3").outcome == "held"  # inconclusive
    d = registry.evaluate_rollout(name, GOOD, actor="ctl", run_token="run-4")
    assert d.outcome == "completed"
    model = registry.get_model(name)
    assert model.champion == 2 and model.rollout is None and model.stages[1] == "retired"
    actions = [e.action for e in registry.history(name)]
    assert actions[-4:] == ["rollout.hold", "rollout.advance", "rollout.hold", "rollout.complete"]
    assert [e.revision for e in registry.history(name)] == list(range(model.revision + 1))
    complete = registry.history(name)[-1]
    assert complete.action == "rollout.complete" and complete.evidence["gates"][0]["value"] == 0.81


def test_failed_gate_rolls_back_to_the_known_good_champion(registry, name):
    _with_rollout(registry, name)
    d = registry.evaluate_rollout(name, BAD, actor="ctl", run_token="r1")
    assert d.outcome == "rolled_back" and "r2=0.31" in d.reason
    model = registry.get_model(name)
    assert model.champion == 1 and model.rollout is None and model.stages[2] == "rolled_back"
    event = registry.history(name)[-1]
    assert event.action == "rollout.rollback" and event.evidence["gates"][0]["outcome"] == "fail"


def test_bake_minutes_hold_until_elapsed(registry, name, clock):
    _version(registry, name)
    _version(registry, name, plan=RolloutPlan((10, 100), bake_runs=1, bake_minutes=60))
    assert registry.evaluate_rollout(name, GOOD, actor="ctl", run_token="a").outcome == "held"
    clock.now += timedelta(minutes=61)
    assert registry.evaluate_rollout(name, GOOD, actor="ctl", run_token="b").outcome == "completed"


def test_paused_rollout_holds_even_when_gates_pass(registry, name):
    _with_rollout(registry, name)
    registry.pause(name, actor="t", token=_tok())
    assert registry.evaluate_rollout(name, GOOD, actor="ctl", run_token="x").outcome == "held"
    with pytest.raises(InvalidTransition, match="paused"):
        registry.advance(name, actor="t", token=_tok())
    registry.resume(name, actor="t", token=_tok())
    assert registry.evaluate_rollout(name, GOOD, actor="ctl", run_token="y").outcome == "advanced"


def test_shadow_mode_serves_nothing_then_enters_the_plan(registry, name):
    _with_rollout(registry, name, shadow=True)
    model = registry.get_model(name)
    assert model.rollout.shadow and model.rollout.weight == 0
    keys = [f"k{i}" for i in range(2000)]
    assert set(routing.assign(model, keys).tolist()) == {1}
    model = registry.advance(name, actor="t", token=_tok())
    assert not model.rollout.shadow and model.rollout.weight == 10


def test_serving_at_replays_the_audit_trail(registry, name, clock):
    t0 = clock.now
    _version(registry, name)
    clock.now = t0 + timedelta(minutes=5)
    _version(registry, name, plan=RolloutPlan((10, 100)))
    clock.now = t0 + timedelta(minutes=10)
    registry.rollback(name, actor="t", token=_tok(), reason="manual")
    assert registry.serving_at(name, t0 - timedelta(minutes=1))["champion"] is None
    assert registry.serving_at(name, t0 + timedelta(minutes=1))["champion"] == 1
    mid = registry.serving_at(name, t0 + timedelta(minutes=7))
    assert (mid["champion"], mid["challenger"], mid["weight"]) == (1, 2, 10)
    assert registry.serving_at(name, t0 + timedelta(minutes=11))["challenger"] is None


def test_agent_feedback_fails_the_approval_gate_and_rolls_back(registry, name):
    gates = (Gate(metric="approval_rate", comparator=">=", threshold=0.8, min_samples=10),)
    for _ in range(2):
        registry.register_version(name, artifact_uri="s3://b/p", artifact_sha256=uuid.uuid4().hex * 2, metrics={},
                                  gates=[], lineage={}, actor="t", token=_tok(), kind="agent", online_gates=gates)
    registry.promote(name, 2, RolloutPlan((10, 50, 100)), actor="t", token=_tok())
    outcomes = [registry.feedback(name, 2, approved=i < 3, score=None, actor="judge", token=_tok()).outcome for i in range(10)]
    assert outcomes[:9] == ["held"] * 9 and outcomes[9] == "rolled_back"
    model = registry.get_model(name)
    assert model.champion == 1 and model.stages[2] == "rolled_back"
    assert model.feedback[2].approval_rate == pytest.approx(0.3)


# --------------------------------------------------------------------------------- routing
def test_routing_shares_within_one_point_and_sticky_as_weight_grows():
    keys = [f"cus_{i:010x}" for i in range(100_000)]
    masks = {w: routing.to_challenger("engagement", "rollout-1", w, keys) for w in (10, 50, 100)}
    for w, mask in masks.items():
        assert abs(mask.mean() * 100 - w) <= 1.0
    assert not (masks[10] & ~masks[50]).any()  # everyone on the challenger at 10% stays on it at 50%
    assert masks[100].all()
    other = routing.to_challenger("engagement", "rollout-2", 10, keys)
    assert 0.005 < (other & masks[10]).mean() < 0.02  # a new rollout reshuffles (independent ~1%)
    assert np.array_equal(routing.to_challenger("engagement", "rollout-1", 10, keys), masks[10])  # deterministic
