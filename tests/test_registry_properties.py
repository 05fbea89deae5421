"""The registry's rules under random histories (issue 16): hypothesis's stateful testing.

``RegistryMachine``'s rules are the public operations of ``stagewise.registry.service.Registry``:
registering versions (offline gates passing, failing, inconclusive and held; with no rollout plan,
a canary plan, a shadow plan, a plan of one step ``(100,)``), ``promote``, ``advance``,
``rollback``, ``pause``, ``resume``, ``set_alias`` (set and delete, reserved names), agent
``feedback``, ``evaluate_rollout`` on random observations (pass, fail, too few samples, no value,
a drift hold, a drift failure), a clock moved forward so bake minutes matter, calls retried with
their idempotency token, and two ``Registry`` objects on one store: one writing on a stale read
(``expected_revision``: ``Conflict``, then a correct retry) and one whose write is overtaken
between its read and its conditional write (by another call, or by the same call with the same
token).

Beside the real store the machine keeps ``Expected``, a plain model of what the rules say the state
is; every call's outcome (its result or error code) and the whole head (stages, aliases, champion
history, rollout step, runs and tokens, feedback tallies, revision) must match it. After every step
the invariants check the store on its own terms:

* exactly one champion once one exists, and it is the last entry of the champion history;
* a rollout's weight is in [0, 100] and is its plan step's value (0 in shadow mode); the
  challenger alias and stage match the rollout and its baseline is the champion;
* a rolled-back or retired version never serves; a rejected version never serves or has an alias;
* a rollback of the champion returns to the last known-good champion before it (checked in the
  rule, from the head read before the call);
* the audit trail has one event per revision 0..current, is append-only, each event starts where
  the one before ended, and the last one ends at the current head's serving state;
* ``serving_at(t)`` is the audit's state at every recorded event time ``t``;
* a retried token acts once: the revision does not move and no event is added.

The machine runs on the in-memory store with 300 examples of up to 30 steps, and on the DynamoDB
store on the embedded AWS with 15 of up to 5 steps, each on a fresh model name and starting with a
rollout (a DynamoDB call takes tens of milliseconds there). Counter-examples it found are the
regression tests at the end of the file.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test

from conftest import own_registry_table
from stagewise.registry.dynamodb import DynamoDBRegistryStore
from stagewise.registry.errors import RegistryError
from stagewise.registry.memory import InMemoryRegistryStore
from stagewise.registry.records import AuditEvent, Gate, GateResult, ModelRecord, VersionRecord
from stagewise.registry.service import Registry, RolloutPlan

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
IN_MEMORY = settings(max_examples=300, stateful_step_count=30, deadline=None)
ON_DYNAMODB = settings(max_examples=15, stateful_step_count=5, deadline=None,
                       suppress_health_check=[HealthCheck.too_slow])


def _offline(outcome: str, on_inconclusive: str = "reject") -> GateResult:
    value = {"pass": 0.8, "fail": 0.4, "inconclusive": 0.9}[outcome]
    return GateResult(metric="r2", comparator=">=", threshold=0.7, value=value, samples=500 if outcome != "inconclusive" else 20,
                      min_samples=100, outcome=outcome, on_inconclusive=on_inconclusive)


PASS, FAIL, INCONCLUSIVE, HELD = _offline("pass"), _offline("fail"), _offline("inconclusive"), _offline("inconclusive", "hold")
OFFLINE = {  # offline gate results a version is registered with
    "pass": (PASS,), "none": (), "fail": (FAIL,), "pass+fail": (PASS, FAIL), "inconclusive": (INCONCLUSIVE,),
    "held": (HELD,), "pass+held": (PASS, HELD), "held+fail": (HELD, FAIL),
}
ONLINE = {  # the online gates of a model / an agent (min_samples: fewer samples are inconclusive)
    "model": (Gate(metric="r2", comparator=">=", threshold=0.7, min_samples=100),),
    "agent": (Gate(metric="approval_rate", comparator=">=", threshold=0.75, min_samples=3),
              Gate(metric="mean_score", comparator=">=", threshold=0.5, min_samples=2)),
}
OBSERVED = {  # what a scoring run saw for the challenger: metric -> (value, samples)
    "model": {"pass": {"r2": (0.8, 500)}, "fail": {"r2": (0.4, 500)}, "few": {"r2": (0.9, 10)}, "none": {},
              "nan": {"r2": (math.nan, 500)}},
    "agent": {"pass": {"approval_rate": (0.9, 20), "mean_score": (0.8, 20)},
              "fail": {"approval_rate": (0.5, 20), "mean_score": (0.8, 20)},
              "few": {"approval_rate": (0.9, 2), "mean_score": (0.8, 20)}, "none": {},
              "nan": {"approval_rate": (0.9, 20), "mean_score": (math.nan, 20)}},
}
DRIFT = GateResult(metric="drifted_share", comparator="<=", threshold=0.3, value=0.5, samples=1000, min_samples=0, outcome="fail")
REVISIONED = ("promote", "advance", "rollback", "pause", "resume", "set_alias")  # take expected_revision
RETRYING = ("register", "evaluate", "feedback")  # re-read and retry by themselves on Conflict

plans = st.builds(RolloutPlan, steps=st.sampled_from([(10, 50, 100), (25, 100), (100,)]),
                  bake_minutes=st.sampled_from([0.0, 30.0]), bake_runs=st.sampled_from([1, 2]), shadow=st.booleans())
canaries = plans.filter(lambda plan: plan.shadow or plan.steps[0] < 100)  # plans that start a rollout
offline = st.sampled_from(["pass"] * 5 + [k for k in OFFLINE if k != "pass"])  # mostly passing
versions = st.integers(min_value=1, max_value=4)  # beyond the last version: NotFound
pauses = st.sampled_from([0, 0, 10, 31])  # minutes between scoring runs or verdicts (bake: 0 or 30 minutes)
ARGS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "register": st.fixed_dictionaries({"gates": offline, "plan": st.none() | plans | plans}),
    "promote": st.fixed_dictionaries({"version": st.just("promotable") | versions, "plan": plans}),
    "advance": st.just({}), "rollback": st.just({}), "pause": st.just({}), "resume": st.just({}),
    "set_alias": st.fixed_dictionaries({"alias": st.sampled_from(["stable", "beta"] * 2 + ["champion", "challenger"]),
                                        "version": st.none() | versions}),
    "evaluate": st.fixed_dictionaries({"observed": st.sampled_from(["pass"] * 6 + ["fail", "few", "nan", "none"]),
                                       "extra": st.sampled_from([None] * 6 + ["hold", "drift"])}),
    "feedback": st.fixed_dictionaries({"version": st.sampled_from(["challenger"] * 3 + [1, 2, 3, 4]),
                                       "approved": st.sampled_from([True, True, True, False]),
                                       "score": st.sampled_from([0.9, 1.0, None, 0.0, 0.3, 1.5])}),  # 1.5: refused
}


# ----------------------------------------------------------------------------- calls, clock, store
@dataclass(frozen=True)
class Call:
    """One call of a ``Registry`` operation with its arguments and idempotency token (the run
    token, for ``evaluate``), so that it can be made, predicted and retried alike."""

    op: str
    args: dict[str, Any]
    token: str

    def make(self, registry: Registry, name: str, kind: str, expected_revision: int | None = None) -> str:
        """Make the call; its outcome: the new version's stage and number (``replay vN`` when the
        token had registered one), the decision's outcome, ``ok``, or the registry error's code."""
        a, actor = self.args, f"{self.op}-actor"
        revision = {"expected_revision": expected_revision} if self.op in REVISIONED else {}
        try:
            if self.op == "register":
                r = registry.register_version(
                    name, artifact_uri=f"s3://b/{name}/{self.token}.ubj", artifact_sha256=uuid.uuid4().hex * 2,
                    metrics={"r2": 0.8}, gates=list(OFFLINE[a["gates"]]), lineage={"token": self.token}, actor=actor,
                    token=self.token, kind=kind, rollout=a["plan"], online_gates=ONLINE[kind])
                return f"{r.stage} v{r.version.version}" if r.created else f"replay v{r.version.version}"
            if self.op == "evaluate":
                observed = OBSERVED[kind][a["observed"]]
                return registry.evaluate_rollout(
                    name, observed, actor=actor, run_token=self.token, extra_results=(DRIFT,) if a["extra"] == "drift" else (),
                    hold_reason="data drift" if a["extra"] == "hold" else None).outcome
            if self.op == "feedback":
                return registry.feedback(name, a["version"], approved=a["approved"], score=a["score"], actor=actor,
                                         token=self.token).outcome
            if self.op == "promote":
                registry.promote(name, a["version"], a["plan"], actor=actor, token=self.token, **revision)
            elif self.op == "rollback":
                registry.rollback(name, actor=actor, token=self.token, reason="property test", **revision)
            elif self.op == "set_alias":
                registry.set_alias(name, a["alias"], a["version"], actor=actor, token=self.token, **revision)
            else:
                getattr(registry, self.op)(name, actor=actor, token=self.token, **revision)
            return "ok"
        except RegistryError as e:
            return e.code


class Clock:
    """A UTC clock that moves only when a rule moves it."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class OvertakingStore:
    """A store whose next conditional write (``update_model`` or ``commit_version``) is overtaken:
    ``overtake(hook)`` runs ``hook`` (another writer's call) just before that write, after the
    caller has read the head and decided. Every other method is the wrapped store's (delegated,
    not re-declared, so the wrapper follows ``RegistryStore`` as it grows)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._hook: Callable[[], None] | None = None

    def overtake(self, hook: Callable[[], None] | None) -> None:
        self._hook = hook

    def _fire(self) -> None:
        hook, self._hook = self._hook, None
        if hook is not None:
            hook()

    def update_model(self, *args: Any, **kwargs: Any) -> Any:
        self._fire()
        return self._inner.update_model(*args, **kwargs)

    def commit_version(self, *args: Any, **kwargs: Any) -> Any:
        self._fire()
        return self._inner.commit_version(*args, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)


# --------------------------------------------------------------------------- the expected state
@dataclass
class Canary:
    """The expected rollout in progress."""

    challenger: int
    baseline: int | None
    plan: tuple[int, ...]
    step: int  # -1 in shadow mode
    started: datetime  # when the current step began
    bake_runs: int
    bake_minutes: float
    shadow: bool
    paused: bool = False
    runs: int = 0
    tokens: list[str] = field(default_factory=list)

    @property
    def weight(self) -> float:
        return 0.0 if self.step < 0 else float(self.plan[self.step])


@dataclass
class Expected:
    """What the registry's rules (the docstrings of ``Registry`` and ``transitions``) say the head
    is after each call. ``apply`` predicts a call's outcome (as ``Call.make`` reports it) and
    changes the state only if the call writes."""

    kind: str
    exists: bool = False
    revision: int = -1
    latest: int = 0
    rejected: set[int] = field(default_factory=set)
    stages: dict[int, str] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)
    history: list[int] = field(default_factory=list)
    rollout: Canary | None = None
    tallies: dict[int, tuple[int, int, int, float]] = field(default_factory=dict)  # approved, rejected, scored, sum
    tokens: dict[str, int] = field(default_factory=dict)  # token -> the version it registered (0: none)

    @property
    def champion(self) -> int | None:
        return self.aliases.get("champion")

    def apply(self, call: Call, now: datetime, expected_revision: int | None = None) -> str:
        return getattr(self, "_" + call.op)(now, call.token, expected_revision, **call.args)

    # -- transitions -------------------------------------------------------------------------------
    def _wrote(self, token: str, version: int = 0) -> None:
        self.revision += 1
        self.tokens[token] = version

    def _crown(self, version: int) -> None:
        if self.champion is not None:
            self.stages[self.champion] = "retired"
        self.stages[version] = "champion"
        self.aliases.pop("challenger", None)
        self.aliases["champion"] = version
        self.history.append(version)
        self.rollout = None

    def _start(self, version: int, plan: RolloutPlan, now: datetime) -> None:
        if not plan.shadow and plan.steps[0] >= 100:
            return self._crown(version)
        self.rollout = Canary(version, self.champion, plan.steps, -1 if plan.shadow else 0, now, plan.bake_runs,
                              plan.bake_minutes, plan.shadow)
        self.aliases["challenger"] = version
        self.stages[version] = "challenger"

    def _next_step(self, now: datetime) -> None:
        r = self.rollout
        step = r.step + 1
        if step >= len(r.plan) or r.plan[step] >= 100:
            return self._crown(r.challenger)
        r.step, r.shadow, r.started, r.runs = step, False, now, 0

    def _abort(self) -> None:
        self.stages[self.rollout.challenger] = "rolled_back"
        self.aliases.pop("challenger", None)
        self.rollout = None

    def _decide(self, now: datetime, observed: dict[str, tuple[float | None, int]], token: str, hold: bool = False,
                drift: bool = False) -> str:
        outcomes = []
        for gate in ONLINE[self.kind]:
            value, samples = observed.get(gate.metric, (None, 0))
            if value is None or math.isnan(value) or samples < gate.min_samples:
                outcomes.append("inconclusive")
            else:
                outcomes.append("pass" if value >= gate.threshold else "fail")
        if "fail" in outcomes or drift:
            self._abort()
            return "rolled_back"
        r = self.rollout
        r.runs += 0 if (r.paused or hold) else 1
        r.tokens.append(token)
        minutes = (now - r.started).total_seconds() / 60
        if r.paused or hold or "inconclusive" in outcomes or r.runs < r.bake_runs or minutes < r.bake_minutes:
            return "held"
        self._next_step(now)
        return "completed" if self.rollout is None else "advanced"

    def _change_refused(self, token: str, expected_revision: int | None) -> str | None:
        """What ``Registry._change`` answers before deciding: NotFound, a replay, Conflict."""
        if not self.exists:
            return "NotFound"
        if token in self.tokens:
            return "ok"
        if expected_revision is not None and expected_revision != self.revision:
            return "Conflict"
        return None

    def _missing(self, version: int) -> bool:
        return not self.exists or not 1 <= version <= self.latest

    # -- operations --------------------------------------------------------------------------------
    def _register(self, now, token, expected_revision, gates: str, plan: RolloutPlan | None) -> str:
        if not self.exists:
            self.exists, self.revision = True, 0  # the model is created first, with its own event
        if token in self.tokens:
            return f"replay v{self.tokens[token]}"
        number = self.latest = self.latest + 1
        results = OFFLINE[gates]
        if any(g.outcome == "fail" or (g.outcome == "inconclusive" and g.on_inconclusive == "reject") for g in results):
            self.rejected.add(number)
        elif any(g.outcome == "inconclusive" for g in results):
            self.stages[number] = "registered"
        elif self.champion is None:
            self._crown(number)
        elif self.rollout is not None:
            self.stages[number] = "candidate"
        elif plan is not None:
            self._start(number, plan, now)
        else:
            self.stages[number] = "registered"
        self._wrote(token, number)
        return f"{'rejected' if number in self.rejected else self.stages[number]} v{number}"

    def _promote(self, now, token, expected_revision, version: int, plan: RolloutPlan) -> str:
        if self._missing(version):
            return "NotFound"
        if refused := self._change_refused(token, expected_revision):
            return refused
        if (version in self.rejected or self.stages.get(version) == "rolled_back" or self.champion == version
                or self.rollout is not None):
            return "InvalidTransition"
        if self.champion is None:
            self._crown(version)
        else:
            self._start(version, plan, now)
        self._wrote(token)
        return "ok"

    def _advance(self, now, token, expected_revision) -> str:
        if refused := self._change_refused(token, expected_revision):
            return refused
        if self.rollout is None or self.rollout.paused:
            return "InvalidTransition"
        self._next_step(now)
        self._wrote(token)
        return "ok"

    def known_good_before(self) -> int | None:
        """The last champion before the current one that was not rolled back since."""
        return next((v for v in reversed(self.history) if v != self.champion and self.stages[v] != "rolled_back"), None)

    def _rollback(self, now, token, expected_revision) -> str:
        if refused := self._change_refused(token, expected_revision):
            return refused
        if self.rollout is not None:
            self._abort()
        else:
            current, previous = self.champion, self.known_good_before()
            if current is None or previous is None:
                return "InvalidTransition"
            self.stages[current] = "rolled_back"
            self.stages[previous] = "champion"
            self.aliases["champion"] = previous
            self.history.append(previous)
        self._wrote(token)
        return "ok"

    def _pause(self, now, token, expected_revision, paused: bool = True) -> str:
        if refused := self._change_refused(token, expected_revision):
            return refused
        if self.rollout is None or self.rollout.paused == paused:
            return "InvalidTransition"
        self.rollout.paused = paused
        self._wrote(token)
        return "ok"

    def _resume(self, now, token, expected_revision) -> str:
        return self._pause(now, token, expected_revision, paused=False)

    def _set_alias(self, now, token, expected_revision, alias: str, version: int | None) -> str:
        if alias in ("champion", "challenger"):
            return "InvalidTransition"
        if version is not None and self._missing(version):
            return "NotFound"
        if version in self.rejected:
            return "InvalidTransition"
        if refused := self._change_refused(token, expected_revision):
            return refused
        if version is None and alias not in self.aliases:
            return "InvalidTransition"
        if version is None:
            del self.aliases[alias]
        else:
            self.aliases[alias] = version
        self._wrote(token)
        return "ok"

    def _evaluate(self, now, token, expected_revision, observed: str, extra: str | None) -> str:
        if not self.exists:
            return "NotFound"
        if self.rollout is None:
            return "no_rollout"
        if token in self.rollout.tokens or f"eval-{token}" in self.tokens:
            return "already_counted"
        outcome = self._decide(now, OBSERVED[self.kind][observed], token, hold=extra == "hold", drift=extra == "drift")
        self._wrote(f"eval-{token}")
        return outcome

    def _feedback(self, now, token, expected_revision, version: int, approved: bool, score: float | None) -> str:
        if score is not None and not 0.0 <= score <= 1.0:
            return "InvalidTransition"
        if self._missing(version):
            return "NotFound"
        if token in self.tokens:
            return "already_counted"
        yes, no, scored, total = self.tallies.get(version, (0, 0, 0, 0.0))
        yes, no, scored, total = yes + approved, no + (not approved), scored + (score is not None), total + (score or 0.0)
        self.tallies[version] = (yes, no, scored, total)
        outcome = "no_rollout"
        if self.rollout is not None and self.rollout.challenger == version:
            observed = {"approval_rate": (yes / (yes + no), yes + no), "mean_score": (total / scored if scored else None, scored)}
            outcome = self._decide(now, observed, token)
        self._wrote(token)
        return outcome


# ------------------------------------------------------------------------------------ the machine
@dataclass
class Snapshot:
    """The store as read once after a step."""

    model: ModelRecord
    events: list[AuditEvent]
    versions: list[VersionRecord]


class RegistryMachine(RuleBasedStateMachine):
    """Random histories of one model (or agent) on one store, through two ``Registry`` objects:
    ``a`` on the store, ``b`` on the same store behind an ``OvertakingStore``."""

    batch = 6  # at most this many scoring runs or verdicts in one step

    def make_store(self) -> Any:
        return InMemoryRegistryStore()

    def __init__(self) -> None:
        super().__init__()
        self.store = self.make_store()
        self.clock = Clock()
        self.a = Registry(self.store, clock=self.clock)
        self.overtaking = OvertakingStore(self.store)
        self.b = Registry(self.overtaking, clock=self.clock)
        self.name = f"p-{uuid.uuid4().hex[:10]}"
        self.expected = Expected(kind="model")
        self.acted: list[Call] = []  # calls that wrote: retrying them must change nothing
        self.seen: list[AuditEvent] = []  # the audit trail as read after the previous step
        self._snapshot: Snapshot | None = None
        self._versions: list[VersionRecord] = []
        self._tokens = 0

    @initialize(kind=st.sampled_from(["model", "agent"]), gates=st.sampled_from(["pass", "pass", "none", "held", "fail"]))
    def first_version(self, kind: str, gates: str) -> None:
        """The model (or agent) is created with its first version: the rules' ``NotFound`` before
        that is the store contract's business."""
        self.expected = Expected(kind=kind)
        self.act(Call("register", {"gates": gates, "plan": None}, self.token()))

    # -- helpers -----------------------------------------------------------------------------------
    def token(self) -> str:
        self._tokens += 1
        return f"t{self._tokens}"

    def draw_call(self, data: st.DataObject, ops: tuple[str, ...], label: str) -> Call:
        if self.expected.kind != "agent":
            ops = tuple(op for op in ops if op != "feedback")
        op = data.draw(st.sampled_from(ops), label=f"{label} op")
        return self.call(op, data.draw(ARGS[op], label=f"{label} args"))

    def call(self, op: str, args: dict[str, Any]) -> Call:
        """``op`` with ``args`` and a fresh token. Version ``"challenger"`` is the current one (or
        v1); ``"promotable"`` the last version that may be promoted (or the last one)."""
        e = self.expected
        if args.get("version") == "challenger":
            args = {**args, "version": e.rollout.challenger if e.rollout else 1}
        elif args.get("version") == "promotable":
            may = [v for v in range(1, e.latest + 1) if v not in e.rejected and v != e.champion
                   and e.stages.get(v) != "rolled_back"]
            args = {**args, "version": may[-1] if may else e.latest}
        return Call(op, args, self.token())

    def act(self, call: Call, via: Registry | None = None, expected_revision: int | None = None) -> str:
        """Make ``call`` and check its outcome against the prediction."""
        self._snapshot = None
        actual = call.make(via or self.a, self.name, self.expected.kind, expected_revision)
        return self.check(call, actual, expected_revision)

    def check(self, call: Call, actual: str, expected_revision: int | None = None) -> str:
        revision = self.expected.revision
        predicted = self.expected.apply(call, self.clock(), expected_revision)
        assert actual == predicted, f"{call}: the registry answered {actual!r}, the rules say {predicted!r}"
        if self.expected.revision != revision:
            self.acted.append(call)
        return actual

    def snapshot(self) -> Snapshot | None:
        if not self.expected.exists:
            return None
        if self._snapshot is None:  # read once per step; versions are immutable: read again only when one is added
            model = self.store.get_model(self.name)
            versions = self._versions if len(self._versions) == model.latest_version else self.store.list_versions(self.name)
            self._snapshot = Snapshot(model, self.store.list_events(self.name), versions)
            self._versions = versions
        return self._snapshot

    # -- rules: the operations ---------------------------------------------------------------------
    @rule(args=ARGS["register"])
    def register(self, args: dict[str, Any]) -> None:
        self.act(self.call("register", args))

    @precondition(lambda self: self.expected.champion is not None and self.expected.rollout is None)
    @rule(plan=canaries)
    def register_canary(self, plan: RolloutPlan) -> None:
        """A passing version registered with a rollout plan while nothing rolls out: a rollout starts."""
        self.act(self.call("register", {"gates": "pass", "plan": plan}))

    @precondition(lambda self: self.expected.rollout is None)  # during one: refused (``any_call``)
    @rule(args=ARGS["promote"])
    def promote(self, args: dict[str, Any]) -> None:
        self.act(self.call("promote", args))

    @precondition(lambda self: self.expected.rollout is not None)  # without one: ``any_call``
    @rule()
    def advance(self) -> None:
        self.act(Call("advance", {}, self.token()))

    @precondition(lambda self: self.expected.rollout is not None or self.expected.known_good_before() is not None)
    @rule()
    def rollback(self) -> None:
        before = self.snapshot()
        outcome = self.act(Call("rollback", {}, self.token()))
        if outcome == "ok" and before.model.rollout is None:
            # a rollback of the champion returns to the last champion before it that is still known-good
            previous = next(v for v in reversed(before.model.champion_history)
                            if v != before.model.champion and before.model.stages[v] != "rolled_back")
            after = self.snapshot().model
            assert after.champion == previous and after.stages[before.model.champion] == "rolled_back"

    @precondition(lambda self: self.expected.rollout is not None)
    @rule()
    def pause(self) -> None:
        self.act(Call("pause", {}, self.token()))

    @precondition(lambda self: self.expected.rollout is not None)
    @rule()
    def resume(self) -> None:
        self.act(Call("resume", {}, self.token()))

    @rule(args=ARGS["set_alias"])
    def set_alias(self, args: dict[str, Any]) -> None:
        self.act(self.call("set_alias", args))

    @precondition(lambda self: self.expected.kind == "agent")
    @rule(verdicts=st.lists(st.tuples(ARGS["feedback"], pauses), min_size=1, max_size=6))
    def feedback(self, verdicts: list[tuple[dict[str, Any], int]]) -> None:
        """A few verdicts on an agent's versions, each ``minutes`` after the one before."""
        for args, minutes in verdicts[: self.batch]:
            self.clock.now += timedelta(minutes=minutes)
            self.act(self.call("feedback", args))

    @precondition(lambda self: self.expected.rollout is not None)
    @rule(runs=st.lists(st.tuples(ARGS["evaluate"], pauses), min_size=1, max_size=6))
    def evaluate(self, runs: list[tuple[dict[str, Any], int]]) -> None:
        """A few scoring runs, each ``minutes`` after the one before, each counted by the controller."""
        for args, minutes in runs[: self.batch]:
            self.clock.now += timedelta(minutes=minutes)
            self.act(self.call("evaluate", args))

    @rule(data=st.data())
    def any_call(self, data: st.DataObject) -> None:
        """Any operation whatever the state (refused transitions, no rollout to evaluate, ...)."""
        self.act(self.draw_call(data, tuple(ARGS), "any"))

    @rule(minutes=st.integers(min_value=1, max_value=45))
    def tick(self, minutes: int) -> None:
        self.clock.now += timedelta(minutes=minutes)

    # -- rules: retries and a second writer ----------------------------------------------------------
    @precondition(lambda self: self.acted)
    @rule(data=st.data(), via_b=st.booleans(), stale=st.booleans())
    def retry(self, data: st.DataObject, via_b: bool, stale: bool) -> None:
        """A call that wrote, made again with its token (by either writer, perhaps with the
        ``expected_revision`` it was first made at): it acts once."""
        call = data.draw(st.sampled_from(self.acted), label="retried call")
        before = self.snapshot()
        self.act(call, via=self.b if via_b else self.a, expected_revision=0 if stale and call.op in REVISIONED else None)
        after = self.snapshot()
        assert (after.model.revision, len(after.events)) == (before.model.revision, len(before.events)), f"{call} acted twice"

    @rule(data=st.data(), how=st.sampled_from(["stale read", "overtaken", "overtaken by its own retry"]))
    def second_writer(self, data: st.DataObject, how: str) -> None:
        """Two writers on one model (``a``, and ``b`` on the same store)."""
        if how == "stale read":
            self.stale_writer(data)
        else:
            self.overtaken_writer(data, same_token=how == "overtaken by its own retry")

    def stale_writer(self, data: st.DataObject) -> None:
        """``b`` reads the head, ``a`` makes a call, ``b`` writes with the revision it read: Conflict
        if ``a`` wrote (and nothing is written), then ``b`` re-reads and retries correctly."""
        read = self.b.get_model(self.name).revision
        self.act(self.draw_call(data, tuple(ARGS), "first writer"))
        late = self.draw_call(data, REVISIONED, "stale writer")
        if self.act(late, via=self.b, expected_revision=read) == "Conflict":
            self.act(late, via=self.b, expected_revision=self.b.get_model(self.name).revision)

    def overtaken_writer(self, data: st.DataObject, same_token: bool) -> None:
        """``b`` reads and decides; before its conditional write lands, ``a`` makes a call (another
        one, or the same one with the same token: a client's retry racing its first attempt).
        ``b``'s write is then a Conflict (register, evaluate and feedback re-read and retry), or
        a replay when ``a`` used its token; a Conflict is retried correctly."""
        late = self.draw_call(data, tuple(ARGS), "overtaken writer")
        first = late if same_token else self.draw_call(data, tuple(ARGS), "first writer")
        overtaken: list[int] = []

        def first_writes() -> None:
            revision = self.expected.revision
            self.act(first)
            overtaken.append(self.expected.revision - revision)

        self.overtaking.overtake(first_writes)
        try:
            actual = late.make(self.b, self.name, self.expected.kind)
        finally:
            self.overtaking.overtake(None)
        self._snapshot = None
        if overtaken and overtaken[0] and (same_token or late.op not in RETRYING):
            # its write lands on a moved head: a replay if the first writer used its token, else Conflict
            replay = {"register": f"replay v{self.expected.tokens.get(late.token)}", "evaluate": "already_counted",
                      "feedback": "already_counted"}.get(late.op, "ok")
            predicted = replay if same_token else "Conflict"
            assert actual == predicted, f"{late} overtaken by {first}: answered {actual!r}, expected {predicted!r}"
        else:
            self.check(late, actual)
        if actual == "Conflict":
            self.act(late, via=self.b)

    # -- invariants --------------------------------------------------------------------------------
    @invariant()
    def one_champion_once_there_is_one(self) -> None:
        s = self.snapshot()
        if s is None:
            return
        m = s.model
        champions = [v for v, stage in m.stages.items() if stage == "champion"]
        if m.champion_history:
            assert champions == [m.champion], (m.aliases, m.stages)
            assert m.champion_history[-1] == m.champion
        else:
            assert champions == [] and m.champion is None

    @invariant()
    def rollout_weight_is_its_plan_step(self) -> None:
        s = self.snapshot()
        if s is None:
            return
        m, r = s.model, s.model.rollout
        challengers = [v for v, stage in m.stages.items() if stage == "challenger"]
        if r is None:
            assert "challenger" not in m.aliases and challengers == []
            return
        assert 0 <= r.weight <= 100
        if r.shadow:
            assert r.step == -1 and r.weight == 0
        else:
            assert 0 <= r.step < len(r.plan) and r.weight == r.plan[r.step] < 100
        assert m.aliases["challenger"] == r.challenger and challengers == [r.challenger]
        assert r.baseline == m.champion is not None

    @invariant()
    def retired_rolled_back_and_rejected_never_serve(self) -> None:
        s = self.snapshot()
        if s is None:
            return
        m = s.model
        serving = {m.aliases.get("champion"), m.aliases.get("challenger")}
        assert not serving & {v for v, stage in m.stages.items() if stage in ("retired", "rolled_back")}, m.stages
        rejected = {v.version for v in s.versions if v.status == "rejected"}
        assert not rejected & set(m.aliases.values()) and not rejected & set(m.stages), (rejected, m.aliases, m.stages)

    @invariant()
    def audit_is_gap_free_and_replays_to_the_head(self) -> None:
        s = self.snapshot()
        if s is None:
            return
        events = s.events
        assert [e.revision for e in events] == list(range(s.model.revision + 1))
        assert [e.event_id for e in events[: len(self.seen)]] == [e.event_id for e in self.seen], "the audit changed"
        assert events[0].action == "model.create"
        for before, after in zip(events, events[1:]):
            assert after.before["serving"] == before.after["serving"], (before.action, after.action)
        assert events[-1].after["serving"] == s.model.serving()

    @invariant()
    def serving_at_agrees_with_the_audit(self) -> None:
        s = self.snapshot()
        if s is None:
            return
        events, new = s.events, s.events[len(self.seen):]
        if not self.seen:
            assert self.a.serving_at(self.name, events[0].at - timedelta(microseconds=1))["champion"] is None
        if new:  # earlier times answer as before unless a new event is stamped at or before them
            since = min(e.at for e in new)
            for t in sorted({e.at for e in events if e.at >= since}):
                last = [e for e in events if e.at <= t][-1]
                at = self.a.serving_at(self.name, t)
                assert at == {**last.after["serving"], "since": last.at.isoformat(), "event": last.action}, (t, at)
        self.seen = events

    @invariant()
    def store_matches_the_rules(self) -> None:
        s = self.snapshot()
        e = self.expected
        if s is None:
            return
        m = s.model
        assert (m.kind, m.revision, m.latest_version) == (e.kind, e.revision, e.latest)
        assert (m.stages, m.aliases, list(m.champion_history)) == (e.stages, e.aliases, e.history)
        assert {v.version: v.status for v in s.versions} == {
            n: "rejected" if n in e.rejected else "registered" for n in range(1, e.latest + 1)}
        assert {v: (t.approved, t.rejected, t.scored, t.score_sum) for v, t in m.feedback.items()} == e.tallies
        r, x = m.rollout, e.rollout
        assert (r is None) == (x is None)
        if r is not None:
            assert (r.challenger, r.baseline, r.plan, r.step, r.weight, r.shadow, r.paused) == (
                x.challenger, x.baseline, x.plan, x.step, x.weight, x.shadow, x.paused)
            assert (r.step_runs, r.step_started_at, r.bake_runs, r.bake_minutes, list(r.evaluated_runs)) == (
                x.runs, x.started, x.bake_runs, x.bake_minutes, x.tokens)


