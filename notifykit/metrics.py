"""Prometheus metrics of a Notifier, for the application's own ``prometheus_client`` registry.

``notifykit status --prometheus`` renders a status file; a process that already serves
``/metrics`` wants the same numbers in its own registry instead, with HELP and TYPE::

    from prometheus_client import REGISTRY
    from notifykit.metrics import NotifykitCollector

    REGISTRY.register(NotifykitCollector(notifier))

Every scrape reads ``notifier.stats()`` and ``notifier.background_tasks()``; nothing is
counted twice and nothing runs between scrapes. The counters are read from
:class:`~notifykit.TransportStats`' own fields, so a counter added there is exported
without a change here. The collector needs the ``notifykit[prometheus]`` extra; only this
module imports ``prometheus_client``, when a collector is made.

An application on OpenTelemetry metrics gets the same numbers as observable instruments of
its meter provider with :func:`register_opentelemetry` (``notifykit[otel]``), read at each
collection the same way.

The delivery latency is a histogram kept by the Notifier itself (fixed buckets, counted on
the event loop per confirmed batch): Prometheus gets it as a histogram family; OpenTelemetry,
which has no asynchronous histogram, as observable counters of the same cumulative buckets
(see :class:`OpenTelemetryMetrics`).
"""

from __future__ import annotations

import enum
import importlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import fields
from typing import TYPE_CHECKING, Any, Protocol, get_type_hints

from ._errors import MissingDependencyError
from ._stats import _GAUGES, LATENCY_BUCKETS, LatencyHistogram, TransportStats
from ._supervisor import TaskHealth, TaskState

if TYPE_CHECKING:
    from prometheus_client.core import Metric

__all__ = ["LATENCY_BUCKETS", "LatencyHistogram", "NotifykitCollector", "OpenTelemetryMetrics", "SupportsStats",
           "register_opentelemetry"]

NOTIFICATIONS = "notifykit_notifications"  # exposed as notifykit_notifications_total (a counter)

#: HELP of the level (gauge) fields; a new one gets a generic text until it is described here.
_GAUGE_HELP = {
    "queue_depth": "Notifications waiting in the transport's in-memory queue.",
    "in_flight": "Notifications taken from the queue and not yet sent, dead-lettered or spooled.",
    "spooled": "Notifications held in the durable spool for this transport.",
    "spooled_bytes": "Bytes of this transport's records in the spool not yet confirmed (the batch being sent"
                     " included); 0 without a spool.",
    "degraded": "1 while the transport's spool is degraded (a disk fault; the reason is in the status file), else 0.",
}
#: The unit of a level in OpenTelemetry (UCUM); the others count notifications.
_GAUGE_UNIT = {"spooled_bytes": "By"}
#: HELP of the histogram fields (seconds).
_HISTOGRAM_HELP = {
    "delivery_latency": "Seconds from notify() accepting a notification to its transport confirming it"
                        " (replayed ones count from their first acceptance); one observation per sent notification.",
}
#: Text fields that are no flag: the label, and the last error (its text is in the status file).
_TEXT = ("name", "last_error")


class SupportsStats(Protocol):
    """What the collector reads: a :class:`~notifykit.Notifier` has both."""

    def stats(self) -> Mapping[str, TransportStats]: ...

    def background_tasks(self) -> Mapping[str, TaskHealth]: ...


def _classify() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[tuple[str, type[enum.Enum]], ...],
                         tuple[str, ...]]:
    """TransportStats' fields as (counters, gauges, flags, enum-valued states, histograms),
    from its type hints: an ``int`` field is a counter unless it is one of the levels
    ``render_prometheus`` exports as gauges; an optional text (a reason, set while a
    condition lasts) is a 0/1 flag; a :class:`LatencyHistogram` is a histogram in seconds."""
    hints = get_type_hints(TransportStats)
    counters: list[str] = []
    gauges: list[str] = []
    flags: list[str] = []
    states: list[tuple[str, type[enum.Enum]]] = []
    histograms: list[str] = []
    for field in fields(TransportStats):
        hint = hints[field.name]
        if hint is int:
            (gauges if field.name in _GAUGES else counters).append(field.name)
        elif hint == str | None and field.name not in _TEXT:
            flags.append(field.name)
        elif isinstance(hint, type) and issubclass(hint, enum.Enum):
            states.append((field.name, hint))
        elif hint is LatencyHistogram:
            histograms.append(field.name)
    return tuple(counters), tuple(gauges), tuple(flags), tuple(states), tuple(histograms)


