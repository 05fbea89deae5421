"""A run's state on AWS, between its ECS tasks: ``s3://<data bucket>/runs/<model>/<run id>/state.json``.

The document holds the finished steps' typed results (``StepResults.to_json``), step durations,
each finished group's output, and the run's identity (environment, account, spec digest, planned
partitions). It is written with S3 conditional writes (``If-None-Match: *`` when new,
``If-Match: <ETag>`` after), so a concurrent writer fails instead of losing an update. The
partitions of a Distributed Map run concurrently and each writes its own
``<group>/part-<I>-of-<N>.json`` beside it: a score partition's ``result`` is its ``Scored`` (the
report group merges them, ``merge_score_partitions``); a validate partition's ``partial`` is its
``validation_partitions.validate_partition`` result (the validate group's merge task merges them).

The validate group's fan-out: its first task ingests and plans; when it leaves validation to a
Map it records the group as ``"fanned_out"`` (not finished: no later group may start), and the
merge task records it ``"succeeded"``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from stagewise.pipeline.scoring import merge_partitions
from stagewise.pipeline.steps import challenger_observations
from stagewise.pipeline.steps.results import Scored
from stagewise.platform.runtime.aws import utc_now


class StateError(RuntimeError):
    """The run's state is missing, inconsistent with this task, or changed by another writer."""


def dumps(doc: Any) -> str:
    """Compact JSON (values JSON cannot hold, such as times, as their text)."""
    return json.dumps(doc, default=str, separators=(",", ":"))


_PART = re.compile(r"part-(\d{5})-of-(\d{5})\.json$")


