"""A flaky AWS on demand: faults injected at the botocore layer, for fault tests and drills.

Off unless ``$STAGEWISE_FAULTS`` (``Env.FAULTS``) is set. Then ``AwsClients`` attaches the
process's ``FaultInjector`` to the ``before-send`` event of every client it creates, so a chosen
share of HTTP attempts fails the way AWS fails: below our code, above the wire. botocore's retry
mode sees exactly what it would see from AWS, and what it cannot absorb reaches our code as AWS's
own errors. Nothing in Stagewise's own code is patched.

The variable holds comma-separated ``key=value`` entries (every key optional)::

    rate=0.05                          share of attempts that fail, on each selected service (0..1)
    services=all | s3+dynamodb+...     the clients, named as ``AwsClients.client`` names them (default all)
    kinds=throttle+5xx+reset+timeout   the faults, drawn with equal odds (default all four)
    seed=7                             the draw (default 0)

The kinds:

    throttle  the service's own throttling error; the request never reached the server:
              S3 ``503 SlowDown``; DynamoDB ``400 ThrottlingException`` or
              ``ProvisionedThroughputExceededException``; the Query services (SNS, STS) ``400
              Throttling``; the JSON services ``400 ThrottlingException`` (CloudWatch with the
              ``x-amzn-query-error: Throttling`` header it sends since it speaks JSON)
    5xx       ``500 InternalError`` or ``503 ServiceUnavailable`` (in the service's own words);
              the request never reached the server
    reset     ``ConnectionClosedError``: the connection dropped before the request reached the server
    timeout   the request reached the server and was applied, its response is lost:
              ``ReadTimeoutError`` once the call is done. botocore retries it, so the same write
              arrives twice: what the idempotency of every write is tested against.

Deterministic: whether the n-th attempt of operation O on service S in a process fails, and how,
is a hash of (seed, S, O, n) alone. The same seed and the same calls give the same faults; threads
interleaving different operations do not change which attempt fails. Each process (the run, each
scoring worker) counts its own attempts from zero.

Never injected: STS ``AssumeRole``. ``AwsClients`` assumes the role with a client of its own that
gets no injector: a failure there is reported as a refused role (``AwsAccessError``, "check your
credentials"), which a flaky network is not, and it happens before a run has a journal to resume,
so injecting it would test the message, not the pipeline. Every other call is fair game,
``GetCallerIdentity`` and provisioning included.

Counters: a process with faults on writes what it saw when it exits, to
``$STAGEWISE_HOME/faults/<pid>-<start ms>.json`` (``FaultReport``: attempts per service, faults per
kind and per service), and prints one line to stderr. A process killed outright writes none.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import os
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.exceptions import ConnectionClosedError, ReadTimeoutError
from botocore.httpsession import URLLib3Session

from stagewise.platform.contract import Env, ExitCode, StagewiseError
from stagewise.platform.runtime.embedded import stagewise_home

KINDS = ("throttle", "5xx", "reset", "timeout")
REPORT_FOLDER = "faults"


class FaultSpecError(StagewiseError, ValueError):
    """``$STAGEWISE_FAULTS`` is malformed (the message names the variable and the entry). Exit 4."""

    exit_code = ExitCode.BAD_INPUT


@dataclass(frozen=True)
class FaultSpec:
    """What to inject (see the module docstring for the text form).

    Attributes:
        rate: share of attempts that fail on each selected service, 0..1.
        services: the selected clients' names, or None for all.
        kinds: the faults drawn, with equal odds.
        seed: the draw.
    """

    rate: float
    services: frozenset[str] | None = None
    kinds: tuple[str, ...] = KINDS
    seed: int = 0

    @classmethod
    def parse(cls, text: str) -> "FaultSpec":
        """``"rate=0.05,services=s3+dynamodb,kinds=throttle+timeout,seed=7"`` -> a ``FaultSpec``.

        Raises:
            FaultSpecError: an entry is not ``key=value`` with a known key and a valid value.
        """
        fields: dict[str, Any] = {"rate": 0.05}
        for entry in filter(None, (e.strip() for e in text.split(","))):
            key, _, value = (p.strip() for p in entry.partition("="))
            try:
                fields[key] = _FIELDS[key](value)
            except (KeyError, ValueError) as e:
                problem = f"has an unknown key {key!r}" if isinstance(e, KeyError) else str(e)
                raise FaultSpecError(
                    f"{Env.FAULTS} entry {entry!r} {problem}; expected comma-separated rate=0..1, "
                    f"services=all|NAME+NAME, kinds={'+'.join(KINDS)} (any of them), seed=INT") from None
        return cls(**fields)

    def __str__(self) -> str:
        services = "all" if self.services is None else "+".join(sorted(self.services))
        return f"rate={self.rate:g},services={services},kinds={'+'.join(self.kinds)},seed={self.seed}"


def _rate(value: str) -> float:
    try:
        rate = float(value)
    except ValueError:
        rate = -1.0
    if not 0.0 <= rate <= 1.0:
        raise ValueError("needs a rate between 0 and 1, e.g. rate=0.05")
    return rate


def _services(value: str) -> frozenset[str] | None:
    names = value.split("+")
    if not all(names):
        raise ValueError("needs all, or client names joined by +, e.g. services=s3+dynamodb")
    return None if names == ["all"] else frozenset(names)


def _kinds(value: str) -> tuple[str, ...]:
    kinds = tuple(dict.fromkeys(value.split("+")))
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"names unknown kinds {unknown}")
    return kinds


def _seed(value: str) -> int:
    if not value.lstrip("-").isdigit():
        raise ValueError("needs an integer seed")
    return int(value)


_FIELDS = {"rate": _rate, "services": _services, "kinds": _kinds, "seed": _seed}


def _uniform(*key: object) -> float:
    """A number in [0, 1) that depends only on ``key``."""
    digest = hashlib.blake2b("|".join(map(str, key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


# ------------------------------------------------------------------------------- AWS's answers
_XMLNS = {"sns": "http://sns.amazonaws.com/doc/2010-03-31/", "sts": "https://sts.amazonaws.com/doc/2011-06-15/"}


def _error_answer(service: str, protocol: str, kind: str, pick: float) -> tuple[int, str, str] | None:
    """``(status, code, message)`` AWS answers ``service`` with for a fault of ``kind``, or None
    when the fault is not an answer (reset, timeout). ``pick`` chooses between AWS's variants."""
    if kind == "throttle":
        if service == "s3":
            return 503, "SlowDown", "Please reduce your request rate."
        if service == "dynamodb":
            code = "ThrottlingException" if pick < 0.5 else "ProvisionedThroughputExceededException"
            return 400, code, "Rate of requests exceeds the allowed throughput."
        return 400, "Throttling" if protocol == "query" else "ThrottlingException", "Rate exceeded"
    if kind == "5xx":
        if pick < 0.5:
            return 503, "ServiceUnavailable", "Service is unable to handle request."
        code = {"s3": "InternalError", "dynamodb": "InternalServerError"}.get(service, "InternalFailure")
        return 500, code, "We encountered an internal error. Please try again."
    return None


