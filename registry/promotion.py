"""Promote a model version across accounts: dev -> test -> prod, without retraining.

``promote`` runs as the promoter role of each environment (the stack's ``Access`` component creates
``stagewise-<env>-promoter``, trusting the tooling account; on the embedded AWS the same STS
AssumeRole lands in each environment's account id):

1. refuse unless the version is the source's champion and its gates passed there; a promotion to
   prod needs an approver and a reason;
2. copy the artifact, its metrics, feature importance and baseline statistics, and the validation
   result to the target's artifact bucket (content-addressed keys), read each back and verify its
   sha256; a mismatch deletes what this attempt wrote and registers nothing;
3. register the version in the target registry with lineage back to the source (environment,
   account, version, artifact sha256, and the source's own lineage), which starts the target's
   rollout per its plan (the target's first version becomes champion);
4. record the promotion in the source's audit trail.

Idempotent: the target registration's token is derived from (source environment, account, model,
version, artifact sha256), copies skip objects already verified, so a re-run is a no-op and a run
interrupted half-way completes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from stagewise.platform.runtime.objects import ChecksumMismatch, ObjectStore, S3Uri, sha256_bytes
from stagewise.platform.runtime.environment import Environment
from stagewise.registry.errors import InvalidTransition, RegistryError
from stagewise.registry.service import Registry, RolloutPlan
from stagewise.registry.dynamodb import registry_of

ARTIFACT_FILES = ("model.ubj", "metrics.json", "feature_importance.json", "baseline.json")


class PromotionError(RegistryError):
    """A promotion could not complete: a copy failed verification, or a required input is missing.
    Nothing was registered in the target."""

    code = "PromotionFailed"


class ApprovalRequired(RegistryError):
    """Promotion to prod needs ``--approver`` and ``--reason``."""

    code = "ApprovalRequired"
    exit_code = 4


@dataclass
class Promotion:
    """What a promotion did.

    Attributes:
        source_version, target_version: the version numbers in each registry.
        created: False when the target already had this promotion (a no-op re-run).
        copied: target URI -> sha256 of every object copied (or found already verified).
        stage: the target version's stage (champion, challenger, candidate, registered).
    """

    model: str
    source: str
    target: str
    source_version: int
    target_version: int
    artifact_sha256: str
    created: bool
    stage: str
    copied: dict[str, str] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dict(self.__dict__)


def _registry(env: Environment) -> Registry:
    return registry_of(env)


def promotion_token(source: Environment, model: str, version: int, artifact_sha256: str) -> str:
    """The target registration's idempotency token for this promotion."""
    key = f"promote|{source.settings.environment}|{source.settings.account_id}|{model}|{version}|{artifact_sha256}"
    return hashlib.sha256(key.encode()).hexdigest()


def promote(
    source: Environment,
    target: Environment,
    model: str,
    version: int,
    *,
    actor: str,
    approver: str | None = None,
    reason: str | None = None,
    plan: RolloutPlan | None = None,
) -> Promotion:
    """Promote ``model`` ``version`` from ``source`` to ``target`` (both connected as promoters).

    Args:
        plan: the target's rollout plan (default: the target stack's ``rolloutPlan`` and ``bake``).

    Raises:
        ApprovalRequired: the target is prod and ``approver`` or ``reason`` is missing.
        InvalidTransition: the version is not the source's champion, or its gates did not pass, or
            source and target are the same environment.
        NotFound: no such model or version in the source.
        PromotionError: a copied object failed sha256 verification (nothing registered; the
            objects this attempt wrote were deleted).
        ChecksumMismatch: the source's artifact or baseline is not the bytes registered with the
            version (nothing registered; the objects this attempt wrote were deleted).
    """
    src_env, dst_env = source.settings.environment, target.settings.environment
    if src_env == dst_env:
        raise InvalidTransition(f"source and target are both {src_env}")
    if dst_env == "prod" and not (approver and reason):
        raise ApprovalRequired("promotion to prod needs --approver NAME and --reason TEXT (recorded in both audits)")
    src_reg, dst_reg = _registry(source), _registry(target)
    record = src_reg.get_model(model)
    v = src_reg.get_version(model, version)
    if record.champion != version:
        raise InvalidTransition(
            f"{model} v{version} is not the champion in {src_env} (champion: v{record.champion}); only the version "
            f"serving in {src_env} can be promoted")
    held = [g for g in v.gates if g.outcome == "inconclusive" and g.on_inconclusive == "hold"]
    if v.status != "registered" or any(g.outcome != "pass" for g in v.gates if g not in held):
        raise InvalidTransition(f"{model} v{version} did not pass its gates in {src_env}")

    token = promotion_token(source, model, version, v.artifact_sha256)
    copied = _copy_all(source, target, model, v)
    upstream = {k: v.lineage[k] for k in ("promoted_from",) if k in v.lineage}
    promoted_from = {
        "environment": src_env, "account_id": source.settings.account_id, "version": version,
        "artifact_sha256": v.artifact_sha256, "artifact_uri": v.artifact_uri, "registry_table": source.resources.registry_table.name,
        **({"approver": approver} if approver else {}), **({"reason": reason} if reason else {}),
        **({"lineage": upstream} if upstream else {}),
    }
    lineage = {**{k: val for k, val in v.lineage.items() if k != "promoted_from"}, "promoted_from": promoted_from,
               "environment": dst_env, "account_id": target.settings.account_id}
    if v.lineage.get("spec_uri"):  # the spec travels with the version (copied by _copy_all)
        lineage["spec_uri"] = f"s3://{target.resources.artifact_bucket.name}/{S3Uri.parse(v.lineage['spec_uri']).key}"
    prefix = f"s3://{target.resources.artifact_bucket.name}/models/{model}/{v.artifact_sha256}"
    settings = target.settings
    plan = plan or RolloutPlan.for_environment(settings)
    note = f"promoted from {src_env} v{version}" + (f", approved by {approver}: {reason}" if approver else (f": {reason}" if reason else ""))
    reg = dst_reg.register_version(
        # a gate that held the version in the source was settled there by whoever made it champion
        model, artifact_uri=f"{prefix}/model.ubj", artifact_sha256=v.artifact_sha256, metrics=v.metrics,
        gates=[g for g in v.gates if g not in held],
        lineage=lineage, actor=actor, token=token, baseline_uri=f"{prefix}/baseline.json" if v.baseline_uri else None,
        kind=record.kind, description=v.description, rollout=plan, online_gates=record.gates, agent=v.agent,
        note=note, evidence={"promotion": promoted_from, **({"held_in_source": [g.describe() for g in held]} if held else {})},
    )
    src_reg.note(
        model, "version.promoted", version=version, actor=actor, token=f"promoted-{token}",
        reason=f"promoted to {dst_env} as v{reg.version.version}" + (f", approved by {approver}: {reason}" if approver else ""),
        evidence={"target": {"environment": dst_env, "account_id": settings.account_id, "version": reg.version.version},
                  **({"approver": approver, "reason": reason} if approver else {})},
    )
    return Promotion(model, src_env, dst_env, version, reg.version.version, v.artifact_sha256, reg.created, reg.stage,
                     copied, reg.version.lineage)


