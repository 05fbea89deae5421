"""Alarm definitions of an environment: what trips an alert e-mail. One source for the stack.

Each ``AlarmSpec`` names a metric the runtime publishes (``monitoring.metrics``) or a Step
Functions metric, with fixed dimensions (alarms cannot search), a threshold and what to do with
missing data. The Pulumi ``Monitoring`` component turns them into CloudWatch alarms whose action is
the alert topic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from stagewise.monitoring import metrics as m
from stagewise.platform.declarations import AlarmDeclaration, alarm_name
from stagewise.stacks.settings import AgentAlarms

DAY = 86_400


@dataclass(frozen=True)
class AlarmSpec:
    """One CloudWatch metric alarm.

    Attributes:
        key: short id used in resource names (``failed-executions``).
        description: what it means and what to do, shown in the alert e-mail.
        namespace, metric, dimensions, statistic, period (seconds), evaluation_periods: the metric.
        comparison, threshold: when it is in ALARM.
        treat_missing_data: ``notBreaching`` or ``breaching`` (a run that never happened is missing
            data, and for the freshness alarm that must breach).
    """

    key: str
    description: str
    namespace: str
    metric: str
    dimensions: dict[str, str] = field(default_factory=dict)
    statistic: str = "Sum"
    period: int = 300
    evaluation_periods: int = 1
    comparison: str = "GreaterThanOrEqualToThreshold"
    threshold: float = 1.0
    treat_missing_data: str = "notBreaching"


def schedule_seconds(schedule: str) -> int:
    """Interval of an EventBridge schedule in seconds (``rate(N unit)``; ``cron(...)`` counts as daily)."""
    match = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)", schedule.strip())
    if not match:
        return DAY
    n, unit = int(match.group(1)), match.group(2).rstrip("s")
    return n * {"minute": 60, "hour": 3600, "day": DAY}[unit]


def environment_alarms(environment: str, model: str, state_machine_arn: str, schedule: str,
                       cost_budget_usd: float | None = None) -> list[AlarmSpec]:
    """The alarms of one environment and model: failed executions, failed validation, rollback,
    no successful run within the expected window (twice the schedule's interval, at most a day
    per period: CloudWatch's longest alarm period), and, given a budget, a run that cost more than
    ``cost_budget_usd`` (``RunCostUSD``, one value per run, over an hour)."""
    run = m.model_dimensions(environment, model)
    window = 2 * schedule_seconds(schedule)
    period = min(window, DAY)
    return [
        AlarmSpec("failed-executions", f"A {environment} pipeline execution failed: open the Step Functions console, "
                  "read the failed state's error, fix and re-run (steps are idempotent).",
                  "AWS/States", "ExecutionsFailed", {"StateMachineArn": state_machine_arn}),
        AlarmSpec("failed-validation", f"{model} input failed its expectation suite in {environment}: nothing was "
                  "trained or scored. Read the validation alert for the failed expectations.",
                  m.NAMESPACE, m.VALIDATION_FAILED, run),
        AlarmSpec("rollback", f"A {model} rollout in {environment} was rolled back: the challenger failed a gate. "
                  "See `stagewise registry history`.", m.NAMESPACE, m.ROLLBACKS, run),
        AlarmSpec("no-successful-run", f"No successful {model} run in {environment} within {window // 3600} hours: "
                  "the schedule, the input or the jobs are broken.", m.NAMESPACE, m.PIPELINE_SUCCEEDED, run,
                  statistic="Sum", period=period, evaluation_periods=max(1, window // period),
                  comparison="LessThanThreshold", threshold=1.0, treat_missing_data="breaching"),
    ] + ([AlarmSpec("run-cost", f"A {model} run in {environment} cost more than its budget of {cost_budget_usd:g} USD "
                              "(stagewise:costBudgetPerRunUsd): see the run's cost line (task sizes, retries, data volume).",
                    m.NAMESPACE, m.RUN_COST_USD, run, statistic="Maximum", period=3600,
                    comparison="GreaterThanThreshold", threshold=cost_budget_usd)] if cost_budget_usd else [])


def agent_alarms(environment: str, agent: str, limits: AgentAlarms) -> list[AlarmSpec]:
    """The alarms of one agent over its calls (dimensions Environment, Agent): error rate (the
    Average of ``AgentErrors``, 0 or 1 per call) and p95 latency over 15 minutes, and cost per day."""
    dims = {"Environment": environment, "Agent": agent}
    return [
        AlarmSpec("error-rate", f"Agent {agent} in {environment}: more than {limits.max_error_rate:.0%} of its calls "
                  "failed in 15 minutes. Read them: stagewise query \"SELECT * FROM agent_calls WHERE error_class IS NOT NULL\".",
                  m.NAMESPACE, m.AGENT_ERRORS, dims, statistic="Average", period=900,
                  comparison="GreaterThanThreshold", threshold=limits.max_error_rate),
        AlarmSpec("latency-p95", f"Agent {agent} in {environment}: p95 latency above {limits.p95_latency_ms:,.0f} ms "
                  "over 15 minutes (its model, tools or Athena are slow).", m.NAMESPACE, m.AGENT_LATENCY, dims,
                  statistic="p95", period=900, comparison="GreaterThanThreshold", threshold=limits.p95_latency_ms),
        AlarmSpec("daily-cost", f"Agent {agent} in {environment}: its model calls cost more than "
                  f"{limits.daily_budget_usd:,.2f} USD today (the stack's agentAlarms.dailyBudgetUsd).", m.NAMESPACE,
                  m.AGENT_COST_USD, dims, statistic="Sum", period=DAY, comparison="GreaterThanThreshold",
                  threshold=limits.daily_budget_usd),
    ]


def alarm_declarations(environment: str, models: tuple[str, ...], state_machine_arn: str, schedule: str,
                       agents: tuple[str, ...] = (), agent_limits: AgentAlarms | None = None,
                       cost_budget_usd: float | None = None) -> list[tuple[str, AlarmDeclaration]]:
    """``(<model or agent>-<key>, alarm)`` for every alarm of the environment's ``models`` and
    ``agents``: what the stack's ``Monitoring`` component and local provisioning both create
    (``environment_alarms`` and ``agent_alarms`` named). A ``statistic`` ``pNN`` is an extended
    statistic (CloudWatch's ``ExtendedStatistic``)."""
    specs = [(model, spec) for model in models
             for spec in environment_alarms(environment, model, state_machine_arn, schedule, cost_budget_usd)]
    specs += [(agent, spec) for agent in agents for spec in agent_alarms(environment, agent, agent_limits or AgentAlarms())]
    return [
        (f"{owner}-{spec.key}", AlarmDeclaration(
            name=alarm_name(environment, owner, spec.key), description=spec.description, namespace=spec.namespace,
            metric=spec.metric, dimensions=dict(spec.dimensions), statistic=spec.statistic, period=spec.period,
            evaluation_periods=spec.evaluation_periods, comparison=spec.comparison, threshold=spec.threshold,
            treat_missing_data=spec.treat_missing_data))
        for owner, spec in specs
    ]
