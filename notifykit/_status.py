"""A running Notifier's health, written to a JSON file that ``notifykit status`` reads.

A file (rather than a socket) keeps the process free of servers and works for a
process that has died: the last state it wrote is still there.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from ._stats import TransportStats
from ._supervisor import Supervisor, TaskHealth

__all__ = ["read_status_file", "report_status_periodically", "status_document", "write_status", "write_status_file"]

#: The status writer's name in ``Notifier.background_tasks()``.
STATUS_TASK = "status"


def status_document(publisher_id: str, stats: Mapping[str, TransportStats], *, closed: bool = False,
                    tasks: Mapping[str, TaskHealth] | None = None) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "publisher_id": publisher_id,
        "updated_at": time.time(),
        "closed": closed,
        "transports": {name: s.as_dict() for name, s in stats.items()},
        "tasks": {name: t.as_dict() for name, t in (tasks or {}).items()},
    }


def write_status_file(path: Path, document: Mapping[str, Any]) -> None:
    """Atomic replace, so a reader never sees half a file (blocking: run in a thread)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not leave our half-written file behind
        raise


async def write_status(path: Path, document: Callable[[], Mapping[str, Any]], supervisor: Supervisor) -> bool:
    """One write; a failure (unwritable directory, full disk) is recorded by the
    supervisor, logged once per burst, and never raised: the caller keeps running."""
    try:
        await anyio.to_thread.run_sync(write_status_file, path, document())
    except Exception as exc:
        supervisor.failed(STATUS_TASK, exc, f"could not write the status file {str(path)!r}")
        return False
    supervisor.ok(STATUS_TASK)
    return True


def read_status_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("status file is not a JSON object")
    return data


async def report_status_periodically(path: Path, interval: float, snapshot: Callable[[], Mapping[str, Any]],
                                     supervisor: Supervisor) -> None:
    """Background task of the Notifier's task group: writes every ``interval`` seconds,
    failing or not (so a directory that becomes writable again is used again); cancelled
    at close."""
    supervisor.register(STATUS_TASK)
    while True:
        await write_status(path, snapshot, supervisor)
        await anyio.sleep(interval)
