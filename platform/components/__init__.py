"""The Pulumi side of the platform: one ``ComponentResource`` per part of the stack (storage,
registry table, network, compute, orchestration, monitoring, access, results catalog).

Imports ``pulumi`` and ``pulumi_aws``, never boto3. Names and settings come from
``stagewise.platform.resources``; IAM documents from ``stagewise.platform.policies``; the state
machine and the dashboard body are read as data from the runtime's pure builders.
"""
