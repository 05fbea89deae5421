"""Stagewise: one environment (dev, test or prod) in its own AWS account.

Deploys the data and artifact buckets, the registry table, the job image and its ECS cluster on
Fargate Spot, the pipeline state machine and its schedule, the alert topic, dashboard and alarms,
and the cross-account roles. Everything that differs between environments is read from the stack
file (``Pulumi.<stack>.yaml``) through one typed settings model.
"""

import pulumi

from stagewise.stacks.config import settings_from_pulumi_config
from stagewise.stacks.program import deploy

for key, value in deploy(settings_from_pulumi_config()).items():
    pulumi.export(key, value)
