"""Publishing to the real RabbitMQ: routing, properties, formats, confirms, unroutable and nacked messages."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import aio_pika
import pytest

from notifykit import Notifier
from notifykit.deadletters import read_dead_letters
from notifykit.transport import decode_message
from notifykit.transports.amqp import AmqpTransport

from ..helpers import FakeClock
from .support import Names, amqp_connection, consume, queue_length

pytestmark = [pytest.mark.asyncio, pytest.mark.broker]

CTX = {"request_id": "req-1", "project_id": "p-1", "user_id": "u-1"}


async def test_routing_keys_queues_properties_and_oslo_body(broker: str, names: Names, dead_letter_path: Path) -> None:
    url = f"{broker}?exchange={names.exchange}&topics={names.topic},{names.topic2}"
    async with Notifier.from_url(url, publisher_id="backup.host1", dead_letters=dead_letter_path) as notifier:
        info = await notifier.info(CTX, "backup.create.end", {"backup_id": "b-1", "size": 3})
        error = await notifier.error(CTX, "backup.create.error", {"backup_id": "b-2"})
    stats = notifier.stats()["amqp"]
    assert (stats.sent, stats.dead_lettered, stats.retried) == (2, 0, 0)

    for topic in (names.topic, names.topic2):
        [got_info] = await consume(f"{topic}.info", 1, timeout=5)
        [got_error] = await consume(f"{topic}.error", 1, timeout=5)
        assert got_info.routing_key == f"{topic}.info" and got_error.routing_key == f"{topic}.error"
        assert got_info.exchange == names.exchange
        assert got_info.message_id == info.message_id and got_error.message_id == error.message_id
        assert got_info.delivery_mode is aio_pika.DeliveryMode.PERSISTENT
        assert got_info.content_type == "application/json"
        envelope = json.loads(got_info.body)
        assert envelope["oslo.version"] == "2.0"
        inner = json.loads(envelope["oslo.message"])
        assert inner["event_type"] == "backup.create.end"
        assert inner["priority"] == "INFO"
        assert inner["publisher_id"] == "backup.host1"
        assert inner["payload"] == {"backup_id": "b-1", "size": 3}
        assert inner["_context_request_id"] == "req-1"
        assert decode_message(got_error.body)["event_type"] == "backup.create.error"
    # nothing went to the other priorities' queues (only the ones used were declared)
    assert await queue_length(f"{names.topic}.info") == 0


async def test_cloudevents_format(broker: str, names: Names, dead_letter_path: Path) -> None:
    url = f"{broker}?exchange={names.exchange}&topic={names.topic}&format=cloudevents"
    async with Notifier.from_url(url, publisher_id="backup.h", dead_letters=dead_letter_path) as notifier:
        sent = await notifier.warn(CTX, "backup.delete.end", {"backup_id": "b-9"})
    [got] = await consume(f"{names.topic}.warn", 1, timeout=5)
    assert got.content_type == "application/cloudevents+json"
    body = json.loads(got.body)
    assert body["specversion"] == "1.0"
    assert (body["id"], body["type"], body["source"], body["priority"]) == (sent.message_id, "backup.delete.end", "backup.h", "warn")
    assert body["data"] == {"backup_id": "b-9"}


async def test_many_messages_are_confirmed_in_batches(broker: str, names: Names, dead_letter_path: Path) -> None:
    url = f"{broker}?exchange={names.exchange}&topic={names.topic}&batch_size=250"
    async with Notifier.from_url(url, publisher_id="p", dead_letters=dead_letter_path) as notifier:
        ids = {(await notifier.info(CTX, "e.t", {"i": i})).message_id for i in range(2000)}
    assert notifier.stats()["amqp"].sent == 2000
    assert await queue_length(f"{names.topic}.info") == 2000
    got = await consume(f"{names.topic}.info", 2000, timeout=20)
    assert {m.message_id for m in got} == ids


async def test_unroutable_is_dead_lettered_at_once(broker: str, names: Names, dead_letter_path: Path,
                                                   fake_clock: FakeClock) -> None:
    url = f"{broker}?exchange={names.exchange}&topic={names.topic}&declare_queues=false"
    async with Notifier.from_url(url, publisher_id="p", dead_letters=dead_letter_path, clock=fake_clock) as notifier:
        lost = await notifier.info(CTX, "e.t", {"x": 1})
    stats = notifier.stats()["amqp"]
    assert (stats.sent, stats.dead_lettered, stats.retried) == (0, 1, 0)
    [letter] = list(read_dead_letters(dead_letter_path))
    assert letter["message"]["message_id"] == lost.message_id
    assert letter["reason"] == (f"permanent error: unroutable: no queue bound to exchange {names.exchange!r} "
                                f"for routing key '{names.topic}.info' (mandatory)")


async def test_unroutable_with_mandatory_off_is_counted_sent(broker: str, names: Names, dead_letter_path: Path) -> None:
    url = f"{broker}?exchange={names.exchange}&topic={names.topic}&declare_queues=false&mandatory=false"
    async with Notifier.from_url(url, publisher_id="p", dead_letters=dead_letter_path) as notifier:
        await notifier.info(CTX, "e.t", {"x": 1})
    assert notifier.stats()["amqp"].sent == 1  # documented: the broker drops it and still acks


async def test_nacked_messages_are_retried_then_dead_lettered(broker: str, names: Names, dead_letter_path: Path,
                                                              fake_clock: FakeClock) -> None:
    queue = f"{names.topic}.info"
    async with amqp_connection() as connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(names.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        declared = await channel.declare_queue(queue, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
        await declared.bind(exchange, queue)
    url = (f"{broker}?exchange={names.exchange}&topic={names.topic}&declare_queues=false"
           "&retry_max_attempts=3&batch_size=10")
    async with Notifier.from_url(url, publisher_id="p", dead_letters=dead_letter_path, clock=fake_clock) as notifier:
        for i in range(3):
            await notifier.info(CTX, "e.t", {"i": i})
    stats = notifier.stats()["amqp"]
    assert (stats.sent, stats.dead_lettered) == (1, 2)
    assert stats.retried == 4  # two messages, each retried twice before the third attempt gave up
    reasons = [d["reason"] for d in read_dead_letters(dead_letter_path)]
    assert reasons == ["gave up after 3 attempt(s) over " + reasons[0].split(" over ")[1]] * 2
    assert reasons[0].endswith("nacked by the broker")
    assert await queue_length(queue) == 1


async def test_entities_declared_durable_elsewhere_are_used_as_they_are(
        broker: str, names: Names, dead_letter_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An oslo.messaging with amqp_durable_queues=True declared both durable: used, differences logged once."""
    async with amqp_connection() as connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(names.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(f"{names.topic}.info", durable=True)
        await queue.bind(exchange, f"{names.topic}.info")
    caplog.set_level(logging.WARNING, logger="notifykit.amqp")
    url = f"{broker}?exchange={names.exchange}&topic={names.topic}"
    async with Notifier.from_url(url, publisher_id="p", dead_letters=dead_letter_path) as notifier:
        sent = await notifier.info(CTX, "e.t", {})
        await notifier.error(CTX, "e.t", {})  # its queue does not exist yet: declared with oslo's defaults
    stats = notifier.stats()["amqp"]
    assert (stats.sent, stats.dead_lettered, stats.retried) == (2, 0, 0)
    [got] = await consume(f"{names.topic}.info", 1, timeout=5)
    assert got.message_id == sent.message_id
    assert await queue_length(f"{names.topic}.error") == 1
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert f"exchange {names.exchange!r} exists with other settings than ours (durable=False)" in warnings[0]
    assert f"queue '{names.topic}.info' exists with other settings than ours (durable=False)" in warnings[1]
    assert all("inequivalent arg 'durable'" in w for w in warnings)
    assert "guest:guest" not in caplog.text


async def test_a_nacking_channel_is_replaced_then_the_connection(broker: str, names: Names, dead_letter_path: Path,
                                                                fake_clock: FakeClock) -> None:
    """A nack replaces the publishing channel before the retry; a second nack in a row the connection."""
    queue = f"{names.topic}.info"
    async with amqp_connection() as connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(names.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        declared = await channel.declare_queue(queue, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
        await declared.bind(exchange, queue)
    url = (f"{broker}?exchange={names.exchange}&topic={names.topic}&declare_queues=false"
           "&retry_max_attempts=4&batch_size=10")
    async with Notifier.from_url(url, publisher_id="p", dead_letters=dead_letter_path, clock=fake_clock) as notifier:
        transport = notifier.transports["amqp"]
        assert isinstance(transport, AmqpTransport)
        await notifier.info(CTX, "e.t", {"fills": "the queue"})
        await notifier.info(CTX, "e.t", {"nacked": True})
    stats = notifier.stats()["amqp"]
    assert (stats.sent, stats.dead_lettered, stats.retried) == (1, 1, 3)
    # nack 1 → new channel, nack 2 → new connection, nack 3 → new channel, nack 4 → gave up
    assert (transport.channel_replacements, transport.connects) == (2, 2)

