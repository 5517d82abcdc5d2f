"""The MQTT transport's flow control: the in-flight window, and the PUBLISH properties it sends.

At most ``size`` publishes (the broker's Receive Maximum) are unacknowledged; the rest wait
here, each keyed by (topic, message id) while it is in the session, so that a retried
notification waits for the same PUBACK instead of being published twice. Private to
:mod:`notifykit.transports.mqtt`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from notifykit.transport import Notification, PermanentError, Priority, TransientError

from ._mqtt_session import Link

log = logging.getLogger("notifykit.mqtt")

#: PUBACK/PUBREC "Quota exceeded": more in flight than the broker takes from this session
_QUOTA_EXCEEDED = 0x97
_SUCCESS = MQTTErrorCode.MQTT_ERR_SUCCESS
_NO_CONN = MQTTErrorCode.MQTT_ERR_NO_CONN

Outcome = ReasonCode | TransientError | PermanentError


class Batch:
    """One ``send()`` waiting for its publishes: a count and one future, not a future per message."""

    __slots__ = ("done", "pending")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.pending = 0
        self.done: asyncio.Future[None] = loop.create_future()

    def one_done(self) -> None:
        self.pending -= 1
        if self.pending <= 0 and not self.done.done():
            self.done.set_result(None)


class Publish:
    """One notification to one topic, from the backlog through paho (the session) to its outcome:
    the reason code of its PUBACK (PUBCOMP, or a refusing PUBREC), or the error that kept it
    from being published."""

    __slots__ = ("ahead", "key", "notification", "outcome", "waiters")

    def __init__(self, key: tuple[str, str], notification: Notification) -> None:
        self.key = key
        self.notification = notification
        self.outcome: Outcome | None = None
        self.waiters: list[Batch] = []
        self.ahead = 0  # publishes unacknowledged when it was handed to paho


class Window:
    """The publishes in flight on one Link, at most ``size`` unacknowledged.

    A notification is encoded only when the window has room for it, inside the PUBACK
    callback that made the room, so the broker never waits for a whole batch to be encoded.
    ``size`` is the broker's Receive Maximum (or ``max_inflight``), lowered for the rest of
    the session when the broker answers "Quota exceeded" with fewer in flight: Mosquitto 2.0
    counts QoS 2 messages restored from its database against that quota after a restart,
    and closes the connection over each refusal.
    """

    def __init__(self, qos: int, encode: Callable[[Notification], tuple[bytes, Properties]],
                 where: Callable[[], str]) -> None:
        self.qos = qos
        self.size = 1
        self.quota: int | None = None  # what the broker took before it said "Quota exceeded"
        self.link: Link | None = None
        self.backlog: collections.deque[Publish] = collections.deque()
        self.sent: dict[int, Publish] = {}  # paho's mid -> the publish it waits a PUBACK for
        #: (topic, message_id) -> a publish not yet answered (queued here or in paho's session)
        self.in_session: dict[tuple[str, str], Publish] = {}
        self._encode = encode
        self._where = where

    def connected(self, link: Link, size: int) -> None:
        """A (re)connection: hand paho what waits, at most ``size`` unacknowledged."""
        if not link.session_present:
            self.quota = None
        self.link = link
        self.size = size if self.quota is None else min(size, self.quota)
        self.pump()

    def add(self, topic: str, notification: Notification, batch: Batch) -> Publish:
        """Queue a publish for ``batch``, or join the one of a retried notification still in flight."""
        key = (topic, notification.message_id)
        publish = self.in_session.get(key)
        if publish is None:
            publish = self.in_session[key] = Publish(key, notification)
            self.backlog.append(publish)
        publish.waiters.append(batch)
        batch.pending += 1
        return publish

    def resolve(self, publish: Publish, outcome: Outcome) -> None:
        publish.outcome = outcome
        if self.in_session.get(publish.key) is publish:
            del self.in_session[publish.key]
        for batch in publish.waiters:
            batch.one_done()
        publish.waiters.clear()

    def pump(self) -> None:
        """Hand queued publishes to paho while fewer than ``size`` are unacknowledged."""
        link = self.link
        if link is None or not link.connected:
            return
        backlog, sent, size, qos = self.backlog, self.sent, self.size, self.qos
        client_publish = link.client.publish
        last: Notification | None = None
        body, props = b"", None
        while backlog and len(sent) < size:
            publish = backlog.popleft()
            notification = publish.notification
            if notification is not last:  # the topics of one notification follow each other
                try:
                    body, props = self._encode(notification)
                except Exception as exc:  # in paho's callback: nothing may escape
                    last = None
                    self.resolve(publish, exc if isinstance(exc, PermanentError)
                                 else PermanentError(f"cannot encode: {type(exc).__name__}: {exc}"))
                    continue
                last = notification
            try:
                info = client_publish(publish.key[0], body, qos, properties=props)
            except ValueError as exc:  # a topic or payload paho refuses to encode
                self.resolve(publish, PermanentError(f"{self._where()}: {exc}"))
                continue
            if info.rc not in (_SUCCESS, _NO_CONN):  # NO_CONN: kept by paho, sent on the reconnect
                self.resolve(publish, TransientError(f"{self._where()}: {paho.error_string(info.rc)}"))
                continue
            publish.ahead = len(sent)
            sent[info.mid] = publish

    def on_publish(self, client: paho.Client, userdata: Any, mid: int, code: ReasonCode, props: Properties) -> None:
        """paho's callback for a PUBACK (PUBCOMP): the publish's outcome, and its room to the next one."""
        publish = self.sent.pop(mid, None)
        if publish is not None:
            if code.value == _QUOTA_EXCEEDED and publish.ahead < self.size:
                self.quota = self.size = max(1, publish.ahead)
                log.warning("notifykit mqtt: %s: the broker refused a publish with %d others in flight (Quota "
                            "exceeded); at most %d in flight from now on", self._where(), publish.ahead, self.size)
            self.resolve(publish, code)
        if self.backlog:
            self.pump()

    def abandon(self, why: str) -> None:
        """Publishes never handed to paho are not in the session: fail them (the dispatcher
        retries them as new publishes) instead of sending them later behind its back."""
        while self.backlog:
            self.resolve(self.backlog.popleft(), TransientError(f"{self._where()}: not published: {why}"))


# PUBLISH properties ------------------------------------------------------------------------


class PackedProperties(Properties):
    """PUBLISH properties encoded once, here: paho's Properties builds its name tables for
    every instance and encodes through them, the larger part of a publish's cost, while
    paho only ever calls ``pack()`` on the properties it publishes."""

    def __init__(self, packed: bytes) -> None:  # not Properties.__init__: no tables needed
        self.__dict__["packed"] = varint(len(packed)) + packed

    def pack(self) -> bytes:
        return self.__dict__["packed"]  # type: ignore[no-any-return]

    def __str__(self) -> str:
        return f"<{len(self.__dict__['packed'])} bytes of properties>"

    __repr__ = __str__


def utf8(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def user_property(name: str, value: str) -> bytes:
    return b"\x26" + utf8(name) + utf8(value)


def varint(value: int) -> bytes:
    """MQTT's Variable Byte Integer (the length of the properties)."""
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


PRIORITY_PROPERTIES = {p: user_property("priority", p.value) for p in Priority}
