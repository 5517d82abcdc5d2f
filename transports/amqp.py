"""``amqp://`` and ``amqps://`` — RabbitMQ via aio-pika, routed the way oslo.messaging does.

Each notification goes to a topic exchange (default ``openstack``) with routing key
``<topic>.<priority>`` for every configured topic, persistent, with publisher confirms.
A batch is published pipelined (all messages written, then every confirm awaited), and
a message counts as sent only once the broker confirmed it. Unconfirmed messages are
reported per index in a ``BatchError`` so the core's dispatcher retries exactly those
(at-least-once: consumers dedup on ``message_id``); a lost connection is re-opened by
the next ``send()``, so the core's backoff is the reconnect backoff.

A drop-in next to oslo.messaging in either start order: an exchange or queue that exists
is checked passively and used as it is (what differs from our settings is logged once);
one that does not is declared with oslo's defaults (non-durable, or quorum queues with
``quorum_queues=true`` like oslo's ``rabbit_quorum_queue``). A broker that refuses the
connection (wrong user, password or vhost) is a configuration error: a PermanentError
carrying the broker's own reason, not a retry until ``retry_max_elapsed``.

Against a cluster (several ``host:port`` in the URL) a lost connection is re-opened on the
next node first. A channel whose publishes the broker nacks is replaced before the retry
(a quorum queue whose leader died nacks on the channel that still names the old leader,
while a fresh channel is confirmed at once); if the fresh channel nacks too, the connection
is replaced, so both happen long before the core's retry budget or circuit breaker give up.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import aio_pika
import aiormq
import aiormq.exceptions
import anyio
from pamqp.common import FieldTable
from yarl import URL

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

from ._amqp_link import AmqpLink, close_quietly

__all__ = ["AmqpTransport"]

log = logging.getLogger("notifykit.amqp")

_DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}
_PERSISTENT = aio_pika.DeliveryMode.PERSISTENT
_TRANSIENT = aio_pika.DeliveryMode.NOT_PERSISTENT


@dataclass(frozen=True, slots=True)
class AmqpOptions:
    """Everything parsed from the URL, validated once at configuration time."""

    hosts: tuple[tuple[str, int], ...]
    username: str
    password: str = field(repr=False)
    vhost: str
    exchange: str
    durable: bool
    quorum: bool
    declare_queues: bool
    mandatory: bool
    persistent: bool
    confirm_timeout: float
    connect_timeout: float
    heartbeat: int
    connection_name: str
    tls: TlsOptions

    @classmethod
    def from_settings(cls, settings: TransportSettings) -> Self:
        url = settings.url
        if url.scheme not in _DEFAULT_PORTS:
            raise ConfigError(f"AMQP URL {url.redacted!r}: scheme must be amqp or amqps")
        port = _DEFAULT_PORTS[url.scheme]
        hosts = tuple((h.host or "127.0.0.1", h.port or port) for h in url.hosts) or (("127.0.0.1", port),)
        path = url.path
        vhost = "/" if path in ("", "/") else path[1:]
        exchange = settings.take_str("exchange", "openstack")
        if not exchange or exchange.startswith("amq."):
            raise ConfigError(f"{settings.where('exchange')} must be a non-empty name not starting with 'amq.', "
                              f"got {exchange!r}")
        options = cls(
            hosts=hosts,
            username=url.username if url.username is not None else "guest",
            password=url.password if url.password is not None else "guest",
            vhost=vhost,
            exchange=exchange,
            # oslo.messaging's defaults (amqp_durable_queues=False), so a stock consumer
            # declaring after us finds what it would have declared itself.
            durable=settings.take_bool("durable_queues", False),
            quorum=settings.take_bool("quorum_queues", False),
            declare_queues=settings.take_bool("declare_queues", True),
            mandatory=settings.take_bool("mandatory", True),
            persistent=settings.take_bool("persistent", True),
            confirm_timeout=settings.take_float("confirm_timeout", 30.0, minimum=0.001),
            connect_timeout=settings.take_float("connect_timeout", 10.0, minimum=0.001),
            heartbeat=settings.take_int("heartbeat", 60, minimum=0),
            connection_name=settings.take_str("connection_name", f"notifykit {settings.name}") or settings.name,
            tls=settings.take_tls(enabled=url.scheme == "amqps"),
        )
        for topic in settings.topics:
            if not topic or any(c in topic for c in "#*"):
                raise ConfigError(f"topic {topic!r} of {settings.where()} must be a non-empty name without '#' or '*'")
        return options

    @property
    def queue_arguments(self) -> FieldTable:
        """What a declared queue carries: oslo's ``x-queue-type=quorum`` with rabbit_quorum_queue."""
        return {"x-queue-type": "quorum"} if self.quorum else {}

    @property
    def entities_durable(self) -> bool:
        """Quorum queues are always durable; oslo then declares its exchange durable too."""
        return self.durable or self.quorum

    def connection_url(self, host: str, port: int, scheme: str) -> URL:
        query = {"heartbeat": str(self.heartbeat), "name": self.connection_name}
        return URL.build(scheme=scheme, host=host, port=port, user=self.username, password=self.password,
                         path="/" + self.vhost, query=query)


