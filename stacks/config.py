"""Read the stack's Pulumi config into ``EnvironmentSettings`` (the only place the program reads config)."""

from __future__ import annotations

from typing import Any

import pulumi

from stagewise.stacks.settings import EnvironmentSettings, settings_from_config

_STRUCTURED = {
    "aws": ("allowedAccountIds", "assumeRoles", "defaultTags"),
    "stagewise": ("alertEmails", "rolloutPlan", "bake", "taskSizes", "agentAlarms", "prices", "observability"),
}
_SCALARS = {
    "aws": ("region",),
    "stagewise": ("environment", "accountId", "toolingAccountId", "schedule"),
}
_INTS = {"stagewise": ("logRetentionDays", "scoringConcurrency", "rowsPerPartition", "taskHeartbeatSeconds",
                       "taskRetryIntervalSeconds")}
_BOOLS = {"stagewise": ("deletionProtection",)}
_FLOATS = {"stagewise": ("costBudgetPerRunUsd",)}


def settings_from_pulumi_config() -> EnvironmentSettings:
    """The current stack's settings, from ``pulumi.Config`` (same keys as the stack file).

    Raises:
        SettingsError: a value is missing or invalid (the message names the key).
    """
    flat: dict[str, Any] = {}
    for ns, keys in _STRUCTURED.items():
        cfg = pulumi.Config(ns)
        for k in keys:
            flat[f"{ns}:{k}"] = cfg.get_object(k)
    for ns, keys in _SCALARS.items():
        cfg = pulumi.Config(ns)
        for k in keys:
            flat[f"{ns}:{k}"] = cfg.get(k)
    for ns, keys in _INTS.items():
        for k in keys:
            flat[f"{ns}:{k}"] = pulumi.Config(ns).get_int(k)
    for ns, keys in _BOOLS.items():
        for k in keys:
            flat[f"{ns}:{k}"] = pulumi.Config(ns).get_bool(k)
    for ns, keys in _FLOATS.items():
        for k in keys:
            flat[f"{ns}:{k}"] = pulumi.Config(ns).get_float(k)
    return settings_from_config(flat, origin=f"stack {pulumi.get_stack()}")