COUNTERS, GAUGES, FLAGS, STATES, HISTOGRAMS = _classify()


class NotifykitCollector:
    """A ``prometheus_client`` custom collector over one Notifier's :meth:`~notifykit.Notifier.stats`
    and :meth:`~notifykit.Notifier.background_tasks`.

    Families: ``notifykit_notifications_total{transport,outcome}`` (one ``outcome`` per
    counter of :class:`~notifykit.TransportStats`: enqueued, sent, retried, dropped,
    dead_lettered, filtered, refused, …), one gauge per level (``notifykit_queue_depth``,
    ``notifykit_in_flight``, ``notifykit_spooled``, ``notifykit_spooled_bytes``, labelled
    ``transport``), ``notifykit_transport_state{transport,state}`` (1 for the current
    state, 0 for the others), the histogram ``notifykit_delivery_latency_seconds{transport}``
    (``_bucket{le}``, ``_sum``, ``_count``), and per background task
    ``notifykit_background_task_failures_total{task}`` and ``notifykit_background_task_state{task,state}``.

    The scrape runs in prometheus_client's thread: each value is exact, but values read
    while notifications move may be a few notifications apart from each other.
    """

    def __init__(self, notifier: SupportsStats) -> None:
        try:
            importlib.import_module("prometheus_client.core")
        except ImportError as exc:  # pragma: no cover - the extra is installed in the test environment
            raise MissingDependencyError("notifykit.metrics.NotifykitCollector needs prometheus_client:"
                                         " pip install 'notifykit[prometheus]'") from exc
        self.notifier = notifier

    def describe(self) -> Iterator[Metric]:
        """The families without samples, so registering does not read the Notifier."""
        return self._families({}, {})

    def collect(self) -> Iterator[Metric]:
        return self._families(self.notifier.stats(), self.notifier.background_tasks())

    def _families(self, stats: Mapping[str, TransportStats], tasks: Mapping[str, TaskHealth]) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        notifications = CounterMetricFamily(
            NOTIFICATIONS, "Notifications per transport and outcome, one outcome per counter of notifykit.TransportStats"
            f" ({', '.join(COUNTERS)}); filtered and refused ones were never enqueued.",
            labels=("transport", "outcome"))
        for name, row in stats.items():
            for counter in COUNTERS:
                notifications.add_metric((name, counter), getattr(row, counter))
        yield notifications
        for gauge in GAUGES:
            family = GaugeMetricFamily(f"notifykit_{gauge}", _GAUGE_HELP.get(gauge, f"TransportStats.{gauge} of each transport."),
                                       labels=("transport",))
            for name, row in stats.items():
                family.add_metric((name,), getattr(row, gauge))
            yield family
        for flag in FLAGS:
            family = GaugeMetricFamily(f"notifykit_{flag}", _GAUGE_HELP.get(flag, f"1 while TransportStats.{flag} is set, else 0."),
                                       labels=("transport",))
            for name, row in stats.items():
                family.add_metric((name,), 1 if getattr(row, flag) else 0)
            yield family
        for field, kind in STATES:
            members = ", ".join(str(m.value) for m in kind)
            family = GaugeMetricFamily(f"notifykit_transport_{field}",
                                       f"1 for the transport's current {field}, 0 for the others ({members}).",
                                       labels=("transport", field))
            for name, row in stats.items():
                current = getattr(row, field)
                for member in kind:
                    family.add_metric((name, str(member.value)), 1 if member is current else 0)
            yield family
        for field in HISTOGRAMS:
            histogram = HistogramMetricFamily(f"notifykit_{field}_seconds",
                                              _HISTOGRAM_HELP.get(field, f"TransportStats.{field}, in seconds."),
                                              labels=("transport",))
            for name, row in stats.items():
                value: LatencyHistogram = getattr(row, field)
                histogram.add_metric((name,), value.cumulative(), value.sum)
            yield histogram
        yield from self._task_families(tasks)

    @staticmethod
    def _task_families(tasks: Mapping[str, TaskHealth]) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        failures = CounterMetricFamily("notifykit_background_task_failures",
                                       "Failures of a supervised background task (worker:NAME per transport, status, ...);"
                                       " each is logged and the task restarted after a backoff.", labels=("task",))
        state = GaugeMetricFamily("notifykit_background_task_state",
                                  "1 for the background task's current state, 0 for the others"
                                  f" ({', '.join(s.value for s in TaskState)}).", labels=("task", "state"))
        for name, health in tasks.items():
            failures.add_metric((name,), health.failures)
            for member in TaskState:
                state.add_metric((name, member.value), 1 if member is health.state else 0)
        yield from (failures, state)


