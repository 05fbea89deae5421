"""Partitioned batch scoring: plan the partitions (``plan``), score each with bounded memory
(``score``), then publish the staged parts all at once through a manifest (``publish``).

Every row's prediction depends only on that row, the model and the routing (a hash of the row's
key), so the predictions are identical whatever the partitioning or batch size. The README's
"The pipeline" and "Performance" sections tell the story; this package's public names are
re-exported here.
"""

from stagewise.pipeline.scoring.plan import (
    DEFAULT_ROWS_PER_PARTITION, PartitionError, PartitionPlan, partition_count, plan_partitions, plan_source, rows_per_partition,
)
from stagewise.pipeline.scoring.publish import (
    MANIFEST, discard_staged, publish_predictions, published_prefix, read_manifest, read_predictions, staging_prefix,
)
from stagewise.pipeline.scoring.score import (
    BATCH_ROWS, ScoringJob, decision_threshold, load_artifact, merge_partitions, merge_version_stats, score_partition,
    score_partitions,
)

__all__ = [
    "BATCH_ROWS", "DEFAULT_ROWS_PER_PARTITION", "MANIFEST", "PartitionError", "PartitionPlan", "ScoringJob",
    "decision_threshold", "discard_staged", "load_artifact", "merge_partitions", "merge_version_stats", "partition_count",
    "plan_partitions", "plan_source", "publish_predictions", "published_prefix", "read_manifest", "read_predictions",
    "rows_per_partition", "score_partition", "score_partitions", "staging_prefix",
]