@dataclass
class RunState:
    """The run's ``state.json`` in the data bucket, and its Map partitions' documents.

    Attributes:
        s3: a boto3 S3 client.
        bucket: the environment's data bucket.
        model, run_id: whose state it is.
        doc: the document (``results``: the finished steps' typed results, ``durations``,
            ``groups``, ``partitions``, identity fields).
        etag: the ETag read (None: the object does not exist yet).
    """

    s3: Any
    bucket: str
    model: str
    run_id: str
    doc: dict[str, Any] = field(default_factory=dict)
    etag: str | None = None

    @property
    def prefix(self) -> str:
        return f"runs/{self.model}/{self.run_id}"

    @property
    def key(self) -> str:
        return f"{self.prefix}/state.json"

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @classmethod
    def load(cls, s3: Any, bucket: str, model: str, run_id: str) -> "RunState":
        """The run's state (an empty one if no group has finished yet)."""
        state = cls(s3, bucket, model, run_id)
        try:
            obj = s3.get_object(Bucket=bucket, Key=state.key)
        except ClientError as e:
            if e.response["Error"]["Code"] in ("NoSuchKey", "404"):
                state.doc = {"schema": 2, "run_id": run_id, "model": model, "results": {}, "durations": {}, "groups": {}}
                return state
            raise
        state.doc, state.etag = json.loads(obj["Body"].read()), obj["ETag"]
        return state

    def finished(self, group: str) -> dict[str, Any] | None:
        """The recorded output of ``group`` if it finished, else None."""
        entry = self.doc["groups"].get(group)
        return entry["output"] if entry and entry.get("status") == "succeeded" else None

    def save(self) -> None:
        """Write the document: only if nobody wrote it since it was read (S3 conditional write).

        Raises:
            StateError: another writer changed (or created) it first.
        """
        self.doc["updated_at"] = utc_now().isoformat()
        condition = {"IfMatch": self.etag} if self.etag else {"IfNoneMatch": "*"}
        try:
            resp = self.s3.put_object(
                Bucket=self.bucket, Key=self.key, Body=dumps(self.doc).encode(), ContentType="application/json", **condition
            )
        except ClientError as e:
            if e.response["Error"]["Code"] in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise StateError(
                    f"{self.uri} was changed by another task of run {self.run_id} since it was read; "
                    "this task's result was not recorded (re-run the group)"
                ) from e
            raise
        self.etag = resp["ETag"]

    def fanned_out(self) -> dict[str, Any] | None:
        """The validate group's first task's output when it left validation to a Map (else None)."""
        entry = self.doc.get("groups", {}).get("validate")
        return entry["output"] if entry and entry.get("status") == "fanned_out" else None

    # partitions of a Map: one document each, written by one Map iteration (no shared writes)
    def partition_key(self, group: str, index: int, count: int) -> str:
        return f"{self.prefix}/{group}/part-{index:05d}-of-{count:05d}.json"

    def finished_partition(self, group: str, index: int, count: int) -> dict[str, Any] | None:
        """The recorded output of ``group``'s partition ``index`` of ``count``, or None."""
        doc = self._get_json(self.partition_key(group, index, count))
        return doc["output"] if doc else None

    def save_partition(self, group: str, index: int, count: int, doc: dict[str, Any]) -> None:
        self.s3.put_object(
            Bucket=self.bucket, Key=self.partition_key(group, index, count), Body=dumps(doc).encode(), ContentType="application/json"
        )

    def score_partitions(self) -> list[dict[str, Any]]:
        """The documents of a complete set of score partitions (``partitions("score")``)."""
        return self.partitions("score")

    def partitions(self, group: str) -> list[dict[str, Any]]:
        """The documents of a complete set of ``group``'s partitions (the count ``validate``
        planned, or else the only complete set).

        Raises:
            StateError: no complete set (a partition did not finish).
        """
        found: dict[int, set[int]] = {}
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{self.prefix}/{group}/")
        for page in pages:
            for obj in page.get("Contents", []):
                if m := _PART.search(obj["Key"]):
                    found.setdefault(int(m.group(2)), set()).add(int(m.group(1)))
        complete = [n for n, done in found.items() if done == set(range(n))]
        planned = self.doc.get("partitions")
        if planned in complete:
            count = planned
        elif len(complete) == 1:
            count = complete[0]
        else:
            have = ", ".join(f"{len(d)} of {n}" for n, d in sorted(found.items())) or "none"
            raise StateError(f"{group} partitions of run {self.run_id} are incomplete (planned {planned}; finished: {have})")
        return [self._get_json(self.partition_key(group, i, count)) for i in range(count)]  # type: ignore[misc]

    def _get_json(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except ClientError as e:
            if e.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return None
            raise


def merge_score_partitions(docs: list[dict[str, Any]]) -> Scored:
    """The score step's result for the whole input, from its partitions' (``docs``: each
    partition's document, ``result`` and ``output``), before publishing: rows, per-version
    statistics and drift counts merged exactly, the challenger's observations recomputed.

    Raises:
        StateError: the partitions scored with different rollouts (the rollout changed mid-run).
    """
    results = [Scored.model_validate(d["result"]) for d in docs]
    first = results[0]
    if any(r.rollout_id != first.rollout_id or r.weights != first.weights for r in results):
        raise StateError("the score partitions were routed with different rollouts; re-run the scoring")
    merged = merge_partitions([
        {"index": d["output"]["partition"]["index"], "rows_scored": r.rows_scored, "predict_seconds": r.predict_seconds,
         "per_version": r.versions, "drift_counts": r.drift_counts, "staged_uri": r.staged_uri,
         "staged_shadow_uri": r.staged_shadow_uri}
        for d, r in zip(docs, results)])
    return Scored(
        rows_scored=merged["rows_scored"], serving=first.serving, versions=merged["per_version"],
        partitions={"count": len(docs), "scored": sorted(d["output"]["partition"]["index"] for d in docs), "processes": len(docs)},
        predict_seconds=round(merged["predict_seconds"], 3), id_hash=first.id_hash, weights=first.weights,
        observations=challenger_observations(merged["per_version"], first.serving), drift_counts=merged["drift_counts"],
        rollout_id=first.rollout_id,
    )
