"""``write_dataset``: a generated frame as the Parquet file the pipeline reads, and its sha256.

Input: a DataFrame (normally from ``generate_customers``) and a path. Output: the file (zstd, no
index column, row groups of ``ROW_GROUP_ROWS`` rows, the unit scoring partitions are cut along)
and the hex sha256 of its bytes, which lineage records as the data's identity. See the README for
how the pipeline addresses data by that digest.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

ROW_GROUP_ROWS = 100_000
"""Rows per Parquet row group of generated files: the unit scoring partitions are cut along."""


def write_dataset(df: pd.DataFrame, path: str | Path) -> str:
    """Write ``df`` as a Parquet file (pyarrow, zstd, no index column, row groups of
    ``ROW_GROUP_ROWS`` rows) and return its sha256.

    Args:
        df: frame to write, e.g. from ``generate_customers``.
        path: destination file; parent directories are created.

    Returns:
        lowercase hex sha256 digest (64 chars) of the bytes written, for lineage records.

    Raises:
        OSError: the file cannot be written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(df, preserve_index=False)
    pq.write_table(table, path, compression="zstd", row_group_size=ROW_GROUP_ROWS)
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