def _copy_all(source: Environment, target: Environment, model: str, v: Any) -> dict[str, str]:
    """Copy the version's files to the target's artifact bucket and verify each; all or nothing."""
    src, dst = ObjectStore(source.clients.client("s3")), ObjectStore(target.clients.client("s3"))
    bucket = target.resources.artifact_bucket.name
    art = S3Uri.parse(v.artifact_uri)
    prefix = art.key.rsplit("/", 1)[0]
    jobs: list[tuple[S3Uri, str, str | None]] = []  # (source object, target key, expected sha256)
    recorded = {"model.ubj": v.artifact_sha256, "baseline.json": v.lineage.get("baseline_sha256")}
    for name in ARTIFACT_FILES:
        expected = recorded.get(name)
        jobs.append((S3Uri(art.bucket, f"{prefix}/{name}"), f"models/{model}/{v.artifact_sha256}/{name}", expected))
    if v.lineage.get("validation_result_uri"):
        jobs.append((S3Uri.parse(v.lineage["validation_result_uri"]), f"models/{model}/{v.artifact_sha256}/validation/result.json", None))
    if v.lineage.get("spec_uri"):
        spec = S3Uri.parse(v.lineage["spec_uri"])
        jobs.append((spec, spec.key, None))
    written: list[str] = []
    copied: dict[str, str] = {}
    try:
        for src_uri, key, expected in jobs:
            try:
                data = src.get_bytes(src_uri.bucket, src_uri.key, expect_sha256=expected)
            except ChecksumMismatch:
                raise  # changed since it was registered: nothing is promoted (the caller alerts)
            except Exception as e:
                if src_uri.key.endswith("model.ubj"):
                    raise PromotionError(f"cannot read the artifact {src_uri}: {e}") from e
                continue  # optional companions (e.g. a version registered by hand has no baseline)
            digest = expected or sha256_bytes(data)
            if dst.head_sha256(bucket, key) == digest and sha256_bytes(dst.get_bytes(bucket, key)) == digest:
                copied[f"s3://{bucket}/{key}"] = digest  # already there and intact (a re-run)
                continue
            dst.put_bytes(bucket, key, data)
            written.append(key)
            landed = sha256_bytes(dst.get_bytes(bucket, key))
            if landed != digest:
                raise PromotionError(
                    f"s3://{bucket}/{key} has sha256 {landed} after the copy, expected {digest}: the copy was altered; "
                    "nothing was registered")
            copied[f"s3://{bucket}/{key}"] = digest
    except (PromotionError, ChecksumMismatch):
        for key in written:
            _delete_all_versions(target, bucket, key)
        raise
    return copied


def _delete_all_versions(target: Environment, bucket: str, key: str) -> None:
    """Remove an object this attempt wrote, every version of it (the bucket is versioned)."""
    s3 = target.clients.client("s3")
    try:
        versions = s3.list_object_versions(Bucket=bucket, Prefix=key)
        for item in versions.get("Versions", []) + versions.get("DeleteMarkers", []):
            if item["Key"] == key:
                s3.delete_object(Bucket=bucket, Key=key, VersionId=item["VersionId"])
    except ClientError:
        s3.delete_object(Bucket=bucket, Key=key)

