"""Rollout transitions as pure functions: a model head (and the facts of the moment) in, the next
head, or the change to write, out.

``stagewise.registry.service.Registry`` reads the model head, asks one of these functions what
follows, and writes the answer in one conditional store write together with its audit event.
Nothing here touches a store, reads the clock or draws a random id: the caller passes ``now`` and a
new rollout's id. So every rule can be tested on plain records, and the same input always gives
the same output.

The rules:

* ``crown``: a version becomes champion; the old champion retires (it stays known-good, so a
  rollback can return to it); the rollout and the ``challenger`` alias end.
* ``start_rollout``: a passing version becomes ``challenger`` at the plan's first step, or in
  shadow mode; a plan whose first step is 100 percent crowns it at once.
* ``next_step``: the challenger moves to the next step of the plan; reaching 100 percent crowns it.
* ``abort``: the rollout ends, the challenger is ``rolled_back`` and all traffic goes to the
  champion.
* ``decide``: the controller's rule for one scoring run (or feedback): any gate ``fail`` rolls
  back; paused, held for a reason, inconclusive gates or an unfinished bake hold; otherwise the
  challenger advances.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Sequence

from stagewise.registry import gates as gatelib
from stagewise.registry.errors import InvalidTransition
from stagewise.registry.records import Gate, GateResult, ModelRecord, RolloutState
from stagewise.stacks.settings import EnvironmentSettings

KEEP_RUN_TOKENS = 50
RunOutcome = Literal["advanced", "completed", "held", "rolled_back"]


@dataclass(frozen=True)
class RolloutPlan:
    """How a new challenger rolls out: traffic steps (percent, ending at 100), bake per step
    (minutes and scoring runs), shadow mode, and the online gates (None: the model's own)."""

    steps: tuple[int, ...]
    bake_minutes: float = 0.0
    bake_runs: int = 1
    shadow: bool = False
    gates: tuple[Gate, ...] | None = None

    def __post_init__(self) -> None:
        s = list(self.steps)
        if not s or s[-1] != 100 or any(b <= a for a, b in zip(s, s[1:])) or s[0] <= 0:
            raise ValueError(f"a rollout plan strictly increases from above 0 and ends at 100, got {s}")

    @classmethod
    def for_environment(cls, settings: EnvironmentSettings, steps: Sequence[int] | None = None, bake_minutes: float | None = None,
                        bake_runs: int | None = None, shadow: bool = False, gates: tuple[Gate, ...] | None = None) -> "RolloutPlan":
        """The plan in an environment: the given steps and bake (a model spec's per-environment
        override, or a command's options) where given, else the stack's ``rolloutPlan`` and
        ``bake`` (``Pulumi.<env>.yaml``). The one place a plan is resolved.

        Raises:
            ValueError: the steps do not strictly increase from above 0 to 100.
        """
        return cls(
            steps=tuple(steps) if steps is not None else tuple(settings.rollout_plan),
            bake_minutes=settings.bake.min_minutes if bake_minutes is None else bake_minutes,
            bake_runs=settings.bake.min_scoring_runs if bake_runs is None else bake_runs,
            shadow=shadow, gates=gates,
        )


@dataclass(frozen=True)
class RunDecision:
    """What ``decide`` ruled for one run, and the change that records it.

    Attributes:
        outcome: ``rolled_back``, ``advanced``, ``completed`` (the challenger is champion now) or
            ``held``.
        reason: why, in one line; also the audit event's reason.
        results: every gate evaluated: the rollout's gates, then the extra results.
        fields: the model fields to replace: ``rollout`` alone when holding, else those of
            ``fields(next head)``.
        action: the audit event's action: ``rollout.rollback``, ``rollout.advance``,
            ``rollout.complete`` or ``rollout.hold``.
        evidence: the audit event's evidence: the gate results, runs and minutes in the step
            against the bake, and the run's token.
        version: the challenger the decision is about.
    """

    outcome: RunOutcome
    reason: str
    results: list[GateResult]
    fields: dict[str, Any]
    action: str
    evidence: dict[str, Any]
    version: int

    def change(self) -> tuple[dict[str, Any], str, str, dict[str, Any], int]:
        """``(fields, action, reason, evidence, version)``, the form ``Registry``'s changes take."""
        return self.fields, self.action, self.reason, self.evidence, self.version


def fields(head: ModelRecord) -> dict[str, Any]:
    """The part of a head that rollout transitions change.

    Args:
        head: the model record after a transition.

    Returns:
        ``{"aliases", "stages", "champion_history", "rollout"}`` taken from ``head``: the update
        to apply to the stored head (the caller adds ``revision`` and ``updated_at``).
    """
    return {k: getattr(head, k) for k in ("aliases", "stages", "champion_history", "rollout")}


def stages(m: ModelRecord) -> dict[str, str]:
    """The stage of every version, JSON-ready, as audit events record it before and after a change.

    Returns:
        version number (as a string) -> stage, in version order.
    """
    return {str(k): v for k, v in sorted(m.stages.items())}


def step_label(m: ModelRecord) -> str:
    """Where the rollout stands, for reasons and messages.

    Returns:
        ``"shadow (0%)"`` in shadow mode, the challenger's weight (``"10%"``) during a rollout,
        ``"100% (champion)"`` when no rollout is in progress (it completed, or the version was
        crowned at once).
    """
    r = m.rollout
    if r is None:
        return "100% (champion)"
    return "shadow (0%)" if r.shadow else f"{r.weight:g}%"


def require_rollout(m: ModelRecord, what: str) -> RolloutState:
    """The rollout in progress; a manual step (``what``: advance, pause, resume) needs one.

    Raises:
        InvalidTransition: no rollout is in progress (none started, or it completed or was rolled
            back).
    """
    if m.rollout is None:
        raise InvalidTransition(f"cannot {what} {m.name!r}: no rollout in progress")
    return m.rollout


def crown(m: ModelRecord, version: int) -> ModelRecord:
    """``version`` becomes champion; the old champion retires (known-good, can be rolled back to).

    Args:
        m: the model head.
        version: the new champion.

    Returns:
        The head with ``version`` aliased and staged ``champion`` and appended to the champion
        history, the previous champion staged ``retired``, and no rollout or ``challenger`` alias.
    """
    staged = dict(m.stages)
    if m.champion is not None:
        staged[m.champion] = "retired"
    staged[version] = "champion"
    aliases = {k: v for k, v in m.aliases.items() if k != "challenger"}
    aliases["champion"] = version
    return m.model_copy(update={"stages": staged, "aliases": aliases, "rollout": None,
                                "champion_history": m.champion_history + (version,)})


def make_rollout_id(m: ModelRecord, version: int) -> str:
    """The id of a rollout of ``version`` started from head ``m``: 32 hex characters of
    sha256(model, version, the head's revision). It is part of the routing hash, so which keys a
    challenger serves is repeatable for the same history (a re-run, an audit), and differs for
    every rollout (each starts at its own revision)."""
    return hashlib.sha256(f"{m.name}|{version}|{m.revision}".encode()).hexdigest()[:32]


def start_rollout(m: ModelRecord, version: int, plan: RolloutPlan, actor: str, now: datetime,
                  rollout_id: str | None = None) -> ModelRecord:
    """``version`` starts rolling out against the current champion.

    A plan that is not in shadow mode and whose first step is 100 percent crowns ``version`` at
    once (see ``crown``). Otherwise ``version`` becomes ``challenger`` at the plan's first step,
    or at weight 0 in shadow mode (step -1), held to ``plan.gates`` or, if None, the model's gates.

    Args:
        m: the model head (no rollout in progress).
        version: the version to roll out.
        plan: steps, bake, shadow mode and gates.
        actor: who starts it; ``now``: when (the first step's start, for the bake).
        rollout_id: the new rollout's id (part of the routing hash: fixed for its whole life;
            default ``make_rollout_id(m, version)``).

    Returns:
        The head with the rollout in progress, or with ``version`` crowned.
    """
    if not plan.shadow and plan.steps[0] >= 100:
        return crown(m, version)
    state = RolloutState(
        id=rollout_id or make_rollout_id(m, version), challenger=version, baseline=m.champion, plan=plan.steps,
        step=-1 if plan.shadow else 0, weight=0.0 if plan.shadow else float(plan.steps[0]), shadow=plan.shadow,
        started_at=now, started_by=actor, step_started_at=now, bake_minutes=plan.bake_minutes, bake_runs=plan.bake_runs,
        gates=plan.gates if plan.gates is not None else m.gates,
    )
    return m.model_copy(update={"rollout": state, "aliases": {**m.aliases, "challenger": version},
                                "stages": {**m.stages, version: "challenger"}})


def next_step(m: ModelRecord, now: datetime) -> ModelRecord:
    """The challenger moves to the next step of the plan (out of shadow mode, if it was in it).

    Args:
        m: the model head; a rollout must be in progress.
        now: when the new step starts (its bake counts from here, with no runs yet).

    Returns:
        The head at the next step's weight, or with the challenger crowned when that step is 100
        percent or the plan has no further step.
    """
    r = m.rollout
    assert r is not None
    step = r.step + 1
    if step >= len(r.plan) or r.plan[step] >= 100:
        return crown(m, r.challenger)
    state = r.model_copy(update={"step": step, "weight": float(r.plan[step]), "shadow": False,
                                 "step_started_at": now, "step_runs": 0})
    return m.model_copy(update={"rollout": state})


def abort(m: ModelRecord) -> ModelRecord:
    """The rollout in progress ends and its challenger is rolled back; the champion keeps serving.

    Args:
        m: the model head; a rollout must be in progress.

    Returns:
        The head with no rollout, no ``challenger`` alias, and the challenger staged ``rolled_back``
        (it can never be promoted again).
    """
    r = m.rollout
    assert r is not None
    aliases = {k: v for k, v in m.aliases.items() if k != "challenger"}
    return m.model_copy(update={"rollout": None, "aliases": aliases, "stages": {**m.stages, r.challenger: "rolled_back"}})


def decide(m: ModelRecord, now: datetime, observations: dict[str, tuple[float | None, int]], run_token: str,
           extra_results: tuple[GateResult, ...] = (), hold_reason: str | None = None) -> RunDecision:
    """The controller's rule for one run: fail -> roll back; pass + baked -> advance; else hold
    (paused, held for a reason such as data drift, inconclusive gates, or baking).

    In order: any ``fail`` among the results rolls back (``abort``); a paused rollout, a
    ``hold_reason``, an inconclusive gate, or a step that has not yet run ``bake_runs`` runs and
    ``bake_minutes`` minutes holds; otherwise the challenger advances (``next_step``), which
    completes the rollout at 100 percent. The run counts toward the step's bake unless the rollout
    is paused or held for a reason, and its token joins the last ``KEEP_RUN_TOKENS`` counted runs
    (a roll back discards both with the rollout).

    Args:
        m: the model head.
        now: when the run is counted (for the bake minutes).
        observations: metric -> (value, samples) seen for the challenger in this run.
        run_token: the run's id.
        extra_results: gate results decided elsewhere (e.g. data drift); a ``fail`` rolls back.
        hold_reason: hold (and do not count the run toward the bake) unless a gate fails.

    Returns:
        The outcome, its reason, the gate results, and the change to write.

    Raises:
        InvalidTransition: no rollout is in progress.
    """
    r = m.rollout
    if r is None:
        raise InvalidTransition(f"{m.name!r} has no rollout in progress")
    results = gatelib.evaluate(r.gates, observations) + list(extra_results)
    runs = r.step_runs + (0 if (r.paused or hold_reason) else 1)
    tokens = (r.evaluated_runs + (run_token,))[-KEEP_RUN_TOKENS:]
    minutes = (now - r.step_started_at).total_seconds() / 60
    evidence = {"gates": [x.model_dump() for x in results], "step_runs": runs, "bake_runs": r.bake_runs,
                "step_minutes": round(minutes, 2), "bake_minutes": r.bake_minutes, "run": run_token}
    failed = [x for x in results if x.outcome == "fail"]
    if failed:
        reason = "gate failed: " + "; ".join(f"{x.metric}={x.value:.4g} needs {x.comparator} {x.threshold:g}" for x in failed)
        return RunDecision("rolled_back", reason, results, fields(abort(m)), "rollout.rollback", evidence, r.challenger)
    held = r.model_copy(update={"step_runs": runs, "evaluated_runs": tokens})
    inconclusive = [x for x in results if x.outcome == "inconclusive"]
    if r.paused:
        reason = "paused: holding"
    elif hold_reason:
        reason = f"holding: {hold_reason}"
    elif inconclusive:
        reason = "inconclusive: " + "; ".join(f"{x.metric} on {x.samples}/{x.min_samples} samples" for x in inconclusive)
    elif runs < r.bake_runs or minutes < r.bake_minutes:
        reason = f"baking: {runs}/{r.bake_runs} runs, {minutes:.1f}/{r.bake_minutes:g} minutes at {step_label(m)}"
    else:
        head = next_step(m.model_copy(update={"rollout": held}), now)
        done = head.rollout is None
        reason = "gates passed and bake complete: " + ("champion" if done else f"advanced to {step_label(head)}")
        return RunDecision("completed" if done else "advanced", reason, results, fields(head),
                           "rollout.complete" if done else "rollout.advance", evidence, r.challenger)
    return RunDecision("held", reason, results, {"rollout": held}, "rollout.hold", evidence, r.challenger)
