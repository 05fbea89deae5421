"""The embedded AWS: moto's server on 127.0.0.1, run in the background across CLI commands.

It serves HTTPS with a self-signed certificate made for 127.0.0.1 (kept in ``$STAGEWISE_HOME/tls``),
so the buckets' TLS-only policies (``aws:SecureTransport``) hold on the laptop exactly as on AWS,
and clients verify the server against that certificate.

``stagewise local up`` starts moto's server (through ``stagewise.platform.runtime.moto_server``, which makes
DynamoDB's conditional writes atomic as on AWS) as a detached process and records its pid and
port in ``$STAGEWISE_HOME/embedded.json`` (default ``./.stagewise``), so later commands
(``stagewise run``, ``stagewise registry list``) find it and see the same state. State lives in the
server's memory: ``stagewise local down`` stops the server and forgets everything.
"""

from __future__ import annotations

import datetime
import importlib.util
import ipaddress
import json
import os
import ssl
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from stagewise.platform.contract import Env, ExitCode, MissingExtra, StagewiseError

DEFAULT_PORT = 5055
STATE_FILE = "embedded.json"


class EmbeddedAWSError(StagewiseError, RuntimeError):
    """The embedded AWS could not be started, or is needed and not running (the message says how
    to start it). Exit 5."""

    exit_code = ExitCode.AWS_UNREACHABLE


def stagewise_home() -> Path:
    """Stagewise's local state folder: ``$STAGEWISE_HOME`` or ``./.stagewise``."""
    return Path(os.environ.get(Env.HOME, ".stagewise")).resolve()


def default_port() -> int:
    """Port of the embedded AWS: ``$STAGEWISE_EMBEDDED_PORT`` or 5055."""
    return int(os.environ.get(Env.EMBEDDED_PORT, DEFAULT_PORT))


@dataclass(frozen=True)
class EmbeddedStatus:
    """What ``stagewise local status`` reports.

    Attributes:
        running: the recorded server process is alive and answering HTTP.
        endpoint: ``http://127.0.0.1:<port>`` (None when not running).
        pid: the server's process id.
        port: TCP port on 127.0.0.1.
        started_at: Unix time the server was started, in seconds.
        log: path of the server's log file.
        ca_bundle: the server's self-signed certificate (PEM), for clients to verify it.
    """

    running: bool
    endpoint: str | None = None
    pid: int | None = None
    port: int | None = None
    started_at: float | None = None
    log: str | None = None
    ca_bundle: str | None = None

    def to_dict(self) -> dict:
        """JSON-ready form of the status."""
        return asdict(self)


class EmbeddedAWS:
    """Start, stop and inspect the background moto server whose state file lives in ``home``."""

    def __init__(self, home: Path | None = None) -> None:
        self.home = home or stagewise_home()
        self.state_path = self.home / STATE_FILE

    def status(self) -> EmbeddedStatus:
        """Whether the recorded server is alive and answering; clears a stale state file."""
        state = self._read_state()
        if state is None:
            return EmbeddedStatus(running=False)
        pid, port, cert = state["pid"], state["port"], state.get("cert")
        if _alive(pid) and cert and _answers(port, cert):
            return EmbeddedStatus(True, f"https://127.0.0.1:{port}", pid, port, state["started_at"], state["log"], cert)
        if not _alive(pid):
            self.state_path.unlink(missing_ok=True)
        return EmbeddedStatus(running=False, pid=pid, port=port, log=state.get("log"))

    def up(self, port: int | None = None, timeout: float = 30.0) -> EmbeddedStatus:
        """Start the server unless it is running already; returns its status.

        Args:
            port: TCP port on 127.0.0.1 (default ``default_port()``).
            timeout: seconds to wait for the server to answer.

        Raises:
            EmbeddedAWSError: the port is taken by another program, or the server did not answer
                within ``timeout`` (its log file is named in the message).
            MissingExtra: moto is not installed (the ``local`` extra).
        """
        current = self.status()
        if current.running:
            return current
        if importlib.util.find_spec("moto") is None:
            raise MissingExtra("the embedded AWS is moto's server, and moto is not installed (the job image leaves it out)")
        port = port or default_port()
        if _port_in_use(port):
            raise EmbeddedAWSError(
                f"port {port} on 127.0.0.1 is in use by another program; "
                f"pick another with `stagewise local up --port N` or {Env.EMBEDDED_PORT}"
            )
        self.home.mkdir(parents=True, exist_ok=True)
        log = self.home / "embedded-aws.log"
        cert, key = ensure_certificate(self.home / "tls")
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "stagewise.platform.runtime.moto_server", "--host", "127.0.0.1", "--port", str(port),
                 "--ssl-cert", str(cert), "--ssl-key", str(key), "--home", str(self.home)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the CLI command that started it
                env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "false"},
            )
        state = {"pid": proc.pid, "port": port, "started_at": time.time(), "log": str(log), "cert": str(cert)}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise EmbeddedAWSError(f"the embedded AWS exited at start (code {proc.returncode}); see {log}")
            if _answers(port, str(cert)):
                self.state_path.write_text(json.dumps(state))
                return self.status()
            time.sleep(0.1)
        proc.terminate()
        raise EmbeddedAWSError(f"the embedded AWS did not answer on port {port} within {timeout:.0f} s; see {log}")

    def down(self, timeout: float = 10.0) -> bool:
        """Stop the server if running; returns True if one was stopped. All its state is lost."""
        state = self._read_state()
        if state is None:
            return False
        pid = state["pid"]
        stopped = False
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
            stopped = True
        self.state_path.unlink(missing_ok=True)
        return stopped

    def endpoint(self) -> EmbeddedStatus:
        """Status of the running server (``.endpoint``, ``.ca_bundle``).

        Raises:
            EmbeddedAWSError: it is not running (message says how to start it).
        """
        st = self.status()
        if not st.running or st.endpoint is None:
            raise EmbeddedAWSError(
                "the embedded AWS is not running; start it with `stagewise local up` "
                "(or `stagewise run`, which starts it). Its state lives only while it runs."
            )
        return st

    def _read_state(self) -> dict | None:
        try:
            return json.loads(self.state_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours still "exists": reap it if it is one
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        return waited == 0
    except ChildProcessError:
        return True


def ensure_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1/localhost in ``folder`` (made once, 10 years)."""
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    if cert_path.is_file() and key_path.is_file():
        return cert_path, key_path
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stagewise embedded AWS")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    os.chmod(key_path, 0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _answers(port: int, cert: str) -> bool:
    try:
        context = ssl.create_default_context(cafile=cert)
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/moto-api/", timeout=2, context=context) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError, ssl.SSLError):
        return False


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
