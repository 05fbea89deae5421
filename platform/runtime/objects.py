"""S3 object storage for the pipeline: content hashes, publish-after-write, directory uploads.

A thin wrapper holding one injected boto3 S3 client. Objects are written with their sha256 in the
object metadata (``sha256``), and reads can verify it, so an artifact is always the bytes that were
hashed when it was registered.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from stagewise.platform.contract import StagewiseError


PUBLISHED_MANIFEST = "_manifest.json"
"""The object whose existence publishes a folder (``ObjectStore.publish_staged``)."""


class StorageError(StagewiseError, RuntimeError):
    """An object is missing, or its bytes do not match the expected sha256 (exit 1)."""

    code = "StorageError"


class ChecksumMismatch(StorageError):
    """An object's bytes do not match the sha256 recorded for them: it was changed (tampered with,
    or corrupted) after it was written. ``uri``, ``expected`` and ``actual`` say which and how."""

    code = "ChecksumMismatch"
    hint = ("restore the registered bytes from the object's earlier version (the buckets keep versions), or roll "
            "back / retire the version; never re-register the changed file")

    def __init__(self, message: str, uri: str = "", expected: str = "", actual: str = "") -> None:
        super().__init__(message)
        self.uri, self.expected, self.actual = uri, expected, actual

    def __reduce__(self) -> tuple[Any, ...]:  # survives a process pool (the scoring workers), context included
        return (type(self), (str(self), self.uri, self.expected, self.actual), dict(self.__dict__))


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class S3Uri:
    """``s3://bucket/key`` split into its parts."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> "S3Uri":
        """Parse ``s3://bucket/key``; raises ValueError for anything else."""
        if not uri.startswith("s3://") or "/" not in uri[5:]:
            raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
        bucket, key = uri[5:].split("/", 1)
        return cls(bucket, key)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


STREAM_UPLOAD_BYTES = 64 * 2**20
"""Files larger than this (bytes) are uploaded by ``ObjectStore.put_file`` in a streamed multipart
upload (16 MiB parts, 4 at a time: 64 MiB in memory) rather than one PUT of their bytes in memory
(S3's single PUT takes up to 5 GiB; a part is 5 MiB to 5 GiB, at most 10,000 parts: 156 GiB here)."""


