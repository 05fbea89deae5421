"""Reading a run's input: a Parquet or CSV file, as bytes or on local disk, its sha256 checked.

``read_table`` parses bytes (validation reads the whole input this way), ``is_parquet`` tells the
format by name or magic bytes, ``local_input`` streams an ``s3://`` input to a local file once
(scoring partitions read their own row groups from it).
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import pandas as pd

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


def is_parquet(source: Path | bytes, name: str) -> bool:
    """True if ``source`` (a file or its bytes) is Parquet: by its name, else by its magic bytes."""
    if name.endswith((".parquet", ".pq")):
        return True
    if isinstance(source, bytes):
        return source[:4] == b"PAR1"
    with Path(source).open("rb") as fh:
        return fh.read(4) == b"PAR1"


def local_input(objects: ObjectStore, data_uri: str, sha256: str, name: str, workdir: Path) -> Path:
    """A local copy of the input at ``data_uri`` (downloaded to ``workdir`` once, streamed, its
    sha256 verified), for tasks that must read row groups from a file.

    Raises:
        StorageError: the object's bytes differ from ``sha256``.
    """
    path = Path(workdir) / "input" / sha256 / name
    if path.is_file() and sha256_file(path) == sha256:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    uri = S3Uri.parse(data_uri)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
        objects.s3.download_fileobj(uri.bucket, uri.key, tmp)
    actual = sha256_file(Path(tmp.name))
    if actual != sha256:
        Path(tmp.name).unlink()
        raise StorageError(f"{data_uri} has sha256 {actual}, expected {sha256}: the input changed after it was ingested")
    os.replace(tmp.name, path)
    return path
