"""The whole-column counts of partitioned validation, by DuckDB streaming over the input.

Uniqueness, row count, distinct count and unique proportion need every value of a column at once;
``column_stats`` counts them exactly over the Parquet input (``read_parquet`` of a local file, or
Arrow batches of one column streamed from a file object such as ``inputs.RangedReader`` over S3),
one column per scan; DuckDB's hash aggregate spills to disk past ``memory_limit``. Used by
``validation_partitions`` (whose docstring says how each expectation is merged).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

PARTIAL_VALUES = 20
"""Sample values GX keeps per expectation in ``BASIC`` (``partial_unexpected_count``)."""

Source = Path | str | bytes | BinaryIO
"""A Parquet input: a local path, its bytes, or a seekable binary file object."""


class _Scan:
    """DuckDB relations over the input: ``read_parquet`` of a local file (with DuckDB's
    ``file_row_number``), else a fresh Arrow stream of the asked columns and a
    ``file_row_number`` column per query (a registered stream is consumed by one scan)."""

    def __init__(self, con: Any, source: Source, pf: Any) -> None:
        self.con, self.source, self.pf, self.n = con, source, pf, 0
        self.path = _local_path(source)

    def __call__(self, columns: list[str]) -> str:
        if self.path is not None:
            return "read_parquet('" + str(self.path).replace("'", "''") + "', file_row_number = true)"
        import pyarrow as pa

        def batches() -> Iterator[pa.RecordBatch]:
            start = 0
            for b in self.pf.iter_batches(columns=columns, batch_size=65_536):
                yield b.append_column("file_row_number", pa.array(range(start, start + b.num_rows), pa.int64()))
                start += b.num_rows

        fields = [self.pf.schema_arrow.field(c) for c in columns] + [pa.field("file_row_number", pa.int64())]
        self.n += 1
        self.con.register(f"stream_{self.n}", pa.RecordBatchReader.from_batches(pa.schema(fields), batches()))
        return f"stream_{self.n}"


def column_stats(source: Source, pf: Any, columns: list[str], memory_limit: str,
                  temp_dir: Path | None) -> dict[str, Any]:
    """``{"rows": rows of the file, "columns": {column: stats}}`` counted by DuckDB, where a
    column's stats are ``nulls`` (null, or NaN in a float column: pandas' nulls), ``distinct``
    (distinct non-null values), ``duplicated_rows`` (non-null rows whose value occurs more than
    once) and ``sample`` (the first ``PARTIAL_VALUES`` of those rows' values, in file order).
    Columns absent from the file are left out (their expectations raised in GX already)."""
    import duckdb
    import pyarrow as pa

    names = set(pf.schema_arrow.names)
    with tempfile.TemporaryDirectory(dir=temp_dir, prefix="stagewise-duckdb-") as spill:
        con = duckdb.connect(config={"memory_limit": memory_limit, "temp_directory": spill, "threads": 2})
        try:
            scan = _Scan(con, source, pf)
            rows = con.execute(f"SELECT count(*) FROM {scan([])}").fetchall()[0][0]
            out: dict[str, Any] = {"rows": int(rows), "columns": {}}
            for col in (c for c in columns if c in names):
                q = '"' + col.replace('"', '""') + '"'
                valid = f"{q} IS NOT NULL" + (f" AND NOT isnan({q})" if pa.types.is_floating(pf.schema_arrow.field(col).type) else "")
                nulls = con.execute(f"SELECT count(*) FILTER (WHERE NOT ({valid})) FROM {scan([col])}").fetchall()[0][0]
                distinct, duplicated = con.execute(
                    f"SELECT count(*), coalesce(sum(n) FILTER (WHERE n > 1), 0) "
                    f"FROM (SELECT count(*) AS n FROM {scan([col])} WHERE {valid} GROUP BY {q})").fetchall()[0]
                sample: list = []
                if duplicated:
                    sample = [v for (v,) in con.execute(
                        f"SELECT {q} FROM {scan([col])} WHERE {valid} AND {q} IN "
                        f"(SELECT {q} FROM {scan([col])} WHERE {valid} GROUP BY {q} HAVING count(*) > 1) "
                        f"ORDER BY file_row_number LIMIT {PARTIAL_VALUES}").fetchall()]
                out["columns"][col] = {"nulls": int(nulls), "distinct": int(distinct), "duplicated_rows": int(duplicated),
                                       "sample": sample}
            return out
        finally:
            con.close()


def _local_path(source: Source) -> Path | None:
    if isinstance(source, (str, Path)):
        return Path(source).resolve()
    return None
