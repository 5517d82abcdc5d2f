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

import asyncio
import contextlib
import functools
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import aio_pika
import aio_pika.abc
import aiormq
import aiormq.exceptions
import anyio
import anyio.to_thread
import pamqp.commands
import pamqp.exceptions
import pamqp.frame
import pamqp.header
from pamqp.common import FieldTable
from yarl import URL

from notifykit.transport import (
    BatchError,
    ConfigError,
    Notification,
    PermanentError,
    Priority,
    Redactor,
    TlsOptions,
    TransientError,
    Transport,
    TransportSettings,
    WireFormat,
)

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
        exchange = settings.take_str("exchange", "openstack") or ""
        if not exchange or exchange.startswith("amq."):
            raise ConfigError(f"option 'exchange' of transport {settings.name!r} ({url.redacted}) "
                              f"must be a non-empty name not starting with 'amq.', got {exchange!r}")
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
            confirm_timeout=settings.take_float("confirm_timeout", 30.0, minimum=0.001) or 30.0,
            connect_timeout=settings.take_float("connect_timeout", 10.0, minimum=0.001) or 10.0,
            heartbeat=settings.take_int("heartbeat", 60, minimum=0) or 0,
            connection_name=settings.take_str("connection_name", f"notifykit {settings.name}") or settings.name,
            tls=settings.take_tls(enabled=url.scheme == "amqps"),
        )
        for topic in settings.topics:
            if not topic or any(c in topic for c in "#*"):
                raise ConfigError(f"topic {topic!r} of transport {settings.name!r} ({url.redacted}) "
                                  "must be a non-empty name without '#' or '*'")
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

    def __init__(self, settings: TransportSettings, options: AmqpOptions) -> None:
        super().__init__(settings, options)
        self._ssl_context: ssl.SSLContext | None = None
        self._connection: aio_pika.abc.AbstractConnection | None = None
        # One channel per topic: aiormq matches returned messages by message_id per channel.
        self._channels: list[tuple[str, aiormq.Channel]] = []
        self._declared: set[str] = set()
        self._broken = False
        self._stale_channels = False  # the broker nacked on them: open fresh ones before the next publish
        self._nacked_sends = 0  # consecutive send() calls with a nack: odd → new channels, even → new connection
        self._host_index = -1  # the host of the current (or last) connection, in options.hosts
        self.connects = 0
        self.channel_replacements = 0
        self._redactor = Redactor([options.password])
        self._redactor.add_basic(options.username, options.password)
        #: Entities found declared otherwise than we would have: logged once per transport, not per reconnect.
        self._reported: set[str] = set()

    # -- connection --------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        """Belt and braces (aiormq already censors URLs): no library message may carry the password."""
        return self._redactor.redact(text)

    def _describe(self, exc: BaseException) -> str:
        return self._scrub(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)

    @property
    def connected(self) -> bool:
        return (not self._broken and self._connection is not None and not self._connection.is_closed
                and bool(self._channels) and not any(channel.is_closed for _, channel in self._channels))

    async def _tls_context(self) -> ssl.SSLContext | None:
        """The amqps:// context, loaded once in a worker thread (it reads the CA and key files)."""
        if not self.options.tls.enabled:
            return None
        if self._ssl_context is None:
            try:
                self._ssl_context = await anyio.to_thread.run_sync(self.options.tls.load_context)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise PermanentError(f"TLS files of transport {self.name!r} ({self.settings.url.redacted}) "
                                     f"cannot be loaded: {exc}") from None
        return self._ssl_context

    @property
    def peer(self) -> str | None:
        """``host:port`` of the node the transport is connected to (None when it is not)."""
        if self._connection is None or self._connection.is_closed or self._host_index < 0:
            return None
        host, port = self.options.hosts[self._host_index]
        return f"{host}:{port}"

    async def _connect(self) -> aio_pika.abc.AbstractConnection:
        """Try each host in turn, starting after the one of the last connection (a node that just
        failed is tried last); PermanentError when every broker refused us, TransientError otherwise."""
        ssl_context = await self._tls_context()
        errors: list[str] = []
        refused = 0
        hosts = self.options.hosts
        start = (self._host_index + 1) % len(hosts)
        for index in [*range(start, len(hosts)), *range(start)]:
            host, port = hosts[index]
            url = self.options.connection_url(host, port, self.settings.url.scheme)
            connection = aio_pika.Connection(url, ssl_context=ssl_context)
            try:
                await connection.connect(timeout=self.options.connect_timeout)
                self._host_index = index
                return connection
            except BaseException as exc:
                # Marks the object closed, so its __del__ never creates a close() coroutine
                # that nobody awaits (aio-pika's RuntimeWarning). Nothing was opened: no wait.
                await connection.close()
                if not isinstance(exc, Exception):
                    raise
                error = self.classify(exc)
                if isinstance(error, PermanentError):
                    error = PermanentError(await self._refusal(host, port, exc))
                    refused += 1
                errors.append(f"{host}:{port}: {error}")
        detail = "; ".join(errors)
        if refused == len(self.options.hosts):
            message = (f"AMQP broker refused the connection to {self.settings.url.redacted} (a configuration error: "
                       f"check the URL's user, password and vhost): {detail}")
            log.error("notifykit amqp %r: %s", self.name, message)
            raise PermanentError(message)
        raise TransientError(f"cannot connect to {self.settings.url.redacted}: {detail}")

    def classify(self, exc: BaseException) -> TransientError | PermanentError:
        """The notifykit error for an aio-pika/aiormq failure, with the broker's own reason when it gave one.

        A refused login or vhost is permanent (a configuration error: retrying cannot fix
        it); a timeout, a reset, a lost connection or a broker-side channel error is transient.
        """
        if isinstance(exc, aiormq.exceptions.ProbableAuthenticationError | aiormq.exceptions.AuthenticationError):
            return PermanentError(f"authentication refused: {self._reason(exc)}")
        if isinstance(exc, aiormq.exceptions.ConnectionNotAllowed | aiormq.exceptions.ChannelAccessRefused):
            return PermanentError(f"access refused: {self._reason(exc)}")
        if isinstance(exc, aiormq.exceptions.InvalidFrameError) and "Connection.Close" in str(exc):
            return PermanentError("the broker closed the connection during the handshake")
        if isinstance(exc, TimeoutError):
            return TransientError(f"no answer within connect_timeout={self.options.connect_timeout:g}s")
        return TransientError(self._describe(exc))

    def _reason(self, exc: BaseException) -> str:
        """The broker's reply text (ACCESS_REFUSED - …) without aiormq's tuple wrapping."""
        args = [a for a in exc.args if isinstance(a, str)]
        return self._scrub(args[-1] if args else self._describe(exc))

    async def _refusal(self, host: str, port: int, exc: BaseException) -> str:
        """Why the broker refused: its own Connection.Close reason.

        aiormq reports a refused vhost as "Expected Connection.OpenOk, got <Connection.Close
        object>", dropping the reason; the handshake is replayed here to read it.
        """
        if isinstance(exc, aiormq.exceptions.InvalidFrameError):
            try:
                reason = await asyncio.wait_for(_handshake_refusal(host, port, self.options, self._ssl_context),
                                                timeout=self.options.connect_timeout)
            except (OSError, TimeoutError, ssl.SSLError, pamqp.exceptions.PAMQPException, EOFError) as error:
                reason = f"the broker closed the connection during the handshake ({type(error).__name__})"
            return self._scrub(reason or "the broker closed the connection during the handshake")
        return str(self.classify(exc))

    async def _ensure_ready(self) -> None:
        if self.connected:
            if self._stale_channels:
                await self._replace_channels()
            return
        await self._reset()
        connection = await self._connect()
        try:
            channels = []
            for topic in self.settings.topics:
                channels.append((topic, await _open_channel(connection, confirms=True)))
            await self._declare(connection, [])
        except BaseException:
            await _close_quietly(connection)
            raise
        self._connection, self._channels = connection, channels
        self._declared = set()
        self._broken = False
        self._stale_channels = False
        self.connects += 1
        log.info("notifykit amqp %r connected to %s (node %s, connection %d)", self.name, self.settings.url.redacted,
                 self.peer, self.connects)

    async def _replace_channels(self) -> None:
        """Fresh publishing channels on the same connection; the old ones are closed quietly."""
        assert self._connection is not None
        old, self._channels = self._channels, []
        for _, channel in old:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_close_channel(channel), timeout=5)
        try:
            for topic, _ in old:
                self._channels.append((topic, await _open_channel(self._connection, confirms=True)))
        except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
            self._broken = True
            raise TransientError(f"cannot open a channel on node {self.peer}: {self._describe(exc)}") from None
        self._stale_channels = False
        self.channel_replacements += 1

    async def _declare(self, connection: aio_pika.abc.AbstractConnection, queues: list[str]) -> None:
        """Make sure the exchange (no queues) or the ``<topic>.<priority>`` queues bound to it exist, as oslo does.

        Never fails against what exists: each entity is first checked passively; one that
        exists is used as it is (durable or not, classic or quorum: never re-declared with
        our settings), and one that does not is declared with ours (oslo's defaults). Runs
        on channels of its own, since the broker closes a channel on a failed check.
        """
        exchange = self.options.exchange
        try:
            if not queues:
                await self._ensure(connection, "exchange", exchange)
            for key in queues:
                await self._ensure(connection, "queue", key)
                channel = await _open_channel(connection)
                try:
                    await channel.queue_bind(key, exchange, routing_key=key)
                finally:
                    await _close_channel(channel)
                self._declared.add(key)
        except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
            what = f"queues {', '.join(queues)}" if queues else f"exchange {exchange!r}"
            self._broken = True
            error = self.classify(exc)
            raise type(error)(f"cannot declare {what}: {error}") from None

    async def _ensure(self, connection: aio_pika.abc.AbstractConnection, kind: str, name: str) -> None:
        """Passive check of one exchange or queue; declare it with our settings only when it does not exist."""
        durable = self.options.entities_durable
        channel = await _open_channel(connection)
        try:
            try:
                if kind == "exchange":
                    await channel.exchange_declare(name, passive=True)
                else:
                    await channel.queue_declare(name, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                pass  # the channel is closed by the broker; declare below on a new one
            else:
                await self._report_differences(connection, kind, name)
                return
            channel = await _open_channel(connection)
            try:
                if kind == "exchange":
                    await channel.exchange_declare(name, exchange_type="topic", durable=durable, auto_delete=False)
                else:
                    await channel.queue_declare(name, durable=durable, auto_delete=False,
                                                arguments=self.options.queue_arguments or None)
            except aiormq.exceptions.ChannelPreconditionFailed as exc:
                # Declared by someone else between our check and our declare: theirs stands.
                self._report(kind, name, exc)
        finally:
            await _close_channel(channel)

    async def _report_differences(self, connection: aio_pika.abc.AbstractConnection, kind: str, name: str) -> None:
        """Log once how an existing entity differs from our settings.

        Asks the broker with an equivalence check on a throwaway channel: AMQP answers a
        declare of an existing entity with other arguments by refusing it (naming the
        argument), never by changing the entity, so an existing quorum or durable queue
        stays exactly as its owner declared it.
        """
        key = f"{kind}:{name}"
        if key in self._reported:
            return
        self._reported.add(key)
        durable = self.options.entities_durable
        channel = await _open_channel(connection)
        try:
            if kind == "exchange":
                await channel.exchange_declare(name, exchange_type="topic", durable=durable, auto_delete=False)
            else:
                await channel.queue_declare(name, durable=durable, auto_delete=False,
                                            arguments=self.options.queue_arguments or None)
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            self._reported.discard(key)
            self._report(kind, name, exc)
        finally:
            await _close_channel(channel)

    def _report(self, kind: str, name: str, exc: BaseException) -> None:
        key = f"{kind}:{name}"
        if key in self._reported:
            return
        self._reported.add(key)
        log.warning("notifykit amqp %r: %s %r exists with other settings than ours (durable=%s%s); using it as it is: %s",
                    self.name, kind, name, self.options.entities_durable,
                    ", quorum" if self.options.quorum and kind == "queue" else "", self._reason(exc))

    async def _reset(self) -> None:
        connection, self._connection, self._channels = self._connection, None, []
        if connection is not None:
            await _close_quietly(connection)

    # -- Transport ---------------------------------------------------------------------

    async def open(self) -> None:
        await self._ensure_ready()

    async def send(self, batch: Sequence[Notification]) -> None:
        await self._ensure_ready()
        if self.options.declare_queues:
            keys = {f"{topic}.{p.value}" for topic in self.settings.topics for p in {n.priority for n in batch}}
            if not keys <= self._declared:
                assert self._connection is not None
                await self._declare(self._connection, sorted(keys - self._declared))
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
            for topic, channel in self._channels:
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
                error = TransientError(f"connection lost before confirm: {self._describe(outcome)}")
                broken = True
            if index not in failures or isinstance(error, PermanentError):
                failures[index] = error
        if nacked:
            self._nacked_sends += 1
            if self._nacked_sends % 2 == 0:
                broken = True
            else:
                self._stale_channels = True
            log.warning("notifykit amqp %r: node %s nacked %d message(s); replacing the %s before the retry",
                        self.name, self.peer, nacked, "connection" if broken else "channel")
        else:
            self._nacked_sends = 0
        if broken:
            self._broken = True  # the next send() closes this connection and opens a new one

    async def aclose(self) -> None:
        await self._reset()

    # -- tail --------------------------------------------------------------------------

    @classmethod
    async def tail(cls, settings: TransportSettings) -> AsyncIterator[bytes]:
        """Bind a temporary exclusive queue to ``<topic>.*`` for every topic and yield bodies."""
        transport = cls.from_settings(settings)
        connection = await transport._connect()
        try:
            await transport._declare(connection, [])  # the exchange, used as it is if declared otherwise
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
            raise TransientError(f"tail of {settings.url.redacted} stopped: {transport._describe(exc)}") from None
        finally:
            await _close_quietly(connection)

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


async def _open_channel(connection: aio_pika.abc.AbstractConnection, *, confirms: bool = False) -> aiormq.Channel:
    """The aiormq channel under an aio-pika one: publishing there skips a layer per message."""
    channel = await connection.channel(publisher_confirms=confirms, on_return_raises=confirms)
    underlay = await channel.get_underlay_channel()
    if not isinstance(underlay, aiormq.Channel):  # pragma: no cover - aio-pika always builds on aiormq.Channel
        raise TransientError(f"unexpected AMQP channel type {type(underlay).__name__}")
    return underlay


async def _close_channel(channel: aiormq.Channel) -> None:
    """Close a helper channel; one the broker already closed (a failed check) needs nothing."""
    if channel.is_closed:
        return
    with contextlib.suppress(Exception):
        await channel.close()


async def _handshake_refusal(host: str, port: int, options: AmqpOptions, context: ssl.SSLContext | None) -> str | None:
    """Replay the AMQP handshake (PLAIN login, then Connection.Open of the vhost) and return the
    broker's Connection.Close reason, e.g. ``NOT_ALLOWED - vhost nope not found`` (None if it opens)."""
    reader, writer = await asyncio.open_connection(host, port, ssl=context)
    buffer = b""

    async def next_frame() -> object:
        nonlocal buffer
        while True:
            try:
                consumed, _channel, frame = pamqp.frame.unmarshal(buffer)
            except pamqp.exceptions.UnmarshalingException:
                data = await reader.read(65536)
                if not data:
                    raise EOFError("the broker closed the socket") from None
                buffer += data
                continue
            buffer = buffer[consumed:]
            return frame

    def refusal(frame: object) -> str | None:
        if isinstance(frame, pamqp.commands.Connection.Close):
            return f"{frame.reply_text} (AMQP {frame.reply_code})"
        return None

    try:
        writer.write(pamqp.header.ProtocolHeader().marshal())
        await next_frame()  # Connection.Start
        credentials = f"\0{options.username}\0{options.password}"
        writer.write(pamqp.frame.marshal(pamqp.commands.Connection.StartOk(
            client_properties={"product": "notifykit (diagnosing a refused connection)"},
            mechanism="PLAIN", response=credentials, locale="en_US"), 0))
        frame = await next_frame()
        if (reason := refusal(frame)) is not None:
            return reason
        if not isinstance(frame, pamqp.commands.Connection.Tune):
            return None
        writer.write(pamqp.frame.marshal(pamqp.commands.Connection.TuneOk(
            channel_max=frame.channel_max, frame_max=frame.frame_max, heartbeat=0), 0))
        writer.write(pamqp.frame.marshal(pamqp.commands.Connection.Open(virtual_host=options.vhost), 0))
        return refusal(await next_frame())
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _close_quietly(connection: aio_pika.abc.AbstractConnection) -> None:
    try:
        await asyncio.wait_for(connection.close(), timeout=5)
    except Exception as exc:  # a dead connection may fail to close; nothing is lost by that
        log.debug("notifykit amqp: closing a connection failed: %s", type(exc).__name__)
