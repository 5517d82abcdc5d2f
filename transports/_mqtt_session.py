"""The MQTT transport's client session: one paho client driven by the asyncio loop.

``Link`` is one paho client whose socket the running event loop watches; it outlives its
connections, so its unacknowledged QoS 1/2 messages are the MQTT session state that paho
resends after a reconnect. The flow control on top of it is ``_mqtt_window``. Private to
:mod:`notifykit.transports.mqtt`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any, Protocol

import anyio.to_thread
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MessageState, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from notifykit.transport import TlsOptions

log = logging.getLogger("notifykit.mqtt")

_SUCCESS = MQTTErrorCode.MQTT_ERR_SUCCESS
#: Linux: ACK what was read at once. Mosquitto leaves Nagle on, so once we stop answering a
#: PUBACK with a PUBLISH (the end of a batch) each further PUBACK waited for our delayed ACK (40 ms).
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


def properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]


def reason(code: ReasonCode) -> str:
    return f"{code.getName()} (0x{code.value:02X})"


class Refused(Exception):
    """A CONNACK with a failing reason code."""

    def __init__(self, code: ReasonCode) -> None:
        super().__init__(reason(code))
        self.code = code


class _Client(paho.Client):
    """paho's client with two QoS 2 fixes (paho 2.x private methods; its tests pin them down).

    * A PUBREC with a failing reason code ends the exchange (MQTT 5, 4.3.3): paho ignores
      that code and sends PUBREL, and Mosquitto 2.0 answers a PUBREL for a message it refused
      with PUBCOMP *Success*, so a message refused with ``Not authorized`` or ``Quota
      exceeded`` counted as delivered. Here the PUBREC is its outcome, reported as a PUBCOMP.
    * A message awaiting PUBCOMP stays one to resend PUBREL for over failed reconnect attempts:
      paho resets the message states at every attempt, and its second reset turned "resend
      PUBREL" into a new PUBLISH without DUP, which Mosquitto booked a second time (a Receive
      Maximum slot lost for good: later publishes were refused with ``Quota exceeded``).
    """

    def _messages_reconnect_reset_out(self) -> None:
        with self._out_message_mutex:
            pubrel = [m for m in self._out_messages.values() if m.state == MessageState.MQTT_MS_RESEND_PUBREL]
            super()._messages_reconnect_reset_out()
            if not self._check_clean_session():
                for message in pubrel:
                    message.state = MessageState.MQTT_MS_RESEND_PUBREL

    def _handle_pubrec(self) -> MQTTErrorCode:
        packet = self._in_packet["packet"]
        if self._protocol != paho.MQTTv5 or len(packet) < 3 or packet[2] < 0x80:
            return super()._handle_pubrec()
        mid = int.from_bytes(packet[:2], "big")
        code = ReasonCode(PacketTypes.PUBREC)
        code.unpack(bytes(packet[2:3]))
        with self._out_message_mutex:
            if mid in self._out_messages:  # no PUBREL: the packet id is free again
                return self._do_on_publish(mid, code, properties(PacketTypes.PUBREC))
        return _SUCCESS


class SessionOptions(Protocol):
    """What a Link reads of mqtt.py's ``MqttOptions``, described here so this module imports nothing above it."""

    @property
    def username(self) -> str | None: ...
    @property
    def password(self) -> str | None: ...
    @property
    def keepalive(self) -> int: ...
    @property
    def connect_timeout(self) -> float: ...
    @property
    def tls(self) -> TlsOptions: ...


class Link:
    """One paho client driven by the running asyncio loop (not a thread of its own).

    Its socket is watched with ``add_reader``/``add_writer`` and the keepalive run by
    ``loop_misc()`` once a second; connecting (DNS, TCP, TLS handshake: blocking in paho)
    runs in a worker thread.
    """

    def __init__(self, options: SessionOptions, client_id: str, context: ssl.SSLContext | None,
                 on_publish: paho.CallbackOnPublish | None = None, *, fresh_id: bool) -> None:
        self.loop = asyncio.get_running_loop()
        self.fresh_id = fresh_id
        self._thread = threading.get_ident()
        self.options = options
        client = _Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5,
                         reconnect_on_failure=False)
        client.connect_timeout = options.connect_timeout
        client.max_inflight_messages_set(0)  # the window is ours (Window); paho's rescans its queue per ack
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
                    props: Properties | None) -> None:
        self._in_loop(self._connected, flags.session_present, code, props or properties(PacketTypes.CONNACK))

    def _connected(self, session_present: bool, code: ReasonCode, props: Properties) -> None:
        if self._connack is not None and not self._connack.done():
            self._connack.set_result((session_present, code, props))

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: paho.DisconnectFlags, code: ReasonCode,
                       props: Properties | None) -> None:
        self._in_loop(self._lost, "the broker closed the connection: " + reason(code) if flags.is_disconnect_packet_from_server
                      else f"connection lost ({code.getName()})")

    def _lost(self, why: str) -> None:
        self.connected = False
        if not self.lost.done():
            self.lost.set_result(why)

    def _readable(self) -> None:
        client = self.client
        try:
            rc = client.loop_read()  # every complete packet the socket holds
            sock = client.socket()
            while rc == _SUCCESS and isinstance(sock, ssl.SSLSocket) and sock.pending():  # TLS buffers whole records
                rc = client.loop_read()
            if rc != _SUCCESS:
                return
            if client.want_write():
                # The publishes the PUBACKs just read made room for go out now (carrying the
                # TCP ACK), not one loop iteration (and every other task's turn) later.
                client.loop_write()
            elif _QUICKACK is not None and isinstance(sock, socket.socket):
                sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
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
        ``Refused``. Later connections resume the session (``clean_start=false``); the first
        one starts clean only under a configured client id, whose old session (a crashed
        process's QoS 2 packet ids) could swallow new publishes. A generated id has no old
        session, and Mosquitto persists only the sessions of clients that did not start clean."""
        props = properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = session_expiry
        clean = not self.ever_connected and not self.fresh_id
        self._connack = self.loop.create_future()
        self.lost = self.loop.create_future()
        self.connecting = True
        try:
            await anyio.to_thread.run_sync(lambda: self.client.connect(
                host, port, self.options.keepalive, clean_start=clean, properties=props))
        finally:
            self.connecting = False
        session_present, code, answer = await asyncio.wait_for(self._connack, self.options.connect_timeout)
        if code.is_failure:
            raise Refused(code)
        self.ever_connected = True  # the broker has the session now: later connections resume it
        if self.lost.done():  # lost before this task resumed: a stale connected=True would never reconnect
            raise ConnectionError(f"the connection was lost right after the CONNACK: {self.lost.result()}")
        self.connected = True
        self.session_present = session_present
        self.receive_maximum = int(getattr(answer, "ReceiveMaximum", 65535))
        self.maximum_qos = int(getattr(answer, "MaximumQoS", 2))

    async def close(self, drop_session: bool) -> None:
        """DISCONNECT (with a session expiry of 0 when nothing is left in flight), then stop watching."""
        try:
            if self.connected:
                props = properties(PacketTypes.DISCONNECT)
                if drop_session:
                    props.SessionExpiryInterval = 0
                self.client.disconnect(properties=props)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self.lost), 5)
        finally:
            self._misc.cancel()
            sock = self.client.socket()
            if sock is not None:
                self._forget(sock.fileno())
                sock.close()