# -- OpenTelemetry ------------------------------------------------------------------------

#: The API's stand-ins while no meter provider is set.
_NO_METER_PROVIDER = ("_ProxyMeterProvider", "NoOpMeterProvider")


class OpenTelemetryMetrics:
    """The observable instruments :func:`register_opentelemetry` made for one Notifier.

    Instruments: ``notifykit.notifications`` (a counter, attributes ``transport`` and
    ``outcome``, one outcome per counter of :class:`~notifykit.TransportStats`), one
    up-down counter per level (``notifykit.queue_depth``, ``notifykit.in_flight``,
    ``notifykit.spooled``, ``notifykit.spooled_bytes`` in ``By``, attribute ``transport``),
    ``notifykit.degraded`` (a 0/1 gauge), ``notifykit.transport.state`` (a gauge, 1 for the
    current ``state``, 0 for the others), the delivery latency as counters
    ``notifykit.delivery_latency.bucket`` (attributes ``transport``, ``le``: deliveries
    within ``le`` seconds, cumulative as Prometheus' buckets), ``notifykit.delivery_latency.sum``
    (``s``) and ``notifykit.delivery_latency.count``, ``notifykit.background_task.failures``
    (a counter, attribute ``task``) and ``notifykit.background_task.state``. The API cannot
    remove an instrument, so :meth:`close` makes them report nothing (a closed Notifier is
    no longer read).

    Why counters for the latency rather than a Histogram instrument: OpenTelemetry's
    histograms are synchronous only (``record()`` once per measurement: several µs a
    delivered notification in the SDK, on the event loop, against a notify() of a few µs),
    and would count only what was delivered after registration; the Notifier already keeps
    the buckets, so the counters read them at collection like every other instrument here,
    equal to ``stats()``, nothing paid per notification. They are counters, not gauges,
    because each bucket only grows: ``rate()`` and ``histogram_quantile()`` over ``le``
    work on them as on a Prometheus histogram."""

    def __init__(self, notifier: SupportsStats, meter: Any, observation: Any) -> None:
        self.notifier = notifier
        self.closed = False
        self._observation = observation
        self.instruments = [
            meter.create_observable_counter(
                "notifykit.notifications", [self._notifications], unit="{notification}",
                description="Notifications per transport and outcome (one outcome per counter of TransportStats)."),
            *(meter.create_observable_up_down_counter(f"notifykit.{gauge}", [self._level(gauge)],
                                                      unit=_GAUGE_UNIT.get(gauge, "{notification}"),
                                                      description=_GAUGE_HELP.get(gauge, f"TransportStats.{gauge}."))
              for gauge in GAUGES),
            *(meter.create_observable_gauge(f"notifykit.{flag}", [self._flag(flag)],
                                            description=_GAUGE_HELP.get(flag, f"1 while TransportStats.{flag} is set."))
              for flag in FLAGS),
            *(meter.create_observable_gauge(f"notifykit.transport.{field}", [self._state(field, kind)],
                                            description=f"1 for the transport's current {field}, 0 for the others.")
              for field, kind in STATES),
            *(instrument for field in HISTOGRAMS for instrument in self._histogram(meter, field)),
            meter.create_observable_counter("notifykit.background_task.failures", [self._task_failures],
                                            unit="{failure}", description="Failures of a supervised background task."),
            meter.create_observable_gauge("notifykit.background_task.state", [self._task_state],
                                          description="1 for the background task's current state, 0 for the others."),
        ]

    def close(self) -> None:
        """Report nothing from now on."""
        self.closed = True

    def _stats(self) -> Mapping[str, TransportStats]:
        return {} if self.closed else self.notifier.stats()

    def _tasks(self) -> Mapping[str, TaskHealth]:
        return {} if self.closed else self.notifier.background_tasks()

    def _notifications(self, options: Any) -> Iterable[Any]:
        return [self._observation(getattr(row, counter), {"transport": name, "outcome": counter})
                for name, row in self._stats().items() for counter in COUNTERS]

    def _level(self, gauge: str) -> Any:
        return lambda options: [self._observation(getattr(row, gauge), {"transport": name})
                                for name, row in self._stats().items()]

    def _flag(self, flag: str) -> Any:
        return lambda options: [self._observation(1 if getattr(row, flag) else 0, {"transport": name})
                                for name, row in self._stats().items()]

    def _state(self, field: str, kind: type[enum.Enum]) -> Any:
        return lambda options: [self._observation(1 if member is getattr(row, field) else 0,
                                                  {"transport": name, field: str(member.value)})
                                for name, row in self._stats().items() for member in kind]

    def _histogram(self, meter: Any, field: str) -> list[Any]:
        """A histogram field as three observable counters: cumulative buckets by ``le``, sum, count."""
        what = _HISTOGRAM_HELP.get(field, f"TransportStats.{field}, in seconds.")

        def buckets(options: Any) -> Iterable[Any]:
            return [self._observation(count, {"transport": name, "le": le})
                    for name, row in self._stats().items() for le, count in getattr(row, field).cumulative()]

        def total(options: Any) -> Iterable[Any]:
            return [self._observation(getattr(row, field).sum, {"transport": name}) for name, row in self._stats().items()]

        def count(options: Any) -> Iterable[Any]:
            return [self._observation(getattr(row, field).count, {"transport": name})
                    for name, row in self._stats().items()]

        return [
            meter.create_observable_counter(f"notifykit.{field}.bucket", [buckets], unit="{notification}",
                                            description=f"{what} Cumulative: those within le seconds."),
            meter.create_observable_counter(f"notifykit.{field}.sum", [total], unit="s",
                                            description=f"{what} Their sum."),
            meter.create_observable_counter(f"notifykit.{field}.count", [count], unit="{notification}",
                                            description=f"{what} Their count."),
        ]

    def _task_failures(self, options: Any) -> Iterable[Any]:
        return [self._observation(health.failures, {"task": name}) for name, health in self._tasks().items()]

    def _task_state(self, options: Any) -> Iterable[Any]:
        return [self._observation(1 if member is health.state else 0, {"task": name, "state": member.value})
                for name, health in self._tasks().items() for member in TaskState]


def register_opentelemetry(notifier: SupportsStats, meter_provider: Any = None) -> OpenTelemetryMetrics | None:
    """The Notifier's counters and gauges as observable instruments of ``meter_provider``
    (default: the global one), meter ``notifykit``; None, and nothing registered, when
    opentelemetry-api is not installed or no meter provider is set."""
    try:
        api = importlib.import_module("opentelemetry.metrics")
    except ImportError:
        return None
    provider = meter_provider if meter_provider is not None else api.get_meter_provider()
    if type(provider).__name__ in _NO_METER_PROVIDER:
        return None
    from . import __version__

    return OpenTelemetryMetrics(notifier, provider.get_meter("notifykit", __version__), api.Observation)