def _trace_headers(n: Notification) -> FieldTable | None:
    """W3C trace context as AMQP headers (OpenTelemetry's AMQP propagation), when the notification has one."""
    if not n.context.traceparent:
        return None
    headers: FieldTable = {"traceparent": n.context.traceparent}
    tracestate = n.context.extra.get("tracestate")
    if isinstance(tracestate, str):
        headers["tracestate"] = tracestate
    return headers


class AmqpTransport(Transport):
    """Publishes to a RabbitMQ topic exchange with pipelined publisher confirms."""

    default_format: ClassVar[WireFormat] = WireFormat.OSLO
    max_batch_size = 2500
    Options = AmqpOptions
    options: AmqpOptions
    messaging_system: ClassVar[str | None] = "rabbitmq"
    asyncapi_protocols: ClassVar[Mapping[str, str]] = {"amqp": "amqp", "amqps": "amqps"}

    def asyncapi_routes(self, events: Sequence[tuple[str, Priority]]) -> AsyncApiRoutes:
        """A channel per routing key ``<topic>.<priority>`` on the topic exchange."""
        o = self.options
        exchange = {"name": o.exchange, "type": "topic", "durable": bool(o.entities_durable), "autoDelete": False,
                    "vhost": o.vhost}
        return AsyncApiRoutes(tuple(
            Route(f"{topic}.{p.value}", names, {"amqp": {"is": "routingKey", "exchange": exchange,
                                                         "bindingVersion": "0.3.0"}})
            for topic in self.settings.topics for p, names in events_by_priority(events).items()))

    def __init__(self, settings: TransportSettings, options: AmqpOptions) -> None:
        super().__init__(settings, options)
        self._link = AmqpLink(settings.name, settings.url, settings.topics, options, self.classify)
        self._nacked_sends = 0  # consecutive send() calls with a nack: odd → new channels, even → new connection

    @property
    def connected(self) -> bool:
        return self._link.connected

    @property
    def peer(self) -> str | None:
        """``host:port`` of the node the transport is connected to (None when it is not)."""
        return self._link.peer

    @property
    def connects(self) -> int:
        return self._link.connects

    @property
    def channel_replacements(self) -> int:
        return self._link.channel_replacements

    def classify(self, exc: BaseException) -> TransientError | PermanentError:
        """The notifykit error for an aio-pika/aiormq failure, with the broker's own reason when it gave one.

        A refused login or vhost is permanent (a configuration error: retrying cannot fix
        it); a timeout, a reset, a lost connection or a broker-side channel error is transient.
        """
        if isinstance(exc, aiormq.exceptions.ProbableAuthenticationError | aiormq.exceptions.AuthenticationError):
            return PermanentError(f"authentication refused: {self._link.reason(exc)}")
        if isinstance(exc, aiormq.exceptions.ConnectionNotAllowed | aiormq.exceptions.ChannelAccessRefused):
            return PermanentError(f"access refused: {self._link.reason(exc)}")
        if isinstance(exc, aiormq.exceptions.InvalidFrameError) and "Connection.Close" in str(exc):
            return PermanentError("the broker closed the connection during the handshake")
        if isinstance(exc, TimeoutError):
            return TransientError(f"no answer within connect_timeout={self.options.connect_timeout:g}s")
        return TransientError(self._link.describe(exc))

    # -- Transport ---------------------------------------------------------------------

    async def open(self) -> None:
        await self._link.ensure_ready()

    async def send(self, batch: Sequence[Notification]) -> None:
        link = self._link
        await link.ensure_ready()
        if self.options.declare_queues:
            keys = {f"{topic}.{p.value}" for topic in self.settings.topics for p in {n.priority for n in batch}}
            if not keys <= link.declared:
                assert link.connection is not None
                await link.declare(link.connection, sorted(keys - link.declared))
        failures: dict[int, TransientError | PermanentError] = {}
        publishes = self._publishes(batch, failures)
        outcomes: list[BaseException | _Pending | None] = [_PENDING] * len(publishes)
        # Every publish is a child of this task group: a deadline or the caller's cancellation
        # cancels them and waits for them, so none outlives send() (the dispatcher owns the batch).
        with anyio.move_on_after(self.options.confirm_timeout) as deadline:
            async with anyio.create_task_group() as tg:
                for slot, (_, publish) in enumerate(publishes):
                    tg.start_soon(_publish_one, publish, outcomes, slot)
        self._outcomes([index for index, _ in publishes], outcomes, deadline.cancelled_caught, failures)
        if failures:
            raise BatchError(failures)

    def _publishes(self, batch: Sequence[Notification], failures: dict[int, TransientError | PermanentError]
                   ) -> list[tuple[int, Callable[[], Awaitable[Any]]]]:
        """One publish per (notification, topic), to run pipelined: writes first, confirms awaited later.

        Every body is encoded before the first publish starts, so an encoding error is a
        per-message failure and never leaves publishes running behind an exception.
        """
        fmt = self.format
        bodies: list[tuple[int, Notification, bytes]] = []
        for index, n in enumerate(batch):
            try:
                bodies.append((index, n, n.encode(fmt)))
            except Exception as exc:
                failures[index] = PermanentError(f"cannot encode as {fmt.value}: {type(exc).__name__}: {exc}")
        exchange = self.options.exchange
        mandatory = self.options.mandatory
        delivery_mode = _PERSISTENT if self.options.persistent else _TRANSIENT
        content_type = fmt.content_type
        publishes: list[tuple[int, Callable[[], Awaitable[Any]]]] = []
        for index, n, body in bodies:
            properties = aiormq.spec.Basic.Properties(
                content_type=content_type, delivery_mode=delivery_mode, message_id=n.message_id, timestamp=n.timestamp,
                headers=_trace_headers(n),
            )
            suffix = _PRIORITY_SUFFIX[n.priority]
            for topic, channel in self._link.channels:
                publishes.append((index, functools.partial(
                    channel.basic_publish, body, exchange=exchange, routing_key=topic + suffix, properties=properties,
                    mandatory=mandatory,
                    wait=False,  # the confirm is what counts; not waiting for each socket drain halves the wake-ups
                )))
        return publishes

    def _outcomes(self, indexes: list[int], outcomes: list[BaseException | _Pending | None], timed_out: bool,
                  failures: dict[int, TransientError | PermanentError]) -> None:
        """Record per-index failures (a permanent one wins); drop the connection if it lost messages,
        replace the channels if the broker nacked (and the connection if it nacks again)."""
        broken = False
        nacked = 0
        for index, outcome in zip(indexes, outcomes, strict=True):
            if outcome is None:
                continue
            if isinstance(outcome, _Pending):  # cancelled: by the deadline, or aiormq cancelled its confirm
                error: TransientError | PermanentError = TransientError(
                    f"not confirmed within confirm_timeout={self.options.confirm_timeout}s" if timed_out
                    else "publish cancelled")
                broken = True
            elif isinstance(outcome, aiormq.exceptions.PublishError):
                error = PermanentError(f"unroutable: no queue bound to exchange {self.options.exchange!r} "
                                       f"for routing key {_routing_key(outcome)!r} (mandatory)")
            elif isinstance(outcome, aiormq.exceptions.DeliveryError):
                error = TransientError("nacked by the broker")
                nacked += 1
            else:
                error = TransientError(f"connection lost before confirm: {self._link.describe(outcome)}")
                broken = True
            BatchError.record(failures, index, error)
        if nacked:
            self._nacked_sends += 1
            if self._nacked_sends % 2 == 0:
                broken = True
            else:
                self._link.stale_channels = True
            log.warning("notifykit amqp %r: node %s nacked %d message(s); replacing the %s before the retry",
                        self.name, self.peer, nacked, "connection" if broken else "channel")
        else:
            self._nacked_sends = 0
        if broken:
            self._link.broken = True  # the next send() closes this connection and opens a new one

    async def aclose(self) -> None:
        await self._link.reset()

    # -- tail --------------------------------------------------------------------------

    @classmethod
    async def tail(cls, settings: TransportSettings) -> AsyncIterator[bytes]:
        """Bind a temporary exclusive queue to ``<topic>.*`` for every topic and yield bodies."""
        transport = cls.from_settings(settings)
        link = transport._link
        connection = await link.connect()
        try:
            await link.declare(connection, [])  # the exchange, used as it is if declared otherwise
            channel = await connection.channel()
            # Acknowledged one by one (prefetch 100) rather than no_ack: when tail stops, the
            # broker takes back what was prefetched, instead of aio-pika warning it was lost.
            await channel.set_qos(prefetch_count=100)
            queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
            for topic in settings.topics:
                await queue.bind(transport.options.exchange, routing_key=f"{topic}.*")
            async with queue.iterator() as messages:
                async for message in messages:
                    await message.ack()
                    yield message.body
        except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
            raise TransientError(f"tail of {settings.url.redacted} stopped: {link.describe(exc)}") from None
        finally:
            await close_quietly(connection)

    def __repr__(self) -> str:
        return f"<AmqpTransport {self.name!r} {self.settings.url.redacted} exchange={self.options.exchange!r}>"


_PRIORITY_SUFFIX = {p: "." + p.value for p in Priority}


class _Pending:
    """A publish that did not finish (its task was cancelled)."""


_PENDING = _Pending()


async def _publish_one(publish: Callable[[], Awaitable[Any]], outcomes: list[BaseException | _Pending | None],
                       slot: int) -> None:
    """A child of send()'s task group: its outcome in ``outcomes[slot]`` (None: confirmed).
    Cancellation is not caught: the slot stays pending."""
    try:
        await publish()
    except Exception as exc:
        outcomes[slot] = exc
    else:
        outcomes[slot] = None


def _routing_key(exc: aiormq.exceptions.PublishError) -> str:
    key = getattr(getattr(exc, "frame", None), "routing_key", None)
    return key if isinstance(key, str) else "?"
