"""``nats://`` and ``nats+tls://`` — notifications stored in a NATS JetStream stream, through nats-py.

Each notification is published once, to the subject ``<subject>.<event_type>`` (so NATS
consumers filter on the event type with subject wildcards, ``notifications.backup.>``),
with headers ``Nats-Msg-Id``, ``event_type``, ``priority``, ``message_id``,
``content-type`` and ``traceparent``. ``Nats-Msg-Id`` is the notification's message id:
a notification sent again (a retry after a lost PubAck, a spool replay after a crash)
within the stream's duplicate window is dropped by the server, so the stream holds each
message id once.

``send()`` publishes the whole batch pipelined (each message with its own reply subject
under one inbox subscription), then collects one PubAck per message: a notification
counts as sent only once JetStream stored it. The stream is used as it exists; when it is
missing it is created with file storage, a 2-minute duplicate window and subjects
``<subject>.>``. nats-py reconnects by itself; while it does, ``send()`` reports a
TransientError so the core's backoff, circuit breaker and spool take over.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Self

import anyio
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api

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

from ._nats_client import DEFAULT_DUPLICATE_WINDOW, close_quietly, connect_arguments, covers, ensure_stream, have_nkeys

__all__ = ["NatsOptions", "NatsTransport", "covers", "message_headers"]

log = logging.getLogger("notifykit.nats")

DEFAULT_PORT = 4222
_STREAM = re.compile(r"^[A-Za-z0-9_\-]{1,200}$")
_SUBJECT = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")
#: JetStream error codes a re-send cannot fix: the message is larger than the stream allows.
_PERMANENT_ERR_CODES = frozenset({10054})


@dataclass(frozen=True, slots=True)
class NatsOptions:
    """Everything the URL says, checked once when the Notifier is built."""

    servers: tuple[str, ...]
    stream: str
    subject: str
    create_stream: bool
    storage: str
    replicas: int
    duplicate_window: float
    max_age: float
    ack_timeout: float
    connect_timeout: float
    reconnect_time_wait: float
    client_name: str
    deliver_policy: str
    user: str | None
    password: str | None = field(repr=False)
    token: str | None = field(repr=False)
    nkey_seed: str | None
    creds_file: str | None
    tls: TlsOptions

    @classmethod
    def from_settings(cls, settings: TransportSettings) -> Self:
        url = settings.url
        if not url.hosts:
            raise ConfigError(f"{settings.where()}: name at least one server, e.g. nats://127.0.0.1:4222/")
        if url.path not in ("", "/"):
            raise ConfigError(f"{settings.where()}: a NATS URL takes no path; name the stream with ?stream=…")
        stream = settings.take_str("stream", "NOTIFICATIONS")
        if not _STREAM.match(stream):
            raise ConfigError(f"{settings.where('stream')} must be a JetStream stream name "
                              f"(letters, digits, '_', '-'), got {stream!r}")
        subject = _subject(settings)
        user, password, token = url.username, url.password, settings.take_secret("token")
        if user is not None and password is None and token is None:
            user, token = None, user  # nats://TOKEN@host, the NATS URL convention
        nkey_seed, creds_file = _file(settings, "nkey_seed"), _file(settings, "creds_file")
        if (nkey_seed or creds_file) and not have_nkeys():
            raise ConfigError(f"{settings.where('nkey_seed' if nkey_seed else 'creds_file')} needs "
                              "the 'nkeys' package: pip install nkeys")
        return cls(
            servers=tuple(f"nats://{host.netloc(DEFAULT_PORT)}" for host in url.hosts),
            stream=stream,
            subject=subject,
            create_stream=settings.take_bool("create_stream", True),
            storage=settings.take_choice("storage", ("file", "memory"), "file"),
            replicas=settings.take_int("replicas", 1, minimum=1),
            duplicate_window=settings.take_float("duplicate_window", DEFAULT_DUPLICATE_WINDOW, minimum=1.0),
            max_age=settings.take_float("max_age", 0.0, minimum=0.0),
            ack_timeout=settings.take_float("ack_timeout", 30.0, minimum=0.001),
            connect_timeout=settings.take_float("connect_timeout", 5.0, minimum=0.001),
            reconnect_time_wait=settings.take_float("reconnect_time_wait", 2.0, minimum=0.0),
            client_name=settings.take_str("client_name", f"notifykit {settings.name}") or settings.name,
            deliver_policy=settings.take_choice("deliver_policy", ("new", "all"), "new"),
            user=user,
            password=password,
            token=token,
            nkey_seed=nkey_seed,
            creds_file=creds_file,
            tls=settings.take_tls(enabled=url.scheme == "nats+tls"),
        )


def _subject(settings: TransportSettings) -> str:
    """The subject prefix: option ``subject``, else the one topic (each notification is stored once)."""
    subject = settings.take_str("subject")
    if subject is None:
        if len(settings.topics) != 1:
            raise ConfigError(f"{settings.where()}: NATS stores each notification once, under <subject>.<event_type>; "
                              f"name one topic or set option 'subject' (topics: {', '.join(settings.topics)})")
        subject = settings.topics[0]
    if not _SUBJECT.match(subject):
        raise ConfigError(f"{settings.where('subject')} must be dot-separated tokens of letters, digits, "
                          f"'_' or '-' (no wildcards), got {subject!r}")
    return subject


def _file(settings: TransportSettings, key: str) -> str | None:
    path = settings.take_str(key)
    if path is not None and not os.path.isfile(path):
        raise ConfigError(f"{settings.where(key)}: no such file {path!r}")
    return path


def message_headers(n: Notification, fmt: WireFormat) -> dict[str, str]:
    """NATS headers: the dedup id for JetStream, and what consumers route and trace by without parsing."""
    headers = {"Nats-Msg-Id": n.message_id, "event_type": n.event_type, "priority": _PRIORITIES[n.priority],
               "message_id": n.message_id, "content-type": fmt.content_type}
    if n.context.traceparent:
        headers["traceparent"] = n.context.traceparent
    return headers


_PRIORITIES = {p: str(p.value) for p in Priority}


class _Flight:
    """One send()'s publishes awaiting their PubAck: reply subject -> batch index."""

    __slots__ = ("done", "failures", "refused", "waiting")

    def __init__(self) -> None:
        self.waiting: dict[str, int] = {}
        self.failures: dict[int, TransientError | PermanentError] = {}
        self.done = anyio.Event()
        self.refused: TransientError | PermanentError | None = None  # the connection failed them all


