"""``kafka://`` and ``kafka+ssl://`` — notifications as Kafka records, through aiokafka.

Each notification goes to ``<topic>.<priority>`` (oslo.messaging's Kafka notifier
layout) or, with ``topic_mode=single``, to ``<topic>`` with the priority in a header.
The key is the resource id from the payload so one backup's events share a partition
and stay in order. ``send()`` lays the whole batch into aiokafka record batches (one per
partition), hands them to the producer, then waits for every delivery report: a
notification counts as sent only once Kafka acked it.

Producer settings keep aiokafka's own names (``acks``, ``linger_ms``, …) so that what an
operator knows about Kafka clients applies as is; TLS takes the options every transport
takes (``ca_file``, ``cert_file``, ``key_file``, ``key_password``, ``verify``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import anyio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka import errors as kafka_errors
from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

from notifykit.transport import (
    AsyncApiRoutes,
    BatchError,
    ConfigError,
    Notification,
    PermanentError,
    Priority,
    Route,
    TlsOptions,
    TransientError,
    Transport,
    TransportSettings,
    WireFormat,
    events_by_priority,
)

from ._kafka_records import RecordLayout, message_headers, message_key

__all__ = ["DEFAULT_KEY_FIELDS", "KafkaOptions", "KafkaTransport", "message_headers", "message_key"]

#: Payload fields tried in order for the message key: one resource's events share a partition.
DEFAULT_KEY_FIELDS = ("backup_id", "volume_id", "instance_id", "resource_id", "id")
DEFAULT_PORT = 9092
_TOPIC = re.compile(r"^[A-Za-z0-9._\-]{1,249}$")
_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")


@dataclass(frozen=True, slots=True)
class KafkaOptions:
    """Everything the transport needs, validated; ``connection`` is shared by producer and tail consumer."""

    bootstrap_servers: list[str]
    topics: tuple[str, ...]
    topic_mode: str
    key_fields: tuple[str, ...]
    producer: dict[str, Any]
    connection: dict[str, Any]
    tls: TlsOptions = field(default_factory=TlsOptions)
    tail_offset: str = "latest"

    @classmethod
    def from_settings(cls, settings: TransportSettings) -> Self:
        """Take every Kafka option from ``settings``, or raise ConfigError (the core then calls ``finish()``)."""
        use_ssl = settings.url.scheme == "kafka+ssl"
        servers = _bootstrap(settings)
        topics = _topics(settings)
        topic_mode = settings.take_choice("topic_mode", ("per_priority", "single"), "per_priority")
        key_fields = tuple(settings.take_list("key_field", DEFAULT_KEY_FIELDS))
        acks = _acks(settings)
        idempotence = settings.take_bool("enable_idempotence", True)
        if idempotence and acks != "all":
            raise ConfigError(f"{settings.where()}: enable_idempotence=true needs acks=all (got acks={acks}; "
                              f"idempotence is on by default: add enable_idempotence=false to use acks={acks})")
        connection = _security(settings, use_ssl)
        tls = settings.take_tls(enabled=use_ssl)
        connection.update(
            client_id=settings.take_str("client_id", "notifykit"),
            request_timeout_ms=settings.take_int("request_timeout_ms", 30_000, minimum=1),
            retry_backoff_ms=settings.take_int("retry_backoff_ms", 100, minimum=0),
            metadata_max_age_ms=settings.take_int("metadata_max_age_ms", 300_000, minimum=1),
            connections_max_idle_ms=settings.take_int("connections_max_idle_ms", 540_000, minimum=1),
        )
        producer = dict(
            acks=acks,
            enable_idempotence=idempotence,
            linger_ms=settings.take_int("linger_ms", 0, minimum=0),
            max_batch_size=settings.take_int("max_batch_size", 65_536, minimum=1),
            max_request_size=settings.take_int("max_request_size", 1_048_576, minimum=1),
            compression_type=_compression(settings),
        )
        tail_offset = settings.take_choice("auto_offset_reset", ("latest", "earliest"), "latest")
        return cls(servers, topics, topic_mode, key_fields, producer, connection, tls, tail_offset)

    def topic_names(self, priority: Priority) -> list[str]:
        """Where a notification of ``priority`` goes: ``<topic>.<priority>`` or ``<topic>``."""
        if self.topic_mode == "single":
            return list(self.topics)
        return [f"{topic}.{priority.value}" for topic in self.topics]

    def all_topic_names(self) -> list[str]:
        """Every topic this URL can write to (what ``tail`` subscribes to)."""
        if self.topic_mode == "single":
            return list(self.topics)
        return [f"{topic}.{p.value}" for topic in self.topics for p in Priority]


def _bootstrap(settings: TransportSettings) -> list[str]:
    url = settings.url
    if not url.hosts:
        raise ConfigError(f"{settings.where()}: name at least one broker, e.g. kafka://127.0.0.1:9092/")
    if url.path not in ("", "/"):
        raise ConfigError(f"{settings.where()}: a Kafka URL takes no path; name topics with ?topic=…")
    return [host.netloc(DEFAULT_PORT) for host in url.hosts]


def _topics(settings: TransportSettings) -> tuple[str, ...]:
    for topic in settings.topics:
        # <topic>.<priority> must stay within Kafka's 249 characters too.
        if not _TOPIC.match(topic) or len(topic) > 240:
            raise ConfigError(
                f"{settings.where()}: topic {topic!r} is not a valid Kafka topic name "
                "(letters, digits, '.', '_', '-'; at most 240 characters)"
            )
    return tuple(settings.topics)


def _acks(settings: TransportSettings) -> int | str:
    text = settings.take_choice("acks", ("all", "-1", "1", "0"), "all")
    return "all" if text in ("all", "-1") else int(text)


def _compression(settings: TransportSettings) -> str | None:
    name = settings.take_choice("compression_type", _COMPRESSIONS, "none")
    if name in ("snappy", "lz4", "zstd"):
        try:
            import cramjam  # type: ignore[import-untyped,import-not-found,unused-ignore]  # noqa: F401
        except ImportError:
            raise ConfigError(
                f"{settings.where()}: compression_type={name} needs the 'cramjam' package "
                "(pip install 'notifykit[kafka]')"
            ) from None
    return None if name == "none" else name


def _security(settings: TransportSettings, use_ssl: bool) -> dict[str, Any]:
    """security_protocol and SASL from the scheme, the URL's credentials and options."""
    url = settings.url
    mechanism = settings.take_str("sasl_mechanism")
    username = settings.take_str("sasl_plain_username", url.username)
    password = settings.take_secret("sasl_plain_password", url.password)
    if mechanism is None and (username or password):
        mechanism = "PLAIN"
    connection: dict[str, Any] = {}
    if mechanism is not None:
        mechanism = mechanism.upper()
        if mechanism not in _SASL_MECHANISMS:
            raise ConfigError(
                f"{settings.where()}: sasl_mechanism must be one of {', '.join(_SASL_MECHANISMS)}, got {mechanism!r}"
            )
        if not username or password is None:
            raise ConfigError(
                f"{settings.where()}: SASL {mechanism} needs a user name and password "
                "(kafka://user:pass@host/ or sasl_plain_username / sasl_plain_password)"
            )
        connection.update(sasl_mechanism=mechanism, sasl_plain_username=username, sasl_plain_password=password)
        connection["security_protocol"] = "SASL_SSL" if use_ssl else "SASL_PLAINTEXT"
    else:
        connection["security_protocol"] = "SSL" if use_ssl else "PLAINTEXT"
    return connection


