"""The runtime side of the platform: how a running job reaches AWS (or the embedded AWS).

The boto3 client factory (``aws``), the embedded AWS and its moto server (``embedded``,
``moto_server``), local provisioning (``provision``), ``connect`` (``environment``), the S3 object
store (``objects``), the keyed id hash (``idhash``) and failpoints (``failpoints``). Imports boto3,
never Pulumi.
"""
