"""A registered version's files, loaded only when their bytes are the ones the registry recorded.

A version's record holds the sha256 of its model artifact (``artifact_sha256``), of an agent's
prompt (``agent.prompt_sha256``) and of its baseline statistics (``lineage["baseline_sha256"]``),
and the digest of the spec it was trained with (``lineage["spec_digest"]``). Every path that loads
one (scoring, the champion comparison at evaluation, the report's drift baselines, ``stagewise
explain``, ``stagewise promote``, ``stagewise agent ask``) loads it through this module: bytes that
differ raise ``ChecksumMismatch`` and are never used, and the caller sends ``tampered_alert``.

A version registered before baselines were hashed has no ``baseline_sha256``: its baseline is
loaded unverified (its artifact and spec still are).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any, Iterator

from stagewise.monitoring.alerts import Alert, publish_alert
from stagewise.platform.runtime.objects import ChecksumMismatch, ObjectStore, S3Uri
from stagewise.registry.records import VersionRecord

TAMPERED_EVENT = "artifact.tampered"


def load_artifact(objects: ObjectStore, version: VersionRecord, cache: dict[str, Any]) -> Any:
    """The fitted XGBoost model of ``version`` (``XGBClassifier`` for a classification lineage,
    else ``XGBRegressor``), its bytes verified against ``artifact_sha256``, cached by sha256.

    Raises:
        StorageError: the artifact is missing.
        ChecksumMismatch: its bytes differ from the registered sha256.
    """
    import xgboost as xgb  # deferred: XGBoost (~1 s) only where a model is loaded

    if version.artifact_sha256 not in cache:
        uri = S3Uri.parse(version.artifact_uri)
        model = xgb.XGBClassifier() if version.lineage.get("task") == "classification" else xgb.XGBRegressor()
        with _naming(version, "model artifact"):
            data = objects.get_bytes(uri.bucket, uri.key, expect_sha256=version.artifact_sha256)
        model.load_model(bytearray(data))
        cache[version.artifact_sha256] = model
    return cache[version.artifact_sha256]


def load_baseline(objects: ObjectStore, version: VersionRecord) -> dict[str, Any] | None:
    """The baseline statistics stored with ``version`` (``baseline.json``: ``{"features": {name:
    statistics}, ...}``), verified against ``lineage["baseline_sha256"]`` when recorded; None if the
    version has no baseline (registered by hand).

    Raises:
        StorageError: the baseline is missing.
        ChecksumMismatch: its bytes differ from the recorded sha256.
    """
    if not version.baseline_uri:
        return None
    uri = S3Uri.parse(version.baseline_uri)
    with _naming(version, "baseline statistics"):
        return json.loads(objects.get_bytes(uri.bucket, uri.key, expect_sha256=version.lineage.get("baseline_sha256")))


def load_prompt(objects: ObjectStore, version: VersionRecord) -> str:
    """An agent version's prompt template (UTF-8 text), verified against ``agent.prompt_sha256``.

    Raises:
        ValueError: ``version`` is not an agent version.
        StorageError: the prompt is missing.
        ChecksumMismatch: its bytes differ from the registered sha256.
    """
    if version.agent is None:
        raise ValueError(f"{version.model} v{version.version} is not an agent version")
    uri = S3Uri.parse(version.agent.prompt_uri)
    with _naming(version, "prompt"):
        return objects.get_bytes(uri.bucket, uri.key, expect_sha256=version.agent.prompt_sha256).decode("utf-8")


def check_spec_digest(version: VersionRecord, digest: str, uri: str) -> None:
    """Refuse a stored spec whose digest (``ModelSpec.digest()``) is not the one ``version``
    recorded at registration (``lineage["spec_digest"]``; nothing to check without one).

    Raises:
        ChecksumMismatch: the spec at ``uri`` was changed after registration.
    """
    expected = version.lineage.get("spec_digest")
    if expected and digest != expected:
        with _naming(version, "spec"):
            raise ChecksumMismatch(
                f"{uri} has spec digest {digest}, expected {expected}: the spec of {version.model} v{version.version} "
                "was changed after it was registered; do not use it", uri, expected, digest)


@contextmanager
def _naming(version: VersionRecord, what: str) -> Iterator[None]:
    """Tag a ``ChecksumMismatch`` raised inside with the version and which of its files it was."""
    try:
        yield
    except ChecksumMismatch as e:
        e.model, e.version, e.what = version.model, version.version, what
        raise


def tampered_alert(error: ChecksumMismatch, environment: str, model: str, run_id: str | None = None,
                   refused: str = "loading it") -> Alert:
    """The alert about a registered file whose bytes changed: which file of which version, both
    hashes, what was refused, what to do."""
    what = getattr(error, "what", "file")
    version = getattr(error, "version", None)
    of = f" of {getattr(error, 'model', model)} v{version}" if version is not None else ""
    return Alert(
        event=TAMPERED_EVENT, title=f"The {what}{of} was changed: refused", environment=environment, model=model,
        version=version, run_id=run_id, severity="critical",
        details=(f"The {what}{of} ({error.uri}) no longer has the sha256 the registry recorded for it, so {refused} "
                 "was refused and nothing was served from it. Someone or something wrote to the object after it "
                 "was registered."),
        numbers={"expected sha256": error.expected, "actual sha256": error.actual},
        links={"object": error.uri},
        next_steps=("Find who wrote it (CloudTrail data events, or the bucket's access logs); restore the registered "
                    "bytes from the object's earlier version (the buckets keep versions), or roll back / retire the "
                    "version. Do not re-register the changed file."),
    )


@contextmanager
def reporting_tampered(env: Any, model: str, refused: str) -> Iterator[None]:
    """Inside: a ``ChecksumMismatch`` is published as ``tampered_alert`` to ``env``'s alert topic
    (``env``: a connected ``Environment``), then re-raised (exit 1 with the hint). A failure to
    publish does not hide the refusal."""
    try:
        yield
    except ChecksumMismatch as e:
        alert = tampered_alert(e, env.settings.environment, model, refused=refused)
        try:
            publish_alert(env.clients.client("sns"), env.resources.alert_topic_arn, alert)
        except Exception:  # noqa: BLE001 - the refusal is what matters; it is raised below either way
            pass
        raise
