"""Where notifications go when they cannot be delivered: never silently dropped."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import anyio.to_thread

from ._formats import WireFormat
from ._message import Notification
from ._paths import state_file

__all__ = [
    "DeadLetter",
    "DeadLetterSink",
    "JsonlDeadLetterSink",
    "MemoryDeadLetterSink",
    "default_dead_letter_path",
    "read_dead_letters",
    "rewrite_dead_letters",
]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A notification one transport gave up on, and why."""

    transport: str
    reason: str
    notification: Notification
    failed_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "transport": self.transport,
            "reason": self.reason,
            "failed_at": self.failed_at.isoformat(timespec="microseconds"),
            "message": json.loads(self.notification.encode(WireFormat.JSON)),
        }


@runtime_checkable
class DeadLetterSink(Protocol):
    """Stores dead letters; ``write`` must not block the event loop."""

    async def write(self, letters: Sequence[DeadLetter]) -> None: ...


def default_dead_letter_path() -> Path:
    """``$NOTIFYKIT_DEAD_LETTERS``, else ``$XDG_STATE_HOME/notifykit/deadletters.jsonl``."""
    return state_file("NOTIFYKIT_DEAD_LETTERS", "deadletters.jsonl")


class JsonlDeadLetterSink:
    """Appends one JSON object per dead letter to a file, fsynced, in a worker thread."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def _append(self, lines: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)  # serialises with rewrite_dead_letters
            fh.write(lines)
            fh.flush()
            os.fsync(fh.fileno())

    async def write(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        lines = "".join(json.dumps(letter.as_dict(), ensure_ascii=False) + "\n" for letter in letters)
        await anyio.to_thread.run_sync(self._append, lines)

    def __repr__(self) -> str:
        return f"JsonlDeadLetterSink({str(self.path)!r})"


class MemoryDeadLetterSink:
    """Keeps dead letters in a list (re-drive collects the ones that fail again)."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    async def write(self, letters: Sequence[DeadLetter]) -> None:
        self.letters.extend(letters)

    def __repr__(self) -> str:
        return f"MemoryDeadLetterSink({len(self.letters)} letters)"


def rewrite_dead_letters(
    path: str | os.PathLike[str],
    remove: Callable[[dict[str, Any]], bool],
    add: Sequence[DeadLetter] = (),
) -> int:
    """Atomically drop the records ``remove`` selects and append ``add``, under the same
    lock the sink appends with, so a running process's new dead letters are kept.
    Returns how many records were removed. Blocking: call from a thread or a CLI."""
    target = Path(path)
    with open(target, "a+", encoding="utf-8") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        lock.seek(0)
        kept: list[str] = []
        removed = 0
        for line in lock:
            if not line.strip():
                continue
            if remove(json.loads(line)):
                removed += 1
            else:
                kept.append(line if line.endswith("\n") else line + "\n")
        kept.extend(json.dumps(letter.as_dict(), ensure_ascii=False) + "\n" for letter in add)
        tmp = target.with_name(target.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as out:
            out.writelines(kept)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    return removed


def read_dead_letters(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield the records of a JSONL dead-letter file (blocking; for CLIs and tests)."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def now_utc() -> datetime:
    return datetime.now(UTC)
