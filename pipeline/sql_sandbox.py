"""The SQL sandbox: what SQL from a user (``stagewise query``) or a model (the analyst agent's
``query_results``) may do over the results catalog. The agent's SQL comes from an LLM that reads
data it did not write, so it is treated as hostile.

Two fences, each enough on its own for file access:

1. **The statement** (``check_select``): DuckDB's own parser (``duckdb.extract_statements``) must
   find exactly one statement, of type ``SELECT`` (which includes ``WITH ... SELECT``, ``VALUES``,
   ``FROM t`` and ``DESCRIBE``/``SHOW``/``SUMMARIZE``), at most ``Limits.max_chars`` characters
   long. Everything else is refused before it runs: a second statement (also one after a comment
   or a string), ``COPY``, ``ATTACH``/``DETACH``, ``INSTALL``/``LOAD``, ``PRAGMA``, ``SET``/``RESET``,
   ``CREATE``/``DROP``/``ALTER``, ``INSERT``/``UPDATE``/``DELETE``, ``EXPORT``/``IMPORT``, ``CALL``,
   ``EXPLAIN``, ``PIVOT`` statements, transactions. Only the parsed statement is executed.
2. **The connection** (``open_connection``): in memory, external access off
   (``enable_external_access = false``) with ``allowed_paths`` naming exactly the catalog's own
   Parquet files, no spilling to disk (``temp_directory = ''``), no extension auto-loading, and the
   configuration locked (``lock_configuration = true``) before any view is created. So
   ``read_csv``/``read_parquet``/``read_json``/``read_text``/``glob``/``COPY``/``ATTACH`` fail
   inside a SELECT too, on every path but those files (which hold what the tables show).

And limits (``Limits``): memory, threads, wall-clock time (DuckDB has no statement timeout: a
timer calls ``connection.interrupt()``), statement length and rows returned. A refusal, and a query
stopped by a limit, raise ``QueryError`` (exit 4) with the reason.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stagewise.platform.contract import ExitCode, StagewiseError

MAX_SQL_CHARS = 20_000
"""Longest statement accepted: the catalog's own views are under 2,000 characters; a longer one is
more likely generated padding (or a payload) than a question."""


class QueryError(StagewiseError, ValueError):
    """The SQL was refused or failed (the message has the reason; the hint, the tables and views
    there are). Exit 4."""

    exit_code = ExitCode.BAD_INPUT


@dataclass(frozen=True)
class Limits:
    """What one query may use.

    Attributes:
        memory: DuckDB ``memory_limit`` (no spilling to disk: past it, the query fails).
        threads: DuckDB ``threads``.
        seconds: wall-clock time for the statement and fetching its rows.
        max_chars: longest statement accepted.
        max_rows: most rows one query may return (even when all are asked for).
    """

    memory: str = "1GB"
    threads: int = 2
    seconds: float = 30.0
    max_chars: int = MAX_SQL_CHARS
    max_rows: int = 1_000_000


DEFAULT_LIMITS = Limits()


def check_select(sql: str, limits: Limits = DEFAULT_LIMITS) -> Any:
    """The one read-only SELECT in ``sql``, as DuckDB's parser reads it.

    Returns:
        The ``duckdb.Statement`` to execute (its ``query`` is the statement's text).

    Raises:
        QueryError: longer than ``limits.max_chars``, not valid SQL, no statement, more than one
            statement, or a statement that is not a SELECT.
    """
    import duckdb  # deferred: DuckDB (~0.15 s) only for the commands that run SQL

    if len(sql) > limits.max_chars:
        raise QueryError(f"refused: the statement is {len(sql):,} characters long; the limit is {limits.max_chars:,}")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise QueryError(f"refused: not valid SQL: {e}") from e
    if len(statements) != 1:
        raise QueryError(f"refused: {'no statement' if not statements else f'{len(statements)} statements'}; "
                         "exactly one SELECT (or WITH ... SELECT) is allowed")
    (statement,) = statements
    if statement.type != duckdb.StatementType.SELECT:
        raise QueryError(f"refused: {statement.type.name} statements are not allowed; only one read-only SELECT "
                         "(or WITH ... SELECT) over the catalog's tables and views")
    return statement


def sql_string(text: str) -> str:
    """``text`` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def open_connection(files: Iterable[Path], limits: Limits = DEFAULT_LIMITS) -> Any:
    """An in-memory DuckDB connection that may read ``files`` and nothing else, with its limits
    set and its configuration locked: create the catalog's views on it afterwards."""
    import duckdb  # deferred: DuckDB (~0.15 s) only for the commands that run SQL

    db = duckdb.connect(":memory:", config={
        "threads": limits.threads, "memory_limit": limits.memory, "temp_directory": "",
        "autoinstall_known_extensions": False, "autoload_known_extensions": False,
    })
    db.execute("SET allowed_paths = ?", [sorted(str(f) for f in files)])  # only once started, not in config=
    db.execute("SET enable_external_access = false")
    db.execute("SET lock_configuration = true")
    return db


def run(db: Any, statement: Any, limits: Limits = DEFAULT_LIMITS,
        max_rows: int | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Execute a statement ``check_select`` returned; its column names and up to ``max_rows`` rows
    (all, without it, up to ``limits.max_rows``).

    Raises:
        QueryError: the time, memory or row limit stopped it.
        duckdb.Error: DuckDB refused it otherwise (a missing table, a denied file, ...).
    """
    import duckdb  # deferred: DuckDB (~0.15 s) only for the commands that run SQL

    fired = threading.Event()

    def stop() -> None:
        fired.set()
        db.interrupt()

    truncate = bool(max_rows) and max_rows <= limits.max_rows  # the caller shows the first rows; else all or refuse
    cap = max_rows if truncate else limits.max_rows
    timer = threading.Timer(limits.seconds, stop)
    timer.daemon = True
    timer.start()
    try:
        cursor = db.execute(statement)
        rows = cursor.fetchmany(cap + 1)
    except duckdb.InterruptException as e:
        if fired.is_set():
            raise QueryError(f"refused: the query ran past the time limit ({limits.seconds:g} s) and was stopped; "
                             "add a LIMIT, filter on run_date or model_version, or aggregate") from e
        raise
    except duckdb.OutOfMemoryException as e:
        raise QueryError(f"refused: the query needs more than the memory limit ({limits.memory}) and was stopped; "
                         "add a LIMIT, filter on run_date or model_version, or aggregate") from e
    finally:
        timer.cancel()
    if len(rows) > cap and not truncate:
        raise QueryError(f"refused: the query returns more than {limits.max_rows:,} rows; add a LIMIT or aggregate")
    return [d[0] for d in cursor.description], rows[:cap]