#: Errors a resend cannot fix: the message, the topic or the credentials are wrong.
_PERMANENT: tuple[type[BaseException], ...] = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.InvalidTopicError,
    kafka_errors.TopicAuthorizationFailedError,
    kafka_errors.ClusterAuthorizationFailedError,
    kafka_errors.TransactionalIdAuthorizationFailed,
    kafka_errors.AuthenticationFailedError,
    kafka_errors.SaslAuthenticationFailed,
    kafka_errors.UnsupportedSaslMechanismError,
    kafka_errors.AuthenticationMethodNotSupported,
    kafka_errors.CorruptRecordException,
    kafka_errors.UnsupportedForMessageFormatError,
    kafka_errors.PolicyViolationError,
    kafka_errors.InvalidRequiredAcksError,
    kafka_errors.UnsupportedVersionError,
)

#: What ``open()`` gets when the broker will not give the idempotent producer its id
#: (InitProducerId): Tansu answers UNKNOWN_SERVER_ERROR (-1) to aiokafka's v0 request,
#: Kafka before 0.11 lacks the API, an ACL may deny IdempotentWrite on the cluster.
_PID_REFUSALS: tuple[type[BaseException], ...] = (
    kafka_errors.UnknownError,
    kafka_errors.UnsupportedVersionError,
    kafka_errors.IncompatibleBrokerVersion,
    kafka_errors.ClusterAuthorizationFailedError,
)


