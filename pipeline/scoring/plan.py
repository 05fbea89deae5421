"""How an input is cut into scoring partitions: along its Parquet row groups.

``plan_partitions`` splits the row groups into ``count`` contiguous runs of about
``rows_per_partition()`` rows (``ceil(rows / rows_per_partition)`` partitions, at most one per row
group); a CSV input (no row groups) is one partition. On AWS each partition is one task of the
state machine's Distributed Map; locally one process of a pool.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from stagewise.pipeline.inputs import is_parquet, read_table
from stagewise.platform.contract import Env

DEFAULT_ROWS_PER_PARTITION = 1_000_000


class PartitionError(ValueError):
    """A partition index or count does not fit the input's partition plan."""


def rows_per_partition(default: int = DEFAULT_ROWS_PER_PARTITION) -> int:
    """``$STAGEWISE_ROWS_PER_PARTITION``, else ``default`` (the environment's stack setting
    ``rowsPerPartition``; on AWS the task definition sets the variable from it).

    Raises:
        ValueError: the variable is not a positive integer.
    """
    raw = os.environ.get(Env.ROWS_PER_PARTITION, str(default))
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{Env.ROWS_PER_PARTITION} must be a positive integer, not {raw!r}")
    return value


def partition_count(rows: int, per_partition: int) -> int:
    """How many partitions ``rows`` rows make at ``per_partition`` rows each: ceil, at least 1."""
    return max(1, math.ceil(rows / per_partition))


@dataclass(frozen=True)
class PartitionPlan:
    """How an input is cut into partitions.

    Attributes:
        group_rows: rows of each Parquet row group, in file order (a CSV: one entry, all rows).
        count: number of partitions; each is a contiguous run of row groups
            (``numpy.array_split`` of the row-group indices), so ``count <= len(group_rows)``.
    """

    group_rows: tuple[int, ...]
    count: int

    @property
    def rows(self) -> int:
        """Rows of the whole input."""
        return sum(self.group_rows)

    def row_groups(self, index: int) -> list[int]:
        """Row-group indices of partition ``index``.

        Raises:
            PartitionError: ``index`` is not in ``0..count-1``.
        """
        if not 0 <= index < self.count:
            raise PartitionError(f"partition {index} does not exist: the input has {self.count} partition(s)")
        return [int(g) for g in np.array_split(np.arange(len(self.group_rows)), self.count)[index]]

    def bounds(self, index: int) -> tuple[int, int]:
        """Row positions ``[start, end)`` of partition ``index`` in the whole input."""
        groups = self.row_groups(index)
        start = sum(self.group_rows[: groups[0]]) if groups else 0
        return start, start + sum(self.group_rows[g] for g in groups)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``PartitionPlan(**d)`` restores it)."""
        return {"group_rows": list(self.group_rows), "count": self.count}


def plan_partitions(group_rows: list[int] | tuple[int, ...], per_partition: int) -> PartitionPlan:
    """Cut row groups of the given sizes into ``ceil(rows / per_partition)`` partitions (at most
    one per row group, at least one)."""
    groups = tuple(int(r) for r in group_rows) or (0,)
    return PartitionPlan(groups, min(partition_count(sum(groups), per_partition), len(groups)))


def plan_source(source: Path | bytes | BinaryIO, name: str, per_partition: int | None = None) -> PartitionPlan:
    """The partition plan of a Parquet input (from its footer, no data read) or a CSV (one partition).

    Args:
        source: a local file, the file's bytes, or a seekable binary file object (e.g.
            ``inputs.RangedReader``: only the footer is fetched).
        name: the input's file name (``.csv`` inputs are one partition).
        per_partition: rows per partition (default ``rows_per_partition()``).

    Raises:
        ValueError: the input is neither readable Parquet nor CSV (``read_table``'s message).
    """
    import pyarrow.parquet as pq

    per = per_partition or rows_per_partition()
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    if is_parquet(source, name):
        meta = pq.ParquetFile(handle).metadata
        return plan_partitions([meta.row_group(i).num_rows for i in range(meta.num_row_groups)], per)
    if isinstance(source, bytes):
        data = source
    elif isinstance(source, (str, Path)):
        data = Path(source).read_bytes()
    else:
        source.seek(0)
        data = source.read()
    return plan_partitions([len(read_table(data, name))], per)
