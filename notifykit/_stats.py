"""Per-transport counters, levels, state and delivery latency, readable while running (``stats()``,
the status file, the metrics of ``notifykit.metrics``) and logged at close."""

from __future__ import annotations

import enum
import math
import time
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from itertools import repeat
from operator import attrgetter, sub
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._message import Notification

__all__ = ["LATENCY_BUCKETS", "LatencyHistogram", "TransportState", "TransportStats", "render_prometheus"]

#: Upper bounds (seconds) of the delivery latency buckets, ``+Inf`` implied: from a broker on
#: the same host (about a millisecond) to a backlog delivered after an outage (minutes).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_BOUNDS = tuple(timedelta(seconds=b) for b in LATENCY_BUCKETS)  # compared with ages as they come, no float made
_LE = (*(repr(b) for b in LATENCY_BUCKETS), "+Inf")  # Prometheus' spelling of each bound: 0.001 ... 300.0, +Inf
_ZERO = timedelta()
_SMALL_BATCH = 3  # up to this many, one float each is cheaper than the C path's fixed cost (measured)
_timestamp = attrgetter("timestamp")


class LatencyHistogram:
    """Seconds from ``notify()`` accepting a notification (its ``timestamp``) to its
    transport confirming it, in the fixed buckets of :data:`LATENCY_BUCKETS`; one
    observation per notification counted ``sent``, so ``count == sent``.

    A notification replayed from a previous process's spool, or re-sent with ``emit()``,
    counts from its original timestamp: it did wait that long. An age below zero (the wall
    clock stepped back) counts as 0. ``counts[i]`` holds the observations in bucket ``i``
    alone (not cumulative), the last one those above the last bound."""

    __slots__ = ("counts", "sum")

    def __init__(self, counts: Sequence[int] | None = None, total: float = 0.0) -> None:
        self.counts = list(counts) if counts is not None else [0] * len(_LE)
        if len(self.counts) != len(_LE):
            raise ValueError(f"a latency histogram has {len(_LE)} buckets, not {len(self.counts)}")
        self.sum = total  # seconds, over every observation

    @property
    def count(self) -> int:
        return sum(self.counts)

    def record(self, notifications: Sequence[Notification]) -> None:
        """One observation per notification, all confirmed now: one clock read per batch; a
        small batch one by one, a larger one in C (counted at once when its ages fall in one
        bucket, the usual case)."""
        if len(notifications) <= _SMALL_BATCH:
            now_s, counts, total_s = time.time(), self.counts, 0.0
            for notification in notifications:
                age = max(now_s - notification.timestamp.timestamp(), 0.0)
                counts[bisect_left(LATENCY_BUCKETS, age)] += 1
                total_s += age
            self.sum += total_s
            return
        now = datetime.now(UTC)
        stamps = list(map(_timestamp, notifications))
        counts, newest = self.counts, max(stamps)
        if now >= newest:
            first = bisect_left(_BOUNDS, now - newest)
            if first == bisect_left(_BOUNDS, now - min(stamps)):
                counts[first] += len(stamps)
            else:
                for stamp in stamps:
                    counts[bisect_left(_BOUNDS, now - stamp)] += 1
            total = sum(map(sub, repeat(now, len(stamps)), stamps), _ZERO)
        else:
            ages = [max(now - stamp, _ZERO) for stamp in stamps]
            for age in ages:
                counts[bisect_left(_BOUNDS, age)] += 1
            total = sum(ages, _ZERO)
        self.sum += total.total_seconds()

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, observations <= le)`` per bucket, ``+Inf`` last, as Prometheus exposes them."""
        running, rows = 0, []
        for le, count in zip(_LE, self.counts, strict=True):
            running += count
            rows.append((le, running))
        return rows

    def quantile(self, q: float) -> float | None:
        """The upper bound of the bucket holding quantile ``q`` (``inf`` past the last
        bound), None without observations: ``p99 <= quantile(0.99)``."""
        total = self.count
        if not total:
            return None
        rank = q * total
        for bound, (_, running) in zip((*LATENCY_BUCKETS, math.inf), self.cumulative(), strict=True):
            if running >= rank:
                return bound
        return math.inf  # pragma: no cover - the last row holds every observation

    def copy(self) -> LatencyHistogram:
        return LatencyHistogram(self.counts, self.sum)

    def as_dict(self) -> dict[str, Any]:
        """The status file's form: cumulative ``buckets`` by ``le``, ``sum`` (seconds), ``count``."""
        return {"buckets": dict(self.cumulative()), "sum": self.sum, "count": self.count}

    @classmethod
    def from_dict(cls, data: object) -> LatencyHistogram:
        """Back from :meth:`as_dict` (a status file); ValueError naming what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("not an object")
        buckets, total = data.get("buckets"), data.get("sum")
        if not isinstance(buckets, dict) or list(buckets) != list(_LE):
            raise ValueError(f"buckets are not the {len(_LE)} of le {_LE[0]} ... {_LE[-1]}")
        running = list(buckets.values())
        if any(isinstance(v, bool) or not isinstance(v, int) for v in running) or running != sorted(running) \
                or (running and running[0] < 0):
            raise ValueError("bucket counts are not growing counts")
        if isinstance(total, bool) or not isinstance(total, int | float) or not math.isfinite(total) or total < 0:
            raise ValueError(f"sum is {total!r}, not seconds")
        if data.get("count", running[-1]) != running[-1]:
            raise ValueError(f"count is {data.get('count')!r}, not the +Inf bucket's {running[-1]}")
        return cls([b - a for a, b in zip([0, *running], running, strict=False)], float(total))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LatencyHistogram):
            return NotImplemented
        return self.counts == other.counts and self.sum == other.sum

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"LatencyHistogram(count={self.count}, sum={self.sum:.6f})"


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
    dead letter could not be written (logged).

    ``spooled_bytes`` is what this transport's unconfirmed records take in the spool (the
    batch being sent included: a restart would replay it), 0 without a spool;
    ``delivery_latency`` times each ``sent`` notification (:class:`LatencyHistogram`)."""

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
    spooled_bytes: int = 0
    state: TransportState = TransportState.STARTING
    last_error: str | None = None
    degraded: str | None = None
    delivery_latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    def as_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["state"] = self.state.value
        data["delivery_latency"] = self.delivery_latency.as_dict()
        return data

    def unaccounted(self) -> int:
        """``enqueued`` minus everything it must equal: 0 unless a notification vanished
        (positive) or was counted twice (negative)."""
        return self.enqueued - (self.sent + self.dropped + self.dead_lettered + self.dead_letter_failed
                                + self.queue_depth + self.in_flight + self.spooled)


