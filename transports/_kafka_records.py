"""How the Kafka transport lays notifications into records: key, headers, partition, record batches.

The key is the resource id from the payload, so one resource's events share a partition and
stay in order; the partition is the one aiokafka's default partitioner picks (murmur2 of the
key, as Java clients). A batch is laid into aiokafka record batches, one run per (topic,
partition), which ``send_batch`` hands over without ``producer.send()``'s per-record future.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka.partitioner import murmur2  # type: ignore[import-untyped]
from aiokafka.record.default_records import DefaultRecordBatchBuilder  # type: ignore[import-untyped]

from notifykit.transport import Notification, PermanentError, Priority, TransientError, WireFormat

__all__ = ["RecordLayout", "message_headers", "message_key"]

#: Record batches per (topic, partition), each with the batch indices of its notifications.
Records = dict[tuple[str, int], list[tuple[Any, list[int]]]]


def message_key(payload: Mapping[str, Any], fields: Sequence[str]) -> bytes | None:
    """The first present, scalar ``fields`` value of the payload, as the record key (None: any partition)."""
    for name in fields:
        value = payload.get(name)
        if isinstance(value, str | int) and not isinstance(value, bool) and value != "":
            return str(value).encode()
    return None


def message_headers(n: Notification, fmt: WireFormat) -> list[tuple[str, bytes]]:
    """Record headers that let consumers route and trace without parsing the body."""
    headers = [
        ("event_type", n.event_type.encode()),
        _PRIORITY_HEADERS[n.priority],
        ("message_id", n.message_id.encode()),
        _CONTENT_TYPE_HEADERS[fmt],
    ]
    if n.context.traceparent:
        headers.append(("traceparent", n.context.traceparent.encode()))
    return headers


# Built once: Priority and WireFormat are StrEnums, whose ``.value`` is a Python-level property.
_PRIORITY_HEADERS = {p: ("priority", p.encode()) for p in Priority}
_CONTENT_TYPE_HEADERS = {f: ("content-type", f.content_type.encode()) for f in WireFormat}
_KEY_HASHES: dict[bytes, int] = {}


def _key_hash(key: bytes) -> int:
    """murmur2 of the key, as Kafka's default partitioner takes it (pure Python in aiokafka,
    so remembered: a program's keys are a working set of resource ids)."""
    value = _KEY_HASHES.get(key)
    if value is None:
        if len(_KEY_HASHES) >= 4096:
            _KEY_HASHES.clear()
        value = _KEY_HASHES[key] = murmur2(key) & 0x7FFFFFFF
    return value


class RecordLayout:
    """One transport's way of laying a batch out: its wire format, topics per priority, key fields
    and largest record (``max_request_size``)."""

    def __init__(self, fmt: WireFormat, topics: Mapping[Priority, list[str]], key_fields: Sequence[str],
                 max_size: int, where: str) -> None:
        self.fmt = fmt
        self.topics = topics
        self.key_fields = key_fields
        self.max_size = max_size
        self.where = where

    async def lay(self, producer: Any, batch: Sequence[Notification],
                  failures: dict[int, TransientError | PermanentError]) -> Records:
        """The batch laid into record batches per (topic, partition), in order, each with the
        indices of its notifications; a record over ``max_request_size`` is a failure of its own."""
        fmt = self.fmt
        key_fields = self.key_fields
        max_size = self.max_size
        partitions: dict[str, list[int]] = {}
        keyless: dict[str, int] = {}
        records: Records = {}
        for index, n in enumerate(batch):
            body = n.encode(fmt)
            key = message_key(n.payload, key_fields)
            headers = message_headers(n, fmt)
            if DefaultRecordBatchBuilder.estimate_size_in_bytes(key, body, headers) > max_size:
                failures[index] = PermanentError(
                    f"kafka {self.where}: MessageSizeTooLargeError: the record is larger than max_request_size={max_size}")
                continue
            for topic in self.topics[n.priority]:
                known = partitions.get(topic)
                if known is None:
                    known = partitions[topic] = sorted(await producer.partitions_for(topic))
                if key is not None:
                    partition = known[_key_hash(key) % len(known)]
                else:  # no key: one partition for the whole call, so the records share a batch
                    partition = keyless.get(topic, -1)
                    if partition < 0:
                        partition = keyless[topic] = random.choice(known)
                slot = records.get((topic, partition))
                if slot is None:
                    slot = records[(topic, partition)] = [(producer.create_batch(), [])]
                builder, indices = slot[-1]
                if builder.append(key=key, value=body, timestamp=None, headers=headers) is None:  # full
                    builder, indices = producer.create_batch(), []
                    slot.append((builder, indices))
                    builder.append(key=key, value=body, timestamp=None, headers=headers)
                indices.append(index)
        return records
