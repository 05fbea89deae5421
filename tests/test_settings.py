"""Stack settings: the three stack files load; malformed settings are refused naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import REPO
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