_COUNTERS = ("enqueued", "sent", "retried", "dropped", "dead_lettered", "filtered", "refused", "dead_letter_failed",
             "spool_full", "replayed", "unspooled")
_GAUGES = ("queue_depth", "in_flight", "spooled", "spooled_bytes")
#: Histogram fields, each exposed as ``notifykit_<field>_seconds``.
_HISTOGRAMS = ("delivery_latency",)


def render_prometheus(stats: Mapping[str, TransportStats] | Mapping[str, Mapping[str, Any]]) -> str:
    """Prometheus text exposition of the counters (``notifykit_<counter>_total{transport=…}``),
    the gauges and the latency histogram (a status file's rows too: a row written before
    a histogram existed shows none)."""
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
    for histogram in _HISTOGRAMS:
        family = f"notifykit_{histogram}_seconds"
        lines.append(f"# TYPE {family} histogram")
        for name, row in rows.items():
            if row.get(histogram) is None:
                continue
            observed = LatencyHistogram.from_dict(row[histogram])
            label = _label(name)
            lines.extend(f'{family}_bucket{{transport="{label}",le="{le}"}} {n}' for le, n in observed.cumulative())
            lines.append(f'{family}_sum{{transport="{label}"}} {observed.sum!r}')
            lines.append(f'{family}_count{{transport="{label}"}} {observed.count}')
    return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
