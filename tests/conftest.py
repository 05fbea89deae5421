"""Shared fixtures: a real embedded AWS (moto's server over HTTPS on a free loopback port).

The server is started before any client exists, in a temporary STAGEWISE_HOME, and stopped at the
end of the session. Tests talk to it over HTTP(S) with boto3, exactly as the CLI does.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

REPO = Path(__file__).resolve().parent.parent

# pytest-xdist's workers start with COLUMNS=80 and LINES=24 in their environment. The CLI's rich
# consoles are made when it is imported (at collection) and keep a width found in the environment
# then, so a test's own COLUMNS (CliRunner's env) would be ignored in a worker: the CLI under test
# sees the same environment in a worker as in a serial run (no fixed width; a test sets its own).
for _var in ("COLUMNS", "LINES"):
    os.environ.pop(_var, None)


def engagement_spec(folder: Path, name: str, plan: str | None = None, builtin: str = "engagement") -> Path:
    """The engagement spec (or another built-in: ``builtin="churn"``) under another model name
    (each test module has its own registry record), optionally with a rollout plan
    (``"{dev: [50, 100]}"``), without its views, written to ``folder/<name>.yaml``."""
    text = (REPO / "pipeline" / "specs" / f"{builtin}.yaml").read_text()
    assert f"\nname: {builtin}\n" in text and "  plan: {}\n" in text
    text = text.replace(f"\nname: {builtin}\n", f"\nname: {name}\n", 1)
    if plan is not None:
        text = text.replace("  plan: {}\n", f"  plan: {plan}\n", 1)
    if "\nviews:" in text:  # the built-in views read the built-in model's table, not this one's
        text = text[: text.index("\nviews:")] + "\n"
    path = Path(folder) / f"{name}.yaml"
    path.write_text(text)
    return path


def run_engagement_copy(folder: Path, name: str, seed: int, *args: str, rows: int = 3_000):
    """`stagewise run` (the CLI, in-process) of the engagement spec under model ``name`` on
    ``rows`` generated customers; asserts exit 0. Returns ``(spec path, the input frame, result)``."""
    from typer.testing import CliRunner

    from stagewise.pipeline.cli import app
    from stagewise.pipeline.generator import generate_customers, write_dataset

    spec = engagement_spec(folder, name)
    df = generate_customers(rows, seed=seed)
    data = Path(folder) / "customers.parquet"
    write_dataset(df, data)
    result = CliRunner().invoke(app, ["run", "--project-dir", str(REPO), "--model", str(spec), "--data", str(data), *args])
    assert result.exit_code == 0, result.output[-3000:]
    return spec, df, result


# The slowest test files, handed out first under pytest-xdist so that the two workers end together
# rather than one waiting for a long file that started last (measured with `pytest -n 2
# --durations`; the order only matters for the wall time), and the files that run in parts, each
# part on a worker of its own with its own module fixtures (test_faults.py: each half has its own
# embedded AWS and reference runs; its last test, which stops that server, ends the second half).
SLOW_FIRST = ("test_faults.py", "test_executors.py", "test_flaky_aws.py", "test_rollout_cli.py", "test_fleet.py",
              "test_run_lock.py", "test_review.py", "test_data_trigger.py", "test_bad_input.py", "test_scoring.py")
PARTS = {"test_faults.py": 2}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In a pytest-xdist worker the slowest files come first (the same order in every worker, as
    xdist requires; a file keeps its tests' order)."""
    if hasattr(config, "workerinput"):
        items.sort(key=lambda item: SLOW_FIRST.index(item.path.name) if item.path.name in SLOW_FIRST else len(SLOW_FIRST))


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`make test` (``-n 2 --dist loadfile``): a test file is one unit of work, run by one worker in
    its own order with its module fixtures set up once, except that a file of ``PARTS`` is cut into
    that many units of consecutive tests. (``--dist loadgroup`` cannot do this with pytest 9: the
    group it appends to a test's node id no longer reaches the scheduler.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = nodeid.split("::", 1)[0]
            parts = PARTS.get(file.rsplit("/", 1)[-1], 1)
            if parts == 1:
                return file
            ids = [n for n in self.collection if n.split("::", 1)[0] == file]
            return f"{file}:{ids.index(nodeid) * parts // len(ids) + 1}"

    return FileScheduling(config, log)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session", autouse=True)
def _fake_credentials() -> None:
    """No real credentials can leak into a test: boto3's chain sees only dummies."""
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        os.environ.pop(var, None)
    os.environ["AWS_ACCESS_KEY_ID"] = "testing"
    os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
    os.environ["AWS_DEFAULT_REGION"] = "eu-west-1"


@pytest.fixture(scope="session", autouse=True)
def stagewise_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private STAGEWISE_HOME for the session (embedded AWS state, run folders), for every test:
    no test falls back to ``./.stagewise``, which pytest-xdist's workers would share. Each worker
    has its own (``tmp_path_factory`` gives each one its own base folder)."""
    home = tmp_path_factory.mktemp("stagewise-home")
    os.environ["STAGEWISE_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def embedded(stagewise_home: Path):
    """The embedded AWS, running for the whole session on a free port."""
    from stagewise.platform.runtime.embedded import EmbeddedAWS

    port = _free_port()
    os.environ["STAGEWISE_EMBEDDED_PORT"] = str(port)
    server = EmbeddedAWS(stagewise_home)
    status = server.up(port=port)
    yield status
    server.down()


@pytest.fixture(scope="session")
def dev(embedded):
    """The dev environment on the embedded AWS, its resources provisioned."""
    from stagewise.platform.runtime.environment import connect

    return connect("dev", project_dir=REPO, provision=True)


def own_registry_table(dev: Any, suffix: str) -> str:
    """A registry table of its own on ``dev``'s embedded AWS, made by the code that provisions the
    registry table (same keys and index), named ``<registry table>-<suffix>``; returns its name.

    For tests that write store records directly (states the registry never writes, e.g. a model
    whose latest version was not committed): in the dev registry table those would be read by every
    test that lists the registered models, whichever test file a worker runs next."""
    from dataclasses import replace

    from stagewise.platform.runtime.provision import ensure_table

    spec = replace(dev.resources.registry_table, name=f"{dev.resources.registry_table.name}-{suffix}")
    ensure_table(dev.clients, spec)
    return spec.name


@contextmanager
def private_embedded_aws(home: Path, port: int, server: Any, project: Path = REPO) -> Iterator[Any]:
    """Start ``server`` (an ``EmbeddedAWS`` of ``home``) on ``port`` and yield the dev environment
    of ``project``'s stack files connected to it and provisioned, with
    ``STAGEWISE_HOME``/``STAGEWISE_EMBEDDED_PORT`` pointing at it only inside (the session's own
    embedded AWS stays the default)."""
    from stagewise.platform.runtime.environment import connect

    saved = {k: os.environ.get(k) for k in ("STAGEWISE_HOME", "STAGEWISE_EMBEDDED_PORT")}
    os.environ.update(STAGEWISE_HOME=str(home), STAGEWISE_EMBEDDED_PORT=str(port))
    try:
        server.up(port=port)
        yield connect("dev", project_dir=project, provision=True)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