def test_registry_rules_hold_on_the_in_memory_store():
    """300 random histories of 30 steps on ``InMemoryRegistryStore``."""
    run_state_machine_as_test(RegistryMachine, settings=IN_MEMORY)


def test_registry_rules_hold_on_dynamodb(dev):
    """15 random histories of 5 steps on ``DynamoDBRegistryStore`` (a registry table of its own on
    the embedded AWS, so its models are not listed by other test files), each on a fresh model name
    and starting with a rollout in progress where it can (the embedded DynamoDB answers in tens of
    milliseconds, so histories are short)."""
    client, table = dev.clients.client("dynamodb"), own_registry_table(dev, "properties")

    class OnDynamoDB(RegistryMachine):
        batch = 2

        def make_store(self) -> Any:
            return DynamoDBRegistryStore(client, table)

        @initialize(kind=st.sampled_from(["model", "agent"]), gates=st.sampled_from(["pass", "pass", "none", "held", "fail"]),
                    plan=canaries)
        def first_version(self, kind: str, gates: str, plan: RolloutPlan) -> None:
            RegistryMachine.first_version(self, kind, gates)
            self.act(self.call("register", {"gates": "pass", "plan": plan}))

    run_state_machine_as_test(OnDynamoDB, settings=ON_DYNAMODB)


