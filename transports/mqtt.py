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
time; the rest of a batch waits here, not in paho. That client, its asyncio driver and the
in-flight window are in ``_mqtt_session`` and ``_mqtt_window``; this module is the
transport's usual shape.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from notifykit.transport import (
    AsyncApiRoutes,
    BatchError,
    ConfigError,
    Notification,
    PermanentError,
    Priority,
    Redactor,
    Route,
    TlsOptions,
    TransientError,
    Transport,
    TransportSettings,
    WireFormat,
)

from ._mqtt_session import Link, Refused, reason
from ._mqtt_window import PRIORITY_PROPERTIES, Batch, PackedProperties, Window, user_property, utf8

__all__ = ["MqttOptions", "MqttTransport", "topic_name"]

log = logging.getLogger("notifykit.mqtt")

_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
#: Reason codes (CONNACK, PUBACK/PUBCOMP, SUBACK) that a retry cannot change: refused
#: credentials or permissions, a bad topic, a packet or QoS the broker will never take.
_PERMANENT_CODES = frozenset({0x81, 0x82, 0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C, 0x8F, 0x90, 0x95, 0x99, 0x9A, 0x9B, 0x9E})


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


class MqttTransport(Transport):
    """Publishes each notification with QoS 1 (or 2) and counts it sent on its PUBACK."""

    default_format: ClassVar[WireFormat] = WireFormat.JSON
    max_batch_size = 500
    Options = MqttOptions
    options: MqttOptions
    messaging_system: ClassVar[str | None] = "mqtt"
    asyncapi_protocols: ClassVar[Mapping[str, str]] = {"mqtt": "mqtt", "mqtts": "secure-mqtt"}

    def asyncapi_routes(self, events: Sequence[tuple[str, Priority]]) -> AsyncApiRoutes:
        """A channel per MQTT topic ``<topic>/<priority>/<event_type>``."""
        return AsyncApiRoutes(tuple(Route(f"{topic}/{priority.value}/{event}", (event,))
                                    for topic in self.options.topics for event, priority in events))

    def __init__(self, settings: TransportSettings, options: MqttOptions) -> None:
        super().__init__(settings, options)
        self._link: Link | None = None
        self._ssl_context: ssl.SSLContext | None = None
        self._host_index = -1
        self._flight = Window(options.qos, self._encode, self._where)
        self._redactor = Redactor([options.password] if options.password else [])
        # Payload Format Indicator 1 (UTF-8: all three wire formats are JSON text), Content
        # Type, Message Expiry Interval: the same for every message of this transport.
        expiry = b"\x02" + options.message_expiry.to_bytes(4, "big") if options.message_expiry else b""
        self._fixed_properties = b"\x01\x01" + expiry + b"\x03" + utf8(self.format.content_type)
        self.connects = 0

    def _where(self) -> str:
        return f"MQTT {self.settings.url.redacted}"

    def classify(self, exc: BaseException) -> TransientError | PermanentError:
        """A refused CONNACK / a failing reason code: permanent when retrying cannot change it;
        a certificate that does not verify too; anything else (refused, reset, timeout) transient."""
        if isinstance(exc, Refused):
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
        return kind(f"{self._where()}: the broker answered {reason(code)}")

    # connection --------------------------------------------------------------------------

    async def _tls_context(self) -> ssl.SSLContext | None:
        if not self.options.tls.enabled:
            return None
        if self._ssl_context is None:  # the toolkit's loader: a PermanentError naming the transport
            self._ssl_context = await self.options.tls.client_context(self._where())
        return self._ssl_context

    async def _ensure_connected(self) -> Link:
        link = self._link
        if link is not None and link.connected:
            return link
        if link is None:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                raise PermanentError("the mqtt transport runs on anyio's asyncio backend only "
                                     "(paho-mqtt is driven by the asyncio event loop)") from None
            link = self._link = Link(self.options, self.options.client_id, await self._tls_context(),
                                     self._flight.on_publish, fresh_id=self.options.generated_id)
        hosts = self.options.hosts
        errors: list[str] = []
        for attempt in range(len(hosts)):  # starting after the host of the last connection (it just failed)
            index = (self._host_index + 1 + attempt) % len(hosts)
            host, port = hosts[index]
            try:
                await link.connect(host, port, self.options.session_expiry)
            except (OSError, TimeoutError, Refused, ValueError) as exc:
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
        self.connects += 1
        # after a reconnect paho resent what was in flight; the backlog follows
        self._flight.connected(link, max(1, min(self.options.max_inflight, link.receive_maximum)))
        log.info("notifykit mqtt %r connected to %s (%s, in-flight window %d)", self.name, self.settings.url.redacted,
                 "session resumed" if link.session_present else "new session", self._flight.size)
        return link

    # sending -----------------------------------------------------------------------------

    def _encode(self, n: Notification) -> tuple[bytes, Properties]:
        """The body, and the user properties event_type, priority, message_id (and traceparent)
        after the fixed ones; called by the Window when there is room for ``n``."""
        try:
            body = n.encode(self.format)
            packed = self._fixed_properties + PRIORITY_PROPERTIES[n.priority] + \
                user_property("event_type", n.event_type) + user_property("message_id", n.message_id)
            if n.context.traceparent:
                packed += user_property("traceparent", n.context.traceparent)
        except Exception as exc:
            raise PermanentError(f"cannot encode as {self.format.value}: {type(exc).__name__}: {exc}") from None
        return body, PackedProperties(packed)

    async def open(self) -> None:
        await self._ensure_connected()

    async def send(self, batch: Sequence[Notification]) -> None:
        link = await self._ensure_connected()
        flight, topics = self._flight, self.options.topics
        waiting = Batch(link.loop)
        publishes = [(index, flight.add(topic_name(prefix, n), n, waiting))
                     for index, n in enumerate(batch) for prefix in topics]
        flight.pump()
        link.flush()
        why: str | None = None
        if not waiting.done.done():
            try:
                why = await self._wait(link, waiting.done)
            except BaseException:  # cancelled: nothing more is published for this batch
                flight.abandon("send() was cancelled")
                raise
        if why is not None:
            flight.abandon(why)
        failures: dict[int, TransientError | PermanentError] = {}
        for index, publish in publishes:
            outcome = publish.outcome
            if isinstance(outcome, ReasonCode):
                error = self._outcome(outcome)
            else:
                error = outcome or TransientError(f"{self._where()}: no PUBACK: {why}")
            if error is not None and (index not in failures or isinstance(error, PermanentError)):
                failures[index] = error
        if not failures:
            return
        first = failures[min(failures)]
        if len(failures) == len(batch) and isinstance(first, TransientError) \
                and all(isinstance(e, TransientError) for e in failures.values()):
            raise first
        raise BatchError(failures)

    async def _wait(self, link: Link, done: asyncio.Future[None]) -> str | None:
        """Wait for every PUBACK, the connection's loss or confirm_timeout; None when all came."""
        waiting: list[asyncio.Future[Any]] = [done, link.lost]
        finished, _ = await asyncio.wait(waiting, timeout=self.options.confirm_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        if done in finished:
            return None
        if link.lost in finished:
            return f"{link.lost.result()}; what was in flight is resent from the session on reconnect"
        link.connected = False  # a broker that stopped answering: the next send() reconnects, paho resends
        return f"not acknowledged within confirm_timeout={self.options.confirm_timeout:g}s"

    async def aclose(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            await link.close(drop_session=not self._flight.sent)

    # tail --------------------------------------------------------------------------------

    @classmethod
    async def tail(cls, settings: TransportSettings) -> AsyncIterator[bytes]:
        """Subscribe ``<topic>/#`` for every topic on a clean, session-less connection of its own
        and yield payloads; MQTT subscriptions fan out, so other subscribers miss nothing."""
        transport = cls.from_settings(settings)
        options = transport.options
        link = Link(options, f"notifykit-tail-{secrets.token_hex(6)}", await transport._tls_context(), fresh_id=False)
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
        except (OSError, TimeoutError, Refused) as exc:
            raise transport.classify(exc) from None
        finally:
            if getter is not None:
                getter.cancel()
            await link.close(drop_session=True)

    def __repr__(self) -> str:
        return f"<MqttTransport {self.name!r} {self.settings.url.redacted} qos={self.options.qos}>"
