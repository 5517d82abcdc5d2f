"""Is the process that started an operation still running? (for ``recover``)

The catalog records, with every running operation, the pid of the process doing it and a
token for when that process started: the boot id and the process start time in clock ticks
since boot (``/proc/<pid>/stat`` field 22). Together they name one process for the life of
the machine: a reused pid has another start time, and after a reboot the boot id differs.

Chosen over a lease or a heartbeat because it needs no background writer (a heartbeat is a
catalog write every few seconds per operation, and a lease must guess how long a stalled
but live process may stay silent on a loaded machine); its limit is that only the same host
can check it, which is why ``recover`` only touches its own host's operations.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ProcessToken", "current_process", "process_alive"]

# (pid, start token)
ProcessToken = tuple[int, str]

_PROC = Path("/proc")


def _boot_id() -> str:
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown-boot"


def _start_ticks(pid: int) -> str | None:
    """The process start time from /proc, or None if there is no such process."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return "unknown"
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = stat.rpartition(")")[2].split()
    if fields and fields[0] in ("Z", "X"):  # a zombie has finished: only its exit status is left
        return None
    return fields[19] if len(fields) > 19 else "unknown"


def _token(pid: int) -> str | None:
    ticks = _start_ticks(pid)
    return None if ticks is None else f"{_boot_id()}/{ticks}"


def current_process() -> ProcessToken:
    """This process's (pid, start token), to record with an operation it starts."""
    pid = os.getpid()
    return pid, _token(pid) or "unknown"


def process_alive(pid: int | None, token: str | None) -> bool:
    """True if the process recorded as (pid, token) is still running on this machine.

    A record without a pid (written before liveness was recorded) counts as gone. Where
    /proc is missing, a live pid counts as alive (the safe side: recover skips it).
    """
    if pid is None or pid <= 0:
        return False
    if not _PROC.is_dir() or token is None or token == "unknown" or token.endswith("/unknown"):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return _token(pid) == token
