"""Connect to an environment: its settings, its resources, and AWS clients in its account.

``connect("dev")`` reads ``Pulumi.dev.yaml``, names the resources, and returns clients that assume
the stack's role on the embedded AWS (started if asked) or, with ``aws=True``, on real AWS.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stagewise.platform.runtime.aws import AwsClients, AwsTarget
from stagewise.platform.runtime.embedded import EmbeddedAWS
from stagewise.platform.runtime.provision import ProvisionAction, ensure_environment
from stagewise.platform.resources import EnvironmentResources, environment_resources
from stagewise.stacks.settings import EnvironmentSettings, load_settings


@dataclass
class Environment:
    """A connected environment."""

    settings: EnvironmentSettings
    resources: EnvironmentResources
    clients: AwsClients
    provisioned: list[ProvisionAction]

    @property
    def embedded(self) -> bool:
        """True when talking to the embedded AWS."""
        return self.clients.target.embedded



def connect(
    env: str,
    *,
    aws: bool = False,
    project_dir: Path | None = None,
    start_embedded: bool = False,
    provision: bool = False,
    port: int | None = None,
    role_arn: str | None = None,
    session_name: str | None = None,
) -> Environment:
    """Settings, resources and clients of ``env``.

    Args:
        env: ``dev``, ``test`` or ``prod``.
        aws: target the real account through the stack's role instead of the embedded AWS.
        project_dir: folder with the stack files (default: found from cwd).
        start_embedded: start the embedded AWS if it is not running (``stagewise run`` does).
        provision: create the environment's resources on the embedded AWS (idempotent). On AWS
            the Pulumi stack owns them and this is ignored.
        port: port for a newly started embedded AWS.
        role_arn: assume this role instead of the stack's ``aws:assumeRoles`` role (e.g. the
            environment's promoter role for a cross-account promotion).
        session_name: the assumed role's session name, seen in CloudTrail (default
            ``stagewise-<env>-promotion``; the fleet reads as ``stagewise-<env>-fleet``).

    Raises:
        SettingsError: the stack file is missing or invalid.
        EmbeddedAWSError: the embedded AWS is not running (and ``start_embedded`` is False) or
            could not start.
        AwsAccessError: the role could not be assumed.
    """
    settings = load_settings(env, project_dir)
    resources = environment_resources(settings)
    if aws:
        target = AwsTarget.for_settings(settings, None)
    else:
        embedded = EmbeddedAWS()
        status = embedded.up(port=port) if start_embedded else embedded.endpoint()
        target = AwsTarget.for_settings(settings, status.endpoint, status.ca_bundle)
    if role_arn is not None:
        target = AwsTarget(target.region, role_arn, session_name or f"stagewise-{env}-promotion", target.endpoint_url,
                           target.ca_bundle)
    clients = AwsClients(target)
    actions = ensure_environment(clients, resources) if (provision and not aws) else []
    return Environment(settings, resources, clients, actions)