class _Body:
    """The raw body of a synthetic ``AWSResponse`` (botocore reads it through ``stream()``)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


def synthetic_response(url: str, service: str, protocol: str, query_compatible: bool,
                       status: int, code: str, message: str) -> AWSResponse:
    """An error response as ``service`` sends it over its wire protocol (``rest-xml``, ``query``,
    ``json``, ``rest-json``), for botocore to parse and its retry mode to judge."""
    request_id = uuid.uuid4().hex
    headers = {"x-amzn-requestid": request_id, "x-amz-request-id": request_id}
    if protocol == "rest-xml":
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
                f"<RequestId>{request_id}</RequestId></Error>")
        headers["content-type"] = "application/xml"
    elif protocol in ("query", "ec2"):
        party = "Receiver" if status >= 500 else "Sender"
        body = (f'<ErrorResponse xmlns="{_XMLNS.get(service, "")}"><Error><Type>{party}</Type><Code>{code}</Code>'
                f"<Message>{message}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>")
        headers["content-type"] = "text/xml"
    elif protocol == "json":
        body = json.dumps({"__type": code if service != "dynamodb" else f"com.amazonaws.dynamodb.v20120810#{code}",
                           "message": message})
        headers["content-type"] = "application/x-amz-json-1.0"
        if query_compatible:  # a former Query service: the Query error code rides in a header
            query_code = "Throttling" if code == "ThrottlingException" else code
            headers["x-amzn-query-error"] = f"{query_code};{'Receiver' if status >= 500 else 'Sender'}"
    else:  # rest-json
        body = json.dumps({"message": message})
        headers.update({"content-type": "application/json", "x-amzn-errortype": code})
    return AWSResponse(url, status, headers, _Body(body.encode()))


# ------------------------------------------------------------------------------- the injector
@dataclass
class FaultReport:
    """What one process saw: attempts per service, faults per kind and per service."""

    spec: str
    pid: int
    command: list[str]
    attempts: dict[str, int]
    injected: dict[str, int]
    by_service: dict[str, dict[str, int]]

    @property
    def line(self) -> str:
        """One line for stderr."""
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.injected.items())) or "none"
        return (f"stagewise: faults injected ({Env.FAULTS}={self.spec}): {sum(self.attempts.values())} AWS attempts, "
                f"{sum(self.injected.values())} faults ({kinds})")

    @classmethod
    def read_all(cls, folder: Path) -> dict[str, "FaultReport"]:
        """Every report in ``folder`` (``$STAGEWISE_HOME/faults``), by file name."""
        out = {}
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            out[path.name] = cls(**json.loads(path.read_text()))
        return out


class FaultInjector:
    """Fails a share of the attempts of the clients it is attached to (``attach``), as the spec says.

    Args:
        spec: what to inject.
    """

    def __init__(self, spec: FaultSpec) -> None:
        self.spec = spec
        self._lock = threading.Lock()
        self._attempt: Counter[tuple[str, str]] = Counter()
        self._attempts: Counter[str] = Counter()
        self._injected: Counter[tuple[str, str]] = Counter()

    def attach(self, client: Any, service: str, verify: str | bool | None, timeout: float) -> None:
        """Inject into ``client`` (``service`` as ``AwsClients.client`` names it). ``verify`` and
        ``timeout`` are the client's own: a ``timeout`` fault sends the request itself with them."""
        model = client.meta.service_model
        sender = _Sender(True if verify is None else verify, timeout)
        handler = functools.partial(self._before_send, service, model.resolved_protocol,
                                    "awsQueryCompatible" in model.metadata, sender)
        client.meta.events.register("before-send", handler)

    def draw(self, service: str, operation: str) -> tuple[str, float] | None:
        """Count an attempt of ``operation`` on ``service``; the fault it meets (its kind and a
        number in [0, 1) that picks between AWS's variants of it), or None."""
        with self._lock:
            n = self._attempt[(service, operation)]
            self._attempt[(service, operation)] += 1
            self._attempts[service] += 1
        if self.spec.services is not None and service not in self.spec.services:
            return None
        if not self.spec.kinds or _uniform(self.spec.seed, service, operation, n, "fail") >= self.spec.rate:
            return None
        kind = self.spec.kinds[int(_uniform(self.spec.seed, service, operation, n, "kind") * len(self.spec.kinds))]
        with self._lock:
            self._injected[(service, kind)] += 1
        return kind, _uniform(self.spec.seed, service, operation, n, "variant")

    def _before_send(self, service: str, protocol: str, query_compatible: bool, sender: "_Sender",
                     request: AWSPreparedRequest, event_name: str, **_: Any) -> AWSResponse | None:
        operation = event_name.rsplit(".", 1)[-1]
        fault = self.draw(service, operation)
        if fault is None:
            return None
        kind, variant = fault
        answer = _error_answer(service, protocol, kind, variant)
        # every client here speaks one of these; one that spoke CBOR would get a reset instead
        if answer is not None and protocol in ("rest-xml", "query", "ec2", "json", "rest-json"):
            return synthetic_response(request.url, service, protocol, query_compatible, *answer)
        if kind == "timeout":
            sender.send(request)  # the server applies it; its answer is dropped
            raise ReadTimeoutError(endpoint_url=request.url, error="injected: the request was applied, its response lost")
        raise ConnectionClosedError(endpoint_url=request.url)

    def report(self) -> FaultReport:
        """The counters so far."""
        with self._lock:
            injected: Counter[str] = Counter()
            by_service: dict[str, dict[str, int]] = {}
            for (service, kind), n in self._injected.items():
                injected[kind] += n
                by_service.setdefault(service, {})[kind] = n
            return FaultReport(str(self.spec), os.getpid(), sys.argv[:2], dict(self._attempts), dict(injected), by_service)

    def write_report(self, path: Path) -> None:
        """Write the counters to ``path`` and their line to stderr (at exit, with ``atexit``)."""
        report = self.report()
        if not report.attempts:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(report.__dict__, indent=1))
        except OSError as e:
            print(f"stagewise: fault report not written to {path}: {e}", file=sys.stderr)
        print(report.line, file=sys.stderr)


