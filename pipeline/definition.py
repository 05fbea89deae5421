"""The pipeline definition: one ordered list of steps, run by two executors.

Locally, ``stagewise.pipeline.runner`` executes these steps in-process against the embedded AWS. On
AWS, the same definition compiles to a Step Functions state machine in which each step with a
``task`` runs as an ECS task of that name (validate, train, score) on Fargate Spot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from stagewise.pipeline import steps as s


@dataclass(frozen=True)
class Step:
    """One pipeline step.

    Attributes:
        name: state name (``validate``).
        description: one line for humans (``--help``, the state machine's Comment).
        run: the step function, ``run(ctx) -> summary dict``.
        task: the task group that runs the step on AWS. Consecutive steps with the same group run
            in one ECS task (one state of the state machine): ``validate`` (ingest, validate),
            ``train`` (train, evaluate, register), ``score`` (score; a Map over partitions) and
            ``report`` (rollout, publish), each on the task definition named in ``TASK_DEFINITIONS``.
    """

    name: str
    description: str
    run: Callable[[s.RunContext], dict[str, Any]]
    task: str


@dataclass(frozen=True)
class Pipeline:
    """An ordered, named sequence of steps."""

    name: str
    steps: tuple[Step, ...]

    def step(self, name: str) -> Step:
        """The step called ``name``; raises KeyError if there is none."""
        for st in self.steps:
            if st.name == name:
                return st
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        """Step names in order."""
        return [st.name for st in self.steps]

    def task_groups(self) -> list[tuple[str, tuple[Step, ...]]]:
        """Consecutive steps grouped by ``task``, in order: ``[("validate", (ingest, validate)), ...]``."""
        groups: list[tuple[str, list[Step]]] = []
        for st in self.steps:
            if groups and groups[-1][0] == st.task:
                groups[-1][1].append(st)
            else:
                groups.append((st.task, [st]))
        return [(name, tuple(members)) for name, members in groups]


PIPELINE = Pipeline(
    name="stagewise",
    steps=(
        Step("ingest", "put the input in the data bucket under its sha256", s.ingest, task="validate"),
        Step("validate", "Great Expectations suite of the model spec; fails closed", s.validate, task="validate"),
        Step("train", "XGBoost (hist) on the train split; artifact, importance, baseline to S3", s.train, task="train"),
        Step("evaluate", "holdout R², RMSE, MAE against the spec's gates", s.evaluate, task="train"),
        Step("register", "immutable version with lineage in the DynamoDB registry", s.register, task="train"),
        Step("score", "every record routed champion/challenger; predictions parquet to S3", s.score, task="score"),
        Step("monitor", "drift (PSI, KS) of the scored data vs each scoring version's baseline; alert", s.monitor, task="report"),
        Step("rollout", "the rollout controller: advance, hold or roll back on the online gates", s.rollout, task="report"),
        Step("publish", "run metrics to CloudWatch", s.publish, task="report"),
    ),
)

TASK_DEFINITIONS = {"validate": "validate", "train": "train", "score": "score", "report": "score"}
"""Task group -> the ECS task definition (and its size and role) that runs it."""
MAPPED_GROUPS = frozenset({"score"})
"""Task groups that fan out over the input's partitions (a Map state on AWS)."""
FANNED_OUT = frozenset({"validate"})
"""Task groups that, on AWS, fan out when the input has more than one partition: a first task
(``--fan-out``: ingest, plan; an input of one partition is validated there and then), a Distributed
Map of one task per partition (``--partition I --partitions N``), and a merge task (``--merge``)
that merges the partitions' results exactly and decides (``steps.intake.validate``)."""

SCORING = Pipeline(
    name="stagewise-score",
    steps=tuple(PIPELINE.step(n) for n in ("ingest", "validate", "score", "monitor", "rollout", "publish")),
)
"""Scoring without training (``stagewise score``): repeated runs walk a challenger through its plan."""

TRAINING = Pipeline(
    name="stagewise-train",
    steps=tuple(PIPELINE.step(n) for n in ("ingest", "validate", "train", "evaluate", "register")),
)
"""Training without scoring: a new version is registered and starts its rollout, but no scoring run
counts toward it (benchmarks and tests that need a champion or a challenger to score with)."""