# ---------------------------------------------------------- counter-examples the machine found
def _two_writers() -> tuple[Registry, Registry, OvertakingStore]:
    """``a`` on an in-memory store, and ``b`` on the same store behind an ``OvertakingStore``."""
    store, clock = InMemoryRegistryStore(), Clock()
    overtaking = OvertakingStore(store)
    return Registry(store, clock=clock), Registry(overtaking, clock=clock), overtaking


def test_a_verdict_overtaken_by_its_own_retry_reports_already_counted():
    """Found by ``overtaken by its own retry`` (shrunk: an agent whose v1 was rejected, one verdict
    on v1 retried while its first attempt was in flight): the attempt overtaken by the retry wrote
    nothing but reported the outcome it had decided on its stale read (``no_rollout``). It reports
    ``already_counted``, and the verdict is counted once."""
    a, b, overtaking = _two_writers()
    Call("register", {"gates": "fail", "plan": None}, "t1").make(a, "agent-x", "agent")
    retried: list[str] = []
    overtaking.overtake(lambda: retried.append(a.feedback("agent-x", 1, approved=False, score=None, actor="judge",
                                                          token="t2").outcome))
    first = b.feedback("agent-x", 1, approved=False, score=None, actor="judge", token="t2")
    assert (retried, first.outcome) == (["no_rollout"], "already_counted")
    model = a.get_model("agent-x")
    assert (model.feedback[1].rejected, model.revision, len(a.history("agent-x"))) == (1, 2, 3)


