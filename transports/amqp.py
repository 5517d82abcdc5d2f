"""``amqp://`` and ``amqps://`` — RabbitMQ via aio-pika, routed the way oslo.messaging does.

Each notification goes to a topic exchange (default ``openstack``) with routing key
``<topic>.<priority>`` for every configured topic, persistent, with publisher confirms.
A batch is published pipelined (all messages written, then every confirm awaited), and
a message counts as sent only once the broker confirmed it. Unconfirmed messages are
reported per index in a ``BatchError`` so the core's dispatcher retries exactly those
(at-least-once: consumers dedup on ``message_id``); a lost connection is re-opened by
the next ``send()``, so the core's backoff is the reconnect backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import aio_pika
import aio_pika.abc
import aiormq
import aiormq.exceptions
from yarl import URL

from notifykit import (
    BatchError,
    ConfigError,
    Notification,
    PermanentError,
    Priority,
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
    declare_queues: bool
    mandatory: bool
    persistent: bool
    confirm_timeout: float
    connect_timeout: float
    heartbeat: int
    connection_name: str
    ssl_context: ssl.SSLContext | None

    @classmethod
    def take(cls, settings: TransportSettings) -> AmqpOptions:
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
            durable=settings.take_bool("durable_queues", True),
            declare_queues=settings.take_bool("declare_queues", True),
            mandatory=settings.take_bool("mandatory", True),
            persistent=settings.take_bool("persistent", True),
            confirm_timeout=settings.take_float("confirm_timeout", 30.0, minimum=0.001) or 30.0,
            connect_timeout=settings.take_float("connect_timeout", 10.0, minimum=0.001) or 10.0,
            heartbeat=settings.take_int("heartbeat", 60, minimum=0) or 0,
            connection_name=settings.take_str("connection_name", f"notifykit {settings.name}") or settings.name,
            ssl_context=_take_tls(settings),
        )
        for topic in settings.topics:
            if not topic or any(c in topic for c in "#*"):
                raise ConfigError(f"topic {topic!r} of transport {settings.name!r} ({url.redacted}) "
                                  "must be a non-empty name without '#' or '*'")
        return options

    def connection_url(self, host: str, port: int, scheme: str) -> URL:
        query = {"heartbeat": str(self.heartbeat), "name": self.connection_name}
        return URL.build(scheme=scheme, host=host, port=port, user=self.username, password=self.password,
                         path="/" + self.vhost, query=query)


def _take_tls(settings: TransportSettings) -> ssl.SSLContext | None:
    """The TLS context for ``amqps://``, built here so a bad file is a ConfigError up front."""
    where = f"transport {settings.name!r} ({settings.url.redacted})"
    ca_file = settings.take_str("ca_file") or settings.take_str("cafile")
    certfile = settings.take_str("certfile")
    keyfile = settings.take_str("keyfile")
    verify = settings.take_bool("verify", True)
    if settings.url.scheme != "amqps":
        given = [k for k, v in (("ca_file", ca_file), ("certfile", certfile), ("keyfile", keyfile)) if v]
        if given:
            raise ConfigError(f"option(s) {', '.join(given)} of {where} need an amqps:// URL")
        return None
    for key, path in (("ca_file", ca_file), ("certfile", certfile), ("keyfile", keyfile)):
        if path is not None and not os.path.isfile(path):
            raise ConfigError(f"option {key!r} of {where}: no such file {path!r}")
    if keyfile and not certfile:
        raise ConfigError(f"option 'keyfile' of {where} needs 'certfile' too")
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
        if certfile:
            context.load_cert_chain(certfile, keyfile)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(f"TLS files of {where} cannot be loaded: {exc}") from None
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class AmqpTransport(Transport):
    """Publishes to a RabbitMQ topic exchange with pipelined publisher confirms."""

    default_format: ClassVar[WireFormat] = WireFormat.OSLO
    max_batch_size = 2500

    def __init__(self, settings: TransportSettings, options: AmqpOptions) -> None:
        super().__init__(settings)
        self.options = options
        self._connection: aio_pika.abc.AbstractConnection | None = None
        # One channel per topic: aiormq matches returned messages by message_id per channel.
        self._channels: list[tuple[str, aiormq.Channel]] = []
        self._declared: set[str] = set()
        self._broken = False
        self.connects = 0

    @classmethod
    def from_settings(cls, settings: TransportSettings) -> Self:
        options = AmqpOptions.take(settings)
        settings.finish()
        return cls(settings, options)

    # -- connection --------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        """Belt and braces (aiormq already censors URLs): no library message may carry the password."""
        password = self.options.password
        if not password:
            return text
        text = text.replace(f":{password}@", ":***@")
        return text.replace(password, "***") if len(password) >= 4 else text

    def _describe(self, exc: BaseException) -> str:
        return self._scrub(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)

    @property
    def connected(self) -> bool:
        return (not self._broken and self._connection is not None and not self._connection.is_closed
                and bool(self._channels) and not any(channel.is_closed for _, channel in self._channels))

    async def _connect(self) -> aio_pika.abc.AbstractConnection:
        """Try each host in turn; TransientError when none answers."""
        errors = []
        for host, port in self.options.hosts:
            url = self.options.connection_url(host, port, self.settings.url.scheme)
            try:
                return await aio_pika.connect(url, ssl_context=self.options.ssl_context,
                                              timeout=self.options.connect_timeout)
            except (aiormq.exceptions.ProbableAuthenticationError, aiormq.exceptions.AuthenticationError) as exc:
                errors.append(f"{host}:{port}: authentication refused ({self._describe(exc)})")
            except (TimeoutError, OSError, aiormq.exceptions.AMQPError, ssl.SSLError) as exc:
                errors.append(f"{host}:{port}: {self._describe(exc)}")
        raise TransientError(f"cannot connect to {self.settings.url.redacted}: {'; '.join(errors)}")

    async def _ensure_ready(self) -> None:
        if self.connected:
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
        self.connects += 1
        log.info("notifykit amqp %r connected to %s (connection %d)", self.name, self.settings.url.redacted, self.connects)

    async def _declare(self, connection: aio_pika.abc.AbstractConnection, queues: list[str]) -> None:
        """Declare the exchange (no queues) or the ``<topic>.<priority>`` queues bound to it, as oslo does.

        Runs on its own channel: the broker closes a channel that re-declares an existing
        entity with other settings (e.g. oslo's non-durable default), which must not
        disturb publishing. Such an entity is used as it is, with a warning: it exists,
        so messages still reach it.
        """
        exchange, durable = self.options.exchange, self.options.durable
        channel = await _open_channel(connection)
        try:
            if not queues:
                try:
                    await channel.exchange_declare(exchange, exchange_type="topic", durable=durable, auto_delete=False)
                except aiormq.exceptions.ChannelPreconditionFailed as exc:
                    log.warning("notifykit amqp %r: exchange %r exists with other settings than topic/durable=%s; "
                                "publishing to it as it is (%s)", self.name, exchange, durable, self._describe(exc))
            for key in queues:
                try:
                    await channel.queue_declare(key, durable=durable, auto_delete=False)
                except aiormq.exceptions.ChannelPreconditionFailed as exc:
                    log.warning("notifykit amqp %r: queue %r exists with other settings than durable=%s; "
                                "binding it as it is (%s)", self.name, key, durable, self._describe(exc))
                    channel = await _open_channel(connection)
                await channel.queue_bind(key, exchange, routing_key=key)
                self._declared.add(key)
        except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
            what = f"queues {', '.join(queues)}" if queues else f"exchange {exchange!r}"
            self._broken = True
            raise TransientError(f"cannot declare {what}: {self._describe(exc)}") from None
        finally:
            with contextlib.suppress(Exception):
                await channel.close()

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
        tasks = self._publish_all(batch, failures)
        try:
            _, pending = await asyncio.wait([task for _, task in tasks], timeout=self.options.confirm_timeout)
        except BaseException:  # cancelled: stop publishing, the dispatcher owns the batch again
            for _, task in tasks:
                task.cancel()
            raise
        if pending:
            for task in pending:
                task.cancel()
            await asyncio.wait(pending)
        self._outcomes(tasks, pending, failures)
        if failures:
            raise BatchError(failures)

    def _publish_all(self, batch: Sequence[Notification],
                     failures: dict[int, TransientError | PermanentError]) -> list[tuple[int, asyncio.Task[Any]]]:
        """Start one publish per (notification, topic): writes pipelined, confirms awaited later.

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
        create_task = asyncio.get_running_loop().create_task
        tasks: list[tuple[int, asyncio.Task[Any]]] = []
        for index, n, body in bodies:
            properties = aiormq.spec.Basic.Properties(
                content_type=content_type, delivery_mode=delivery_mode, message_id=n.message_id, timestamp=n.timestamp,
            )
            suffix = _PRIORITY_SUFFIX[n.priority]
            for topic, channel in self._channels:
                tasks.append((index, create_task(channel.basic_publish(
                    body, exchange=exchange, routing_key=topic + suffix, properties=properties, mandatory=mandatory,
                    wait=False,  # the confirm is what counts; not waiting for each socket drain halves the wake-ups
                ))))
        return tasks

    def _outcomes(self, tasks: list[tuple[int, asyncio.Task[Any]]], timed_out: set[asyncio.Task[Any]],
                  failures: dict[int, TransientError | PermanentError]) -> None:
        """Record per-index failures (a permanent one wins); drop the connection if it lost messages."""
        broken = False
        for index, task in tasks:
            if task in timed_out:
                error: TransientError | PermanentError = TransientError(
                    f"not confirmed within confirm_timeout={self.options.confirm_timeout}s")
                broken = True
            elif task.cancelled():
                error = TransientError("publish cancelled")
                broken = True
            elif (exc := task.exception()) is None:
                continue
            elif isinstance(exc, aiormq.exceptions.PublishError):
                error = PermanentError(f"unroutable: no queue bound to exchange {self.options.exchange!r} "
                                       f"for routing key {_routing_key(exc)!r} (mandatory)")
            elif isinstance(exc, aiormq.exceptions.DeliveryError):
                error = TransientError("nacked by the broker")
            else:
                error = TransientError(f"connection lost before confirm: {self._describe(exc)}")
                broken = True
            if index not in failures or isinstance(error, PermanentError):
                failures[index] = error
        if broken:
            self._broken = True  # the next send() closes this connection and opens a new one

    async def close(self) -> None:
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


async def _close_quietly(connection: aio_pika.abc.AbstractConnection) -> None:
    try:
        await asyncio.wait_for(connection.close(), timeout=5)
    except Exception as exc:  # a dead connection may fail to close; nothing is lost by that
        log.debug("notifykit amqp: closing a connection failed: %s", type(exc).__name__)
