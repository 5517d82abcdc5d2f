"""Per-transport counters and state, readable while running and logged at close."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["TransportState", "TransportStats"]


class TransportState(enum.StrEnum):
    STARTING = "starting"
    CONNECTED = "connected"
    RETRYING = "retrying"
    CIRCUIT_OPEN = "circuit_open"
    CLOSED = "closed"


@dataclass(slots=True)
class TransportStats:
    """Counters of one transport. Every notification offered ends in exactly one of
    sent, dropped or dead_lettered, or is still queued, in flight or in the spool.
    ``replayed`` counts spool rows a previous process left; ``spool_full`` counts
    notifications dead-lettered because the spool cap was reached."""

    name: str
    enqueued: int = 0
    sent: int = 0
    retried: int = 0
    dropped: int = 0
    dead_lettered: int = 0
    filtered: int = 0
    spool_full: int = 0
    replayed: int = 0
    queue_depth: int = 0
    in_flight: int = 0
    spooled: int = 0
    state: TransportState = TransportState.STARTING
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        return data
