"""notifykit.metrics: the prometheus_client collector, registered in an application's own
registry, served by prometheus_client's HTTP server and scraped over HTTP by a real client."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from notifykit import TaskHealth, TransportState, TransportStats, render_prometheus
from notifykit.metrics import COUNTERS, FLAGS, GAUGES, HISTOGRAMS, LatencyHistogram, NotifykitCollector

from ._metrics_scenario import busy, make_notifier
from .helpers import FakeClock


@contextmanager
def serving(registry: CollectorRegistry) -> Iterator[str]:
    """prometheus_client's own HTTP server on a free loopback port; its /metrics URL."""
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


async def scrape(url: str) -> tuple[str, dict[str, Any]]:
    """The exposition text and its families by name, as Prometheus' own parser reads them."""
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text, {f.name: f for f in text_string_to_metric_families(response.text)}


def samples(family: Any) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples}


def assert_scrape_equals(text: str, families: dict[str, Any], stats: dict[str, TransportStats],
                         tasks: dict[str, Any]) -> None:
    for name in families:
        assert f"# HELP {name}" in text and f"# TYPE {name}" in text, name
        assert families[name].documentation, name
    notifications = families["notifykit_notifications"]
    assert notifications.type == "counter"
    expected = {(("outcome", c), ("transport", t)): float(getattr(s, c)) for t, s in stats.items() for c in COUNTERS}
    assert samples(notifications) == expected
    for gauge in GAUGES:
        assert families[f"notifykit_{gauge}"].type == "gauge"
        assert samples(families[f"notifykit_{gauge}"]) == {(("transport", t),): getattr(s, gauge) for t, s in stats.items()}
    for flag in FLAGS:
        assert samples(families[f"notifykit_{flag}"]) == {(("transport", t),): float(bool(getattr(s, flag)))
                                                          for t, s in stats.items()}
    for field in HISTOGRAMS:
        histogram = families[f"notifykit_{field}_seconds"]
        assert histogram.type == "histogram"
        expected_rows: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for t, s in stats.items():
            value: LatencyHistogram = getattr(s, field)
            expected_rows |= {(f"notifykit_{field}_seconds_bucket", (("le", le), ("transport", t))): float(n)
                              for le, n in value.cumulative()}
            expected_rows[(f"notifykit_{field}_seconds_sum", (("transport", t),))] = value.sum
            expected_rows[(f"notifykit_{field}_seconds_count", (("transport", t),))] = float(value.count)
        assert {(x.name, tuple(sorted(x.labels.items()))): x.value for x in histogram.samples} == expected_rows
    state = families["notifykit_transport_state"]
    assert state.type == "gauge"
    assert samples(state) == {(("state", st.value), ("transport", t)): float(s.state is st)
                              for t, s in stats.items() for st in TransportState}
    failures = families["notifykit_background_task_failures"]
    assert samples(failures) == {(("task", name),): float(h.failures) for name, h in tasks.items()}
    task_state = samples(families["notifykit_background_task_state"])
    assert {k: v for k, v in task_state.items() if v == 1} == {(("state", h.state.value), ("task", name)): 1.0
                                                              for name, h in tasks.items()}


@pytest.mark.asyncio
async def test_scraped_series_equal_stats(tmp_path: Path, fake_clock: FakeClock) -> None:
    notifier = make_notifier(tmp_path, fake_clock)
    registry = CollectorRegistry()
    registry.register(NotifykitCollector(notifier))
    with serving(registry) as url:
        async with busy(notifier):
            stats, tasks = notifier.stats(), notifier.background_tasks()
            text, families = await scrape(url)
            assert notifier.stats() == stats  # nothing moved during the scrape
            assert_scrape_equals(text, families, stats, tasks)
            spooled_bytes = samples(families["notifykit_spooled_bytes"])
            assert spooled_bytes[(("transport", "durable"),)] > 0  # its broker holds every notification
            assert {v for k, v in spooled_bytes.items() if k != (("transport", "durable"),)} == {0}
            counts = {x.labels["transport"]: x.value for x in families["notifykit_delivery_latency_seconds"].samples
                      if x.name.endswith("_count")}
            assert counts == {t: float(s.sent) for t, s in stats.items()} and counts["ok"] == 5  # one per sent
        stats, tasks = notifier.stats(), notifier.background_tasks()
        assert all(s.state is TransportState.CLOSED for s in stats.values())
        assert stats["durable"].sent == 5 and stats["durable"].spooled_bytes == 0  # delivered: nothing left
        assert all(s.delivery_latency.count == s.sent for s in stats.values())
        text, families = await scrape(url)
        assert_scrape_equals(text, families, stats, tasks)


