"""Stack settings: the three stack files load; malformed settings are refused naming the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from stagewise.pipeline.local_stack import stack_declaration
from stagewise.platform.resources import environment_resources
from stagewise.stacks.settings import SettingsError, load_settings


def test_three_environments_in_three_accounts():
    settings = {env: load_settings(env, REPO) for env in ("dev", "test", "prod")}
    accounts = {s.account_id for s in settings.values()}
    assert len(accounts) == 3 and all(len(a) == 12 and a.isdigit() for a in accounts)
    for env, s in settings.items():
        assert s.environment == env
        assert s.allowed_account_ids == (s.account_id,)
        assert s.role.account_id == s.account_id
        assert s.default_tags["Environment"] == env
        assert s.rollout_plan[-1] == 100
        assert s.alert_emails
    assert settings["prod"].rollout_plan == (10, 50, 100)
    assert settings["prod"].deletion_protection and not settings["dev"].deletion_protection
    assert settings["prod"].task_sizes.train.memory_mib > settings["dev"].task_sizes.train.memory_mib


def _write(tmp_path: Path, env: str, mutate) -> Path:
    doc = yaml.safe_load((REPO / f"Pulumi.{env}.yaml").read_text())
    mutate(doc["config"])
    (tmp_path / f"Pulumi.{env}.yaml").write_text(yaml.safe_dump(doc))
    return tmp_path


@pytest.mark.parametrize(
    ("mutate", "named"),
    [
        (lambda c: c.update({"stagewise:accountId": "12345"}), "stagewise:accountId"),
        (lambda c: c.update({"stagewise:rolloutPlan": [-10, 100]}), "stagewise:rolloutPlan"),
        (lambda c: c.update({"stagewise:rolloutPlan": [10, 50]}), "rolloutPlan must end at 100"),
        (lambda c: c.update({"stagewise:rolloutPlan": [50, 10, 100]}), "strictly increase"),
        (lambda c: c.update({"aws:region": "mars-1"}), "aws:region"),
        (lambda c: c["stagewise:taskSizes"]["train"].update({"memoryMiB": 100}), "stagewise:taskSizes.train"),
        (lambda c: c.update({"aws:allowedAccountIds": ["999999999999"]}), "not in aws:allowedAccountIds"),
        (lambda c: c.update({"stagewise:alertEmails": ["not-an-email"]}), "stagewise:alertEmails"),
        (lambda c: c.update({"stagewise:taskHeartbeatSeconds": 2}), "stagewise:taskHeartbeatSeconds"),
        (lambda c: c.update({"stagewise:taskRetryIntervalSeconds": 0}), "stagewise:taskRetryIntervalSeconds"),
        (lambda c: c.update({"stagewise:rowsPerPartition": 0}), "stagewise:rowsPerPartition"),
    ],
)
def test_malformed_settings_are_refused_with_the_key_named(tmp_path, mutate, named):
    root = _write(tmp_path, "test", mutate)
    with pytest.raises(SettingsError, match=named.replace(".", r"\.").replace("[", r"\[")):
        load_settings("test", root)


def test_unknown_environment_and_missing_file(tmp_path):
    with pytest.raises(SettingsError, match="unknown environment 'staging'"):
        load_settings("staging", REPO)
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings("dev", tmp_path)


def test_heartbeat_retry_and_partition_size_flow_into_the_task_definitions_and_state_machine(tmp_path):
    """The optional job settings: the state's HeartbeatSeconds and retry interval, and the
    container's heartbeat interval (a fifth) and rows per partition in its environment."""
    root = _write(tmp_path, "dev", lambda c: c.update({"stagewise:taskHeartbeatSeconds": 600, "stagewise:taskRetryIntervalSeconds": 5,
                                                      "stagewise:rowsPerPartition": 250_000}))
    settings = load_settings("dev", root)
    declared = stack_declaration(settings, environment_resources(settings))
    env = {e["name"]: e["value"] for e in declared.task_definitions["score"].container_definitions[0]["environment"]}
    assert (env["STAGEWISE_HEARTBEAT_SECONDS"], env["STAGEWISE_ROWS_PER_PARTITION"]) == ("120", "250000")
    train = json.loads(declared.definition({"validate": "v", "train": "t", "score": "s"}, ["subnet-1"], ["sg-1"]))["States"]["Train"]
    assert train["HeartbeatSeconds"] == 600 and train["Retry"][1]["IntervalSeconds"] == 5
    defaults = load_settings("dev", REPO)
    assert (defaults.task_heartbeat_seconds, defaults.heartbeat_interval_seconds, defaults.rows_per_partition) == (300, 60, 1_000_000)


def test_the_pulumi_program_reads_every_key_the_runtime_reads():
    """A stack setting the runtime honours but the Pulumi program never reads would deploy with its
    default (e.g. a budget alarm at 20 USD while runs alert at the stack's own budget)."""
    from stagewise.stacks import config as pulumi_config
    from stagewise.stacks.settings import _KEYS

    read = {f"{ns}:{k}" for table in (pulumi_config._STRUCTURED, pulumi_config._SCALARS, pulumi_config._INTS,
                                      pulumi_config._BOOLS, pulumi_config._FLOATS) for ns, keys in table.items() for k in keys}
    assert {key.split(".")[0] for key in _KEYS.values()} - read == set()
