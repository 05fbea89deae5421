"""The run lock: one run at a time per model and environment.

A run (``stagewise run`` or ``score`` in a terminal, or the tasks of a Step Functions execution
started by the schedule) reads the model's registry record, registers a version, counts its
scoring toward the bake and may advance or roll back the rollout. Each of those writes is a
conditional transaction, so two runs at once could not corrupt the record, but they could
interleave: both see "no version for this data" and train, both count a bake run for the same
hour. The run lock makes the second run wait (``wait`` seconds) or stop with ``Locked`` (exit 6)
before it reads anything.

The lock is a ``RunLock`` item in the registry table (``MODEL#<name>``/``LOCK``), written with a
conditional put: free, expired, or already this run's. ``RunLease`` holds it for a run: it takes
it (polling while another run holds it, up to ``wait``), renews it every ``ttl / 3`` seconds from
a daemon thread, and deletes it on release. A holder that dies stops renewing and its lock lapses
after ``ttl`` seconds; on the same machine a lock whose process is gone is broken at once. The
same run id re-enters (a resumed run, the next task group, a parallel score partition), so a
resumed run takes back its own lock.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

from stagewise.registry.errors import Locked
from stagewise.registry.records import RunLock
from stagewise.registry.store import RegistryStore

DEFAULT_TTL_SECONDS = 600.0
"""How long a lock outlives its last renewal (seconds). Renewals come every third of it, so a
stall of two renewals (an AWS outage of ~6 minutes) does not lose it; a killed holder's lock
lapses within 10 minutes."""

POLL_SECONDS = 2.0
"""How often a waiting run tries again (seconds)."""


def _process_gone(lock: RunLock) -> bool:
    """True if ``lock`` was taken by a process on this machine that no longer exists."""
    if lock.host != socket.gethostname() or lock.pid <= 0 or lock.pid == os.getpid():
        return False
    try:
        os.kill(lock.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


def describe(lock: RunLock, now_epoch: float) -> str:
    """One line naming the holder, e.g. ``run 20261129T...-ab12cd (stagewise run, pid 4242 on
    host laptop, since 21:03:04 UTC; lapses in 540 s unless renewed)``."""
    where = f", pid {lock.pid} on host {lock.host}" if lock.pid else ""
    left = max(0, round(lock.expires_epoch - now_epoch))
    return (f"run {lock.run_id} (stagewise {lock.command}{where}, since {lock.acquired_at:%H:%M:%S} UTC; "
            f"lapses in {left} s unless renewed)")


class RunLease:
    """Holds model ``model``'s run lock for run ``run_id`` while it runs (``acquire``/``release``,
    or ``with lease.held(wait):``).

    Args:
        store: the environment's registry store.
        model: the registered model's name.
        run_id: the run's id (the same id re-enters its own lock).
        command: ``run`` or ``score`` (or the task group), shown to a refused run.
        holder: who runs it (an ARN), shown to a refused run.
        ttl: seconds a lock lives past its last renewal (``DEFAULT_TTL_SECONDS``).
        clock: seconds since the epoch (tests pass a fake one).
        sleep: how to wait between polls (tests pass a fake one).
    """

    def __init__(self, store: RegistryStore, model: str, run_id: str, command: str = "run", holder: str = "",
                 ttl: float = DEFAULT_TTL_SECONDS, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Any] = time.sleep) -> None:
        if ttl <= 0:
            raise ValueError(f"ttl must be positive seconds, not {ttl}")
        self.store, self.model, self.run_id, self.command, self.holder = store, model, run_id, command, holder
        self.ttl, self._clock, self._sleep = ttl, clock, sleep
        self.renewal_errors = 0
        self.lost: Locked | None = None
        self.release_error: Exception | None = None
        self.waited = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._acquired_at: datetime | None = None

    def _record(self) -> RunLock:
        now = self._clock()
        if self._acquired_at is None:
            self._acquired_at = datetime.fromtimestamp(now, timezone.utc)
        return RunLock(model=self.model, run_id=self.run_id, command=self.command, holder=self.holder,
                       host=socket.gethostname(), pid=os.getpid(), acquired_at=self._acquired_at,
                       expires_epoch=now + self.ttl)

    def acquire(self, wait: float = 0.0, on_wait: Callable[[RunLock], Any] | None = None,
                renew: bool = True) -> RunLock:
        """Take the lock, waiting up to ``wait`` seconds while another run holds it, then (with
        ``renew``) start renewing it in the background.

        Args:
            wait: seconds to keep trying (0: refuse at once).
            on_wait: called once with the holder's lock when this run starts waiting.
            renew: renew every ``ttl / 3`` seconds until ``release``.

        Returns:
            The lock as written.

        Raises:
            Locked: still held by another run after ``wait`` seconds; the message names the holder.
        """
        start = self._clock()
        told = False
        while True:
            try:
                lock = self.store.acquire_run_lock(self._record(), self._clock())
                self.waited = self._clock() - start
                break
            except Locked as e:
                held = e.lock if isinstance(e.lock, RunLock) else None
                if held is not None and _process_gone(held):
                    self.store.release_run_lock(self.model, held.run_id)  # conditional: only that run's lock
                    continue
                self.waited = self._clock() - start
                if self.waited >= wait:
                    who = describe(held, self._clock()) if held else "another run"
                    raise Locked(f"model {self.model!r} is busy: {who} is running on it"
                                 + (f"; waited {self.waited:.0f} s" if wait else ""), held) from None
                if not told and on_wait is not None and held is not None:
                    on_wait(held)
                    told = True
                self._sleep(min(POLL_SECONDS, max(0.05, wait - self.waited)))
        if renew:
            self._thread = threading.Thread(target=self._renew_loop, name=f"run-lock-{self.model}", daemon=True)
            self._thread.start()
        return lock

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.store.acquire_run_lock(self._record(), self._clock())
            except Locked as e:  # it lapsed and another run took it: stop renewing, say so
                self.lost = e
                return
            except Exception:  # noqa: BLE001 - AWS briefly unreachable: the next renewal retries
                self.renewal_errors += 1

    def stop(self) -> None:
        """Stop renewing, keeping the lock: the run goes on in another process (the next task
        group re-enters it) or is to be resumed; unrenewed, it lapses after ``ttl`` seconds."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def release(self) -> bool:
        """Stop renewing and delete the lock if this run still holds it.

        Returns:
            True if it was deleted.
        """
        self.stop()
        return self.store.release_run_lock(self.model, self.run_id)

    @contextmanager
    def held(self, wait: float = 0.0, on_wait: Callable[[RunLock], Any] | None = None) -> Iterator[RunLock]:
        """``acquire(wait, on_wait)`` on entry, ``release()`` on exit (also on an exception). A
        release that fails (AWS unreachable) is kept in ``release_error``, not raised: it would
        hide the run's own outcome, and the unrenewed lock lapses after ``ttl`` seconds."""
        lock = self.acquire(wait, on_wait)
        try:
            yield lock
        finally:
            try:
                self.release()
            except Exception as e:  # noqa: BLE001 - AWS unreachable: the lock lapses after ttl; the run's own outcome stands
                self.release_error = e