class NatsTransport(Transport):
    """Publishes to a JetStream stream, pipelined, one PubAck per notification; see docs/transports/nats.md."""

    default_format: ClassVar[WireFormat] = WireFormat.JSON
    max_batch_size = 1000
    Options = NatsOptions
    options: NatsOptions
    messaging_system: ClassVar[str | None] = "nats"
    asyncapi_protocols: ClassVar[Mapping[str, str]] = {"nats": "nats", "nats+tls": "nats"}

    def asyncapi_routes(self, events: Sequence[tuple[str, Priority]]) -> AsyncApiRoutes:
        """A channel per subject ``<subject>.<event_type>``."""
        return AsyncApiRoutes(tuple(Route(f"{self.options.subject}.{event}", (event,)) for event, _ in events))

    def __init__(self, settings: TransportSettings, options: NatsOptions) -> None:
        super().__init__(settings, options)
        self._nc: Client | None = None
        self._inbox = ""
        self._tokens = itertools.count()
        self._flight: _Flight | None = None
        self._stream_ready = False
        self._warned: set[str] = set()
        self._last_error: Exception | None = None  # what nats-py last reported (why a connection failed)
        self._redactor = Redactor([options.password, options.token])
        self._redactor.add_basic(options.user or "", options.password)
        #: PubAcks that said "duplicate": the server dropped a re-sent message id.
        self.duplicates = 0
        self.connects = 0

    @property
    def _where(self) -> str:
        return f"nats {self.settings.url.redacted}"

    def _describe(self, exc: BaseException) -> str:
        return self._redactor.redact(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)

    def classify(self, exc: BaseException) -> TransientError | PermanentError:
        """Refused credentials, a too large message or a refused stream configuration are permanent;
        an unreachable server, a timeout or JetStream being unavailable are transient."""
        message = f"{self._where}: {self._describe(exc)}"
        if isinstance(exc, nats.errors.AuthorizationError | nats.errors.InvalidUserCredentialsError
                      | nats.errors.MaxPayloadError | nats.errors.SecureConnRequiredError):
            return PermanentError(message)
        if isinstance(exc, nats.js.errors.APIError) and (exc.code == 400 or exc.err_code in _PERMANENT_ERR_CODES):
            return PermanentError(message)
        if "authorization violation" in str(exc).lower():
            return PermanentError(message)
        return TransientError(message)

    # -- connection and stream ----------------------------------------------------------

    async def _connect(self) -> Client:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # trio: nats-py's tasks, futures and streams are asyncio's
            raise PermanentError(f"{self._where}: nats-py runs only under asyncio; "
                                 "run the Notifier on anyio's asyncio backend") from None
        tls = await self.options.tls.client_context(self._where)
        kwargs = connect_arguments(self.options, tls, error_cb=self._on_error, disconnected_cb=self._on_disconnect,
                                   reconnected_cb=self._on_reconnect)
        client = Client()
        self._last_error = None
        try:
            await client.connect(**kwargs)
        except Exception as exc:
            # "no servers available" says nothing: report why the last attempt failed.
            cause = self._last_error if isinstance(exc, nats.errors.NoServersError) and self._last_error else exc
            await close_quietly(client)
            raise self.classify(cause) from None
        # Once connected, nats-py reconnects on its own, for as long as it takes (send() reports
        # TransientError meanwhile); the options dict is read at each disconnect.
        client.options.update(allow_reconnect=True, max_reconnect_attempts=-1)
        return client

    async def _ensure_ready(self) -> Client:
        nc = self._nc
        if nc is None or nc.is_closed:
            nc = self._nc = await self._connect()
            self._inbox = nc.new_inbox()
            await nc.subscribe(self._inbox + ".*", cb=self._on_ack)
            self._stream_ready = False
            self.connects += 1
        if not nc.is_connected:
            raise TransientError(f"{self._where}: not connected (reconnecting)")
        if not self._stream_ready:
            await self._check_stream(nc)
        return nc

    async def _check_stream(self, nc: Client) -> None:
        """Use the stream as it is (say once what differs from our defaults), or create it."""
        try:
            notes = await ensure_stream(nc.jetstream(timeout=self.options.ack_timeout), self.options, self.name,
                                        self._where)
        except (nats.errors.Error, TimeoutError) as exc:
            if isinstance(exc, nats.errors.NoRespondersError | nats.js.errors.ServiceUnavailableError):
                raise TransientError(f"{self._where}: JetStream is not available "
                                     f"(no answer from $JS.API): {self._describe(exc)}") from None
            raise self.classify(exc) from None
        self._stream_ready = True
        for note in notes:
            if note not in self._warned:
                self._warned.add(note)
                log.warning("notifykit nats %r: stream %r exists and is used as it is; %s", self.name,
                            self.options.stream, note)

    # -- callbacks from nats-py ------------------------------------------------------------

    async def _on_ack(self, msg: Msg) -> None:
        flight = self._flight
        if flight is None:
            return
        index = flight.waiting.pop(msg.subject, None)
        if index is None:  # the PubAck of a publish already given up on
            return
        if msg.headers and msg.headers.get("Status") == "503":
            self._stream_ready = False  # look for (or create) the stream again before the next send
            flight.failures[index] = TransientError(
                f"{self._where}: no stream stored {self.options.subject}.* (no responders)")
        else:
            try:
                reply = json.loads(msg.data)
            except ValueError:
                reply = {"error": {"description": f"unreadable PubAck {msg.data[:80]!r}"}}
            error = reply.get("error")
            if error is not None:
                flight.failures[index] = self.classify(nats.js.errors.APIError.from_error(error))
            elif reply.get("duplicate"):
                self.duplicates += 1
        if not flight.waiting:
            flight.done.set()

    async def _on_disconnect(self) -> None:
        flight = self._flight
        if flight is not None and flight.waiting:
            flight.refused = TransientError(f"{self._where}: connection lost before the PubAck")
            flight.done.set()

    async def _on_reconnect(self) -> None:
        log.info("notifykit nats %r reconnected to %s", self.name, self._redactor.redact(str(self._nc and
                                                                                          self._nc.connected_url)))

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = exc
        text = self._describe(exc)
        flight = self._flight
        if "permissions violation for publish" in text.lower() and flight is not None and flight.waiting:
            flight.refused = PermanentError(f"{self._where}: {text}")
            flight.done.set()
        # An unreachable server is reported by send() (TransientError) and the stats, once per attempt.
        log.log(logging.DEBUG if isinstance(exc, OSError) else logging.WARNING, "notifykit nats %r: %s", self.name, text)

    # -- the protocol ----------------------------------------------------------------------

    async def open(self) -> None:
        await self._ensure_ready()

    async def send(self, batch: Sequence[Notification]) -> None:
        """Publish every message with its own reply subject, then wait for all PubAcks (ack_timeout)."""
        nc = await self._ensure_ready()
        fmt = self.format
        flight = self._flight = _Flight()
        prefix = self.options.subject + "."
        inbox = self._inbox + "."
        tokens = self._tokens
        max_payload = nc.max_payload
        try:
            for index, n in enumerate(batch):
                body = n.encode(fmt)
                if len(body) > max_payload:
                    flight.failures[index] = PermanentError(
                        f"{self._where}: the message is {len(body)} bytes, "
                        f"more than the server's max_payload={max_payload}")
                    continue
                reply = f"{inbox}{next(tokens)}"
                flight.waiting[reply] = index
                await nc.publish(prefix + n.event_type, body, reply=reply, headers=message_headers(n, fmt))
            if flight.waiting:
                with anyio.move_on_after(self.options.ack_timeout):
                    await flight.done.wait()
        except nats.errors.Error as exc:  # the client refused a publish: closed, reconnecting, buffer full
            flight.refused = self.classify(exc)
        finally:
            self._flight = None
        for index in flight.waiting.values():
            flight.failures[index] = flight.refused or TransientError(
                f"{self._where}: no PubAck within ack_timeout={self.options.ack_timeout:g}s")
        BatchError.raise_if_any(flight.failures, len(batch))

    async def aclose(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None:
            await close_quietly(nc)

    # -- tail ------------------------------------------------------------------------------

    @classmethod
    async def tail(cls, settings: TransportSettings) -> AsyncIterator[bytes]:
        """Read ``<subject>.>`` from the stream with an ordered (ephemeral) consumer: new messages,
        or the whole stream with ``deliver_policy=all``; durable consumers are not disturbed."""
        transport = cls.from_settings(settings)
        o = transport.options
        nc = await transport._connect()
        try:
            js = nc.jetstream(timeout=o.ack_timeout)
            sub = await js.subscribe(f"{o.subject}.>", stream=o.stream, ordered_consumer=True,
                                     deliver_policy=api.DeliverPolicy(o.deliver_policy))
            async for msg in sub.messages:
                yield msg.data
        except (nats.errors.Error, TimeoutError) as exc:
            error = transport.classify(exc)
            raise type(error)(f"tail of stream {o.stream!r} stopped: {error}") from None
        finally:
            with anyio.CancelScope(shield=True):
                await close_quietly(nc)

    def __repr__(self) -> str:
        return f"<NatsTransport {self.name!r} {self.settings.url.redacted} stream={self.options.stream!r}>"

