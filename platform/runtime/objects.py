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


class StorageError(RuntimeError):
    """An object is missing, or its bytes do not match the expected sha256."""


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
        True if this call wrote it, False if the object was already there (it is left as it is)."""
        try:
            self.s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type,
                               Metadata={"sha256": sha256_bytes(data)}, IfNoneMatch="*")
        except ClientError as e:
            if e.response["Error"]["Code"] in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise
        return True

    def put_file(self, bucket: str, key: str, path: Path, content_type: str | None = None) -> str:
        """Upload a local file; returns its sha256."""
        ctype = content_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return self.put_bytes(bucket, key, path.read_bytes(), ctype)

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
            StorageError: the object does not exist, or its sha256 differs from ``expect_sha256``.
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
                raise StorageError(
                    f"s3://{bucket}/{key} has sha256 {actual}, expected {expect_sha256}: the object was "
                    "changed after it was registered; do not use it"
                )
        return data
