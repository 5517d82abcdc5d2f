"""``redis://`` and ``rediss://`` — each notification an entry of a Redis stream, through redis-py.

One ``XADD`` per notification and stream, a whole batch written as one pipeline (no
MULTI: one round trip, answered in order), so a stream holds the batch in the order the
dispatcher gave it. An entry carries the routing envelope as fields (``message_id``,
``event_type``, ``priority``, ``content-type``, ``traceparent``: the headers the Kafka and
NATS transports set) and the encoded wire format in ``body``; a notification counts as sent
once Redis answered its ``XADD`` with an entry id.

A Redis that refuses a write answers with an error code and a sentence; ``classify()``
keeps both (``OOM command not allowed when used memory > 'maxmemory'.``) and decides by
the code: what the server may stop refusing on its own (OOM, READONLY, LOADING,
MASTERDOWN, MISCONF, BUSY…) is transient, what needs an operator (WRONGTYPE, NOAUTH,
WRONGPASS, NOPERM, an unknown command) is permanent. redis-py's own retries are off:
the core's dispatcher retries with backoff, so a lost connection is re-opened (by the
connection pool) on the next ``send()``. Sentinel and Cluster are not supported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import anyio
import redis.asyncio
import redis.exceptions
from redis.asyncio.connection import Connection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

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

__all__ = ["RedisOptions", "RedisTransport", "entry_fields"]

log = logging.getLogger("notifykit.redis")

_DEFAULT_PORT = 6379
_DEFAULT_TOPICS = ("notifications",)

#: Error codes a server may stop answering without an operator: memory freed or trimmed,
#: a replica promoted, a dataset loaded, a disk that accepts writes again, a script ended.
_TRANSIENT_CODES = frozenset({"OOM", "READONLY", "LOADING", "MASTERDOWN", "MISCONF", "BUSY", "TRYAGAIN",
                              "CLUSTERDOWN", "NOREPLICAS", "NOTREADY", "UNBLOCKED"})
#: Error codes that retrying cannot fix: the key holds another type, the login or the ACL is wrong.
_PERMANENT_CODES = frozenset({"WRONGTYPE", "NOAUTH", "WRONGPASS", "NOPERM", "NOSCRIPT", "MOVED", "ASK", "CROSSSLOT"})
#: Generic ``ERR`` answers that mean the same for every retry (an old server without streams,
#: a value over proto-max-bulk-len, a database index the server does not have).
_PERMANENT_ERR = ("unknown command", "syntax error", "wrong number of arguments", "invalid db index",
                  "db index is out of range", "string exceeds maximum allowed size", "protocol error",
                  "invalid password", "auth", "the id specified in xadd")
#: redis-py < 8 strips the code of the errors it has a class for; their codes, for the message.
_CLASS_CODES: tuple[tuple[type[BaseException], str], ...] = (
    (redis.exceptions.OutOfMemoryError, "OOM"),
    (redis.exceptions.ReadOnlyError, "READONLY"),
    (redis.exceptions.NoScriptError, "NOSCRIPT"),
    (redis.exceptions.NoPermissionError, "NOPERM"),
    (redis.exceptions.BusyLoadingError, "LOADING"),
    (redis.exceptions.ExecAbortError, "EXECABORT"),
)


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """Everything the URL says, checked once, when the Notifier is built."""

    host: str
    port: int
    db: int
    username: str | None
    password: str | None = field(repr=False)
    streams: tuple[str, ...]
    maxlen: int | None
    maxlen_approximate: bool
    connect_timeout: float
    command_timeout: float
    client_name: str
    tail_from: str
    tls: TlsOptions

    @classmethod
    def from_settings(cls, settings: TransportSettings) -> Self:
        url = settings.url
        where = settings.where()
        if url.scheme not in ("redis", "rediss"):
            raise ConfigError(f"{where}: scheme must be redis or rediss")
        if len(url.hosts) > 1:
            raise ConfigError(f"{where}: one host only (Sentinel and Cluster are not supported)")
        path = url.path.strip("/")
        if not path:
            db = 0
        elif path.isdigit():
            db = int(path)
        else:
            raise ConfigError(f"{where}: the URL path is the database number (redis://HOST:6379/0), got {url.path!r}")
        stream = settings.take_str("stream")
        if stream is not None and tuple(settings.topics) != _DEFAULT_TOPICS:
            raise ConfigError(f"{where}: give the stream key with 'stream' or with 'topic', not both")
        streams = (stream,) if stream is not None else tuple(settings.topics)
        for key in streams:
            if not key:
                raise ConfigError(f"{settings.where('stream')} must be a non-empty key name")
        maxlen = settings.take_int("maxlen", None, minimum=1)
        return cls(
            host=url.hosts[0].host if url.hosts and url.hosts[0].host else "127.0.0.1",
            port=url.hosts[0].port or _DEFAULT_PORT if url.hosts else _DEFAULT_PORT,
            db=db,
            username=url.username or None,
            password=url.password,
            streams=streams,
            maxlen=maxlen,
            maxlen_approximate=settings.take_bool("maxlen_approximate", True),
            connect_timeout=settings.take_float("connect_timeout", 5.0, minimum=0.001),
            command_timeout=settings.take_float("command_timeout", 30.0, minimum=0.001),
            client_name=_client_name(settings),
            tail_from=settings.take_choice("tail_from", ("latest", "earliest"), "latest"),
            tls=settings.take_tls(enabled=url.scheme == "rediss"),
        )


def _client_name(settings: TransportSettings) -> str:
    """CLIENT SETNAME's argument: printable ASCII without spaces (Redis refuses others at every connect)."""
    name = settings.take_str("client_name")
    if name is None:
        return "notifykit-" + re.sub(r"[^!-~]", "-", settings.name)
    if not name or re.search(r"[^!-~]", name):
        raise ConfigError(f"{settings.where('client_name')} must be printable ASCII without spaces, got {name!r}")
    return name


