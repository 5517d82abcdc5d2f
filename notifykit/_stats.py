"""Per-transport counters and state, readable while running and logged at close."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["TransportState", "TransportStats", "render_prometheus"]


class TransportState(enum.StrEnum):
    STARTING = "starting"
    CONNECTED = "connected"
    RETRYING = "retrying"
    CIRCUIT_OPEN = "circuit_open"
    FAILED = "failed"  # the worker crashed on an internal error; the supervisor restarts it
    CLOSED = "closed"


@dataclass(slots=True)
class TransportStats:
    """Counters of one transport.

    The accounting invariant, true at every await point::

        enqueued == sent + dropped + dead_lettered + dead_letter_failed
                    + queue_depth + in_flight + spooled

    (see :meth:`unaccounted`). ``enqueued`` counts every notification this transport took
    on: accepted from ``notify()`` (including ones a ``drop_*`` policy then dropped) or
    ``replayed`` from a previous process's spool. ``refused`` counts notifications it did
    not take: ``notify()`` raised QueueFullError (``block`` past ``block_timeout``), so
    they are outside the invariant, like ``filtered``. ``spool_full`` counts the
    dead-lettered ones the spool cap turned away; ``dead_letter_failed`` the ones whose
    dead letter could not be written (logged)."""

    name: str
    enqueued: int = 0
    sent: int = 0
    retried: int = 0
    dropped: int = 0
    dead_lettered: int = 0
    filtered: int = 0
    refused: int = 0
    dead_letter_failed: int = 0
    spool_full: int = 0
    replayed: int = 0
    unspooled: int = 0
    queue_depth: int = 0
    in_flight: int = 0
    spooled: int = 0
    state: TransportState = TransportState.STARTING
    last_error: str | None = None
    degraded: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        return data

    def unaccounted(self) -> int:
        """``enqueued`` minus everything it must equal: 0 unless a notification vanished
        (positive) or was counted twice (negative)."""
        return self.enqueued - (self.sent + self.dropped + self.dead_lettered + self.dead_letter_failed
                                + self.queue_depth + self.in_flight + self.spooled)


_COUNTERS = ("enqueued", "sent", "retried", "dropped", "dead_lettered", "filtered", "refused", "dead_letter_failed",
             "spool_full", "replayed", "unspooled")
_GAUGES = ("queue_depth", "in_flight", "spooled")


def render_prometheus(stats: Mapping[str, TransportStats] | Mapping[str, Mapping[str, Any]]) -> str:
    """Prometheus text exposition of the counters (``notifykit_<counter>_total{transport=…}``)."""
    rows = {name: (s.as_dict() if isinstance(s, TransportStats) else dict(s)) for name, s in stats.items()}
    lines: list[str] = []
    for counter in _COUNTERS:
        lines.append(f"# TYPE notifykit_{counter}_total counter")
        lines.extend(f'notifykit_{counter}_total{{transport="{_label(n)}"}} {int(r.get(counter, 0))}' for n, r in rows.items())
    for gauge in _GAUGES:
        lines.append(f"# TYPE notifykit_{gauge} gauge")
        lines.extend(f'notifykit_{gauge}{{transport="{_label(n)}"}} {int(r.get(gauge, 0))}' for n, r in rows.items())
    lines.append("# TYPE notifykit_degraded gauge")  # 1 while the transport's spool is degraded (a disk fault)
    lines.extend(f'notifykit_degraded{{transport="{_label(n)}"}} {1 if r.get("degraded") else 0}' for n, r in rows.items())
    lines.append("# TYPE notifykit_transport_state gauge")
    for name, row in rows.items():
        for state in TransportState:
            value = 1 if row.get("state") == state.value else 0
            lines.append(f'notifykit_transport_state{{transport="{_label(name)}",state="{state.value}"}} {value}')
    return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
