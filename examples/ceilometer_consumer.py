"""A Ceilometer-style consumer: meters ``backup.size`` from the backup notifications on RabbitMQ.

It uses aio-pika only (no notifykit transport code), as any existing consumer would: it
binds a queue to the ``openstack`` exchange for ``notifications.info``, unwraps the oslo
envelope by hand, and for each ``backup.create.end`` / ``backup.delete.end`` prints one
sample the way Ceilometer's ``backup.size`` meter builds it from the payload::

    backup.size gauge volume=1 unit=GiB resource_id=<backup_id> project_id=<tenant_id> \\
        user_id=<user_id> timestamp=2026-11-25T13:03:02.480112 event_type=backup.create.end

Usage::

    python examples/ceilometer_consumer.py [--url amqp://guest:guest@127.0.0.1:5672/]
        [--exchange openstack] [--topic notifications] [--queue notifications.info] [--limit N]

It prints ``# listening …`` on stderr once the queue is bound, then one sample per line on
stdout; ``--limit N`` stops after N samples. Messages are acknowledged once handled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import aio_pika
import aio_pika.abc
import aiormq.exceptions

METERED = ("backup.create.end", "backup.delete.end")


def unwrap(body: bytes) -> dict[str, Any]:
    """The notification inside a message body: the oslo envelope (``oslo.message`` is a JSON
    string holding the message) or, from a ``format=json`` publisher, the message itself."""
    outer = json.loads(body)
    if not isinstance(outer, dict):
        raise ValueError("not a JSON object")
    if "oslo.message" in outer:
        inner = json.loads(outer["oslo.message"])
        if not isinstance(inner, dict):
            raise ValueError("oslo.message is not a JSON object")
        return inner
    return outer


def sample_line(message: dict[str, Any]) -> str | None:
    """One ``backup.size`` sample (Ceilometer's meter definition), or None for other events
    and for payloads without ``size`` or ``backup_id``."""
    if message.get("event_type") not in METERED:
        return None
    payload = message.get("payload") or {}
    if payload.get("size") is None or not payload.get("backup_id"):
        return None  # Ceilometer makes no sample without a volume and a resource
    fields = {
        "volume": payload.get("size"),  # GiB, rounded up, as Cinder reports it
        "unit": "GiB",
        "resource_id": payload.get("backup_id"),
        "project_id": payload.get("tenant_id"),
        "user_id": payload.get("user_id"),
        "timestamp": str(message.get("timestamp")).replace(" ", "T"),
        "event_type": message.get("event_type"),
    }
    return "backup.size gauge " + " ".join(f"{key}={value}" for key, value in fields.items())


async def declare_queue(connection: aio_pika.abc.AbstractConnection, name: str) -> aio_pika.abc.AbstractQueue:
    """Declare the queue durable (what notifykit and oslo with durable queues declare); if it
    exists with other settings (oslo's default is non-durable), use it as it is."""
    channel = await connection.channel()
    try:
        return await channel.declare_queue(name, durable=True)
    except aiormq.exceptions.ChannelPreconditionFailed:
        channel = await connection.channel()
        return await channel.declare_queue(name, passive=True)


async def consume(url: str, exchange_name: str, topic: str, queue_name: str, limit: int | None) -> int:
    samples = 0
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        try:
            exchange = await channel.declare_exchange(exchange_name, aio_pika.ExchangeType.TOPIC, durable=True)
        except aiormq.exceptions.ChannelPreconditionFailed:  # declared otherwise (oslo: non-durable)
            channel = await connection.channel()
            exchange = await channel.get_exchange(exchange_name, ensure=True)
        queue = await declare_queue(connection, queue_name)
        routing_key = f"{topic}.info"
        await queue.bind(exchange, routing_key=routing_key)
        print(f"# listening on queue {queue_name!r} bound to exchange {exchange_name!r} for {routing_key!r}",
              file=sys.stderr, flush=True)
        async with queue.iterator() as messages:
            async for message in messages:
                async with message.process():  # ack when handled (also for events we do not meter)
                    try:
                        line = sample_line(unwrap(message.body))
                    except (ValueError, TypeError) as exc:
                        print(f"# skipped undecodable message {message.message_id}: {exc}", file=sys.stderr)
                        continue
                if line is None:
                    continue
                print(line, flush=True)
                samples += 1
                if limit is not None and samples >= limit:
                    break
    finally:
        await connection.close()
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/", help="RabbitMQ URL")
    parser.add_argument("--exchange", default="openstack", help="topic exchange the notifications go to")
    parser.add_argument("--topic", default="notifications", help="notification topic; the queue binds <topic>.info")
    parser.add_argument("--queue", default=None, help="queue to consume (default: <topic>.info, as oslo declares it)")
    parser.add_argument("--limit", type=int, default=None, help="stop after N samples")
    args = parser.parse_args()
    try:
        asyncio.run(consume(args.url, args.exchange, args.topic, args.queue or f"{args.topic}.info", args.limit))
    except KeyboardInterrupt:
        return 130
    except (OSError, aiormq.exceptions.AMQPError) as exc:
        print(f"ceilometer_consumer: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
