"""PII (``name``, ``email``) never leaves the input (issue 8): after a full `stagewise run`, every
object the run wrote to S3 (except the archived input under ``raw/``), the CLI's output and the
CloudWatch metrics are searched for the input's names and e-mails. The customer id leaves only as
its keyed hash, whose salt is an SSM SecureString found in no output.

Parquet objects are read (their pages are compressed, so bytes cannot be grepped) and checked for
PII columns and PII values; every other object is searched as text.
"""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from conftest import run_engagement_copy

MODEL = "engagement-pii"


@pytest.fixture(scope="module")
def run(dev, tmp_path_factory):
    _, df, result = run_engagement_copy(tmp_path_factory.mktemp("pii"), MODEL, 91)
    return {"output": result.output, "pii": set(df["name"]) | set(df["email"]), "ids": df["customer_id"]}


def _run_objects(dev, raw: bool = False) -> dict[str, bytes]:
    """The objects of this model in both buckets: the run's outputs, or (``raw``) its archived input."""
    s3 = dev.clients.client("s3")
    out = {}
    for bucket in (dev.resources.data_bucket.name, dev.resources.artifact_bucket.name):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if MODEL in key and key.startswith("raw/") == raw:
                    out[f"s3://{bucket}/{key}"] = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return out


def _pii_in(body: bytes, pii: set[str]) -> list[str]:
    """PII columns or values found in an object: Parquet is read, anything else searched as text."""
    if body[:4] == b"PAR1":
        frame = pd.read_parquet(io.BytesIO(body))
        return sorted({"name", "email"} & set(frame.columns)) + sorted(pii & set(frame.astype(str).to_numpy().ravel()))[:3]
    text = body.decode("utf-8", errors="replace")
    return [p for p in pii if len(p) > 6 and p in text][:3]  # very short names could match unrelated text


def test_no_pii_in_any_object_the_run_wrote(dev, run):
    objects = _run_objects(dev)
    kinds = {uri.rsplit("/", 1)[1] for uri in objects}
    assert {"model.ubj", "baseline.json", "feature_importance.json", "metrics.json", "result.json",
            "index.html", "part-00000.parquet"} <= kinds  # the run's outputs are all here
    for uri, body in objects.items():
        assert not _pii_in(body, run["pii"]), f"{uri} holds PII: {_pii_in(body, run['pii'])}"
    (archived,) = _run_objects(dev, raw=True).values()  # the check finds PII where it is: the input
    assert _pii_in(archived, run["pii"])


def test_no_pii_in_the_output_or_the_metrics(dev, run):
    assert not any(p in run["output"] for p in run["pii"])
    cloudwatch = dev.clients.client("cloudwatch")
    metrics = [m for page in cloudwatch.get_paginator("list_metrics").paginate(Namespace=dev.resources.metrics_namespace)
               for m in page["Metrics"]]
    dims = json.dumps([m["Dimensions"] for m in metrics if any(d["Value"] == MODEL for d in m["Dimensions"])])
    assert MODEL in dims  # the run's metrics are there
    assert not any(p in dims for p in run["pii"])


def test_ids_leave_only_as_their_keyed_hash_and_the_salt_nowhere(dev, run):
    import hashlib

    from stagewise.platform.runtime.idhash import hash_ids, read_id_salt, salt_parameter

    ssm = dev.clients.client("ssm")
    param = ssm.get_parameter(Name=salt_parameter(dev.resources))["Parameter"]
    assert param["Type"] == "SecureString"
    salt = read_id_salt(dev.clients, dev.resources)
    objects = _run_objects(dev)
    (key,) = [uri for uri in objects if uri.endswith("/part-00000.parquet") and "/predictions/" in uri]
    pred = pd.read_parquet(io.BytesIO(objects[key]))
    ids = run["ids"].astype(str)
    assert "customer_id" not in pred.columns and not set(pred["customer_id_hash"]) & set(ids)
    assert pred["customer_id_hash"].tolist() == hash_ids(run["ids"], salt.key).tolist()  # who holds the salt joins back
    unkeyed = {hashlib.blake2b(i.encode(), digest_size=16).hexdigest() for i in ids} | {hashlib.sha256(i.encode()).hexdigest() for i in ids}
    assert not set(pred["customer_id_hash"]) & unkeyed  # not recomputable without it
    secret = salt.key.hex()
    assert not any(secret.encode() in body for body in objects.values()) and secret not in run["output"]


def test_no_pii_reaches_the_agents_model(dev, run, tmp_path):
    """The analyst's three tools, run by the Converse loop on this run's results (every row of the
    table, a feature's statistics, a customer's explanation asked for by raw id): nothing the
    model is sent holds a name, an e-mail or a raw customer id (tool outputs carry hashed ids)."""
    import boto3
    from botocore.stub import Stubber

    from stagewise.pipeline import analyst
    from stagewise.pipeline.spec import load_spec
    from stagewise.platform.runtime.idhash import read_id_salt
    from stagewise.platform.runtime.objects import ObjectStore
    from stagewise.registry.dynamodb import registry_of
    from stagewise.registry.records import AgentConfig

    registry, objects = registry_of(dev), ObjectStore(dev.clients.client("s3"))
    spec = load_spec("engagement").model_copy(update={"name": MODEL})
    raw_id = str(run["ids"].iloc[0])
    tools = analyst.AnalystTools(objects, dev.resources.data_bucket.name, registry.get_version, registry.champion,
                                 read_id_salt(dev.clients, dev.resources).key, tmp_path, spec_of=lambda v: spec,
                                 specs=lambda: {MODEL: spec})
    bedrock = boto3.client("bedrock-runtime", region_name="eu-west-1")
    sent: list[str] = []
    bedrock.meta.events.register("before-parameter-build.bedrock-runtime.Converse", lambda params, **_: sent.append(json.dumps(params)))
    stub = Stubber(bedrock)
    uses = [("query_results", {"sql": f"SELECT * FROM {MODEL.replace('-', '_')}_results LIMIT 50"}),
            ("feature_statistics", {"model": MODEL, "feature": "age"}),
            ("explain_prediction", {"model": MODEL, "customer_id": raw_id})]
    stub.add_response("converse", {"output": {"message": {"role": "assistant", "content": [
        {"toolUse": {"toolUseId": f"t{i}", "name": name, "input": args}} for i, (name, args) in enumerate(uses)]}},
        "stopReason": "tool_use", "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2}, "metrics": {"latencyMs": 1}})
    stub.add_response("converse", {"output": {"message": {"role": "assistant", "content": [{"text": "done"}]}},
                                   "stopReason": "end_turn", "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2},
                                   "metrics": {"latencyMs": 1}})
    config = AgentConfig(prompt_uri="s3://x/y", prompt_sha256="0" * 64, model_id="anthropic.claude-3-haiku-20240307-v1:0",
                         tools=tuple(name for name, _ in uses))
    with stub:
        answer = analyst.converse(bedrock, config, "You are the analyst.", "Tell me about the customers.", tools)
    assert answer.text == "done" and [c["tool"] for c in answer.tool_calls] == [n for n, _ in uses]
    results = json.loads(sent[1])["messages"][2]["content"]
    assert all(r["toolResult"]["status"] == "success" for r in results), results  # the tools ran on real data
    assert len(results[0]["toolResult"]["content"][0]["json"]["rows"]) == 50
    second = sent[1]
    assert not [p for p in run["pii"] if len(p) > 6 and p in second]
    assert raw_id not in json.dumps(results)  # the tools' outputs: the id only as its keyed hash
