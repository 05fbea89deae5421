"""A scoring partition reads only its own row groups from S3 (``inputs.RangedReader``), pinned.

The input, 24,000 generated customers in 8 row groups of 3,000 rows, is put in the data bucket of
the embedded AWS as ``ingest`` puts it (``ObjectStore.put_bytes``: sha256 metadata). One partition
of the 8 read through the ranged reader (footer, then the partition's column chunks) transfers a
fraction of the file and gives exactly the rows a full read gives for that partition. Once the
key is overwritten, a reader pinned by ETag fails rather than mixing files, one pinned to the
version still reads the ingested bytes, and an object whose recorded sha256 is not the ingested
one (or that records none) is refused.
"""

from __future__ import annotations

import io

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stagewise.pipeline import scoring
from stagewise.pipeline.generator import generate_customers
from stagewise.pipeline.inputs import RangedReader, pin_object
from stagewise.platform.runtime.objects import ObjectStore, StorageError, sha256_bytes

ROWS, GROUP = 24_000, 3_000


@pytest.fixture(scope="module")
def uploaded(dev):
    """``(s3 client, uri, sha256, bytes)`` of the input, stored as ingest stores it."""
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(generate_customers(ROWS, seed=7), preserve_index=False), buf, row_group_size=GROUP)
    data = buf.getvalue()
    s3, bucket = dev.clients.client("s3"), dev.resources.data_bucket.name
    key = f"raw/ranged-test/{sha256_bytes(data)}/customers.parquet"
    ObjectStore(s3).put_bytes(bucket, key, data)
    return s3, f"s3://{bucket}/{key}", sha256_bytes(data), data


def test_one_partition_fetches_a_fraction_of_the_file_and_the_same_rows(uploaded):
    s3, uri, digest, data = uploaded
    pin = pin_object(s3, uri, digest)
    assert pin.size == len(data) and pin.etag and pin.version_id is None  # pinned by ETag (s3:GetObject suffices)

    reader = RangedReader(s3, pin)
    plan = scoring.plan_source(reader, "customers.parquet", GROUP)  # footer only
    assert plan.count == 8 and plan.row_groups(5) == [5]
    footer_bytes = reader.bytes_fetched

    reader = RangedReader(s3, pin)
    pf = pq.ParquetFile(reader, pre_buffer=True)
    got = pa.Table.from_batches(list(pf.iter_batches(row_groups=plan.row_groups(5), batch_size=1_000))).to_pandas()

    start, end = plan.bounds(5)
    expected = pd.read_parquet(io.BytesIO(data)).iloc[start:end].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    print(f"\nfile {len(data):,} bytes; footer {footer_bytes:,} bytes; one partition of 8: {reader.bytes_fetched:,} bytes "
          f"in {reader.requests} requests ({reader.bytes_fetched / len(data):.1%})")
    assert footer_bytes < len(data) / 10
    assert reader.bytes_fetched < len(data) / 4  # one eighth of the data, plus the footer
    assert reader.requests <= 4  # pre_buffer coalesces the row group's column chunks

    # only the columns asked for: less again
    reader = RangedReader(s3, pin)
    few = pq.ParquetFile(reader, pre_buffer=True).read_row_groups(plan.row_groups(5), columns=["customer_id", "age"])
    assert few.to_pandas().equals(expected[["customer_id", "age"]])
    assert reader.bytes_fetched < len(data) / 16


def test_a_replaced_object_is_never_mixed_in_and_a_pinned_version_still_reads(uploaded):
    s3, uri, digest, data = uploaded
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    by_etag = pin_object(s3, uri, digest)
    version = s3.head_object(Bucket=bucket, Key=key)["VersionId"]  # the data bucket keeps versions
    by_version = pin_object(s3, uri, digest, version_id=version)
    other = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(generate_customers(100, seed=8), preserve_index=False), other)
    ObjectStore(s3).put_bytes(bucket, key, other.getvalue())  # the key now holds other bytes
    try:
        with pytest.raises(StorageError, match="changed or disappeared"):
            RangedReader(s3, by_etag).read(4)  # IfMatch: the current object has another ETag
        assert pq.ParquetFile(RangedReader(s3, by_version)).metadata.num_rows == ROWS  # the ingested version
        with pytest.raises(StorageError, match="cannot be pinned to the ingested bytes"):
            pin_object(s3, uri, digest)  # the current object's recorded sha256 is not the ingested one
    finally:
        ObjectStore(s3).put_bytes(bucket, key, data)
    s3.put_object(Bucket=bucket, Key=f"{key}.bare", Body=data)  # not written by ObjectStore: no sha256 recorded
    with pytest.raises(StorageError, match="carries no sha256 metadata"):
        pin_object(s3, f"{uri}.bare", digest)  # (the score step then downloads it and verifies the bytes)


def test_partitioned_validation_reads_the_object_by_ranges_with_the_same_result(uploaded, tmp_path):
    from stagewise.pipeline.spec import load_spec
    from stagewise.pipeline.validation_partitions import validate_partitions

    s3, uri, digest, data = uploaded
    spec = load_spec("engagement")

    def prepare(df: pd.DataFrame) -> pd.DataFrame:
        return df.drop(columns=list(spec.ignored_columns))

    reader = RangedReader(s3, pin_object(s3, uri, digest))
    remote = validate_partitions(reader, "customers.parquet", spec, tmp_path / "remote", per_partition=12_000, prepare=prepare)
    local = validate_partitions(data, "customers.parquet", spec, tmp_path / "local", per_partition=12_000, prepare=prepare)
    assert remote.success and remote.row_count == ROWS and remote.result["meta"]["partitions"]["count"] == 2
    assert [(r["success"], r["result"]) for r in remote.result["results"]] == [(r["success"], r["result"]) for r in local.result["results"]]
    assert reader.bytes_fetched < 1.5 * len(data)  # each partition once, the id column again for DuckDB: never N downloads
