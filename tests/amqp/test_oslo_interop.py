"""An unmodified oslo.messaging notification listener receives what notifykit publishes."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from notifykit import Notifier

from .support import Names, amqp_connection

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


CTX = {"request_id": "req-42", "project_id": "proj-1", "user_id": "user-1"}


@contextlib.asynccontextmanager
async def oslo_listener(broker: str, names: Names, **rabbit_options: object) -> AsyncIterator[Endpoint]:
    """A started oslo.messaging notification listener, with its defaults unless ``rabbit_options`` say otherwise."""
    conf = cfg.ConfigOpts()
    conf([], project="notifykit-test")
    transport = oslo_messaging.get_notification_transport(conf, url=broker.replace("amqp://", "rabbit://"))
    for key, value in rabbit_options.items():
        conf.set_override(key, value, group="oslo_messaging_rabbit")
    endpoint = Endpoint()
    listener = oslo_messaging.get_notification_listener(
        transport, [oslo_messaging.Target(topic=names.topic, exchange=names.exchange)], [endpoint],
        executor="threading",
    )
    try:
        await anyio.to_thread.run_sync(listener.start)
        yield endpoint
    finally:
        await anyio.to_thread.run_sync(listener.stop)
        await anyio.to_thread.run_sync(listener.wait)
        await anyio.to_thread.run_sync(transport.cleanup)


async def publish_one(broker: str, names: Names, dead_letter_path: Path, options: str = "") -> str:
    url = f"{broker}?exchange={names.exchange}&topic={names.topic}{options}"
    async with Notifier.from_url(url, publisher_id="backup.host1", dead_letters=dead_letter_path) as notifier:
        sent = await notifier.error(CTX, "backup.create.error", {"backup_id": "b-2"})
    assert (notifier.stats()["amqp"].sent, notifier.stats()["amqp"].dead_lettered) == (1, 0)
    return sent.message_id


async def received(endpoint: Endpoint) -> list[str]:
    with anyio.fail_after(20):
        await anyio.to_thread.run_sync(endpoint.arrived.wait, 15)
    return [metadata["message_id"] for *_, metadata in endpoint.received]


async def test_a_stock_oslo_listener_started_after_the_notifier_consumes(broker: str, names: Names,
                                                                         dead_letter_path: Path) -> None:
    """Ceilometer started second, with oslo's defaults, finds the queue the notifier declared and meters it."""
    message_id = await publish_one(broker, names, dead_letter_path)
    async with oslo_listener(broker, names) as endpoint:  # no override: amqp_durable_queues=False
        assert await received(endpoint) == [message_id]


async def test_a_stock_oslo_listener_started_before_the_notifier_consumes(broker: str, names: Names,
                                                                          dead_letter_path: Path) -> None:
    async with oslo_listener(broker, names) as endpoint:
        message_id = await publish_one(broker, names, dead_letter_path)
        assert await received(endpoint) == [message_id]


async def is_quorum(queue: str) -> bool:
    """Whether the broker holds ``queue`` as a quorum queue (an equivalent declare is accepted, changing nothing)."""
    import aiormq.exceptions

    async with amqp_connection() as connection:
        channel = await (await connection.channel()).get_underlay_channel()
        try:
            await channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
        except aiormq.exceptions.ChannelPreconditionFailed:
            return False
        return True


async def test_an_oslo_quorum_queue_is_used_and_never_redeclared_classic(broker: str, names: Names,
                                                                         dead_letter_path: Path) -> None:
    async with oslo_listener(broker, names, rabbit_quorum_queue=True) as endpoint:
        message_id = await publish_one(broker, names, dead_letter_path)  # our defaults: classic, non-durable
        assert await received(endpoint) == [message_id]
    assert await is_quorum(f"{names.topic}.error")


async def test_quorum_queues_declared_by_the_notifier_suit_an_oslo_quorum_listener(broker: str, names: Names,
                                                                                   dead_letter_path: Path) -> None:
    message_id = await publish_one(broker, names, dead_letter_path, "&quorum_queues=true")
    assert await is_quorum(f"{names.topic}.error")
    async with oslo_listener(broker, names, rabbit_quorum_queue=True) as endpoint:
        assert await received(endpoint) == [message_id]
