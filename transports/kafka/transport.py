"""``kafka://`` and ``kafka+ssl://`` — notifications as Kafka records, through aiokafka.

Each notification goes to ``<topic>.<priority>`` (oslo.messaging's Kafka notifier
layout) or, with ``topic_mode=single``, to ``<topic>`` with the priority in a header.
The key is the resource id from the payload so one backup's events share a partition
and stay in order. ``send()`` pipelines the whole batch into the producer, then waits
for every delivery report: a notification counts as sent only once Kafka acked it.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar, Self

import anyio.to_thread
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError, UnknownError, UnsupportedVersionError  # type: ignore[import-untyped]

from notifykit.transport import (
    BatchError,
    Notification,
    PermanentError,
    Priority,
    TransientError,
    Transport,
    TransportSettings,
    WireFormat,
)

from .errors import classify
from .options import KafkaOptions, parse_options

__all__ = ["KafkaTransport", "message_key", "message_headers"]


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
        ("priority", n.priority.value.encode()),
        ("message_id", n.message_id.encode()),
        ("content-type", fmt.content_type.encode()),
    ]
    if n.context.traceparent:
        headers.append(("traceparent", n.context.traceparent.encode()))
    return headers


def _worse(old: TransientError | PermanentError | None, new: TransientError | PermanentError) -> TransientError | PermanentError:
    """A notification failing on several topics: permanent wins (retrying cannot help it)."""
    if old is None or isinstance(new, PermanentError):
        return new
    return old


class KafkaTransport(Transport):
    """Delivers through one AIOKafkaProducer, created in ``open()``; see docs/configuration.md."""

    # JSON by default: Kafka consumers (stream processors, connectors) read plain JSON
    # records directly; oslo's double-encoded envelope only helps oslo listeners.
    default_format: ClassVar[WireFormat] = WireFormat.JSON
    max_batch_size = 500

    def __init__(self, settings: TransportSettings, options: KafkaOptions) -> None:
        super().__init__(settings)
        self.options = options
        self._producer: Any = None
        self._topics = {priority: options.topic_names(priority) for priority in Priority}

    @classmethod
    def from_settings(cls, settings: TransportSettings) -> Self:
        return cls(settings, parse_options(settings))

    @property
    def _where(self) -> str:
        return self.settings.url.redacted

    async def _client_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"bootstrap_servers": self.options.bootstrap_servers, **self.options.connection}
        if self.options.ssl_files:
            try:
                kwargs["ssl_context"] = await anyio.to_thread.run_sync(self.options.ssl_context)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise PermanentError(f"kafka {self._where}: cannot load TLS files: {exc}") from None
        return kwargs

    async def open(self) -> None:
        producer = AIOKafkaProducer(**await self._client_kwargs(), **self.options.producer)
        try:
            await producer.start()
        except KafkaError as exc:
            with contextlib.suppress(KafkaError):
                await producer.stop()
            error = classify(exc, self._where)
            if self.options.producer["enable_idempotence"] and isinstance(exc, UnknownError | UnsupportedVersionError):
                # What brokers without InitProducerId support answer (Tansu: UnknownError).
                error = type(error)(f"{error} (if the broker cannot serve idempotent producers, set enable_idempotence=false)")
            raise error from None
        self._producer = producer

    async def send(self, batch: Sequence[Notification]) -> None:
        producer = self._producer
        if producer is None:
            raise TransientError(f"kafka {self._where}: producer is not open")
        failures: dict[int, TransientError | PermanentError] = {}
        deliveries: list[tuple[int, str, asyncio.Future[Any]]] = []
        stalled: TransientError | None = None
        for index, n in enumerate(batch):
            if stalled is not None:  # the producer cannot take records: do not wait once per message
                failures[index] = stalled
                continue
            body = n.encode(self.format)
            key = message_key(n.payload, self.options.key_fields)
            headers = message_headers(n, self.format)
            for topic in self._topics[n.priority]:
                try:
                    future = await producer.send(topic, body, key=key, headers=headers)
                except KafkaError as exc:
                    error = classify(exc, f"{self._where} topic {topic!r}")
                    failures[index] = _worse(failures.get(index), error)
                    if isinstance(error, TransientError):
                        stalled = error
                        break
                else:
                    deliveries.append((index, topic, future))
        for index, topic, future in deliveries:
            try:
                await future
            except KafkaError as exc:
                failures[index] = _worse(failures.get(index), classify(exc, f"{self._where} topic {topic!r}"))
        if not failures:
            return
        if len(failures) == len(batch) and all(isinstance(e, TransientError) for e in failures.values()):
            first = failures[min(failures)]
            assert isinstance(first, TransientError)
            raise first
        raise BatchError(failures)

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()  # flushes what is still buffered

    @classmethod
    async def tail(cls, settings: TransportSettings) -> AsyncIterator[bytes]:
        """Read every topic this URL writes to, from the end (``auto_offset_reset=earliest``: from the start).

        No consumer group (a unique throwaway ``group_id`` would leave offsets behind),
        so tailing never steals partitions from real consumers.
        """
        transport = cls.from_settings(settings)
        options = transport.options
        kwargs = await transport._client_kwargs()
        kwargs["client_id"] = f"{kwargs.get('client_id', 'notifykit')}-tail-{uuid.uuid4().hex[:8]}"
        consumer = AIOKafkaConsumer(
            *options.all_topic_names(), group_id=None, auto_offset_reset=options.tail_offset, **kwargs
        )
        try:
            await consumer.start()
        except KafkaError as exc:
            with contextlib.suppress(KafkaError):
                await consumer.stop()
            raise classify(exc, transport._where) from None
        try:
            async for record in consumer:
                if record.value is not None:
                    yield record.value
        except KafkaError as exc:
            raise classify(exc, transport._where) from None
        finally:
            with anyio.CancelScope(shield=True):
                await consumer.stop()
