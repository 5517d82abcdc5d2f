"""``mqtt://`` and ``mqtts://`` — MQTT 5 publishing with a PUBACK per message, through paho-mqtt.

Each notification goes to ``<topic>/<priority>/<event_type>`` for every configured topic
(the topic is a prefix and may hold ``/``), QoS 1 (``qos=2``: exactly-once handshake),
with MQTT 5 user properties ``event_type``, ``priority``, ``message_id`` and
``traceparent``, the format's content type and, as an option, a message expiry. A
notification counts as sent only once the broker's PUBACK (PUBCOMP) carries a success
reason code: "Not authorized" or "Topic Name invalid" are permanent failures, a quota
or an unspecified error transient ones.

paho-mqtt is used directly, not through aiomqtt: aiomqtt's ``publish()`` awaits the
PUBACK but drops its reason code (a broker refusing the message looks delivered), and its
pending publishes do not survive a reconnect. Here paho's client is driven by the running
asyncio loop (its socket watched with ``add_reader``/``add_writer``) and lives as long as
the transport, so what is in flight when a connection drops stays in its MQTT session
state: the next ``send()`` reconnects with ``clean_start=false`` (the first connection of
a transport starts clean) and paho resends it with the DUP flag, while the retried
notifications wait for that same PUBACK instead of being published twice. At most
``min(max_inflight, the broker's Receive Maximum)`` publishes are unacknowledged at any
time; the rest of a batch waits here, not in paho.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import anyio.to_thread
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

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

__all__ = ["MqttOptions", "MqttTransport", "topic_name"]

log = logging.getLogger("notifykit.mqtt")

_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
#: Reason codes (CONNACK, PUBACK/PUBCOMP, SUBACK) that a retry cannot change: refused
#: credentials or permissions, a bad topic, a packet or QoS the broker will never take.
_PERMANENT_CODES = frozenset({0x81, 0x82, 0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C, 0x8F, 0x90, 0x95, 0x99, 0x9A, 0x9B, 0x9E})
_SUCCESS = MQTTErrorCode.MQTT_ERR_SUCCESS
_NO_CONN = MQTTErrorCode.MQTT_ERR_NO_CONN


@dataclass(frozen=True, slots=True)
class MqttOptions:
    """Everything the URL says, checked once, when the Notifier is built."""

    hosts: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None = field(repr=False)
    topics: tuple[str, ...]
    qos: int
    message_expiry: int | None
    session_expiry: int
    max_inflight: int
    client_id: str
    #: the client id was generated (not configured): no earlier session can exist under it
    generated_id: bool
    keepalive: int
    connect_timeout: float
    confirm_timeout: float
    tls: TlsOptions

    @classmethod
    def from_settings(cls, settings: TransportSettings) -> Self:
        url = settings.url
        where = f"transport {settings.name!r} ({url.redacted})"
        if url.scheme not in _DEFAULT_PORTS:
            raise ConfigError(f"MQTT URL {url.redacted!r}: scheme must be mqtt or mqtts")
        if url.path not in ("", "/"):
            raise ConfigError(f"{where}: an MQTT URL takes no path; name the topic prefix with ?topic=PREFIX")
        port = _DEFAULT_PORTS[url.scheme]
        hosts = tuple((h.host or "127.0.0.1", h.port or port) for h in url.hosts) or (("127.0.0.1", port),)
        for topic in settings.topics:
            if not topic or topic.startswith(("$", "/")) or topic.endswith("/") or any(c in topic for c in "+#\0"):
                raise ConfigError(f"topic {topic!r} of {where} must be a topic prefix without '+', '#', a leading "
                                  "'$' or '/', or a trailing '/' (messages go to <topic>/<priority>/<event_type>)")
        qos = int(settings.take_choice("qos", ("1", "2"), "1"))
        expiry = settings.take_int("message_expiry", 0, minimum=0) or None
        configured_id = settings.take_str("client_id")
        client_id = configured_id or f"notifykit-{settings.name}-{secrets.token_hex(6)}"
        if len(client_id.encode()) > 65535 or "\0" in client_id:
            raise ConfigError(f"option 'client_id' of {where} must be a UTF-8 string of at most 65535 bytes")
        return cls(
            hosts=hosts,
            username=url.username,
            password=url.password,
            topics=tuple(settings.topics),
            qos=qos,
            message_expiry=expiry,
            session_expiry=_int(settings, "session_expiry", 300, 0),
            max_inflight=min(_int(settings, "max_inflight", 1000, 1), 65535),
            client_id=client_id,
            generated_id=not configured_id,
            keepalive=_int(settings, "keepalive", 60, 5),
            connect_timeout=settings.take_float("connect_timeout", 10.0, minimum=0.001) or 10.0,
            confirm_timeout=settings.take_float("confirm_timeout", 30.0, minimum=0.001) or 30.0,
            tls=settings.take_tls(enabled=url.scheme == "mqtts"),
        )


def _int(settings: TransportSettings, key: str, default: int, minimum: int) -> int:
    value = settings.take_int(key, default, minimum=minimum)
    assert value is not None
    return value


def topic_name(prefix: str, n: Notification) -> str:
    """Where ``n`` goes: ``<prefix>/<priority>/<event_type>`` (subscribe ``<prefix>/error/#`` for errors)."""
    return f"{prefix}/{n.priority.value}/{n.event_type}"


def _properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]


