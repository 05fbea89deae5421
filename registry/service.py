"""The registry's operations: what may change, when, and how it is recorded.

Rules enforced here (the store only writes atomically what this module decides):

* Versions are immutable and numbered 1, 2, ... per model by the registry. A version whose offline
  gates did not all pass is ``rejected`` and never serves.
* The first version of a model to pass its gates becomes ``champion`` directly. Later ones start a
  rollout as ``challenger`` at the plan's first step, or wait as ``candidate`` while another rollout
  is in progress.
* A rollout walks the plan (e.g. 10 -> 50 -> 100 percent). After each scoring run (or feedback, for
  agents) the controller evaluates the rollout's gates: any ``fail`` rolls back to the champion (the
  last known-good version); all ``pass`` plus a completed bake advances; otherwise it holds.
  Reaching 100 percent makes the challenger champion and retires the old one.
* Manual ``promote``, ``advance``, ``rollback``, ``pause``, ``resume``, aliases and feedback.
* Every change is one conditional write (on the model's ``revision``) carrying an audit event with
  actor, reason, evidence and before/after, and an idempotency token: a retried call acts once.
  Given ``expected_revision``, a stale caller gets ``Conflict``; it never overwrites a newer state.

The rollout transitions themselves (crown, start, next step, abort, the controller's decision) are
pure functions in ``stagewise.registry.transitions``; this module reads, decides with them, writes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Literal

from stagewise.platform.runtime.aws import utc_now
from stagewise.registry import transitions
from stagewise.registry.errors import AlreadyExists, Conflict, InvalidTransition, NotFound
from stagewise.registry.records import (
    AgentConfig, AuditEvent, FeedbackTally, Gate, GateResult, Kind, ModelRecord, VersionRecord,
)
from stagewise.registry.store import RegistryStore
from stagewise.registry.transitions import RolloutPlan

CONFLICT_RETRIES = 5
RESERVED_ALIASES = ("champion", "challenger")
Outcome = Literal["advanced", "completed", "held", "rolled_back", "no_rollout", "already_counted"]


@dataclass(frozen=True)
class Registration:
    """Result of ``Registry.register_version``.

    Attributes:
        version: the version record (new, or the one an earlier call with the same token made).
        created: False when the call was an idempotent replay and nothing was written.
        model: the model record after the call.
        stage: the new version's stage (champion, challenger, candidate, registered) or
            ``rejected``.
    """

    version: VersionRecord
    created: bool
    model: ModelRecord
    stage: str

    @property
    def champion(self) -> int | None:
        """The champion after the call."""
        return self.model.champion


@dataclass(frozen=True)
class Decision:
    """What the rollout controller decided after a scoring run or feedback."""

    outcome: Outcome
    model: ModelRecord
    results: list[GateResult] = field(default_factory=list)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "outcome": self.outcome,
            "reason": self.reason,
            "gates": [r.model_dump() for r in self.results],
            "serving": self.model.serving(),
        }


Mutation = Callable[[ModelRecord, datetime], tuple[dict[str, Any], str, str, dict[str, Any], int | None]]


class Registry:
    """Model and agent versions, aliases, staged rollout and audit, on an injected store.

    Args:
        store: where records live (``DynamoDBRegistryStore``; ``InMemoryRegistryStore`` in tests).
        clock: returns the current UTC time (injectable so bake times can be tested).
    """

    def __init__(self, store: RegistryStore, clock: Callable[[], datetime] = utc_now) -> None:
        self.store = store
        self.clock = clock

    # ------------------------------------------------------------------------------------ reads
    def get_model(self, name: str) -> ModelRecord:
        """The model record. Raises NotFound."""
        return self.store.get_model(name)

    def list_models(self) -> list[ModelRecord]:
        """Every model and agent, by name."""
        return self.store.list_models()

    def get_version(self, name: str, version: int) -> VersionRecord:
        """One version. Raises NotFound."""
        return self.store.get_version(name, version)

    def list_versions(self, name: str) -> list[VersionRecord]:
        """All versions of a model, oldest first. Raises NotFound for an unknown model."""
        self.store.get_model(name)
        return self.store.list_versions(name)

    def history(self, name: str) -> list[AuditEvent]:
        """The model's audit events, oldest first. Raises NotFound for an unknown model."""
        self.store.get_model(name)
        return self.store.list_events(name)

    def champion(self, name: str) -> VersionRecord | None:
        """The version aliased ``champion`` (None if the model has none). Raises NotFound."""
        number = self.store.get_model(name).champion
        return None if number is None else self.store.get_version(name, number)

    def serving_at(self, name: str, at: datetime) -> dict[str, Any]:
        """What was serving at ``at``: the ``after`` state of the last audit event at or before it.

        Returns:
            ``{"champion", "challenger", "weight", "shadow", "paused", "rollout_id", "step",
            "since", "event"}``; champion None if nothing served yet.

        Raises:
            NotFound: unknown model.
        """
        last = None
        for event in self.history(name):
            if event.at <= at:
                last = event
        if last is None or "serving" not in last.after:
            return {"champion": None, "challenger": None, "weight": 0.0, "shadow": False, "paused": False,
                    "rollout_id": None, "step": None, "since": None, "event": None}
        return {**last.after["serving"], "since": last.at.isoformat(), "event": last.action}

    # ---------------------------------------------------------------------------- registration
    def ensure_model(self, name: str, actor: str, kind: Kind = "model", description: str = "",
                     gates: tuple[Gate, ...] = ()) -> ModelRecord:
        """The model record, created (with an audit event) if it does not exist yet.

        Raises:
            InvalidTransition: the name exists with another kind (a model is not an agent).
        """
        try:
            model = self.store.get_model(name)
        except NotFound:
            now = self.clock()
            record = ModelRecord(name=name, kind=kind, description=description, created_at=now, updated_at=now, gates=gates)
            event = AuditEvent(model=name, event_id=uuid.uuid4().hex, at=now, actor=actor, action="model.create",
                               after={"kind": kind, "serving": record.serving()})
            try:
                return self.store.create_model(record, event)
            except AlreadyExists:
                model = self.store.get_model(name)
        if model.kind != kind:
            raise InvalidTransition(f"{name!r} is registered as a {model.kind}, not a {kind}")
        return model

    def register_version(
        self,
        name: str,
        *,
        artifact_uri: str,
        artifact_sha256: str,
        metrics: dict[str, float],
        gates: list[GateResult],
        lineage: dict[str, Any],
        actor: str,
        token: str,
        baseline_uri: str | None = None,
        kind: Kind = "model",
        description: str = "",
        rollout: RolloutPlan | None = None,
        online_gates: tuple[Gate, ...] | None = None,
        agent: AgentConfig | None = None,
        note: str = "",
        evidence: dict[str, Any] | None = None,
    ) -> Registration:
        """Register a new immutable version and decide its stage in the same write.

        Stage: ``rejected`` if an offline gate failed, or was inconclusive with
        ``on_inconclusive="reject"``; else ``registered`` (held: not rolled out, promote it by
        hand) if a gate was inconclusive with ``on_inconclusive="hold"``; else ``champion`` if the
        model has none; else ``candidate`` if a rollout is in progress; else ``challenger`` at the
        first step of ``rollout`` (or champion at once if that step is 100); else ``registered``.

        Args:
            name: model name.
            artifact_uri, artifact_sha256: where the artifact is and its content hash.
            metrics: holdout metrics.
            gates: offline gate results (an empty list counts as passed: nothing was required).
            lineage: data hash/URI, validation result, spec digest, hyperparameters, versions, run id.
            actor: who registers.
            token: idempotency token: a retried call with the same token returns the first result.
            rollout: start a rollout for a passing version (None: leave it ``registered``).
            online_gates: replace the model's rollout gates (e.g. from the current model spec).
            agent: the agent configuration, for versions of an agent.
            note: prefixed to the audit event's reason (e.g. "promoted from dev v3, approved by ...").
            evidence: added to the audit event's evidence (e.g. approver, source environment).

        Raises:
            Conflict: the model kept changing under us for ``CONFLICT_RETRIES`` attempts.
            InvalidTransition: the name exists with another kind.
        """
        self.ensure_model(name, actor, kind, description, online_gates or ())
        passed = all(g.outcome == "pass" or (g.outcome == "inconclusive" and g.on_inconclusive == "hold") for g in gates)
        held = [g for g in gates if g.outcome == "inconclusive"]
        for _ in range(CONFLICT_RETRIES):
            model = self.store.get_model(name)
            if self.store.has_token(name, token):
                return self._replay_registration(name, token)
            number = model.latest_version + 1
            now = self.clock()
            version = VersionRecord(
                model=name, version=number, created_at=now, created_by=actor,
                status="registered" if passed else "rejected",
                artifact_uri=artifact_uri, artifact_sha256=artifact_sha256, metrics=metrics,
                gates=tuple(gates), lineage=lineage, baseline_uri=baseline_uri, description=description, agent=agent,
            )
            base = model.model_copy(update={"latest_version": number, **({"gates": online_gates} if online_gates is not None else {})})
            if not passed:
                head, stage, reason = base, "rejected", "offline gate failed: version rejected, what serves is unchanged"
            elif held:
                head = base.model_copy(update={"stages": {**base.stages, number: "registered"}})
                stage = "registered"
                reason = ("held, not rolled out: " + "; ".join(f"{g.metric} inconclusive on {g.samples} samples (needs "
                                                               f"{g.min_samples}){': ' + g.note if g.note else ''}" for g in held)
                          + f"; what serves is unchanged. Promote it by hand to roll it out: stagewise registry promote {name} {number}")
            elif model.champion is None:
                head, stage, reason = transitions.crown(base, number), "champion", "first version to pass its gates becomes champion"
            elif model.rollout is not None:
                head = base.model_copy(update={"stages": {**base.stages, number: "candidate"}})
                stage, reason = "candidate", f"rollout of v{model.rollout.challenger} in progress: waits as candidate"
            elif rollout is not None:
                head = transitions.start_rollout(base, number, rollout, actor, now)
                stage = "champion" if head.champion == number else "challenger"
                reason = f"offline gates passed: rollout started at {transitions.step_label(head)}"
            else:
                head = base.model_copy(update={"stages": {**base.stages, number: "registered"}})
                stage, reason = "registered", "offline gates passed"
            head = head.model_copy(update={"revision": model.revision + 1, "updated_at": now})
            event = AuditEvent(
                model=name, event_id=uuid.uuid4().hex, revision=head.revision, at=now, actor=actor,
                action="version.register" if passed else "version.reject", version=number,
                reason=f"{note}; {reason}" if note else reason,
                evidence={"gates": [g.model_dump() for g in gates], "metrics": metrics, "stage": stage, **(evidence or {})},
                before={"serving": model.serving()}, after={"serving": head.serving(), "stage": stage},
            )
            try:
                written, created = self.store.commit_version(version, head, model.revision, event, token)
            except (Conflict, AlreadyExists):
                continue
            if not created:
                return self._replay_registration(name, token)
            return Registration(written, True, head, stage)
        raise Conflict(f"model {name!r} kept changing; gave up after {CONFLICT_RETRIES} attempts")

    def _replay_registration(self, name: str, token: str) -> Registration:
        number = self.store.token_result(name, token)
        version = self.store.get_version(name, number)
        model = self.store.get_model(name)
        stage = "rejected" if version.status == "rejected" else model.stages.get(number, "registered")
        return Registration(version, False, model, stage)

    # ------------------------------------------------------------------------ manual operations
    def promote(self, name: str, version: int, plan: RolloutPlan, *, actor: str, token: str, reason: str = "",
                expected_revision: int | None = None) -> ModelRecord:
        """Start a rollout of ``version`` (or crown it, if the model has no champion).

        Raises:
            NotFound: no such model or version.
            InvalidTransition: the version is rejected, rolled back, already champion or
                challenger, or another rollout is in progress.
            Conflict: ``expected_revision`` is stale.
        """
        record = self.store.get_version(name, version)

        def mutate(m: ModelRecord, now: datetime):
            stage = m.stages.get(version)
            if record.status == "rejected":
                raise InvalidTransition(f"v{version} was rejected by its offline gates and can never serve")
            if stage == "rolled_back":
                raise InvalidTransition(f"v{version} was rolled back; register a new version instead")
            if m.champion == version:
                raise InvalidTransition(f"v{version} is already champion")
            if m.rollout is not None:
                raise InvalidTransition(
                    f"a rollout of v{m.rollout.challenger} is in progress; advance, roll back or wait for it first")
            if m.champion is None:
                crowned = transitions.crown(m, version)
                return transitions.fields(crowned), "version.promote", reason or "no champion yet: crowned directly", {}, version
            head = transitions.start_rollout(m, version, plan, actor, now)
            why = reason or f"manual promote at {transitions.step_label(head)}"
            return transitions.fields(head), "rollout.start", why, {"plan": list(plan.steps)}, version

        return self._change(name, actor, token, expected_revision, mutate)

    def advance(self, name: str, *, actor: str, token: str, reason: str = "", expected_revision: int | None = None) -> ModelRecord:
        """Move the challenger to the next step now (skipping the bake); at 100 it becomes champion.

        Raises:
            InvalidTransition: no rollout in progress (e.g. it was rolled back), or it is paused.
            Conflict: ``expected_revision`` is stale.
        """

        def mutate(m: ModelRecord, now: datetime):
            r = transitions.require_rollout(m, "advance")
            if r.paused:
                raise InvalidTransition(f"the rollout of v{r.challenger} is paused; resume it first")
            head = transitions.next_step(m, now)
            action = "rollout.complete" if head.rollout is None else "rollout.advance"
            return transitions.fields(head), action, reason or "manual advance", {}, r.challenger

        return self._change(name, actor, token, expected_revision, mutate)

    def rollback(self, name: str, *, actor: str, token: str, reason: str, expected_revision: int | None = None) -> ModelRecord:
        """Roll back: abort the rollout in progress (all traffic to the champion), or, with none in
        progress, replace the champion by the last known-good champion before it.

        Raises:
            InvalidTransition: nothing to roll back to.
            Conflict: ``expected_revision`` is stale.
        """

        def mutate(m: ModelRecord, now: datetime):
            if m.rollout is not None:
                return transitions.fields(transitions.abort(m)), "rollout.rollback", reason, {}, m.rollout.challenger
            current = m.champion
            previous = next((v for v in reversed(m.champion_history) if v != current and m.stages.get(v) == "retired"), None)
            if current is None or previous is None:
                raise InvalidTransition(f"{name!r} has no rollout in progress and no earlier known-good champion to roll back to")
            stages = {**m.stages, current: "rolled_back", previous: "champion"}
            aliases = {**m.aliases, "champion": previous}
            head = m.model_copy(update={"stages": stages, "aliases": aliases, "champion_history": m.champion_history + (previous,)})
            return transitions.fields(head), "champion.rollback", reason, {"from": current, "to": previous}, current

        return self._change(name, actor, token, expected_revision, mutate)

    def pause(self, name: str, *, actor: str, token: str, reason: str = "", expected_revision: int | None = None) -> ModelRecord:
        """Pause the rollout in progress: the controller holds, traffic stays where it is.

        Raises:
            InvalidTransition: no rollout in progress, or already paused.
        """

        def mutate(m: ModelRecord, now: datetime):
            r = transitions.require_rollout(m, "pause")
            if r.paused:
                raise InvalidTransition(f"the rollout of v{r.challenger} is already paused")
            return {"rollout": r.model_copy(update={"paused": True})}, "rollout.pause", reason or "manual pause", {}, r.challenger

        return self._change(name, actor, token, expected_revision, mutate)

    def resume(self, name: str, *, actor: str, token: str, reason: str = "", expected_revision: int | None = None) -> ModelRecord:
        """Resume a paused rollout.

        Raises:
            InvalidTransition: no rollout in progress, or it is not paused.
        """

        def mutate(m: ModelRecord, now: datetime):
            r = transitions.require_rollout(m, "resume")
            if not r.paused:
                raise InvalidTransition(f"the rollout of v{r.challenger} is not paused")
            return {"rollout": r.model_copy(update={"paused": False})}, "rollout.resume", reason or "manual resume", {}, r.challenger

        return self._change(name, actor, token, expected_revision, mutate)

    def set_alias(self, name: str, alias: str, version: int | None, *, actor: str, token: str,
                  expected_revision: int | None = None) -> ModelRecord:
        """Point a user alias at ``version`` (None deletes it). ``champion``/``challenger`` are
        managed by rollouts and cannot be set by hand.

        Raises:
            InvalidTransition: a reserved alias, or a rejected version.
            NotFound: no such version.
        """
        if alias in RESERVED_ALIASES:
            raise InvalidTransition(f"{alias!r} is managed by rollouts; use promote, advance or rollback")
        if version is not None and self.store.get_version(name, version).status == "rejected":
            raise InvalidTransition(f"v{version} was rejected; an alias cannot point at it")

        def mutate(m: ModelRecord, now: datetime):
            aliases = dict(m.aliases)
            if version is None:
                if aliases.pop(alias, None) is None:
                    raise InvalidTransition(f"{name!r} has no alias {alias!r}")
            else:
                aliases[alias] = version
            return {"aliases": aliases}, "alias.set" if version is not None else "alias.delete", f"{alias} -> {version}", {}, version

        return self._change(name, actor, token, expected_revision, mutate)

    def note(self, name: str, action: str, *, reason: str, evidence: dict[str, Any], actor: str, token: str,
             version: int | None = None) -> ModelRecord:
        """Append an audit event that changes nothing served (e.g. ``version.promoted``: this
        version was copied to another environment). Idempotent by ``token``.

        Raises:
            NotFound: unknown model.
        """

        def mutate(m: ModelRecord, now: datetime):
            return {}, action, reason, evidence, version

        for _ in range(CONFLICT_RETRIES):
            try:
                return self._change(name, actor, token, None, mutate)
            except Conflict:
                continue
        raise Conflict(f"{name!r} kept changing; audit note not written after {CONFLICT_RETRIES} attempts: retry")

    # ------------------------------------------------------------------------- the controller
    def evaluate_rollout(self, name: str, observations: dict[str, tuple[float | None, int]], *, actor: str,
                         run_token: str, extra_results: tuple[GateResult, ...] = (), hold_reason: str | None = None) -> Decision:
        """Count a scoring run against the rollout in progress and act on its gates.

        Any gate ``fail`` rolls back; all ``pass`` with the bake complete (``bake_runs`` runs and
        ``bake_minutes`` minutes in the step, this run included) advances; otherwise holds. A run
        already counted (same ``run_token``) changes nothing.

        Args:
            observations: metric -> (value, samples) seen for the challenger in this run.
            run_token: the scoring run's id.
            extra_results: gate results decided outside the rollout's gates (e.g. data drift
                counted as a failed gate); a ``fail`` among them rolls back.
            hold_reason: when set (e.g. data drift with ``on_rollout: hold``), the rollout holds
                and the run does not count toward the bake, unless a gate fails.
        """
        model = self.store.get_model(name)
        r = model.rollout
        if r is None:
            return Decision("no_rollout", model, reason="no rollout in progress")
        if run_token in r.evaluated_runs:
            return Decision("already_counted", model, reason=f"run {run_token} was already counted")
        box: dict[str, Any] = {}

        def mutate(m: ModelRecord, now: datetime):
            decision = transitions.decide(m, now, observations, run_token, extra_results, hold_reason)
            box.update(outcome=decision.outcome, results=decision.results, reason=decision.reason)
            return decision.change()

        try:
            head = self._change(name, actor, f"eval-{run_token}", model.revision, mutate, decided=box)
        except Conflict:
            return self.evaluate_rollout(name, observations, actor=actor, run_token=run_token,
                                         extra_results=extra_results, hold_reason=hold_reason)
        return Decision(box.get("outcome", "already_counted"), head, box.get("results", []), box.get("reason", ""))

    def feedback(self, name: str, version: int, *, approved: bool, score: float | None, actor: str, token: str,
                 comment: str = "") -> Decision:
        """Record a human or judge verdict on ``version``; if it is the challenger of a rollout,
        its approval rate and mean score feed the rollout's gates at once (see ``evaluate_rollout``).

        Raises:
            NotFound: no such model or version.
            InvalidTransition: the score is outside [0, 1].
        """
        if score is not None and not 0.0 <= score <= 1.0:
            raise InvalidTransition(f"a feedback score is in [0, 1], got {score}")
        self.store.get_version(name, version)
        box: dict[str, Any] = {}

        def mutate(m: ModelRecord, now: datetime):
            tally = m.feedback.get(version, FeedbackTally())
            tally = tally.model_copy(update={
                "approved": tally.approved + int(approved), "rejected": tally.rejected + int(not approved),
                "scored": tally.scored + int(score is not None), "score_sum": tally.score_sum + (score or 0.0),
            })
            m2 = m.model_copy(update={"feedback": {**m.feedback, version: tally}})
            evidence = {"verdict": "approved" if approved else "rejected", "score": score, "comment": comment,
                        "approval_rate": tally.approval_rate, "mean_score": tally.mean_score, "verdicts": tally.verdicts}
            if m.rollout is None or m.rollout.challenger != version:
                box.update(outcome="no_rollout", reason="feedback recorded; the version is not rolling out")
                return {"feedback": m2.feedback}, "feedback.record", "feedback recorded", evidence, version
            observations = {"approval_rate": (tally.approval_rate, tally.verdicts), "mean_score": (tally.mean_score, tally.scored)}
            decision = transitions.decide(m2, now, observations, token)
            box.update(outcome=decision.outcome, results=decision.results, reason=decision.reason)
            return ({**decision.fields, "feedback": m2.feedback}, decision.action, decision.reason,
                    {**decision.evidence, "feedback": evidence}, decision.version)

        for _ in range(CONFLICT_RETRIES):
            try:
                head = self._change(name, actor, token, None, mutate, decided=box)
            except Conflict:
                continue
            return Decision(box.get("outcome", "already_counted"), head, box.get("results", []), box.get("reason", ""))
        raise Conflict(f"{name!r} kept changing; feedback not recorded after {CONFLICT_RETRIES} attempts: retry")

    # ---------------------------------------------------------------------------------- write
    def _change(self, name: str, actor: str, token: str, expected_revision: int | None, mutate: Mutation,
                decided: dict[str, Any] | None = None) -> ModelRecord:
        """Read, decide with ``mutate``, write conditionally with ``token``. A replay (the token
        acted already, perhaps concurrently with this call) writes nothing and empties ``decided``,
        where ``mutate`` keeps what it decided, so the caller reports nothing this call did not do."""
        model = self.store.get_model(name)
        if self.store.has_token(name, token):
            if decided is not None:
                decided.clear()  # e.g. left by an attempt that met a Conflict before the same call wrote
            return model  # a retried call: it acted already
        if expected_revision is not None and model.revision != expected_revision:
            raise Conflict(f"{name!r} is at revision {model.revision}, not {expected_revision}; re-read and retry")
        now = self.clock()
        fields, action, reason, evidence, version = mutate(model, now)
        head = model.model_copy(update={**fields, "revision": model.revision + 1, "updated_at": now})
        event = AuditEvent(
            model=name, event_id=uuid.uuid4().hex, revision=head.revision, at=now, actor=actor, action=action,
            reason=reason, version=version,
            evidence=evidence, before={"serving": model.serving(), "stages": transitions.stages(model)},
            after={"serving": head.serving(), "stages": transitions.stages(head)},
        )
        written, created = self.store.update_model(head, model.revision, event, token)
        if not created and decided is not None:
            decided.clear()  # the same call wrote first, between our read and our write
        return written