@pytest.mark.parametrize(("observed", "decided", "action"), [("pass", "advanced", "rollout.advance"),
                                                         ("fail", "rolled_back", "rollout.rollback")])
def test_a_scoring_run_counted_by_two_controllers_at_once_acts_and_reports_once(observed, decided, action):
    """Found by ``overtaken by its own retry`` (shrunk: v1 champion, v2 at 10%, one passing scoring
    run counted by two controllers at once, i.e. with the same run token): both answered
    ``advanced``; with a failing run both answer ``rolled_back`` and the report step of each sends
    the rollback alert. The one overtaken answers ``already_counted``; one event."""
    a, b, overtaking = _two_writers()
    Call("register", {"gates": "pass", "plan": None}, "t1").make(a, "m-x", "model")
    Call("register", {"gates": "pass", "plan": RolloutPlan((10, 50, 100))}, "t2").make(a, "m-x", "model")
    run = OBSERVED["model"][observed]
    other: list[str] = []
    overtaking.overtake(lambda: other.append(a.evaluate_rollout("m-x", run, actor="ctl-1", run_token="run-7").outcome))
    overtaken = b.evaluate_rollout("m-x", run, actor="ctl-2", run_token="run-7")
    assert (other, overtaken.outcome) == ([decided], "already_counted")
    assert [e.action for e in a.history("m-x")][3:] == [action]
