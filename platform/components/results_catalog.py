"""The results catalog on AWS: a Glue database with one table per built-in model over
``s3://<data bucket>/results/<model>/``, an Athena workgroup, and the views the models' specs
declare as named queries.

Tables use partition projection (``run_date`` as a date ``yyyy-MM-dd`` from 2026-01-01 to today,
``model_version`` an integer), so a run's results are queryable the moment its manifest is
published: no crawler and no ``MSCK REPAIR TABLE``. The layout, columns and view SQL are the
runtime's own (``stagewise.pipeline.catalog``), so Athena and ``stagewise query`` (DuckDB) read the
same files with the same SQL. Athena's query results go to ``athena-results/`` in the data bucket
(SSE-S3, expired by the bucket's lifecycle). The workgroup enforces its configuration, and its
bytes-scanned cutoff (``BYTES_SCANNED_CUTOFF``, 1 GiB) cancels any one query that would read more:
the analyst agent's SQL runs here on AWS (``stagewise.pipeline.catalog.Athena``).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from stagewise.pipeline import catalog
from stagewise.pipeline.spec import ModelSpec

PARQUET = {
    "input_format": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
    "output_format": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
    "ser_de_info": {"serialization_library": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"},
}
PROJECTION_START = "2026-01-01"
BYTES_SCANNED_CUTOFF = 1024**3
"""Most bytes one query in the workgroup may scan (Athena cancels it past that): 1 GiB, about half a
cent per query at Athena's 5 USD per TB scanned (a query filtered on run_date reads far less)."""


@dataclass
class ResultsCatalogArgs:
    """Where the results live and which models have tables."""

    environment: str
    data_bucket: str
    specs: list[ModelSpec]


def table_parameters(bucket: str, model: str) -> dict[str, str]:
    """Glue table parameters: Parquet, external, partition projection over run_date and model_version."""
    return {
        "classification": "parquet",
        "EXTERNAL": "TRUE",
        "projection.enabled": "true",
        "projection.run_date.type": "date",
        "projection.run_date.format": "yyyy-MM-dd",
        "projection.run_date.range": f"{PROJECTION_START},NOW",
        "projection.run_date.interval": "1",
        "projection.run_date.interval.unit": "DAYS",
        "projection.model_version.type": "integer",
        "projection.model_version.range": "1,1000000",
        "storage.location.template":
            f"s3://{bucket}/{catalog.RESULTS}/{model}/run_date=${{run_date}}/model_version=${{model_version}}/",
    }


class ResultsCatalog(pulumi.ComponentResource):
    """Glue database ``stagewise_<env>``, tables ``<model>_results``, Athena workgroup
    ``stagewise-<env>`` and one named query per view (``CREATE OR REPLACE VIEW``, run once after
    deploying). Outputs the database and workgroup names."""

    def __init__(self, name: str, args: ResultsCatalogArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("stagewise:platform:ResultsCatalog", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        env, bucket = args.environment, args.data_bucket
        self.database = aws.glue.CatalogDatabase(f"{name}-db", name=catalog.glue_database(env),
                                                 description=f"Stagewise {env}: scoring results", opts=child)
        self.tables = [
            aws.glue.CatalogTable(
                f"{name}-{spec.name}", name=catalog.table_name(spec.name), database_name=self.database.name,
                table_type="EXTERNAL_TABLE", parameters=table_parameters(bucket, spec.name),
                partition_keys=[{"name": "run_date", "type": "string"}, {"name": "model_version", "type": "int"}],
                storage_descriptor={"location": f"s3://{bucket}/{catalog.RESULTS}/{spec.name}/", **PARQUET,
                                    "columns": catalog.glue_columns(spec)},
                opts=child,
            )
            for spec in args.specs
        ]
        self.workgroup = aws.athena.Workgroup(
            f"{name}-workgroup", name=catalog.athena_workgroup(env), force_destroy=True,
            configuration={
                "enforce_workgroup_configuration": True,
                "bytes_scanned_cutoff_per_query": BYTES_SCANNED_CUTOFF,
                "publish_cloudwatch_metrics_enabled": True,
                "result_configuration": {"output_location": f"s3://{bucket}/athena-results/",
                                         "encryption_configuration": {"encryption_option": "SSE_S3"}},
            },
            opts=child,
        )
        self.views = [
            aws.athena.NamedQuery(f"{name}-view-{view}", name=f"stagewise create view {view}", database=self.database.name,
                                  workgroup=self.workgroup.name, query=f"CREATE OR REPLACE VIEW {view} AS\n{sql}", opts=child)
            for view, (_, sql) in catalog.views(args.specs).items()
        ]
        self.register_outputs({"database": self.database.name, "workgroup": self.workgroup.name})
