"""Reading a run's input: a Parquet or CSV file, as bytes, on local disk, or by ranges from S3.

``read_table`` parses bytes (validation reads the whole input this way), ``is_parquet`` tells the
format by name or magic bytes, ``local_input`` streams an ``s3://`` input to a local file once,
its sha256 verified. ``pin_object`` and ``RangedReader`` let a scoring partition read only its own
row groups from S3 (pyarrow reads the footer, then the partition's column chunks, through a
seekable file whose every read is one ranged ``GetObject``), pinned to the ETag (and, if asked, the
version) of the object whose recorded sha256 is the ingested one: N partitions transfer about one
file, not N.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd
from botocore.exceptions import ClientError

from stagewise.platform.runtime.objects import ObjectStore, S3Uri, StorageError, sha256_file


def read_table(data: bytes, name: str) -> pd.DataFrame:
    """Parse input bytes as parquet (``.parquet``/``.pq`` or parquet magic bytes) or CSV.

    Raises:
        ValueError: the bytes are empty or not a readable parquet/CSV file (message says which).
    """
    if not data:
        raise ValueError(f"{name} is empty (0 bytes)")
    try:
        if name.endswith((".parquet", ".pq")) or data[:4] == b"PAR1":
            return pd.read_parquet(io.BytesIO(data))
        return pd.read_csv(io.BytesIO(data))
    except Exception as e:  # pandas/pyarrow raise many types for unreadable files
        raise ValueError(f"{name} is not a readable parquet or CSV file: {e}") from e


def is_parquet(source: Path | bytes | BinaryIO, name: str) -> bool:
    """True if ``source`` (a file, its bytes, or a seekable binary file object, left at its
    start) is Parquet: by its name, else by its magic bytes."""
    if name.endswith((".parquet", ".pq")):
        return True
    if isinstance(source, bytes):
        return source[:4] == b"PAR1"
    if not isinstance(source, (str, Path)):
        source.seek(0)
        magic = source.read(4)
        source.seek(0)
        return magic == b"PAR1"
    with Path(source).open("rb") as fh:
        return fh.read(4) == b"PAR1"


def local_input(objects: ObjectStore, data_uri: str, sha256: str, name: str, workdir: Path) -> Path:
    """A local copy of the input at ``data_uri`` (downloaded to ``workdir`` once, streamed, its
    sha256 verified), for tasks that must read row groups from a file.

    Raises:
        StorageError: the object does not exist, or its bytes differ from ``sha256``.
    """
    path = Path(workdir) / "input" / sha256 / name
    if path.is_file() and sha256_file(path) == sha256:
        return path
    got, actual, _ = download_input(objects, data_uri, workdir)
    if actual != sha256:
        got.unlink()
        raise StorageError(f"{data_uri} has sha256 {actual}, expected {sha256}: the input changed after it was ingested")
    return got


def download_input(objects: ObjectStore, data_uri: str, workdir: Path) -> tuple[Path, str, str]:
    """Stream the object at ``data_uri`` to ``workdir/input/<sha256>/<name>`` (one ``GetObject``
    read in 1 MiB chunks and hashed as it is written: never whole in memory) and return ``(path,
    sha256, etag)``; the path is where ``local_input`` looks for it, so later steps of the task
    reuse it. The ETag is the one of the bytes hashed: a ranged read pinned to it
    (``pin_object``) reads the same bytes, or fails if the object was replaced.

    Raises:
        StorageError: the object does not exist.
    """
    import hashlib

    uri = S3Uri.parse(data_uri)
    folder = Path(workdir) / "input"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        resp = objects.s3.get_object(Bucket=uri.bucket, Key=uri.key)
    except ClientError as e:
        if e.response["Error"]["Code"] in ("NoSuchKey", "404", "NoSuchBucket", "NotFound"):
            raise StorageError(f"{data_uri} does not exist") from e
        raise
    h = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=folder, delete=False) as tmp:
        for chunk in resp["Body"].iter_chunks(1 << 20):
            h.update(chunk)
            tmp.write(chunk)
    digest = h.hexdigest()
    path = folder / digest / Path(uri.key).name
    path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp.name, path)
    return path, digest, resp["ETag"]


@dataclass(frozen=True)
class ObjectPin:
    """One S3 object version, as ``pin_object`` found it (picklable: worker processes get it).

    Attributes:
        bucket, key: where it is.
        size: its length in bytes.
        etag: its ETag (quoted, as S3 returns it); every ranged read sends it as ``IfMatch``, so
            a replaced object fails the read instead of mixing two files' bytes.
        version_id: the version every ranged read asks for (None: the current one, with the
            ETag check). Reading a version needs ``s3:GetObjectVersion``.
    """

    bucket: str
    key: str
    size: int
    etag: str
    version_id: str | None = None

    @property
    def uri(self) -> str:
        """``s3://bucket/key``."""
        return f"s3://{self.bucket}/{self.key}"


