"""The registry's rules: numbering, champion, idempotency, conflicts, audit.

They run on the in-memory store, without the embedded AWS; ``tests/test_store_contract.py`` holds
the store contract these rules rely on, for the DynamoDB store and the in-memory one alike."""

from __future__ import annotations

import uuid

import pytest

from stagewise.platform.runtime.aws import utc_now
from stagewise.registry.errors import Conflict, NotFound
from stagewise.registry.memory import InMemoryRegistryStore
from stagewise.registry.records import AuditEvent, GateResult
from stagewise.registry.service import Registry

PASS = GateResult(metric="r2", comparator=">=", threshold=0.7, value=0.8, samples=500, min_samples=100, outcome="pass")
FAIL = GateResult(metric="r2", comparator=">=", threshold=0.7, value=0.4, samples=500, min_samples=100, outcome="fail")


@pytest.fixture()
def registry() -> Registry:
    return Registry(InMemoryRegistryStore(), clock=utc_now)


@pytest.fixture()
def name() -> str:
    return f"m-{uuid.uuid4().hex[:8]}"


def _register(registry, name, gates=(PASS,), token=None, sha="a"):
    return registry.register_version(
        name, artifact_uri=f"s3://b/{name}/model.ubj", artifact_sha256=sha * 64, metrics={"r2": gates[0].value},
        gates=list(gates), lineage={"data_sha256": "d" * 64}, actor="tester", token=token or uuid.uuid4().hex,
    )


def test_versions_are_numbered_and_first_passing_becomes_champion(registry, name):
    first = _register(registry, name)
    second = _register(registry, name, sha="b")
    assert (first.version.version, second.version.version) == (1, 2)
    assert first.champion == 1 and second.champion == 1  # later versions wait for a rollout
    assert registry.get_model(name).latest_version == 2


def test_retried_call_with_same_token_does_not_act_twice(registry, name):
    a = _register(registry, name, token="tok-1")
    b = _register(registry, name, token="tok-1")
    assert a.created and not b.created
    assert b.version == a.version
    assert [v.version for v in registry.list_versions(name)] == [1]
    assert sum(e.action == "version.register" for e in registry.history(name)) == 1


def test_failed_gate_records_rejected_version_and_serves_nothing(registry, name):
    reg = _register(registry, name, gates=(FAIL,))
    assert reg.version.status == "rejected" and reg.champion is None
    assert registry.champion(name) is None
    event = registry.history(name)[-1]
    assert event.action == "version.reject" and event.evidence["gates"][0]["value"] == 0.4


def test_stale_revision_is_a_conflict(registry, name):
    _register(registry, name)
    store = registry.store
    model = store.get_model(name)
    stale = model.model_copy(update={"revision": model.revision + 1, "aliases": {"champion": 99}})
    event = AuditEvent(model=name, event_id="e1", revision=model.revision + 1, at=utc_now(), actor="x", action="alias.set")
    store.update_model(stale, model.revision, event, token="t-a")
    with pytest.raises(Conflict):
        store.update_model(stale, model.revision, event.model_copy(update={"event_id": "e2"}), token="t-b")


def test_unknown_model_and_version_are_not_found(registry, name):
    with pytest.raises(NotFound):
        registry.get_model(name)
    _register(registry, name)
    with pytest.raises(NotFound, match="no version 7"):
        registry.get_version(name, 7)