def _reason(code: ReasonCode) -> str:
    return f"{code.getName()} (0x{code.value:02X})"


class _Link:
    """One paho client driven by the running asyncio loop (not a thread of its own).

    Its socket is watched with ``add_reader``/``add_writer`` and the keepalive run by
    ``loop_misc()`` once a second; connecting (DNS, TCP, TLS handshake: blocking in paho)
    runs in a worker thread. The client outlives its connections: its unacknowledged
    QoS 1/2 messages are the session state that paho resends after a reconnect.
    """

    def __init__(self, options: MqttOptions, client_id: str, context: ssl.SSLContext | None,
                 on_publish: paho.CallbackOnPublish | None = None, *, fresh_id: bool) -> None:
        self.loop = asyncio.get_running_loop()
        self.fresh_id = fresh_id
        self._thread = threading.get_ident()
        self.options = options
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5,
                             reconnect_on_failure=False)
        client.connect_timeout = options.connect_timeout
        client.max_inflight_messages_set(0)  # the window is ours (see send()); paho's rescans its queue per ack
        if options.username is not None:
            client.username_pw_set(options.username, options.password)
        if context is not None:
            client.tls_set_context(context)
            if not options.tls.verify:
                client.tls_insecure_set(True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = on_publish
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        self.client = client
        self.connected = False
        self.ever_connected = False
        self.lost: asyncio.Future[str] = self.loop.create_future()
        self._connack: asyncio.Future[tuple[bool, ReasonCode, Properties]] | None = None
        self.receive_maximum = 65535
        self.maximum_qos = 2
        self.session_present = False
        self.connecting = False
        self._misc = self.loop.create_task(self._misc_loop())

    def _in_loop(self, callback: Callable[..., None], *args: Any) -> None:
        if threading.get_ident() == self._thread:
            callback(*args)
        else:
            self.loop.call_soon_threadsafe(callback, *args)

    # paho's callbacks -------------------------------------------------------------------

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self.loop.add_reader, sock.fileno(), self._readable)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        fileno = sock.fileno()
        if fileno >= 0:
            self._in_loop(self._forget, fileno)

    def _forget(self, fileno: int) -> None:
        self.loop.remove_reader(fileno)
        self.loop.remove_writer(fileno)

    def _on_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self.loop.add_writer, sock.fileno(), self._writable)

    def _on_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._unwatch_write, sock.fileno())

    def _unwatch_write(self, fileno: int) -> None:
        self.loop.remove_writer(fileno)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: paho.ConnectFlags, code: ReasonCode,
                    properties: Properties | None) -> None:
        self._in_loop(self._connected, flags.session_present, code, properties or _properties(PacketTypes.CONNACK))

    def _connected(self, session_present: bool, code: ReasonCode, properties: Properties) -> None:
        if self._connack is not None and not self._connack.done():
            self._connack.set_result((session_present, code, properties))

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: paho.DisconnectFlags, code: ReasonCode,
                       properties: Properties | None) -> None:
        self._in_loop(self._lost, "the broker closed the connection: " + _reason(code) if flags.is_disconnect_packet_from_server
                      else f"connection lost ({code.getName()})")

    def _lost(self, why: str) -> None:
        self.connected = False
        if not self.lost.done():
            self.lost.set_result(why)

    def _readable(self) -> None:
        client = self.client
        try:
            rc = client.loop_read()
            sock = client.socket()
            while rc == _SUCCESS and isinstance(sock, ssl.SSLSocket) and sock.pending():  # TLS buffers whole records
                rc = client.loop_read()
            if rc == _SUCCESS and client.want_write():
                # The publishes the PUBACKs just read made room for go out now, not one loop
                # iteration (and every other task's turn) later: the window is latency-bound.
                client.loop_write()
        except Exception as exc:  # a callback's bug, or paho's: the connection is not usable any more
            log.warning("notifykit mqtt: reading from the broker failed: %s: %s", type(exc).__name__, exc)
            self._lost(f"read failed: {type(exc).__name__}")

    def flush(self) -> None:
        """Write what paho has queued, as far as the socket takes it (the rest when writable)."""
        if self.client.want_write():
            self._writable()

    def _writable(self) -> None:
        try:
            self.client.loop_write()
        except Exception as exc:
            self._lost(f"write failed: {type(exc).__name__}")

    async def _misc_loop(self) -> None:
        while True:
            await asyncio.sleep(1)
            if self.client.socket() is not None and not self.connecting:  # not while a worker thread connects
                self.client.loop_misc()  # PINGREQ, and a connection closed when no PINGRESP came

    # connecting --------------------------------------------------------------------------

    async def connect(self, host: str, port: int, session_expiry: int) -> None:
        """Open a connection and wait for a successful CONNACK; raises OSError, TimeoutError or
        ``_Refused``. Later connections resume the session (``clean_start=false``); the first
        one starts clean only under a configured client id, whose old session (a crashed
        process's QoS 2 packet ids) could swallow new publishes. A generated id has no old
        session, and Mosquitto persists only the sessions of clients that did not start clean."""
        properties = _properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = session_expiry
        clean = not self.ever_connected and not self.fresh_id
        self._connack = self.loop.create_future()
        self.lost = self.loop.create_future()
        self.connecting = True
        try:
            await anyio.to_thread.run_sync(lambda: self.client.connect(
                host, port, self.options.keepalive, clean_start=clean, properties=properties))
        finally:
            self.connecting = False
        session_present, code, props = await asyncio.wait_for(self._connack, self.options.connect_timeout)
        if code.is_failure:
            raise _Refused(code)
        self.connected = self.ever_connected = True
        self.session_present = session_present
        self.receive_maximum = int(getattr(props, "ReceiveMaximum", 65535))
        self.maximum_qos = int(getattr(props, "MaximumQoS", 2))

    async def close(self, drop_session: bool) -> None:
        """DISCONNECT (with a session expiry of 0 when nothing is left in flight), then stop watching."""
        try:
            if self.connected:
                properties = _properties(PacketTypes.DISCONNECT)
                if drop_session:
                    properties.SessionExpiryInterval = 0
                self.client.disconnect(properties=properties)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self.lost), 5)
        finally:
            self._misc.cancel()
            sock = self.client.socket()
            if sock is not None:
                self._forget(sock.fileno())
                sock.close()