def test_every_int_field_of_transport_stats_is_exported() -> None:
    """Counters come from the dataclass' fields: a new one is exported without an edit."""
    ints = {f.name for f in fields(TransportStats) if isinstance(getattr(TransportStats(name="t"), f.name), int)
            and f.name != "state"}
    assert set(COUNTERS) | set(GAUGES) == ints and not set(COUNTERS) & set(GAUGES)
    assert HISTOGRAMS == ("delivery_latency",)
    texts = {f.name for f in fields(TransportStats) if f.name not in ints | {"state", *HISTOGRAMS}}
    assert set(FLAGS) == texts - {"name", "last_error"}
    assert {"enqueued", "sent", "retried", "dropped", "dead_lettered", "filtered", "refused"} <= set(COUNTERS)


def test_registering_does_not_read_the_notifier() -> None:
    class Unreadable:
        def stats(self) -> dict[str, TransportStats]:
            raise AssertionError("read at registration")

        def background_tasks(self) -> dict[str, Any]:
            raise AssertionError("read at registration")

    registry = CollectorRegistry()
    registry.register(NotifykitCollector(Unreadable()))
    with pytest.raises(ValueError, match="Duplicated"):  # its names are known: a second one is refused
        registry.register(NotifykitCollector(Unreadable()))


def test_status_file_text_is_unchanged_by_the_collector() -> None:
    """``notifykit status --prometheus`` keeps its own names; both parse."""
    stats = {"t": TransportStats(name="t", enqueued=3, sent=2, queue_depth=1, state=TransportState.CONNECTED)}
    families = {f.name: f for f in text_string_to_metric_families(render_prometheus(stats))}
    assert samples(families["notifykit_sent"]) == {(("transport", "t"),): 2.0}
    assert samples(families["notifykit_queue_depth"]) == {(("transport", "t"),): 1.0}


def test_scrape_from_another_thread_while_idle() -> None:
    """collect() runs in the HTTP server's thread; it only reads."""
    class Fixed:
        def stats(self) -> dict[str, TransportStats]:
            return {"x": TransportStats(name="x", sent=7, state=TransportState.RETRYING)}

        def background_tasks(self) -> dict[str, Any]:
            return {}

    registry = CollectorRegistry()
    registry.register(NotifykitCollector(Fixed()))
    seen: list[str] = []
    with serving(registry) as url:
        worker = threading.Thread(target=lambda: seen.append(httpx.get(url, timeout=10).text))
        worker.start()
        worker.join(timeout=20)
    assert 'notifykit_notifications_total{outcome="sent",transport="x"} 7.0' in seen[0]
    assert 'notifykit_transport_state{state="retrying",transport="x"} 1.0' in seen[0]


def test_operations_page_documents_every_family() -> None:
    """docs/operations.md's collector table names exactly the families a scrape has."""
    class One:
        def stats(self) -> dict[str, TransportStats]:
            return {"x": TransportStats(name="x")}

        def background_tasks(self) -> dict[str, Any]:
            return {"worker:x": TaskHealth(name="worker:x")}

    registry = CollectorRegistry()
    registry.register(NotifykitCollector(One()))
    exposed = {line.split(" ")[2] for line in generate_latest(registry).decode().splitlines() if line.startswith("# TYPE")}
    page = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text(encoding="utf-8")
    section = page.split("## Prometheus collector", 1)[1].split("\n## ", 1)[0]
    documented = {name for line in section.splitlines() if line.startswith("| `")
                  for name in re.findall(r"`(notifykit_[a-z_]+)`", line.split("|")[1])}
    assert documented == exposed - {f"notifykit_{flag}" for flag in FLAGS}  # flags: one sentence for all
