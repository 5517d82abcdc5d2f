"""The AMQP transport's link to RabbitMQ: one connection, its publishing channels, the exchange and queues.

Against a cluster (several ``host:port`` in the URL) a lost connection is re-opened on the
next node first. A broker that refuses the connection is asked why by replaying the
handshake (aiormq drops the reason). One confirming channel per topic, replaced when the
broker nacks on it (the transport decides when), the whole connection when it is broken.
The exchange and the ``<topic>.<priority>`` queues are checked passively and used as they
are; only a missing one is declared, with oslo.messaging's defaults.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Sequence
from typing import Protocol

import aio_pika
import aio_pika.abc
import aiormq
import aiormq.exceptions
import pamqp.commands
import pamqp.exceptions
import pamqp.frame
import pamqp.header
from pamqp.common import FieldTable
from yarl import URL

from notifykit.transport import ParsedURL, PermanentError, Redactor, TlsOptions, TransientError

__all__ = ["AmqpLink", "LinkOptions", "close_quietly"]

log = logging.getLogger("notifykit.amqp")


class LinkOptions(Protocol):
    """What the link reads of amqp.py's ``AmqpOptions``, described here so this module imports nothing above it."""

    @property
    def hosts(self) -> tuple[tuple[str, int], ...]: ...
    @property
    def username(self) -> str: ...
    @property
    def password(self) -> str: ...
    @property
    def vhost(self) -> str: ...
    @property
    def exchange(self) -> str: ...
    @property
    def quorum(self) -> bool: ...
    @property
    def connect_timeout(self) -> float: ...
    @property
    def tls(self) -> TlsOptions: ...
    @property
    def queue_arguments(self) -> FieldTable: ...
    @property
    def entities_durable(self) -> bool: ...
    def connection_url(self, host: str, port: int, scheme: str) -> URL: ...


