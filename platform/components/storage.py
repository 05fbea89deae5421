"""Storage: the data and artifact buckets (encrypted, versioned, private, TLS-only, lifecycle)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from stagewise.platform.policies import tls_only_bucket_policy
from stagewise.platform.resources import BucketSpec


@dataclass
class StorageArgs:
    """Buckets to create (from ``platform.resources``) and whether they are protected from deletion."""

    buckets: tuple[BucketSpec, ...]
    deletion_protection: bool = False


class Storage(pulumi.ComponentResource):
    """One S3 bucket per ``BucketSpec`` with SSE, versioning, public access blocked, a TLS-only
    bucket policy and lifecycle rules. Outputs ``names`` and ``arns`` keyed by bucket role."""

    def __init__(self, name: str, args: StorageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("stagewise:platform:Storage", name, None, opts)
        self.buckets: dict[str, aws.s3.Bucket] = {}
        for spec in args.buckets:
            child = pulumi.ResourceOptions(parent=self, protect=args.deletion_protection)
            bucket = aws.s3.Bucket(f"{name}-{spec.role}", bucket=spec.name, force_destroy=not args.deletion_protection, opts=child)
            under = pulumi.ResourceOptions(parent=bucket)
            aws.s3.BucketServerSideEncryptionConfiguration(
                f"{name}-{spec.role}-sse", bucket=bucket.id,
                rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": spec.sse_algorithm}, "bucket_key_enabled": True}],
                opts=under,
            )
            if spec.versioning:
                aws.s3.BucketVersioning(f"{name}-{spec.role}-versioning", bucket=bucket.id,
                                        versioning_configuration={"status": "Enabled"}, opts=under)
            block = aws.s3.BucketPublicAccessBlock(
                f"{name}-{spec.role}-public-access", bucket=bucket.id, block_public_acls=True, block_public_policy=True,
                ignore_public_acls=True, restrict_public_buckets=True, opts=under,
            )
            aws.s3.BucketPolicy(
                f"{name}-{spec.role}-tls-only", bucket=bucket.id,
                policy=bucket.arn.apply(lambda arn: pulumi.Output.json_dumps(tls_only_bucket_policy(arn))),
                opts=pulumi.ResourceOptions(parent=bucket, depends_on=[block]),
            )
            if spec.lifecycle:
                aws.s3.BucketLifecycleConfiguration(
                    f"{name}-{spec.role}-lifecycle", bucket=bucket.id,
                    rules=[
                        {
                            "id": r.id,
                            "status": "Enabled",
                            "filter": {"prefix": r.prefix},
                            "noncurrent_version_expiration": {"noncurrent_days": r.noncurrent_days},
                            **({"expiration": {"days": r.expire_days}} if r.expire_days else {}),
                        }
                        for r in spec.lifecycle
                    ],
                    opts=under,
                )
            if spec.eventbridge:
                aws.s3.BucketNotification(f"{name}-{spec.role}-events", bucket=bucket.id, eventbridge=True, opts=under)
            self.buckets[spec.role] = bucket
        self.names = {role: b.bucket for role, b in self.buckets.items()}
        self.arns = {role: b.arn for role, b in self.buckets.items()}
        self.register_outputs({"names": self.names, "arns": self.arns})
