"""Reading back what the transport wrote, with plain aiokafka (no notifykit code), bounded in time."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]

# Producers in the tests: Tansu rejects aiokafka's idempotent producer (InitProducerId), see docs.
NO_IDEMPOTENCE = "enable_idempotence=false"


def unique_topic(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(name, partitions, 1)])
        errors = [e for e in response.topic_errors if e[1] != 0]
        assert not errors, errors
    finally:
        await admin.close()


async def consume(bootstrap: str, topics: list[str], count: int, timeout: float = 15.0) -> list[Any]:
    """Exactly the first ``count`` records of ``topics`` from the beginning (fails after ``timeout``)."""
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    records: list[Any] = []
    try:
        with anyio.fail_after(timeout):
            while len(records) < count:
                batch = await consumer.getmany(timeout_ms=200)
                for part in batch.values():
                    records.extend(part)
    finally:
        await consumer.stop()
    return records