class _Sender:
    """Sends a request for a ``timeout`` fault, with the client's TLS verification and timeout
    (its own connection pool: botocore exposes no client's HTTP session)."""

    def __init__(self, verify: str | bool, timeout: float) -> None:
        self.verify, self.timeout = verify, timeout
        self._session: URLLib3Session | None = None
        self._lock = threading.Lock()

    def send(self, request: AWSPreparedRequest) -> None:
        with self._lock:
            if self._session is None:
                self._session = URLLib3Session(verify=self.verify, timeout=self.timeout, max_pool_connections=16)
        self._session.send(request).content  # read to the end: the call completes on the server


_process: dict[str, FaultInjector] = {}
_process_lock = threading.Lock()


def injector() -> FaultInjector | None:
    """The process's injector as ``$STAGEWISE_FAULTS`` asks (None when it is unset or empty); the
    first call registers its report, written at exit.

    Raises:
        FaultSpecError: the variable is malformed.
    """
    text = os.environ.get(Env.FAULTS, "").strip()
    if not text:
        return None
    with _process_lock:
        if text not in _process:
            found = FaultInjector(FaultSpec.parse(text))
            path = stagewise_home() / REPORT_FOLDER / f"{os.getpid()}-{int(time.time() * 1000)}.json"
            atexit.register(found.write_report, path)
            _process[text] = found
        return _process[text]