class ObjectStore:
    """Reads and writes S3 objects through one boto3 S3 client."""

    def __init__(self, s3: Any) -> None:
        self.s3 = s3

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Write ``data``; returns its sha256 (also stored as object metadata ``sha256``)."""
        digest = sha256_bytes(data)
        self.s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type, Metadata={"sha256": digest})
        return digest

    def put_new(self, bucket: str, key: str, data: bytes, content_type: str = "application/octet-stream") -> bool:
        """Write ``data`` unless the key exists (S3 conditional write ``If-None-Match: *``); returns
        True if this call wrote it, False if another writer's object was already there (it is left
        as it is).

        A write whose response was lost (a read timeout after S3 applied it) is retried by botocore
        and then meets its own object (412): when the object there has this call's bytes (the
        ``sha256`` metadata every write here carries), it is this call's write and True is returned.
        """
        digest = sha256_bytes(data)
        try:
            self.s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type,
                               Metadata={"sha256": digest}, IfNoneMatch="*")
        except ClientError as e:
            if e.response["Error"]["Code"] not in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise
            try:
                there = self.s3.head_object(Bucket=bucket, Key=key).get("Metadata", {}).get("sha256")
            except ClientError:
                return False
            return there == digest
        return True

    def put_file(self, bucket: str, key: str, path: Path, content_type: str | None = None) -> str:
        """Upload a local file; returns its sha256 (stored as metadata ``sha256``, as ``put_bytes``).
        A file over ``STREAM_UPLOAD_BYTES`` is streamed from disk in a multipart upload (boto3's
        managed transfer) instead of being read into memory."""
        ctype = content_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if path.stat().st_size <= STREAM_UPLOAD_BYTES:
            return self.put_bytes(bucket, key, path.read_bytes(), ctype)
        from boto3.s3.transfer import TransferConfig  # deferred: only for large files

        digest = sha256_file(path)
        config = TransferConfig(multipart_threshold=STREAM_UPLOAD_BYTES, multipart_chunksize=16 * 2**20, max_concurrency=4)
        self.s3.upload_file(str(path), bucket, key, ExtraArgs={"ContentType": ctype, "Metadata": {"sha256": digest}}, Config=config)
        return digest

    def upload_dir(self, bucket: str, prefix: str, folder: Path, threads: int = 8) -> int:
        """Upload every file under ``folder`` to ``prefix/<relative path>`` with ``threads``
        concurrent PUTs (boto3 clients are thread-safe); returns the file count.

        Raises:
            botocore.exceptions.ClientError: a PUT failed (the first failure, after all finished).
        """
        from concurrent.futures import ThreadPoolExecutor

        paths = sorted(p for p in folder.rglob("*") if p.is_file())
        root = prefix.rstrip("/")
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            list(pool.map(lambda p: self.put_file(bucket, f"{root}/{p.relative_to(folder).as_posix()}", p), paths))
        return len(paths)

    def head_sha256(self, bucket: str, key: str) -> str | None:
        """The ``sha256`` metadata of an object, or None if the object does not exist."""
        try:
            return self.s3.head_object(Bucket=bucket, Key=key)["Metadata"].get("sha256")
        except ClientError as e:
            if e.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def get_bytes(self, bucket: str, key: str, expect_sha256: str | None = None) -> bytes:
        """Read an object; if ``expect_sha256`` is given, verify the bytes against it.

        Raises:
            StorageError: the object does not exist.
            ChecksumMismatch: its sha256 differs from ``expect_sha256``.
        """
        try:
            data = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as e:
            if e.response["Error"]["Code"] in ("NoSuchKey", "404", "NoSuchBucket"):
                raise StorageError(f"s3://{bucket}/{key} does not exist") from e
            raise
        if expect_sha256 is not None:
            actual = sha256_bytes(data)
            if actual != expect_sha256:
                raise ChecksumMismatch(
                    f"s3://{bucket}/{key} has sha256 {actual}, expected {expect_sha256}: the object was "
                    "changed after it was registered; do not use it", f"s3://{bucket}/{key}", expect_sha256, actual)
        return data

    # -- publish-after-write for a folder of objects ----------------------------------------------
    def keys(self, bucket: str, prefix: str) -> list[str]:
        """Every key under ``prefix`` (paginated), sorted."""
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def delete_keys(self, bucket: str, keys: list[str]) -> int:
        """Delete ``keys`` (1,000 per ``DeleteObjects`` call); returns how many."""
        for start in range(0, len(keys), 1000):
            self.s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[start:start + 1000]], "Quiet": True})
        return len(keys)

    def read_published(self, bucket: str, prefix: str) -> dict[str, Any] | None:
        """The manifest ``publish_staged`` wrote at ``prefix/_manifest.json``, or None: then nothing
        under ``prefix`` is published (a run died before it finished publishing)."""
        import json

        try:
            return json.loads(self.get_bytes(bucket, f"{prefix}/{PUBLISHED_MANIFEST}"))
        except StorageError:
            return None

    def publish_staged(self, bucket: str, staged: str, final: str, last: tuple[str, ...] = (),
                       on_copied: Any = None, threads: int = 8) -> dict[str, Any]:
        """Make the objects under ``staged/`` visible under ``final/`` all at once: copy each (the
        relative names in ``last`` after all the others are copied, e.g. a site's ``index.html``),
        ``threads`` at a time, then write ``final/_manifest.json`` (the commit point: ``{"files":
        [{"key", "sha256", "bytes"}]}``, in key order), then delete the staged copies. Readers go
        through ``read_published``. Idempotent: once the manifest exists the call only cleans up
        what is staged; a call that died half-way copies the same objects again.

        Args:
            on_copied: called (in the calling thread) after each object is copied (a failpoint, in
                the fault tests).
            threads: concurrent HEAD + COPY pairs (a Data Docs site is a few dozen objects: one at
                a time, their round trips were most of the validate step's publishing).

        Returns:
            The manifest.

        Raises:
            StorageError: nothing is staged under ``staged/`` (and nothing was published).
        """
        import json

        done = self.read_published(bucket, final)
        if done is not None:
            self.delete_keys(bucket, self.keys(bucket, f"{staged}/"))
            return done
        keys = self.keys(bucket, f"{staged}/")
        if not keys:
            raise StorageError(f"nothing staged under s3://{bucket}/{staged}/ to publish")
        from concurrent.futures import ThreadPoolExecutor  # deferred: only publishing copies in threads

        def copy(key: str) -> dict[str, Any]:
            target = f"{final}/{key[len(staged) + 1:]}"
            head = self.s3.head_object(Bucket=bucket, Key=key)
            self.s3.copy_object(Bucket=bucket, Key=target, CopySource={"Bucket": bucket, "Key": key})
            return {"key": target, "sha256": head["Metadata"].get("sha256"), "bytes": head["ContentLength"]}

        files = []
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            for group in ([k for k in keys if k[len(staged) + 1:] not in last], [k for k in keys if k[len(staged) + 1:] in last]):
                for entry in pool.map(copy, group):  # in key order; ``last`` only once the others are copied
                    files.append(entry)
                    if on_copied is not None:
                        on_copied()
        manifest = {"files": files}
        if not self.put_new(bucket, f"{final}/{PUBLISHED_MANIFEST}", json.dumps(manifest).encode(), "application/json"):
            manifest = self.read_published(bucket, final) or manifest  # another attempt published first
        self.delete_keys(bucket, keys)
        return manifest
