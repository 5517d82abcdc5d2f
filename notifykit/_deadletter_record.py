"""A dead letter, and what stores it: a notification one transport gave up on, the line it
becomes in the JSONL file (pure ASCII, always readable back: a lone surrogate that slipped into
a custom Notification is kept as a ``\\udXXX`` escape, which ``json.loads`` turns back into the
same string), the sink protocol, and the memory sink.
"""

from __future__ import annotations

import json
import reprlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from ._errors import NotifyKitError
from ._message import Notification

__all__ = ["DeadLetter", "DeadLetterSink", "DeadLetterWriteError", "MemoryDeadLetterSink"]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A notification one transport gave up on, and why."""

    transport: str
    reason: str
    notification: Notification
    failed_at: datetime

    def as_dict(self) -> dict[str, Any]:
        """The record as stored; ``message`` is the notification in the ``json`` format's fields."""
        n = self.notification
        message: dict[str, Any] = {
            "message_id": n.message_id,
            "event_type": n.event_type,
            "priority": str(n.priority),
            "publisher_id": n.publisher_id,
            "timestamp": n.iso_timestamp,
            "context": n.context.as_dict(),
            "payload": _payload(n),
        }
        return {"transport": self.transport, "reason": self.reason,
                "failed_at": self.failed_at.isoformat(timespec="microseconds"), "message": message}

    def encode(self) -> bytes:
        """One ASCII JSON line. Never raises for a notification that got this far: what JSON
        cannot carry (a type, a cycle) is kept as its ``repr`` under ``unencodable``."""
        record = self.as_dict()
        try:
            text = json.dumps(record, ensure_ascii=True)
        except (TypeError, ValueError, RecursionError):
            message = record["message"]
            record["unencodable"] = {key: reprlib.repr(message[key]) for key in ("payload", "context")}
            message["payload"], message["context"] = {}, {}
            text = json.dumps(record, ensure_ascii=True, default=reprlib.repr)
        return text.encode("ascii") + b"\n"


def _payload(n: Notification) -> Any:
    """The payload as sent (``payload_json``), or the mapping if that text is not JSON."""
    try:
        return json.loads(n.payload_json)
    except (TypeError, ValueError, RecursionError):
        return n.payload


class DeadLetterWriteError(NotifyKitError):
    """Not every letter of a write reached the sink: the first ``written`` did (they are
    complete lines on disk), the rest did not (disk full, I/O error, file at its size cap)."""

    def __init__(self, message: str, written: int = 0) -> None:
        super().__init__(message)
        self.written = written


@runtime_checkable
class DeadLetterSink(Protocol):
    """Stores dead letters; ``write`` must not block the event loop. It raises when some
    letters were not stored (:class:`DeadLetterWriteError` says how many were)."""

    async def write(self, letters: Sequence[DeadLetter]) -> None: ...


class MemoryDeadLetterSink:
    """Keeps dead letters in a list (re-drive collects the ones that fail again)."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    async def write(self, letters: Sequence[DeadLetter]) -> None:
        self.letters.extend(letters)

    def __repr__(self) -> str:
        return f"MemoryDeadLetterSink({len(self.letters)} letters)"
