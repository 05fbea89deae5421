"""AWS client factory: one place that knows whether we talk to real AWS or the embedded AWS.

Every client in Stagewise comes from ``AwsClients``, created at run time (never at import time) for
an ``AwsTarget``. Both targets take the same path: base credentials, then STS ``AssumeRole`` into
the environment's role from the stack file (``aws:assumeRoles``). On the embedded AWS (moto's
server) the base credentials are dummies and moto maps the assumed role's credentials to the role's
account id, so dev, test and prod land in three different accounts on one laptop, exactly as on AWS.

Throttling and transient errors (5xx, reset connections, timeouts) are retried by botocore's
``standard`` retry mode, up to ``total_max_attempts`` attempts per call (``_RETRIES``); what is
still failing after them stops a run with exit 5 (``unreachable``). ``$STAGEWISE_FAULTS`` makes
every client fail a share of its attempts on purpose (``stagewise.platform.runtime.faults``).
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import boto3
import botocore.config
import botocore.credentials
import botocore.session
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from stagewise.platform.contract import Env, ExitCode, StagewiseError
from stagewise.platform.runtime import faults
from stagewise.stacks.settings import EnvironmentSettings

EMBEDDED_ACCESS_KEY = "testing"  # moto accepts any credentials; these are never real
EMBEDDED_SECRET_KEY = "testing"
_RETRIES = {"mode": "standard", "total_max_attempts": 9}
"""botocore's ``standard`` mode: after a throttling error it waits a random 0..1, 0..2, 0..4 ... (at
most 20) seconds, after a 5xx or a connection error 0..0.05 s doubling likewise; each client has a
retry quota that stops retrying when most calls fail. ``total_max_attempts`` counts the first
attempt (a ``Config``'s ``max_attempts`` counts retries: the 8 and 3 this file had meant 9 and 4
attempts, and still do). ``adaptive`` mode is not used: it also rate-limits the client after a
throttle, which slows a run without making it finish more often."""
_EMBEDDED_RETRIES = {"mode": "standard", "total_max_attempts": 4}
"""The embedded AWS is on loopback: a refused or timed-out call means it is down or stuck, not
throttled, so four attempts say so in seconds instead of a minute of back-off. What each
configuration survives with faults injected is measured by ``benchmarks/flaky_aws.py`` (README,
Reliability)."""


class RetryConfigError(StagewiseError, ValueError):
    """``$AWS_RETRY_MODE`` or ``$AWS_MAX_ATTEMPTS`` is not one botocore accepts. Exit 4."""

    exit_code = ExitCode.BAD_INPUT


def retry_config(embedded: bool) -> dict[str, Any]:
    """botocore's ``retries`` setting for every client: ``_EMBEDDED_RETRIES`` or ``_RETRIES``,
    overridden by botocore's own environment variables when set (an explicit ``Config`` would
    otherwise hide them): ``AWS_RETRY_MODE`` (``standard`` | ``adaptive`` | ``legacy``) and
    ``AWS_MAX_ATTEMPTS`` (attempts per call, the first included, as botocore counts it there).

    Raises:
        RetryConfigError: a variable holds something botocore does not accept.
    """
    retries: dict[str, Any] = dict(_EMBEDDED_RETRIES if embedded else _RETRIES)
    mode = os.environ.get("AWS_RETRY_MODE", "").strip()
    if mode:
        if mode not in ("standard", "adaptive", "legacy"):
            raise RetryConfigError(f"AWS_RETRY_MODE={mode!r}: expected standard, adaptive or legacy")
        retries["mode"] = mode
    attempts = os.environ.get("AWS_MAX_ATTEMPTS", "").strip()
    if attempts:
        if not attempts.isdigit() or int(attempts) < 1:
            raise RetryConfigError(f"AWS_MAX_ATTEMPTS={attempts!r}: expected a whole number of attempts >= 1")
        retries["total_max_attempts"] = int(attempts)
    return retries


_GAVE_UP_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException", "TooManyRequestsException",
    "ProvisionedThroughputExceededException", "RequestLimitExceeded", "RequestThrottled", "SlowDown",
    "RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete",
})
"""Error codes botocore's retry modes retry (throttling and transient): still the answer after the
last attempt, they mean AWS would not serve the call now, not that the call was wrong."""


class AwsAccessError(StagewiseError, RuntimeError):
    """Credentials could not be obtained for the target (no base credentials, AssumeRole denied,
    endpoint unreachable). The message says which and how to fix it. Exit 5."""

    exit_code = ExitCode.AWS_UNREACHABLE


@dataclass(frozen=True)
class AwsTarget:
    """Where AWS calls go.

    Attributes:
        region: AWS region, e.g. ``eu-west-1``.
        role_arn: the role assumed for every call (the stack's ``aws:assumeRoles``), or None to use
            the default credential chain as is (inside AWS: an ECS task already runs as its task role).
        session_name: STS role session name (shows up in CloudTrail and the registry's audit actor).
        endpoint_url: the embedded AWS endpoint (``https://127.0.0.1:5055``), or None for real AWS.
        ca_bundle: PEM file to verify the endpoint's TLS certificate (the embedded AWS's own).
    """

    region: str
    role_arn: str | None
    session_name: str = "stagewise"
    endpoint_url: str | None = None
    ca_bundle: str | None = None

    @property
    def embedded(self) -> bool:
        """True when calls go to the embedded AWS."""
        return self.endpoint_url is not None

    @classmethod
    def for_settings(
        cls, settings: EnvironmentSettings, endpoint_url: str | None, ca_bundle: str | None = None
    ) -> "AwsTarget":
        """The target of an environment: its region and role, on real AWS or the embedded AWS."""
        return cls(settings.region, settings.role.role_arn, settings.role.session_name, endpoint_url, ca_bundle)


class AwsClients:
    """boto3 clients for one target, created lazily, cached, with auto-refreshing role credentials.

    Raises:
        AwsAccessError: (on first use) when the role cannot be assumed.
    """

    def __init__(self, target: AwsTarget) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}
        self._session: boto3.Session | None = None
        self._faults = faults.injector()  # None unless $STAGEWISE_FAULTS asks for a flaky AWS
        self.requests: Counter[str] = Counter()
        """API calls made through these clients, by ``"<service>:<Operation>"`` (a DynamoDB
        ``TransactWriteItems`` counts once per item: what it is billed by); read by ``run_cost``."""
        self._timeout = timeout = float(os.environ.get(Env.AWS_TIMEOUT, 60))
        # a pool larger than urllib3's default 10: the registry is used from many threads at once
        self._config = botocore.config.Config(
            region_name=target.region, retries=retry_config(target.embedded),
            max_pool_connections=64, connect_timeout=timeout, read_timeout=timeout,
        )

    def _base_session(self) -> boto3.Session:
        if self.target.embedded:
            return boto3.Session(
                aws_access_key_id=EMBEDDED_ACCESS_KEY,
                aws_secret_access_key=EMBEDDED_SECRET_KEY,
                region_name=self.target.region,
            )
        return boto3.Session(region_name=self.target.region)

    def _assume(self) -> dict[str, str]:
        assert self.target.role_arn is not None
        sts = self._base_session().client(
            "sts", endpoint_url=self.target.endpoint_url, config=self._config, verify=self.target.ca_bundle
        )
        try:
            creds = sts.assume_role(
                RoleArn=self.target.role_arn,
                RoleSessionName=self.target.session_name,
                DurationSeconds=3600,
            )["Credentials"]
        except (ClientError, BotoCoreError) as e:
            where = f"the embedded AWS at {self.target.endpoint_url}" if self.target.embedded else "AWS"
            hint = (
                "start it with `stagewise local up`"
                if self.target.embedded
                else "check your base credentials (aws sts get-caller-identity) and that the role trusts them"
            )
            raise AwsAccessError(f"cannot assume {self.target.role_arn} on {where}: {e}; {hint}") from e
        expiry = creds["Expiration"]
        if isinstance(expiry, datetime):
            expiry = expiry.astimezone(timezone.utc).isoformat()
        return {
            "access_key": creds["AccessKeyId"],
            "secret_key": creds["SecretAccessKey"],
            "token": creds["SessionToken"],
            "expiry_time": expiry,
        }

    def session(self) -> boto3.Session:
        """A boto3 session holding the assumed role's credentials (refreshed before they expire)."""
        with self._lock:
            if self._session is None and self.target.role_arn is None:
                self._session = self._base_session()
            if self._session is None:
                creds = botocore.credentials.RefreshableCredentials.create_from_metadata(
                    metadata=self._assume(), refresh_using=self._assume, method="sts-assume-role"
                )
                core = botocore.session.get_session()
                core._credentials = creds  # botocore has no public setter for refreshable credentials
                core.set_config_variable("region", self.target.region)
                self._session = boto3.Session(botocore_session=core)
            return self._session

    def client(self, service: str) -> Any:
        """A cached boto3 client for ``service`` (``"s3"``, ``"dynamodb"``, ...) on this target."""
        session = self.session()
        with self._lock:
            if service not in self._clients:
                client = session.client(
                    service, endpoint_url=self.target.endpoint_url, config=self._config, verify=self.target.ca_bundle
                )
                if self._faults is not None:
                    self._faults.attach(client, service, self.target.ca_bundle, self._timeout)
                client.meta.events.register("before-call", self._count)
                self._clients[service] = client
            return self._clients[service]

    def _count(self, model: Any, params: Any = None, **_: Any) -> None:
        items = len(params.get("TransactItems", ())) if isinstance(params, dict) else 0
        self.requests[f"{model.service_model.endpoint_prefix}:{model.name}"] += items or 1

    def caller_identity(self) -> dict[str, str]:
        """STS GetCallerIdentity of the assumed role: ``{"Account", "Arn", "UserId"}``."""
        ident = self.client("sts").get_caller_identity()
        return {k: ident[k] for k in ("Account", "Arn", "UserId")}


def unreachable(error: BaseException) -> bool:
    """True if ``error`` means AWS (or the embedded AWS) could not be reached, or would not serve,
    after botocore's retries: a refused or reset connection, a connect or read timeout, or an
    answer botocore retries (throttling, a 500/502/503/504) that was still the answer at the last
    attempt. The errors it was raised from count too (a registry error raised from a throttled
    call). The run stops with exit 5, and ``--resume`` finishes it."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, (BotoConnectionError, HTTPClientError)):
            return True
        if isinstance(cause, ClientError):
            status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status in (429, 500, 502, 503, 504) or cause.response.get("Error", {}).get("Code") in _GAVE_UP_CODES:
                return True
        cause = cause.__cause__
    return False


def utc_now() -> datetime:
    """Timezone-aware current UTC time (one clock for the whole package, easy to read in audits)."""
    return datetime.now(timezone.utc)