def entry_fields(n: Notification, fmt: WireFormat, body: bytes) -> list[str | bytes]:
    """The fields of one stream entry, flat (field, value, field, value…) as XADD takes them:
    the envelope (the Kafka and NATS transports' headers), so consumers route without
    parsing, then the body. Publisher and timestamp are in the body; the entry id is the
    time Redis appended it."""
    fields: list[str | bytes] = [
        "message_id", n.message_id,
        "event_type", n.event_type,
        "priority", _PRIORITY[n.priority],
        "content-type", _CONTENT_TYPE[fmt],
    ]
    if n.context.traceparent:
        fields += ("traceparent", n.context.traceparent)
    fields += ("body", body)
    return fields


# Built once: Priority and WireFormat are StrEnums, whose ``.value`` is a Python-level property.
_PRIORITY = {p: str.__str__(p) for p in Priority}
_CONTENT_TYPE = {f: f.content_type for f in WireFormat}


class _TlsConnection(Connection):
    """A TCP connection wrapped in our SSLContext (loaded once, in a worker thread, from the
    shared TLS options) rather than one redis-py builds from file names on the event loop."""

    def __init__(self, *, tls_context: ssl.SSLContext, **kwargs: Any) -> None:
        self._tls_context = tls_context
        super().__init__(**kwargs)

    def _connection_arguments(self) -> Mapping[str, Any]:
        return {"host": self.host, "port": self.port, "ssl": self._tls_context}