class KafkaTransport(Transport):
    """Delivers through one AIOKafkaProducer, created in ``open()``; see docs/configuration.md."""

    # JSON by default: Kafka consumers (stream processors, connectors) read plain JSON
    # records directly; oslo's double-encoded envelope only helps oslo listeners.
    default_format: ClassVar[WireFormat] = WireFormat.JSON
    max_batch_size = 500
    Options = KafkaOptions
    options: KafkaOptions
    messaging_system: ClassVar[str | None] = "kafka"
    asyncapi_protocols: ClassVar[Mapping[str, str]] = {"kafka": "kafka", "kafka+ssl": "kafka-secure"}

    def asyncapi_routes(self, events: Sequence[tuple[str, Priority]]) -> AsyncApiRoutes:
        """A channel per topic: ``<topic>.<priority>``, or ``<topic>`` with ``topic_mode=single``."""
        if self.options.topic_mode == "single":
            pairs = [(topic, tuple(e for e, _ in events)) for topic in self.options.topics]
        else:
            pairs = [(f"{topic}.{p.value}", names) for topic in self.options.topics
                     for p, names in events_by_priority(events).items()]
        return AsyncApiRoutes(tuple(Route(address, names, {"kafka": {"topic": address, "bindingVersion": "0.5.0"}})
                                    for address, names in pairs))

    def __init__(self, settings: TransportSettings, options: KafkaOptions) -> None:
        super().__init__(settings, options)
        self._producer: Any = None
        topics = {priority: options.topic_names(priority) for priority in Priority}
        self._layout = RecordLayout(self.format, topics, options.key_fields, options.producer["max_request_size"],
                                    self._where)

    @property
    def _where(self) -> str:
        return self.settings.url.redacted

    def classify(self, exc: BaseException, topic: str | None = None) -> TransientError | PermanentError:
        """The notifykit error for an aiokafka failure, naming the peer (and topic) and Kafka's reason.

        Anything not known to be permanent is transient: the core's retry budget
        (``retry_max_elapsed``) still dead-letters it in the end, so nothing is lost.
        """
        where = f"{self._where} topic {topic!r}" if topic else self._where
        text = str(exc) or type(exc).__name__
        message = f"kafka {where}: {type(exc).__name__}: {text}"
        if isinstance(exc, _PERMANENT):
            return PermanentError(message)
        return TransientError(message)

    async def _client_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"bootstrap_servers": self.options.bootstrap_servers, **self.options.connection}
        if (context := await self.options.tls.client_context(f"kafka {self._where}")) is not None:
            kwargs["ssl_context"] = context
        return kwargs

    async def open(self) -> None:
        producer = AIOKafkaProducer(**await self._client_kwargs(), **self.options.producer)
        try:
            await producer.start()
        except KafkaError as exc:
            with contextlib.suppress(KafkaError):
                await producer.stop()
            raise self._open_error(exc) from None
        self._producer = producer

    def _open_error(self, exc: KafkaError) -> TransientError | PermanentError:
        """``classify()``, except that a refused idempotent producer is one permanent error naming
        the option: retrying cannot change what the broker serves, only the configuration can."""
        if not (self.options.producer["enable_idempotence"] and isinstance(exc, _PID_REFUSALS)):
            return self.classify(exc)
        answer = str(exc) or type(exc).__name__
        if description := getattr(exc, "description", None):
            answer = f"{answer}: {description}"
        return PermanentError(
            f"kafka {self._where}: enable_idempotence=true, but the broker refused the idempotent producer "
            f"(InitProducerId answered {answer}); use a broker that serves idempotent producers "
            "(Kafka 0.11 or later; IdempotentWrite on the cluster where ACLs are on) or set enable_idempotence=false"
        )

    async def send(self, batch: Sequence[Notification]) -> None:
        """Append the batch to one aiokafka record batch per partition (``create_batch``), hand
        each over with ``send_batch``, then wait for every delivery report.

        The batch API skips ``producer.send()``'s per-record coroutine chain and future;
        the partition is the one aiokafka's default partitioner picks (murmur2 of the key,
        as Java clients), so one key stays on one partition, in order.
        """
        producer = self._producer
        if producer is None:
            raise TransientError(f"kafka {self._where}: producer is not open")
        failures: dict[int, TransientError | PermanentError] = {}
        try:
            records = await self._layout.lay(producer, batch, failures)
        except KafkaError as exc:  # metadata unavailable: nothing was handed over
            raise self.classify(exc) from None
        deliveries: list[tuple[list[int], str, asyncio.Future[Any]]] = []
        stalled: TransientError | None = None
        for (topic, partition), builders in records.items():
            for builder, indices in builders:
                if stalled is None:
                    try:
                        builder.close()
                        deliveries.append((indices, topic, await producer.send_batch(builder, topic, partition=partition)))
                        continue
                    except KafkaError as exc:
                        error = self.classify(exc, topic)
                        if isinstance(error, TransientError):
                            stalled = error  # the producer cannot take records: do not wait once per batch
                else:
                    error = stalled
                for index in indices:
                    BatchError.record(failures, index, error)
        for indices, topic, future in deliveries:
            try:
                await future
            except KafkaError as exc:
                error = self.classify(exc, topic)
                for index in indices:
                    BatchError.record(failures, index, error)
        BatchError.raise_if_any(failures, len(batch))

    async def aclose(self) -> None:
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
            raise transport.classify(exc) from None
        try:
            async for record in consumer:
                if record.value is not None:
                    yield record.value
        except KafkaError as exc:
            raise transport.classify(exc) from None
        finally:
            with anyio.CancelScope(shield=True):
                await consumer.stop()