class AmqpLink:
    """The connection of one transport and what lives on it; ``classify`` is the transport's."""

    def __init__(self, name: str, url: ParsedURL, topics: Sequence[str], options: LinkOptions,
                 classify: Callable[[BaseException], TransientError | PermanentError]) -> None:
        self.name = name
        self.url = url
        self.topics = tuple(topics)
        self.options = options
        self._classify = classify
        self._ssl_context: ssl.SSLContext | None = None
        self.connection: aio_pika.abc.AbstractConnection | None = None
        # One channel per topic: aiormq matches returned messages by message_id per channel.
        self.channels: list[tuple[str, aiormq.Channel]] = []
        self.declared: set[str] = set()
        self.broken = False
        self.stale_channels = False  # the broker nacked on them: open fresh ones before the next publish
        self._host_index = -1  # the host of the current (or last) connection, in options.hosts
        self.connects = 0
        self.channel_replacements = 0
        self._redactor = Redactor([options.password])
        self._redactor.add_basic(options.username, options.password)
        #: Entities found declared otherwise than we would have: logged once per transport, not per reconnect.
        self._reported: set[str] = set()

    # -- words -------------------------------------------------------------------------

    def scrub(self, text: str) -> str:
        """Belt and braces (aiormq already censors URLs): no library message may carry the password."""
        return self._redactor.redact(text)

    def describe(self, exc: BaseException) -> str:
        return self.scrub(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)

    def reason(self, exc: BaseException) -> str:
        """The broker's reply text (ACCESS_REFUSED - …) without aiormq's tuple wrapping."""
        args = [a for a in exc.args if isinstance(a, str)]
        return self.scrub(args[-1] if args else self.describe(exc))

    # -- connection --------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return (not self.broken and self.connection is not None and not self.connection.is_closed
                and bool(self.channels) and not any(channel.is_closed for _, channel in self.channels))

    @property
    def peer(self) -> str | None:
        """``host:port`` of the node the transport is connected to (None when it is not)."""
        if self.connection is None or self.connection.is_closed or self._host_index < 0:
            return None
        host, port = self.options.hosts[self._host_index]
        return f"{host}:{port}"

    async def _tls_context(self) -> ssl.SSLContext | None:
        """The amqps:// context, loaded once in a worker thread (it reads the CA and key files)."""
        if not self.options.tls.enabled:
            return None
        if self._ssl_context is None:  # the toolkit's loader: a PermanentError naming the transport
            self._ssl_context = await self.options.tls.client_context(f"amqp {self.name!r} {self.url.redacted}")
        return self._ssl_context

    async def connect(self) -> aio_pika.abc.AbstractConnection:
        """Try each host in turn, starting after the one of the last connection (a node that just
        failed is tried last); PermanentError when every broker refused us, TransientError otherwise."""
        ssl_context = await self._tls_context()
        errors: list[str] = []
        refused = 0
        hosts = self.options.hosts
        start = (self._host_index + 1) % len(hosts)
        for index in [*range(start, len(hosts)), *range(start)]:
            host, port = hosts[index]
            url = self.options.connection_url(host, port, self.url.scheme)
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
                error = self._classify(exc)
                if isinstance(error, PermanentError):
                    error = PermanentError(await self._refusal(host, port, exc))
                    refused += 1
                errors.append(f"{host}:{port}: {error}")
        detail = "; ".join(errors)
        if refused == len(self.options.hosts):
            message = (f"AMQP broker refused the connection to {self.url.redacted} (a configuration error: "
                       f"check the URL's user, password and vhost): {detail}")
            log.error("notifykit amqp %r: %s", self.name, message)
            raise PermanentError(message)
        raise TransientError(f"cannot connect to {self.url.redacted}: {detail}")

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
            return self.scrub(reason or "the broker closed the connection during the handshake")
        return str(self._classify(exc))

    async def ensure_ready(self) -> None:
        """Connected, with a publishing channel per topic and the exchange declared (fresh channels
        first if the broker nacked on the old ones)."""
        if self.connected:
            if self.stale_channels:
                await self._replace_channels()
            return
        await self.reset()
        connection = await self.connect()
        try:
            channels = []
            for topic in self.topics:
                channels.append((topic, await _open_channel(connection, confirms=True)))
            await self.declare(connection, [])
        except BaseException:
            await close_quietly(connection)
            raise
        self.connection, self.channels = connection, channels
        self.declared = set()
        self.broken = False
        self.stale_channels = False
        self.connects += 1
        log.info("notifykit amqp %r connected to %s (node %s, connection %d)", self.name, self.url.redacted,
                 self.peer, self.connects)

    async def _replace_channels(self) -> None:
        """Fresh publishing channels on the same connection; the old ones are closed quietly."""
        assert self.connection is not None
        old, self.channels = self.channels, []
        for _, channel in old:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_close_channel(channel), timeout=5)
        try:
            for topic, _ in old:
                self.channels.append((topic, await _open_channel(self.connection, confirms=True)))
        except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
            self.broken = True
            raise TransientError(f"cannot open a channel on node {self.peer}: {self.describe(exc)}") from None
        self.stale_channels = False
        self.channel_replacements += 1

    async def reset(self) -> None:
        connection, self.connection, self.channels = self.connection, None, []
        if connection is not None:
            await close_quietly(connection)

    # -- exchange and queues -----------------------------------------------------------

    async def declare(self, connection: aio_pika.abc.AbstractConnection, queues: list[str]) -> None:
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
                self.declared.add(key)
        except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
            what = f"queues {', '.join(queues)}" if queues else f"exchange {exchange!r}"
            self.broken = True
            error = self._classify(exc)
            raise type(error)(f"cannot declare {what}: {error}") from None

    async def _ensure(self, connection: aio_pika.abc.AbstractConnection, kind: str, name: str) -> None:
        """Passive check of one exchange or queue; declare it with our settings only when it does not exist."""
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
                await self._declare_ours(channel, kind, name)
            except aiormq.exceptions.ChannelPreconditionFailed as exc:
                # Declared by someone else between our check and our declare: theirs stands.
                self._report(kind, name, exc)
        finally:
            await _close_channel(channel)

    async def _declare_ours(self, channel: aiormq.Channel, kind: str, name: str) -> None:
        """Declare an exchange or queue with our settings (oslo's defaults)."""
        durable = self.options.entities_durable
        if kind == "exchange":
            await channel.exchange_declare(name, exchange_type="topic", durable=durable, auto_delete=False)
        else:
            await channel.queue_declare(name, durable=durable, auto_delete=False,
                                        arguments=self.options.queue_arguments or None)

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
        channel = await _open_channel(connection)
        try:
            await self._declare_ours(channel, kind, name)
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
                    ", quorum" if self.options.quorum and kind == "queue" else "", self.reason(exc))


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


async def _handshake_refusal(host: str, port: int, options: LinkOptions, context: ssl.SSLContext | None) -> str | None:
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


async def close_quietly(connection: aio_pika.abc.AbstractConnection) -> None:
    try:
        await asyncio.wait_for(connection.close(), timeout=5)
    except Exception as exc:  # a dead connection may fail to close; nothing is lost by that
        log.debug("notifykit amqp: closing a connection failed: %s", type(exc).__name__)
