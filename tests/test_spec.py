"""Model specs: the built-in spec loads; a bad spec is refused naming the field."""

from __future__ import annotations

from importlib import resources

import pytest
import yaml

from stagewise.pipeline.spec import SpecError, load_spec


def test_engagement_spec_declares_features_suite_gate_and_rollout():
    spec = load_spec("engagement")
    assert spec.task == "regression" and spec.target.name == "engagement_score"
    assert len(spec.features) == 33
    assert {f.type for f in spec.features} == {"integer", "float", "categorical", "boolean"}
    assert spec.expectations.unique == ("customer_id",)
    assert [(g.metric, g.comparator, g.threshold) for g in spec.gates] == [("r2", ">=", 0.70)]
    assert spec.rollout.plan_for("prod", (10, 50, 100)) == (10, 50, 100)
    assert spec.pii_columns == ("name", "email") and not set(spec.pii_columns) & set(spec.feature_names)


def _spec_file(tmp_path, mutate):
    doc = yaml.safe_load((resources.files("stagewise.pipeline.specs") / "engagement.yaml").read_text())
    doc.pop("views")  # files relative to the built-in spec's folder
    mutate(doc)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["features"].append({"name": "age", "type": "integer"}), "features listed twice"),
        (lambda d: d["features"].append({"name": "plan", "type": "categorical"}), "needs 'categories'"),
        (lambda d: d.update(task="ranking"), "task"),
        (lambda d: d["gates"].append({"metric": "r2", "comparator": "=>", "threshold": 0.7}), r"gates\[1\] \(r2\)\.comparator"),
        (lambda d: d["rollout"].update(plan={"prod": [10, 50]}), "must strictly increase and end at 100"),
        (lambda d: d["features"].append({"name": "email", "type": "float"}), "cannot be features"),
    ],
)
def test_invalid_spec_is_refused_with_the_field_named(tmp_path, mutate, message):
    with pytest.raises(SpecError, match=message):
        load_spec(_spec_file(tmp_path, mutate))


def test_unknown_spec_name_lists_the_built_in_ones():
    with pytest.raises(SpecError, match=r"no model spec called .retention.*churn.*engagement"):
        load_spec("retention")
