"""The embedded AWS server process: moto's WSGI app, served over TLS, with DynamoDB made atomic.

moto's DynamoDB backend checks a transaction's conditions and then applies it without a lock, and
its server is threaded, so two concurrent conditional writes can both pass their checks. Real
DynamoDB serializes conditional writes per item; the registry's optimistic locking relies on it.
This launcher runs moto's own application (``moto.server``'s ``DomainDispatcherApplication``) behind
a WSGI middleware that serializes DynamoDB requests only (the ``X-Amz-Target`` header names the
DynamoDB API), so other services, e.g. SQS long polls, stay concurrent. It also applies
``moto_patches`` (where moto's Step Functions engine, which runs in this process, differs from AWS)
and installs ``local_fargate`` (ECS Fargate tasks run as local processes). Step Functions executes
state machines (moto's engine, ``execute_state_machine``) from the start, and ``local_iam``
authorises the stack's task roles and state machine role as IAM would.

Run as ``python -m stagewise.platform.runtime.moto_server --host 127.0.0.1 --port N --ssl-cert C --ssl-key K``
(``EmbeddedAWS.up`` does).
"""

from __future__ import annotations

import argparse
import atexit
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterable

from stagewise.platform.runtime import local_fargate, local_iam, moto_patches
from stagewise.platform.runtime.embedded import stagewise_home
from stagewise.platform.runtime.local_fargate import LocalFargate
from stagewise.platform.runtime.local_iam import LocalIam
from stagewise.stacks.settings import SettingsError, find_project_root

DYNAMODB_TARGET_PREFIX = "DynamoDB_"


class SerializeDynamoDB:
    """WSGI middleware: one DynamoDB request at a time; everything else passes straight through."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith(DYNAMODB_TARGET_PREFIX):
            with self.lock:
                return list(self.app(environ, start_response))  # consume the body inside the lock
        return self.app(environ, start_response)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and serve until SIGTERM/SIGINT."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from moto.server import MotoRequestHandler
    from werkzeug.serving import run_simple

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ssl-cert", required=True)
    parser.add_argument("--ssl-key", required=True)
    parser.add_argument("--home", help="local state folder (local Fargate's task folders and logs); default: as the CLI finds it")
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    endpoint = f"https://{args.host}:{args.port}"
    # the Step Functions engine runs in this process: put it right where it differs from AWS
    moto_patches.apply(endpoint, verify=args.ssl_cert)
    # state machines execute (moto keeps them apart from a non-executing backend: on from the start)
    from moto.core.config import default_user_config

    default_user_config.setdefault("stepfunctions", {})["execute_state_machine"] = True
    # ECS's Fargate tasks run as local processes (local_fargate)
    try:
        project_dir: Path | None = find_project_root()
    except SettingsError:
        project_dir = None
    fargate = LocalFargate(endpoint, args.ssl_cert, Path(args.home) if args.home else stagewise_home(), project_dir)
    local_fargate.install(fargate)
    # the stack's task roles and state machine role are authorised as IAM would (local_iam)
    local_iam.install(LocalIam(fargate.home))
    atexit.register(fargate.shutdown)
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, SerializeDynamoDB(app), threaded=True,
               ssl_context=(args.ssl_cert, args.ssl_key), request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
