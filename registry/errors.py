"""The registry's one exception family. Storage errors are translated into these at the boundary."""

from __future__ import annotations

from stagewise.platform.contract import ExitCode, StagewiseError


class RegistryError(StagewiseError):
    """Base of every registry error; ``code`` is a stable machine-readable name and ``exit_code``
    the process's exit code for it (``stagewise.platform.contract.ExitCode``)."""

    code = "RegistryError"
    exit_code = ExitCode.FAILED
    hint: str | None = None

    def to_dict(self) -> dict[str, str]:
        """``{"code": ..., "message": ...}`` for ``--json`` output."""
        return {"code": self.code, "message": str(self)}


class NotFound(RegistryError):
    """The model, version or event does not exist."""

    code = "NotFound"
    exit_code = ExitCode.BAD_INPUT


class AlreadyExists(RegistryError):
    """The model or version exists already (and the call was not an idempotent replay)."""

    code = "AlreadyExists"


class Conflict(RegistryError):
    """Another writer changed the record first (its revision moved); re-read and retry."""

    code = "Conflict"
    exit_code = ExitCode.CONFLICT
    hint = "someone else changed it first: re-read and retry"


class Locked(Conflict):
    """Another run holds the model's run lock (``RunLock``): refused (exit 6) rather than
    interleaved. ``lock`` is the holder's record."""

    code = "Locked"

    def __init__(self, message: str, lock: object | None = None) -> None:
        super().__init__(message)
        self.lock = lock
        self.hint = ("wait for it (`--wait SECONDS`), or if that run is gone, let its lock lapse or finish it with "
                     "`--resume RUN_ID`")


class InvalidTransition(RegistryError):
    """The requested state change is not allowed from the current state."""

    code = "InvalidTransition"
    exit_code = ExitCode.INVALID_TRANSITION


class GateFailed(RegistryError):
    """A gate failed, so the change was refused; the message carries the gate values."""

    code = "GateFailed"
    exit_code = ExitCode.GATE_FAILED
