"""Registry: the registry's DynamoDB table, from the same ``TableSpec`` the runtime uses."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from stagewise.platform.resources import TableSpec


@dataclass
class RegistryTableArgs:
    """The table specification (``platform.resources.registry_table_spec``)."""

    table: TableSpec


class RegistryTable(pulumi.ComponentResource):
    """On-demand table with the registry's key schema and indexes, server-side encryption,
    point-in-time recovery, and deletion protection when the spec asks (prod). Outputs ``name``, ``arn``."""

    def __init__(self, name: str, args: RegistryTableArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        # the type was stagewise:platform:Registry: the alias keeps deployed stacks' URNs (no replacement)
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(aliases=[pulumi.Alias(type_="stagewise:platform:Registry")]))
        super().__init__("stagewise:platform:RegistryTable", name, None, opts)
        spec = args.table
        self.table = aws.dynamodb.Table(
            f"{name}-table",
            name=spec.name,
            billing_mode="PAY_PER_REQUEST",
            hash_key=spec.hash_key.name,
            range_key=spec.range_key.name,
            attributes=[{"name": a.name, "type": a.type} for a in spec.attributes],
            global_secondary_indexes=[
                {"name": i.name, "hash_key": i.hash_key.name, "range_key": i.range_key.name, "projection_type": "ALL"}
                for i in spec.indexes
            ],
            point_in_time_recovery={"enabled": spec.point_in_time_recovery},
            server_side_encryption={"enabled": True},
            deletion_protection_enabled=spec.deletion_protection,
            opts=pulumi.ResourceOptions(parent=self, protect=spec.deletion_protection),
        )
        self.name = self.table.name
        self.arn = self.table.arn
        self.register_outputs({"name": self.name, "arn": self.arn})