def pin_object(s3: Any, uri: str, sha256: str | None = None, version_id: str | None = None) -> ObjectPin:
    """Pin ``uri`` (its current version, or ``version_id``) for ranged reads: one ``HeadObject``.

    Args:
        s3: a boto3 S3 client.
        uri: ``s3://bucket/key``.
        sha256: the ingested sha256; the object's ``sha256`` metadata (what ``ObjectStore``
            writes with every object, computed from its bytes) must equal it. Ranged reads never
            see the whole file, so this recorded digest and the ETag (and version) they carry
            are what tie them to the ingested bytes.
        version_id: pin this version (reads ask for it and still work after the key is
            overwritten; needs ``s3:GetObjectVersion``); None: the current object, by ETag only
            (``s3:GetObject`` suffices; an overwrite makes later reads fail).

    Raises:
        StorageError: the object (or version) does not exist, carries no ``sha256`` metadata,
            or a different one (it changed after it was ingested).
    """
    u = S3Uri.parse(uri)
    try:
        head = s3.head_object(Bucket=u.bucket, Key=u.key, **({"VersionId": version_id} if version_id else {}))
    except ClientError as e:
        if e.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound", "NoSuchVersion"):
            raise StorageError(f"{uri} does not exist (version {version_id or 'current'})") from e
        raise
    recorded = (head.get("Metadata") or {}).get("sha256")
    if sha256 is not None and recorded != sha256:
        why = "carries no sha256 metadata" if recorded is None else f"has sha256 {recorded}"
        raise StorageError(f"{uri} {why}, expected {sha256}: it cannot be pinned to the ingested bytes")
    return ObjectPin(u.bucket, u.key, int(head["ContentLength"]), head["ETag"], version_id)


class RangedReader(io.RawIOBase):
    """A read-only, seekable binary file over one pinned S3 object (``pin_object``), for pyarrow.

    Each ``read`` is one ``GetObject`` with ``Range``, ``IfMatch`` (the pin's ETag) and, when the
    pin has one, ``VersionId``; nothing is cached, so what is transferred is what pyarrow asks for (open Parquet with
    ``pre_buffer=True`` so that a row group's column chunks are coalesced into few requests).
    ``bytes_fetched`` and ``requests`` count what this reader transferred.

    Raises (from ``read``):
        StorageError: the object (version) no longer exists or no longer has the pinned ETag,
            or S3 returned fewer bytes than the range asked for.
    """

    def __init__(self, s3: Any, pin: ObjectPin) -> None:
        super().__init__()
        self._s3, self.pin = s3, pin
        self._pos = 0
        self.bytes_fetched = 0
        self.requests = 0

    def readable(self) -> bool:
        """True."""
        return True

    def seekable(self) -> bool:
        """True."""
        return True

    def tell(self) -> int:
        """The position, in bytes from the start."""
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move to ``offset`` bytes from the start, the position or the end (``whence``); no
        request is made. Returns the new position.

        Raises:
            ValueError: the position would be negative.
        """
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.pin.size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def size(self) -> int:
        """The object's length in bytes."""
        return self.pin.size

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all to the end if negative) from the position, in one ranged
        GET (none at the end); the position moves past them."""
        end = self.pin.size if size is None or size < 0 else min(self.pin.size, self._pos + size)
        if end <= self._pos:
            return b""
        data = self._get(self._pos, end)
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        """The bytes from the position to the end (one ranged GET)."""
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` as ``read(len(buffer))`` would; returns the bytes written."""
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _get(self, start: int, end: int) -> bytes:
        pin = self.pin
        args: dict[str, Any] = {"Bucket": pin.bucket, "Key": pin.key, "Range": f"bytes={start}-{end - 1}", "IfMatch": pin.etag}
        if pin.version_id:
            args["VersionId"] = pin.version_id
        try:
            data = self._s3.get_object(**args)["Body"].read()
        except ClientError as e:
            if e.response["Error"]["Code"] in ("PreconditionFailed", "412", "NoSuchKey", "NoSuchVersion", "404"):
                which = f"version {pin.version_id}, " if pin.version_id else ""
                raise StorageError(f"{pin.uri} ({which}ETag {pin.etag}) changed or disappeared after it was ingested; "
                                   "start a new run") from e
            raise
        if len(data) != end - start:
            raise StorageError(f"{pin.uri}: asked for bytes {start}-{end - 1}, got {len(data)} bytes")
        self.requests += 1
        self.bytes_fetched += len(data)
        return data
