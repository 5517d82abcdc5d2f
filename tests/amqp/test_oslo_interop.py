"""An unmodified oslo.messaging notification listener receives what notifykit publishes."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from notifykit import Notifier

from .support import Names

pytestmark = [pytest.mark.asyncio, pytest.mark.broker]

oslo_messaging = pytest.importorskip("oslo_messaging")
cfg = pytest.importorskip("oslo_config.cfg")


class Endpoint:
    """Records what the listener dispatches, by priority method, as Ceilometer's endpoints do."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any], str, str, Any, dict[str, Any]]] = []
        self.arrived = threading.Event()

    def _record(self, priority: str, ctxt: dict[str, Any], publisher_id: str, event_type: str, payload: Any,
                metadata: dict[str, Any]) -> None:
        self.received.append((priority, ctxt, publisher_id, event_type, payload, metadata))
        self.arrived.set()

    def info(self, ctxt: dict[str, Any], publisher_id: str, event_type: str, payload: Any, metadata: dict[str, Any]) -> None:
        self._record("info", ctxt, publisher_id, event_type, payload, metadata)

    def error(self, ctxt: dict[str, Any], publisher_id: str, event_type: str, payload: Any, metadata: dict[str, Any]) -> None:
        self._record("error", ctxt, publisher_id, event_type, payload, metadata)


@pytest.mark.parametrize("oslo_durable", [False, True], ids=["oslo-default-non-durable", "oslo-durable-queues"])
async def test_oslo_listener_receives_notifykit_notifications(broker: str, names: Names, dead_letter_path: Path,
                                                              oslo_durable: bool) -> None:
    conf = cfg.ConfigOpts()  # never the global CONF: no state leaks between tests
    conf([], project="notifykit-test")
    transport = oslo_messaging.get_notification_transport(conf, url=broker.replace("amqp://", "rabbit://"))
    conf.set_override("amqp_durable_queues", oslo_durable, group="oslo_messaging_rabbit")
    endpoint = Endpoint()
    listener = oslo_messaging.get_notification_listener(
        transport, [oslo_messaging.Target(topic=names.topic, exchange=names.exchange)], [endpoint],
        executor="threading",
    )
    try:
        await anyio.to_thread.run_sync(listener.start)
        url = f"{broker}?exchange={names.exchange}&topic={names.topic}"
        ctx = {"request_id": "req-42", "project_id": "proj-1", "user_id": "user-1"}
        async with Notifier.from_url(url, publisher_id="backup.host1", dead_letters=dead_letter_path) as notifier:
            sent = await notifier.error(ctx, "backup.create.error", {"backup_id": "b-1", "reason": "disk full"})
        assert notifier.stats()["amqp"].sent == 1
        with anyio.fail_after(20):
            arrived = await anyio.to_thread.run_sync(endpoint.arrived.wait, 15)
        assert arrived, "the oslo.messaging listener received nothing"
    finally:
        await anyio.to_thread.run_sync(listener.stop)
        await anyio.to_thread.run_sync(listener.wait)
        await anyio.to_thread.run_sync(transport.cleanup)
    [(priority, ctxt, publisher_id, event_type, payload, metadata)] = endpoint.received
    assert priority == "error"
    assert publisher_id == "backup.host1"
    assert event_type == "backup.create.error"
    assert payload == {"backup_id": "b-1", "reason": "disk full"}
    assert metadata["message_id"] == sent.message_id
    assert ctxt["request_id"] == "req-42" and ctxt["project_id"] == "proj-1"
