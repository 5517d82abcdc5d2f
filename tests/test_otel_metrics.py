"""notifykit.metrics.register_opentelemetry: the Notifier's counters and gauges as observable
instruments of an OpenTelemetry meter provider, collected by the SDK's InMemoryMetricReader
and compared with ``stats()``; nothing registered without a provider."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from notifykit import Notifier, TransportState
from notifykit.metrics import COUNTERS, FLAGS, GAUGES, register_opentelemetry
from notifykit.testing import MemoryTransport

from .helpers import FakeClock
from .test_metrics import config

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
    notifier = Notifier.from_config(config(tmp_path), publisher_id="metrics.test", dead_letters=tmp_path / "dl.jsonl",
                                    clock=fake_clock, close_timeout=0.05)
    instruments = register_opentelemetry(notifier, provider)
    assert instruments is not None
    try:
        async with notifier:
            ok, slow = notifier.transports["ok"], notifier.transports["slow"]
            assert isinstance(ok, MemoryTransport) and isinstance(slow, MemoryTransport)
            ok.fail_next(2)  # two retries, then sent
            slow.stall()
            await notifier.info({}, "backup.create.start", {"i": 0})
            await wait_all_tasks_blocked()
            for i in range(1, 4):
                await notifier.info({}, "backup.create.start", {"i": i})
            await notifier.error({}, "backup.create.error", {"i": 9})
            with anyio.fail_after(10):
                while notifier.stats()["ok"].sent < 5 or notifier.stats()["errors"].sent < 1 \
                        or not any(t.failures for t in notifier.background_tasks().values()):
                    await anyio.sleep(0.001)
            stats, tasks = notifier.stats(), notifier.background_tasks()
            metrics = collected(reader)
            assert notifier.stats() == stats  # nothing moved during the collection
            slow.resume()
        assert stats["ok"].retried == 2 and stats["slow"].dropped > 0

        notifications = metrics["notifykit.notifications"]
        assert notifications.data.is_monotonic and notifications.unit == "{notification}"
        assert points(notifications) == {(("outcome", c), ("transport", t)): getattr(s, c)
                                         for t, s in stats.items() for c in COUNTERS}
        for gauge in GAUGES:
            assert not metrics[f"notifykit.{gauge}"].data.is_monotonic  # an up-down counter
            assert points(metrics[f"notifykit.{gauge}"]) == {(("transport", t),): getattr(s, gauge)
                                                             for t, s in stats.items()}
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
