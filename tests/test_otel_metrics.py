"""notifykit.metrics.register_opentelemetry: the Notifier's counters and gauges as observable
instruments of an OpenTelemetry meter provider, collected by the SDK's InMemoryMetricReader
and compared with ``stats()``; nothing registered without a provider."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from notifykit import Notifier, TransportState
from notifykit.metrics import COUNTERS, FLAGS, GAUGES, HISTOGRAMS, LatencyHistogram, register_opentelemetry

from ._metrics_scenario import busy, make_notifier
from .helpers import FakeClock

sdk_metrics = pytest.importorskip("opentelemetry.sdk.metrics")
sdk_export = pytest.importorskip("opentelemetry.sdk.metrics.export")

pytestmark = pytest.mark.asyncio


def collected(reader: Any) -> dict[str, Any]:
    """The metrics of one collection, by name (the SDK gives None for a collection without any)."""
    data = reader.get_metrics_data()
    if data is None:
        return {}
    return {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}


def points(metric: Any) -> dict[tuple[tuple[str, Any], ...], float]:
    return {tuple(sorted(p.attributes.items())): p.value for p in metric.data.data_points}


async def test_without_a_meter_provider_nothing_is_registered(tmp_path: Path) -> None:
    async with Notifier.from_url("memory://", publisher_id="m.test", dead_letters=tmp_path / "dl.jsonl") as notifier:
        assert register_opentelemetry(notifier) is None


async def test_collected_instruments_equal_stats(tmp_path: Path, fake_clock: FakeClock) -> None:
    reader = sdk_export.InMemoryMetricReader()
    provider = sdk_metrics.MeterProvider(metric_readers=[reader])
    notifier = make_notifier(tmp_path, fake_clock)
    instruments = register_opentelemetry(notifier, provider)
    assert instruments is not None
    try:
        async with busy(notifier):
            stats, tasks = notifier.stats(), notifier.background_tasks()
            metrics = collected(reader)
            assert notifier.stats() == stats  # nothing moved during the collection
        after = collected(reader)
        assert points(after["notifykit.spooled_bytes"])[(("transport", "durable"),)] == 0  # delivered
        assert points(after["notifykit.delivery_latency.count"]) == {
            (("transport", t),): s.sent for t, s in notifier.stats().items()}

        notifications = metrics["notifykit.notifications"]
        assert notifications.data.is_monotonic and notifications.unit == "{notification}"
        assert points(notifications) == {(("outcome", c), ("transport", t)): getattr(s, c)
                                         for t, s in stats.items() for c in COUNTERS}
        for gauge in GAUGES:
            assert not metrics[f"notifykit.{gauge}"].data.is_monotonic  # an up-down counter
            assert points(metrics[f"notifykit.{gauge}"]) == {(("transport", t),): getattr(s, gauge)
                                                             for t, s in stats.items()}
        assert metrics["notifykit.spooled_bytes"].unit == "By" and metrics["notifykit.spooled"].unit == "{notification}"
        assert points(metrics["notifykit.spooled_bytes"])[(("transport", "durable"),)] > 0  # its broker holds it all
        for field in HISTOGRAMS:  # cumulative buckets, sum and count: observable counters
            histograms: dict[str, LatencyHistogram] = {t: getattr(s, field) for t, s in stats.items()}
            assert all(metrics[f"notifykit.{field}.{part}"].data.is_monotonic for part in ("bucket", "sum", "count"))
            assert metrics[f"notifykit.{field}.sum"].unit == "s"
            assert points(metrics[f"notifykit.{field}.bucket"]) == {
                (("le", le), ("transport", t)): n for t, h in histograms.items() for le, n in h.cumulative()}
            assert points(metrics[f"notifykit.{field}.sum"]) == {(("transport", t),): h.sum for t, h in histograms.items()}
            assert points(metrics[f"notifykit.{field}.count"]) == {(("transport", t),): stats[t].sent
                                                                   for t, h in histograms.items()}
        for flag in FLAGS:
            assert points(metrics[f"notifykit.{flag}"]) == {(("transport", t),): int(bool(getattr(s, flag)))
                                                            for t, s in stats.items()}
        assert points(metrics["notifykit.transport.state"]) == {
            (("state", st.value), ("transport", t)): int(s.state is st) for t, s in stats.items() for st in TransportState}
        assert points(metrics["notifykit.background_task.failures"]) == {(("task", name),): h.failures
                                                                         for name, h in tasks.items()}
        task_state = points(metrics["notifykit.background_task.state"])
        assert {k for k, v in task_state.items() if v == 1} == {(("state", h.state.value), ("task", name))
                                                                for name, h in tasks.items()}
        assert all(m.description for m in metrics.values())

        instruments.close()  # a closed Notifier is no longer read
        assert all(not m.data.data_points for m in collected(reader).values())
    finally:
        provider.shutdown()
