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

__all__ = ["read_status_file", "status_document", "write_status_file", "report_status_periodically"]


def status_document(publisher_id: str, stats: Mapping[str, TransportStats], *, closed: bool = False) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "publisher_id": publisher_id,
        "updated_at": time.time(),
        "closed": closed,
        "transports": {name: s.as_dict() for name, s in stats.items()},
    }


def write_status_file(path: Path, document: Mapping[str, Any]) -> None:
    """Atomic replace, so a reader never sees half a file (blocking: run in a thread)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_status_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("status file is not a JSON object")
    return data


async def report_status_periodically(path: Path, interval: float, snapshot: Callable[[], dict[str, Any]]) -> None:
    """Background task of the Notifier's task group; cancelled at close."""
    while True:
        await anyio.to_thread.run_sync(write_status_file, path, snapshot())
        await anyio.sleep(interval)
