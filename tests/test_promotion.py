"""Cross-account promotion dev -> test -> prod on the embedded AWS (three account ids, STS into
each environment's promoter role): verification, idempotency, interruption, approvals, lineage."""

from __future__ import annotations

import hashlib
import json
from importlib import resources

import pytest
import yaml
from typer.testing import CliRunner

from conftest import REPO
from stagewise.pipeline.cli import app
from stagewise.pipeline.generator import generate_customers, write_dataset
from stagewise.platform.runtime.environment import connect
from stagewise.platform.resources import environment_resources
from stagewise.registry.dynamodb import DynamoDBRegistryStore
from stagewise.registry.errors import NotFound
from stagewise.registry.promotion import PromotionError, promote
from stagewise.registry.service import Registry
from stagewise.stacks.settings import load_settings

MODEL = "engagement-promo"
runner = CliRunner()


def cli(*args: str) -> tuple[int, dict]:
    project = ["--project-dir", str(REPO)] if args[0] in ("run", "promote") else []
    result = runner.invoke(app, [*args, *project, "--json"])
    assert result.stdout.strip().startswith("{"), result.output
    return result.exit_code, json.loads(result.stdout)


def promoter(env: str):
    role = environment_resources(load_settings(env, REPO)).promoter_role_arn
    return connect(env, project_dir=REPO, provision=True, role_arn=role)


def versions(env: str) -> list[int]:
    conn = connect(env, project_dir=REPO)
    reg = Registry(DynamoDBRegistryStore(conn.clients.client("dynamodb"), conn.resources.registry_table.name))
    try:
        return [v.version for v in reg.list_versions(MODEL)]
    except NotFound:
        return []


@pytest.fixture(scope="module")
def trained(embedded, tmp_path_factory):
    """v1 of the model, champion in dev."""
    folder = tmp_path_factory.mktemp("promo")
    doc = yaml.safe_load((resources.files("stagewise.pipeline.specs") / "engagement.yaml").read_text())
    doc.pop("views")  # SQL files beside the built-in spec, over engagement_results
    doc["name"] = MODEL
    spec = folder / f"{MODEL}.yaml"
    spec.write_text(yaml.safe_dump(doc))
    data = folder / "customers.parquet"
    write_dataset(generate_customers(20_000, seed=61), data)
    code, doc = cli("run", "--env", "dev", "--model", str(spec), "--data", str(data))
    assert code == 0, doc.get("error")
    return {"spec": spec, "folder": folder}


def test_the_promoter_role_lands_in_each_environments_account(embedded):
    for env in ("dev", "test", "prod"):
        ident = promoter(env).clients.caller_identity()
        assert ident["Account"] == load_settings(env, REPO).account_id
        assert f":assumed-role/stagewise-{env}-promoter/" in ident["Arn"]


def test_a_tampered_copy_fails_verification_registers_nothing_and_leaves_no_object(trained):
    source, target = promoter("dev"), promoter("test")
    s3 = target.clients.client("s3")
    real_put = s3.put_object

    def tampering_put(**kwargs):  # the bytes change on their way into the target bucket
        if kwargs["Key"].endswith("model.ubj"):
            kwargs["Body"] = kwargs["Body"][:-1] + bytes([kwargs["Body"][-1] ^ 0xFF])
        return real_put(**kwargs)

    s3.put_object = tampering_put
    try:
        with pytest.raises(PromotionError, match="sha256"):
            promote(source, target, MODEL, 1, actor="tester")
    finally:
        s3.put_object = real_put
    assert versions("test") == []
    listing = s3.list_object_versions(Bucket=target.resources.artifact_bucket.name, Prefix=f"models/{MODEL}/")
    assert not listing.get("Versions") and not listing.get("DeleteMarkers")


def test_a_promotion_interrupted_before_registering_completes_on_rerun(trained, monkeypatch):
    source, target = promoter("dev"), promoter("test")

    def crash(*args, **kwargs):
        raise RuntimeError("the promoter was killed here")

    with monkeypatch.context() as mp:
        mp.setattr(Registry, "register_version", crash)
        with pytest.raises(RuntimeError):
            promote(source, target, MODEL, 1, actor="tester")
    assert versions("test") == []  # copied, not registered
    result = promote(source, target, MODEL, 1, actor="tester")
    assert result.created and result.target_version == 1 and versions("test") == [1]


def test_dev_to_test_to_prod_from_the_cli_with_lineage_and_identical_bytes(trained):
    code, again = cli("promote", MODEL, "1", "--from", "dev", "--to", "test")
    assert code == 0 and again["created"] is False and versions("test") == [1]  # re-run: a no-op

    code, refused = cli("promote", MODEL, "1", "--from", "test", "--to", "prod")
    assert code == 4 and "--approver" in refused["error"] and versions("prod") == []

    code, prod = cli("promote", MODEL, "1", "--from", "test", "--to", "prod", "--approver", "Ada Lovelace",
                     "--reason", "two clean scoring runs in test")
    assert code == 0 and prod["created"] and prod["stage"] == "champion"

    code, shown = cli("registry", "show", MODEL, "--env", "prod")
    lineage = shown["versions"][0]["lineage"]
    assert lineage["promoted_from"]["environment"] == "test" and lineage["promoted_from"]["approver"] == "Ada Lovelace"
    assert lineage["promoted_from"]["lineage"]["promoted_from"]["environment"] == "dev"
    assert lineage["promoted_from"]["lineage"]["promoted_from"]["account_id"] == load_settings("dev", REPO).account_id

    blobs = {}
    for env in ("dev", "prod"):
        conn = connect(env, project_dir=REPO)
        reg = Registry(DynamoDBRegistryStore(conn.clients.client("dynamodb"), conn.resources.registry_table.name))
        v = reg.get_version(MODEL, 1)
        bucket, key = v.artifact_uri[5:].split("/", 1)
        blobs[env] = conn.clients.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        assert hashlib.sha256(blobs[env]).hexdigest() == v.artifact_sha256
    assert blobs["dev"] == blobs["prod"]

    for env in ("test", "prod"):  # the approval is in the audit of both environments
        code, hist = cli("registry", "history", MODEL, "--env", env)
        assert any("Ada Lovelace" in json.dumps(e) for e in hist["events"]), env


def test_only_the_champion_can_be_promoted(trained):
    artifact = trained["folder"] / "manual.ubj"
    artifact.write_bytes(b"a model trained elsewhere")
    code, reg = cli("registry", "register", MODEL, "--env", "dev", "--artifact", str(artifact))
    assert code == 0 and reg["stage"] == "registered"
    code, refused = cli("promote", MODEL, str(reg["version"]), "--from", "dev", "--to", "test")
    assert code == 7 and "not the champion" in refused["error"]
    assert versions("test") == [1]