class _PackedProperties(Properties):
    """PUBLISH properties encoded once, here: paho's Properties builds its name tables for
    every instance and encodes through them, the larger part of a publish's cost, while
    paho only ever calls ``pack()`` on the properties it publishes."""

    def __init__(self, packed: bytes) -> None:  # not Properties.__init__: no tables needed
        self.__dict__["packed"] = _varint(len(packed)) + packed

    def pack(self) -> bytes:
        return self.__dict__["packed"]  # type: ignore[no-any-return]

    def __str__(self) -> str:
        return f"<{len(self.__dict__['packed'])} bytes of properties>"

    __repr__ = __str__


def _utf8(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def _user_property(name: str, value: str) -> bytes:
    return b"\x26" + _utf8(name) + _utf8(value)


def _varint(value: int) -> bytes:
    """MQTT's Variable Byte Integer (the length of the properties)."""
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


_PRIORITY_PROPERTIES = {p: _user_property("priority", p.value) for p in Priority}


class _Refused(Exception):
    def __init__(self, code: ReasonCode) -> None:
        super().__init__(_reason(code))
        self.code = code


class MqttTransport(Transport):
    """Publishes each notification with QoS 1 (or 2) and counts it sent on its PUBACK."""

    default_format: ClassVar[WireFormat] = WireFormat.JSON
    max_batch_size = 500
    Options = MqttOptions
    options: MqttOptions

    def __init__(self, settings: TransportSettings, options: MqttOptions) -> None:
        super().__init__(settings, options)
        self._link: _Link | None = None
        self._ssl_context: ssl.SSLContext | None = None
        self._host_index = -1
        self._window = 1
        #: (topic, message_id) of a publish in flight -> its PUBACK's reason code; a retried
        #: notification waits on this future instead of being published again.
        self._in_session: dict[tuple[str, str], asyncio.Future[ReasonCode]] = {}
        self._sent: dict[int, tuple[tuple[str, str], asyncio.Future[ReasonCode]]] = {}  # paho mid -> (key, future)
        self._backlog: collections.deque[tuple[tuple[str, str], bytes, Properties, asyncio.Future[ReasonCode]]] = \
            collections.deque()
        self._redactor = Redactor([options.password] if options.password else [])
        # Payload Format Indicator 1 (UTF-8: all three wire formats are JSON text), Content
        # Type, Message Expiry Interval: the same for every message of this transport.
        expiry = b"\x02" + options.message_expiry.to_bytes(4, "big") if options.message_expiry else b""
        self._fixed_properties = b"\x01\x01" + expiry + b"\x03" + _utf8(self.format.content_type)
        self.connects = 0

    def _where(self) -> str:
        return f"MQTT {self.settings.url.redacted}"

    def classify(self, exc: BaseException) -> TransientError | PermanentError:
        """A refused CONNACK / a failing reason code: permanent when retrying cannot change it;
        a certificate that does not verify too; anything else (refused, reset, timeout) transient."""
        if isinstance(exc, _Refused):
            kind = PermanentError if exc.code.value in _PERMANENT_CODES else TransientError
            return kind(f"{self._where()}: the broker refused the connection: {exc}")
        if isinstance(exc, ssl.SSLCertVerificationError):
            return PermanentError(f"{self._where()}: TLS: {self._redactor.redact(str(exc))}")
        if isinstance(exc, TimeoutError):
            return TransientError(f"{self._where()}: no CONNACK within connect_timeout={self.options.connect_timeout:g}s")
        text = self._redactor.redact(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        return TransientError(f"{self._where()}: {text}")

    def _outcome(self, code: ReasonCode) -> TransientError | PermanentError | None:
        if not code.is_failure:  # 0x10 "No matching subscribers" is a success: the broker took it
            return None
        kind = PermanentError if code.value in _PERMANENT_CODES else TransientError
        return kind(f"{self._where()}: the broker answered {_reason(code)}")

    # connection --------------------------------------------------------------------------

    async def _tls_context(self) -> ssl.SSLContext | None:
        if not self.options.tls.enabled:
            return None
        if self._ssl_context is None:
            try:
                self._ssl_context = await anyio.to_thread.run_sync(self.options.tls.load_context)
            except (OSError, ValueError) as exc:
                raise PermanentError(f"TLS files of transport {self.name!r} ({self.settings.url.redacted}) "
                                     f"cannot be loaded: {exc}") from None
        return self._ssl_context

    async def _ensure_connected(self) -> _Link:
        link = self._link
        if link is not None and link.connected:
            return link
        if link is None:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                raise PermanentError("the mqtt transport runs on anyio's asyncio backend only "
                                     "(paho-mqtt is driven by the asyncio event loop)") from None
            link = self._link = _Link(self.options, self.options.client_id, await self._tls_context(), self._on_publish,
                                      fresh_id=self.options.generated_id)
        hosts = self.options.hosts
        errors: list[str] = []
        for attempt in range(len(hosts)):  # starting after the host of the last connection (it just failed)
            index = (self._host_index + 1 + attempt) % len(hosts)
            host, port = hosts[index]
            try:
                await link.connect(host, port, self.options.session_expiry)
            except (OSError, TimeoutError, _Refused, ValueError) as exc:
                error = self.classify(exc)
                if isinstance(error, PermanentError) and len(hosts) == 1:
                    raise error from None
                errors.append(str(error) if len(hosts) == 1 else f"{host}:{port}: {error}")
                continue
            self._host_index = index
            break
        else:
            raise TransientError("; ".join(errors))
        if link.maximum_qos < self.options.qos:
            raise PermanentError(f"{self._where()}: the broker takes QoS {link.maximum_qos} at most; set qos=1")
        self._window = max(1, min(self.options.max_inflight, link.receive_maximum))
        self.connects += 1
        log.info("notifykit mqtt %r connected to %s (%s, in-flight window %d)", self.name, self.settings.url.redacted,
                 "session resumed" if link.session_present else "new session", self._window)
        self._pump()  # after a reconnect paho resent what was in flight; the backlog follows
        return link

    # sending -----------------------------------------------------------------------------

    def _properties(self, n: Notification) -> Properties:
        """User properties event_type, priority, message_id (and traceparent), after the fixed ones."""
        packed = self._fixed_properties + _PRIORITY_PROPERTIES[n.priority] + _user_property("event_type", n.event_type) \
            + _user_property("message_id", n.message_id)
        if n.context.traceparent:
            packed += _user_property("traceparent", n.context.traceparent)
        return _PackedProperties(packed)

    def _pump(self) -> None:
        """Hand queued publishes to paho while fewer than the window are unacknowledged."""
        link = self._link
        if link is None:
            return
        backlog, sent, window = self._backlog, self._sent, self._window
        while backlog and len(sent) < window and link.connected:
            key, body, properties, future = backlog.popleft()
            try:
                info = link.client.publish(key[0], body, self.options.qos, properties=properties)
            except ValueError as exc:  # a topic or payload paho refuses to encode
                self._in_session.pop(key, None)
                future.set_exception(PermanentError(f"{self._where()}: {exc}"))
                continue
            if info.rc not in (_SUCCESS, _NO_CONN):  # NO_CONN: kept by paho, sent on the reconnect
                self._in_session.pop(key, None)
                future.set_exception(TransientError(f"{self._where()}: {paho.error_string(info.rc)}"))
                continue
            sent[info.mid] = (key, future)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, code: ReasonCode, properties: Properties) -> None:
        entry = self._sent.pop(mid, None)
        if entry is not None:
            key, future = entry
            self._in_session.pop(key, None)
            if not future.done():
                future.set_result(code)
        if self._backlog:
            self._pump()

    async def open(self) -> None:
        await self._ensure_connected()

    async def send(self, batch: Sequence[Notification]) -> None:
        link = await self._ensure_connected()
        fmt, loop = self.format, link.loop
        failures: dict[int, TransientError | PermanentError] = {}
        waits: list[tuple[int, asyncio.Future[ReasonCode]]] = []
        for index, n in enumerate(batch):
            try:
                body = n.encode(fmt)
            except Exception as exc:
                failures[index] = PermanentError(f"cannot encode as {fmt.value}: {type(exc).__name__}: {exc}")
                continue
            properties: Properties | None = None
            for prefix in self.options.topics:
                key = (topic_name(prefix, n), n.message_id)
                future = self._in_session.get(key)
                if future is None:
                    properties = properties or self._properties(n)
                    future = self._in_session[key] = loop.create_future()
                    self._backlog.append((key, body, properties, future))
                waits.append((index, future))
        self._pump()
        link.flush()
        pending = {future for _, future in waits if not future.done()}
        try:
            why = await self._wait(link, pending) if pending else None
        except BaseException:  # cancelled: nothing more is published for this batch
            self._abandon_backlog("send() was cancelled")
            raise
        if why is not None:
            self._abandon_backlog(why)
        for index, future in waits:
            if not future.done():
                error: TransientError | PermanentError | None = TransientError(f"{self._where()}: no PUBACK: {why}")
            elif (failure := future.exception()) is not None:
                error = failure if isinstance(failure, TransientError | PermanentError) else self.classify(failure)
            else:
                error = self._outcome(future.result())
            if error is not None and (index not in failures or isinstance(error, PermanentError)):
                failures[index] = error
        if not failures:
            return
        first = failures[min(failures)]
        if len(failures) == len(batch) and isinstance(first, TransientError) \
                and all(isinstance(e, TransientError) for e in failures.values()):
            raise first
        raise BatchError(failures)

    async def _wait(self, link: _Link, pending: set[asyncio.Future[ReasonCode]]) -> str | None:
        """Wait for every PUBACK, the connection's loss or confirm_timeout; None when all came."""
        all_done: asyncio.Future[None] = link.loop.create_future()

        def one_done(future: asyncio.Future[ReasonCode]) -> None:
            pending.discard(future)
            if not pending and not all_done.done():
                all_done.set_result(None)

        for future in pending:
            future.add_done_callback(one_done)
        try:
            waiting: list[asyncio.Future[Any]] = [all_done, link.lost]
            done, _ = await asyncio.wait(waiting, timeout=self.options.confirm_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in list(pending):
                future.remove_done_callback(one_done)
            all_done.cancel()
        if all_done in done:
            return None
        if link.lost in done:
            return f"{link.lost.result()}; what was in flight is resent from the session on reconnect"
        link.connected = False  # a broker that stopped answering: the next send() reconnects, paho resends
        return f"not acknowledged within confirm_timeout={self.options.confirm_timeout:g}s"

    def _abandon_backlog(self, why: str) -> None:
        """Publishes never handed to paho are not in the session: fail them (the dispatcher
        retries them as new publishes) instead of sending them later behind its back."""
        while self._backlog:
            key, _, _, future = self._backlog.popleft()
            self._in_session.pop(key, None)
            if not future.done():
                future.set_exception(TransientError(f"{self._where()}: not published: {why}"))
                future.exception()  # retrieved: nobody waits on it any more

    async def aclose(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            await link.close(drop_session=not self._sent)

    # tail --------------------------------------------------------------------------------

    @classmethod
    async def tail(cls, settings: TransportSettings) -> AsyncIterator[bytes]:
        """Subscribe ``<topic>/#`` for every topic on a clean, session-less connection of its own
        and yield payloads; MQTT subscriptions fan out, so other subscribers miss nothing."""
        transport = cls.from_settings(settings)
        options = transport.options
        link = _Link(options, f"notifykit-tail-{secrets.token_hex(6)}", await transport._tls_context(), fresh_id=False)
        received: asyncio.Queue[bytes] = asyncio.Queue()
        subscribed: asyncio.Future[list[ReasonCode]] = link.loop.create_future()
        link.client.on_message = lambda client, userdata, message: received.put_nowait(bytes(message.payload))
        link.client.on_subscribe = lambda client, userdata, mid, codes, properties: (
            None if subscribed.done() else subscribed.set_result(list(codes)))
        host, port = options.hosts[0]
        getter: asyncio.Future[bytes] | None = None
        try:
            await link.connect(host, port, 0)
            link.client.subscribe([(f"{topic}/#", SubscribeOptions(qos=options.qos)) for topic in options.topics])
            codes = await asyncio.wait_for(subscribed, options.connect_timeout)
            refused = [code for code in codes if code.is_failure]
            if refused:
                raise transport._outcome(refused[0]) or TransientError("subscription refused")
            while True:
                getter = asyncio.ensure_future(received.get())
                waiting: list[asyncio.Future[Any]] = [getter, link.lost]
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    raise TransientError(f"tail of {settings.url.redacted} stopped: {link.lost.result()}")
                yield getter.result()
        except (OSError, TimeoutError, _Refused) as exc:
            raise transport.classify(exc) from None
        finally:
            if getter is not None:
                getter.cancel()
            await link.close(drop_session=True)

    def __repr__(self) -> str:
        return f"<MqttTransport {self.name!r} {self.settings.url.redacted} qos={self.options.qos}>"