class RedisTransport(Transport):
    """Appends to Redis streams with pipelined ``XADD``; see docs/transports/redis.md."""

    default_format: ClassVar[WireFormat] = WireFormat.JSON
    max_batch_size = 1000
    Options = RedisOptions
    options: RedisOptions
    messaging_system: ClassVar[str | None] = "redis"
    asyncapi_protocols: ClassVar[Mapping[str, str]] = {"redis": "redis", "rediss": "redis"}

    def asyncapi_routes(self, events: Sequence[tuple[str, Priority]]) -> AsyncApiRoutes:
        """A channel per stream, each with every event type."""
        return AsyncApiRoutes(tuple(Route(stream, tuple(e for e, _ in events)) for stream in self.options.streams))

    def __init__(self, settings: TransportSettings, options: RedisOptions) -> None:
        super().__init__(settings, options)
        self._client: redis.asyncio.Redis | None = None
        self._redactor = Redactor([options.password])
        trim = ("MAXLEN", "~" if options.maxlen_approximate else "=", str(options.maxlen)) if options.maxlen else ()
        #: (stream, the XADD arguments before the fields) per stream: built once.
        self._heads = [(stream, ("XADD", stream, *trim, "*")) for stream in options.streams]

    @property
    def _where(self) -> str:
        return f"redis {self.settings.url.redacted}"

    def _words(self, exc: BaseException) -> str:
        """The server's own answer (``OOM command not allowed …``) or the client's error, without secrets."""
        text = str(exc)
        code = _code(exc)
        if code and not text.startswith(code):
            text = f"{code} {text}"
        return self._redactor.redact(text or type(exc).__name__)

    def classify(self, exc: BaseException, stream: str | None = None) -> TransientError | PermanentError:
        """The notifykit error for a redis-py failure, with the server's words and its code's verdict.

        Anything not known to be permanent is transient: the core's retry budget
        (``retry_max_elapsed``) still dead-letters it in the end, so nothing is lost.
        """
        where = f"{self._where} stream {stream!r}" if stream else self._where
        message = f"{where}: {self._words(exc)}"
        if isinstance(exc, redis.exceptions.AuthenticationError | redis.exceptions.AuthorizationError):
            return PermanentError(message)
        if isinstance(exc, redis.exceptions.TimeoutError | TimeoutError):
            return TransientError(f"{message} (no answer within command_timeout={self.options.command_timeout:g}s)")
        if isinstance(exc, redis.exceptions.ResponseError):
            code = _code(exc)
            if code in _PERMANENT_CODES:
                return PermanentError(message)
            if code in _TRANSIENT_CODES:
                return TransientError(message)
            lowered = str(exc).lower().removeprefix("err ")
            if code in (None, "ERR") and lowered.startswith(_PERMANENT_ERR):
                return PermanentError(message)
        return TransientError(message)

    async def _connect(self) -> redis.asyncio.Redis:
        """A client whose pool connects on demand; PING once, so a refused login is seen here."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # trio: redis.asyncio's streams, futures and timeouts are asyncio's
            raise PermanentError(f"{self._where}: redis-py's client runs only under asyncio; "
                                 "run the Notifier on anyio's asyncio backend") from None
        o = self.options
        kwargs: dict[str, Any] = dict(
            host=o.host, port=o.port, db=o.db, username=o.username, password=o.password,
            # No socket_timeout: one deadline per pipeline (command_timeout), not a timer per reply.
            socket_connect_timeout=o.connect_timeout, socket_timeout=None,
            client_name=o.client_name, retry=Retry(NoBackoff(), 0),  # the dispatcher retries, not redis-py
        )
        if (context := await o.tls.client_context(self._where)) is not None:
            pool = ConnectionPool(connection_class=_TlsConnection, tls_context=context, **kwargs)
        else:
            pool = ConnectionPool(**kwargs)
        client = redis.asyncio.Redis(connection_pool=pool)
        try:
            with anyio.fail_after(o.connect_timeout + o.command_timeout):
                await client.ping()
        except BaseException as exc:
            await _close(client)
            if isinstance(exc, redis.exceptions.RedisError | OSError):  # TimeoutError is an OSError
                raise self.classify(exc) from None
            raise
        return client

    async def open(self) -> None:
        self._client = await self._connect()

    async def send(self, batch: Sequence[Notification]) -> None:
        if self._client is None:
            self._client = await self._connect()
        fmt = self.format
        heads = self._heads
        failures: dict[int, TransientError | PermanentError] = {}
        sent: list[tuple[int, str]] = []
        pipe = self._client.pipeline(transaction=False)
        add = pipe.execute_command  # XADD as we spell it, without xadd()'s per-call argument checks
        for index, n in enumerate(batch):
            try:
                fields = entry_fields(n, fmt, n.encode(fmt))
            except Exception as exc:
                failures[index] = PermanentError(f"cannot encode as {fmt}: {type(exc).__name__}: {exc}")
                continue
            for stream, head in heads:
                add(*head, *fields)
                sent.append((index, stream))
        if sent:
            try:
                with anyio.fail_after(self.options.command_timeout):
                    replies = await pipe.execute(raise_on_error=False)
            except (redis.exceptions.RedisError, OSError) as exc:  # TimeoutError is an OSError
                # The connection broke or hung: which entries Redis appended is unknown, so the
                # whole batch is retried (at-least-once; consumers de-duplicate on message_id).
                await self._client.connection_pool.disconnect()
                raise self.classify(exc) from None
            readonly = False
            for (index, stream), reply in zip(sent, replies, strict=True):
                if isinstance(reply, BaseException):
                    BatchError.record(failures, index, self.classify(reply, stream))
                    readonly = readonly or _code(reply) == "READONLY"
            if readonly:  # a failed-over primary: reconnect, the name may point to the new primary
                await self._client.connection_pool.disconnect()
        BatchError.raise_if_any(failures, len(batch))

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await _close(client)

    @classmethod
    async def tail(cls, settings: TransportSettings) -> AsyncIterator[bytes]:
        """``XREAD BLOCK`` on every stream of the URL, from its end (``tail_from=earliest``: its start).

        A plain reader, no consumer group: tailing never takes entries from real consumers
        and leaves nothing behind on the server.
        """
        transport = cls.from_settings(settings)
        client = await transport._connect()
        try:
            positions: dict[Any, Any] = {}
            for stream in transport.options.streams:
                last = [] if transport.options.tail_from == "earliest" else await client.xrevrange(stream, count=1)
                positions[stream] = last[0][0] if last else "0-0"
            block_ms = max(1, int(min(1.0, transport.options.command_timeout / 2) * 1000))
            while True:
                with anyio.fail_after(block_ms / 1000 + transport.options.command_timeout):
                    answer: Any = await client.xread(positions, block=block_ms, count=500)
                for stream, entries in answer or []:
                    for entry_id, fields in entries:
                        positions[stream] = entry_id
                        body = fields.get(b"body")
                        if body is not None:
                            yield body
        except (redis.exceptions.RedisError, OSError) as exc:
            raise transport.classify(exc) from None
        finally:
            await _close(client)

    def __repr__(self) -> str:
        return f"<RedisTransport {self.name!r} {self.settings.url.redacted} streams={list(self.options.streams)!r}>"


async def _close(client: redis.asyncio.Redis) -> None:
    """Close the client and its pool (ours: passed in, so redis-py leaves it open), even when cancelled."""
    with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
        await client.aclose()
        await client.connection_pool.disconnect()


def _code(exc: BaseException) -> str | None:
    """The error code of a Redis answer (``OOM``, ``WRONGTYPE``, ``ERR``…), None for a client-side error."""
    code = getattr(exc, "status_code", None)
    if isinstance(code, str) and code:
        return code
    for cls, name in _CLASS_CODES:
        if isinstance(exc, cls):
            return name
    if isinstance(exc, redis.exceptions.ResponseError):
        first = str(exc).split(" ", 1)[0]
        if first.isupper() and first.isalpha():
            return first
    return None
