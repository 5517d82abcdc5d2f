"""``kafka://`` and ``kafka+ssl://`` — notifications as Kafka records, through aiokafka.

Each notification goes to ``<topic>.<priority>`` (oslo.messaging's Kafka notifier
layout) or, with ``topic_mode=single``, to ``<topic>`` with the priority in a header.
The key is the resource id from the payload so one backup's events share a partition
and stay in order. ``send()`` pipelines the whole batch into the producer, then waits
for every delivery report: a notification counts as sent only once Kafka acked it.

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
import anyio.to_thread
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka import errors as kafka_errors
from aiokafka.errors import KafkaError, UnknownError, UnsupportedVersionError  # type: ignore[import-untyped]

from notifykit.transport import (
    BatchError,
    ConfigError,
    Notification,
    PermanentError,
    Priority,
    TlsOptions,
    TransientError,
    Transport,
    TransportSettings,
    WireFormat,
)

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
            raise ConfigError(f"{_where(settings)}: enable_idempotence=true needs acks=all (got acks={acks})")
        connection = _security(settings, use_ssl)
        tls = settings.take_tls(enabled=use_ssl)
        connection.update(
            client_id=settings.take_str("client_id", "notifykit"),
            request_timeout_ms=_ms(settings, "request_timeout_ms", 30_000, 1),
            retry_backoff_ms=_ms(settings, "retry_backoff_ms", 100),
            metadata_max_age_ms=_ms(settings, "metadata_max_age_ms", 300_000, 1),
            connections_max_idle_ms=_ms(settings, "connections_max_idle_ms", 540_000, 1),
        )
        producer = dict(
            acks=acks,
            enable_idempotence=idempotence,
            linger_ms=_ms(settings, "linger_ms", 0),
            max_batch_size=_ms(settings, "max_batch_size", 65_536, 1),
            max_request_size=_ms(settings, "max_request_size", 1_048_576, 1),
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

def _where(settings: TransportSettings) -> str:
    return f"transport {settings.name!r} ({settings.url.redacted})"


def _bootstrap(settings: TransportSettings) -> list[str]:
    url = settings.url
    if not url.hosts:
        raise ConfigError(f"{_where(settings)}: name at least one broker, e.g. kafka://127.0.0.1:9092/")
    if url.path not in ("", "/"):
        raise ConfigError(f"{_where(settings)}: a Kafka URL takes no path; name topics with ?topic=…")
    servers = []
    for hp in url.hosts:
        host = f"[{hp.host}]" if ":" in hp.host else hp.host
        servers.append(f"{host}:{hp.port or DEFAULT_PORT}")
    return servers


def _topics(settings: TransportSettings) -> tuple[str, ...]:
    for topic in settings.topics:
        # <topic>.<priority> must stay within Kafka's 249 characters too.
        if not _TOPIC.match(topic) or len(topic) > 240:
            raise ConfigError(
                f"{_where(settings)}: topic {topic!r} is not a valid Kafka topic name "
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
                f"{_where(settings)}: compression_type={name} needs the 'cramjam' package "
                "(pip install 'notifykit[kafka]')"
            ) from None
    return None if name == "none" else name


def _ms(settings: TransportSettings, key: str, default: int, minimum: int = 0) -> int:
    value = settings.take_int(key, default, minimum=minimum)
    assert value is not None
    return value


def _security(settings: TransportSettings, use_ssl: bool) -> dict[str, Any]:
    """security_protocol and SASL from the scheme, the URL's credentials and options."""
    url = settings.url
    mechanism = settings.take_str("sasl_mechanism")
    username = settings.take_str("sasl_plain_username", url.username)
    password = settings.take_str("sasl_plain_password", url.password)
    if mechanism is None and (username or password):
        mechanism = "PLAIN"
    connection: dict[str, Any] = {}
    if mechanism is not None:
        mechanism = mechanism.upper()
        if mechanism not in _SASL_MECHANISMS:
            raise ConfigError(
                f"{_where(settings)}: sasl_mechanism must be one of {', '.join(_SASL_MECHANISMS)}, got {mechanism!r}"
            )
        if not username or password is None:
            raise ConfigError(
                f"{_where(settings)}: SASL {mechanism} needs a user name and password "
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
    Options = KafkaOptions
    options: KafkaOptions

    def __init__(self, settings: TransportSettings, options: KafkaOptions) -> None:
        super().__init__(settings, options)
        self._producer: Any = None
        self._topics = {priority: options.topic_names(priority) for priority in Priority}

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
        if self.options.tls.enabled:
            try:
                kwargs["ssl_context"] = await anyio.to_thread.run_sync(self.options.tls.load_context)
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
            error = self.classify(exc)
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
                    error = self.classify(exc, topic)
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
                failures[index] = _worse(failures.get(index), self.classify(exc, topic))
        if not failures:
            return
        if len(failures) == len(batch) and all(isinstance(e, TransientError) for e in failures.values()):
            first = failures[min(failures)]
            assert isinstance(first, TransientError)
            raise first
        raise BatchError(failures)

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
