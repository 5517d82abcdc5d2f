"""The immutable notification, its priority and its request context; the error that hands one back."""

from __future__ import annotations

import enum
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ._errors import InvalidNotificationError, NotifyKitError
from ._formats import WireFormat
from ._json import encode_checked

__all__ = ["Notification", "Priority", "RequestContext", "ContextLike", "QueueFullError"]

_LEVELS = {
    "debug": 10,
    "sample": 15,
    "info": 20,
    "audit": 25,
    "warn": 30,
    "error": 40,
    "critical": 50,
}


class Priority(enum.StrEnum):
    """oslo.messaging's notification priorities, ordered by ``level`` for filters."""

    AUDIT = "audit"
    DEBUG = "debug"
    INFO = "info"
    WARN = "warn"
    ERROR = "error"
    CRITICAL = "critical"
    SAMPLE = "sample"

    @property
    def level(self) -> int:
        """Severity used by ``min_priority`` filters (debug < sample < info < audit < warn < error < critical)."""
        return _LEVELS[self.value]

    @classmethod
    def parse(cls, value: str | Priority) -> Priority:
        """Accept 'info', 'INFO' or 'warning' (alias of warn) and give one clear error otherwise."""
        if type(value) is Priority:
            return value
        text = str(value).strip().lower()
        if text == "warning":
            text = "warn"
        try:
            return cls(text)
        except ValueError:
            names = ", ".join(p.value for p in cls)
            raise InvalidNotificationError(f"unknown priority {value!r}; expected one of {names}") from None


_CONTEXT_FIELDS = ("request_id", "user_id", "project_id", "traceparent")
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who asked for the action being reported, carried beside the payload.

    ``extra`` holds any further JSON-serialisable keys (oslo contexts carry many).
    """

    request_id: str | None = None
    user_id: str | None = None
    project_id: str | None = None
    traceparent: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: Each wire format's encoding of this context; a validated context is shared by many
    #: notifications (see _validated_context), so it is encoded once, not once per message.
    _wire: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def coerce(cls, ctx: ContextLike) -> RequestContext:
        """Build a context from a mapping (``{}`` is fine), a RequestContext or None."""
        if ctx is None:
            return _EMPTY_CONTEXT
        if isinstance(ctx, RequestContext):
            return ctx
        if type(ctx) is not dict and not isinstance(ctx, Mapping):
            raise InvalidNotificationError(
                f"context must be a mapping or RequestContext, not {type(ctx).__name__}"
            )
        if not ctx:
            return _EMPTY_CONTEXT
        known: dict[str, str | None] = {}
        extra: dict[str, Any] = {}
        for key, value in ctx.items():
            if not isinstance(key, str):
                raise InvalidNotificationError(f"context keys must be strings, got {key!r}")
            if key in _CONTEXT_FIELDS:
                if value is not None and not isinstance(value, str):
                    raise InvalidNotificationError(f"context field {key!r} must be a string")
                known[key] = value
            elif key == "tenant" and "project_id" not in ctx:
                known["project_id"] = None if value is None else str(value)
            else:
                extra[key] = value
        return cls(extra=extra, **known)

    def as_dict(self) -> dict[str, Any]:
        """The context as a flat dict without empty fields (what the wire formats carry)."""
        out: dict[str, Any] = {}
        for name in _CONTEXT_FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        out.update(self.extra)
        return out

    def encoded(self, kind: str, encode: Callable[[RequestContext], str]) -> str:
        """``encode(self)``, computed once per ``kind`` (the wire formats call this)."""
        text = self._wire.get(kind)
        if text is None:
            text = self._wire[kind] = encode(self)
        return text

    def validate(self) -> int:
        """Check the context with the payload's rules (strings, no lone surrogate, JSON
        that nests at most MAX_DEPTH deep, no cycle) and a W3C traceparent; return its
        encoded size in bytes, which counts toward ``max_payload_bytes``."""
        for name in _CONTEXT_FIELDS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise InvalidNotificationError(f"context field {name!r} must be a string, not {type(value).__name__}")
        if self.traceparent is not None and not _TRACEPARENT.fullmatch(self.traceparent):
            raise InvalidNotificationError(
                f"context traceparent {self.traceparent!r} is not a W3C traceparent"
            )
        if type(self.extra) is not dict and not isinstance(self.extra, Mapping):
            raise InvalidNotificationError(f"context extra must be a mapping, not {type(self.extra).__name__}")
        for key in self.extra:
            if not isinstance(key, str):
                raise InvalidNotificationError(f"context keys must be strings, got {key!r}")
        try:
            return encode_checked(self.as_dict(), "context")[1]
        except ValueError as exc:
            raise InvalidNotificationError(f"context is not JSON-serialisable: {exc}") from None


_EMPTY_CONTEXT = RequestContext()

# Callers pass the same small context for many notifications (a backup's progress events):
# keep the validated RequestContext (and its encoded size) of recent small plain-string
# dicts instead of rebuilding it.
_CONTEXT_CACHE: dict[tuple[tuple[str, Any], ...], tuple[RequestContext, int]] = {}
_CONTEXT_CACHE_SIZE = 256
_CONTEXT_CACHE_MAX_BYTES = 4096
# The last of them, for the commonest case (one caller, one context): a dict comparison,
# no key to build.
_LAST_CONTEXT: tuple[dict[str, str] | None, tuple[RequestContext, int]] = (None, (_EMPTY_CONTEXT, 0))


def _validated_context(ctx: ContextLike) -> tuple[RequestContext, int]:
    """The context and its encoded size in bytes."""
    global _LAST_CONTEXT
    if type(ctx) is dict and ctx:
        last, last_result = _LAST_CONTEXT
        if ctx == last:
            return last_result
        try:
            cached = _CONTEXT_CACHE.get(tuple(ctx.items()))  # only all-string contexts are stored
        except TypeError:  # an unhashable value: not a cacheable context
            cached = None
        if cached is not None:
            _LAST_CONTEXT = (dict(ctx), cached)
            return cached
        result = RequestContext.coerce(ctx)
        size = result.validate()
        if size <= _CONTEXT_CACHE_MAX_BYTES and all(type(v) is str for v in ctx.values()):
            if len(_CONTEXT_CACHE) >= _CONTEXT_CACHE_SIZE:
                _CONTEXT_CACHE.pop(next(iter(_CONTEXT_CACHE)))  # the oldest entry
            _CONTEXT_CACHE[tuple(ctx.items())] = result, size
            _LAST_CONTEXT = (dict(ctx), (result, size))
        return result, size
    result = RequestContext.coerce(ctx)
    return result, (result.validate() if result is not _EMPTY_CONTEXT else 0)

ContextLike = Mapping[str, Any] | RequestContext | None

_EVENT_TYPE = re.compile(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*")  # fullmatch: "$" would take "a.b\n"
MAX_EVENT_TYPE_LENGTH = 255


def validate_event_type(event_type: object) -> str:
    """Dotted words such as ``backup.create.start``; anything else is an error."""
    if isinstance(event_type, str) and event_type in _EVENT_TYPES_SEEN:
        return event_type
    if not isinstance(event_type, str):
        raise InvalidNotificationError(f"event_type must be a string, not {type(event_type).__name__}")
    if len(event_type) > MAX_EVENT_TYPE_LENGTH or not _EVENT_TYPE.fullmatch(event_type):
        raise InvalidNotificationError(
            f"invalid event_type {event_type!r}: expected dotted words of letters, digits, '_' or '-'"
            f" (e.g. 'backup.create.start'), at most {MAX_EVENT_TYPE_LENGTH} characters"
        )
    if len(_EVENT_TYPES_SEEN) < 4096:  # a program uses a handful of event types; bound it anyway
        _EVENT_TYPES_SEEN.add(event_type)
    return event_type


MAX_PUBLISHER_ID_LENGTH = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def validate_publisher_id(publisher_id: object) -> str:
    """A non-empty string that every wire format (and a CloudEvents ``ce-source`` header)
    can carry: no control character, no lone surrogate, at most 255 characters."""
    if type(publisher_id) is str and publisher_id in _PUBLISHER_IDS_SEEN:
        return publisher_id
    if not isinstance(publisher_id, str):
        raise InvalidNotificationError(f"publisher_id must be a string, not {type(publisher_id).__name__}")
    if not publisher_id or len(publisher_id) > MAX_PUBLISHER_ID_LENGTH or _CONTROL.search(publisher_id):
        raise InvalidNotificationError(
            f"invalid publisher_id {publisher_id!r}: expected 1 to {MAX_PUBLISHER_ID_LENGTH} characters"
            " without control characters (e.g. 'backup.host1')"
        )
    try:
        publisher_id.encode()
    except UnicodeEncodeError as exc:
        raise InvalidNotificationError(
            f"invalid publisher_id {publisher_id!r}: a lone surrogate at index {exc.start}, which UTF-8 cannot encode"
        ) from None
    if len(_PUBLISHER_IDS_SEEN) < 4096:  # a program uses a handful; bound it anyway
        _PUBLISHER_IDS_SEEN.add(publisher_id)
    return publisher_id


_PUBLISHER_IDS_SEEN: set[str] = set()
_EVENT_TYPES_SEEN: set[str] = set()


def new_message_id() -> str:
    """A random (version 4) UUID string, cut from a pool of random hex digits: uuid.uuid4()
    makes a system call per id, which dominated notify()'s cost. The version nibble is
    written as ``4`` and the variant nibble mapped onto ``8``-``b`` (RFC 4122)."""
    global _RANDOM, _RANDOM_POS
    pos = _RANDOM_POS
    if pos >= len(_RANDOM):
        _RANDOM, pos = os.urandom(16 * 256).hex(), 0
    h = _RANDOM[pos:pos + 32]
    _RANDOM_POS = pos + 32
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


#: A random hex digit's two low bits, with the RFC 4122 variant bits (10xx) set.
_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}


def _reset_random_pool() -> None:
    """A forked child must not reuse its parent's remaining random bytes (duplicate ids)."""
    global _RANDOM, _RANDOM_POS
    _RANDOM, _RANDOM_POS = "", 0


_RANDOM, _RANDOM_POS = "", 0
os.register_at_fork(after_in_child=_reset_random_pool)


def serialise_payload(payload: object) -> tuple[str, int]:
    """Encode the payload once, checking it is a JSON object JSON and UTF-8 can carry;
    returns the text and its size in bytes."""
    if type(payload) is not dict:  # ABC isinstance is slow: dict first
        if not isinstance(payload, Mapping):
            raise InvalidNotificationError(
                f"payload must be a JSON object (a mapping), not {type(payload).__name__}"
            )
        payload = dict(payload)
    try:
        return encode_checked(payload, "payload")
    except ValueError as exc:
        raise InvalidNotificationError(f"payload is not JSON-serialisable: {exc}") from None


def _size_error(payload_bytes: int, context_bytes: int, max_bytes: int) -> InvalidNotificationError:
    what = (f"payload is {payload_bytes} bytes encoded" if not context_bytes else
            f"payload and context are {payload_bytes + context_bytes} bytes encoded"
            f" ({payload_bytes} + {context_bytes})")
    return InvalidNotificationError(f"{what}, over the limit of {max_bytes} bytes (max_payload_bytes)")


@dataclass(frozen=True, slots=True, eq=False)
class Notification:
    """One event, validated and serialised once; every transport shares this object.

    Build with :meth:`create`; ``payload_json`` is the payload already encoded,
    and ``encode()`` caches each wire format's bytes so that two transports with the
    same format share one encoding.
    """

    message_id: str
    event_type: str
    priority: Priority
    publisher_id: str
    timestamp: datetime
    payload: Mapping[str, Any]
    context: RequestContext
    payload_json: str
    _encoded: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def create(
        cls,
        event_type: str,
        payload: Mapping[str, Any],
        *,
        priority: Priority | str = Priority.INFO,
        publisher_id: str,
        context: ContextLike = None,
        max_payload_bytes: int = 1024 * 1024,
        message_id: str | None = None,
        timestamp: datetime | None = None,
    ) -> Notification:
        """Validate everything the caller gave and raise one clear error if anything is wrong."""
        ctx, context_bytes = _validated_context(context)
        payload_json, payload_bytes = serialise_payload(payload)
        if payload_bytes + context_bytes > max_payload_bytes:
            raise _size_error(payload_bytes, context_bytes, max_payload_bytes)
        if timestamp is None:
            timestamp = datetime.now(UTC)
        elif timestamp.tzinfo is None:
            raise InvalidNotificationError("timestamp must be timezone-aware (UTC)")
        elif timestamp.tzinfo is not UTC:
            timestamp = timestamp.astimezone(UTC)
        return cls(
            message_id=message_id or new_message_id(),
            event_type=validate_event_type(event_type),
            priority=Priority.parse(priority),
            publisher_id=(publisher_id if type(publisher_id) is str and publisher_id in _PUBLISHER_IDS_SEEN
                          else validate_publisher_id(publisher_id)),
            timestamp=timestamp,
            payload=payload,
            context=ctx,
            payload_json=payload_json,
        )

    @classmethod
    def from_json(cls, body: bytes | str) -> Notification:
        """Rebuild a notification from its ``json`` wire form (spool replay, dead-letter re-drive),
        keeping its message_id and timestamp so consumers can de-duplicate."""
        data = json.loads(body)
        try:
            return cls.create(
                data["event_type"],
                data["payload"],
                priority=data["priority"],
                publisher_id=data["publisher_id"],
                context=data.get("context") or {},
                max_payload_bytes=2**62,
                message_id=data["message_id"],
                timestamp=datetime.fromisoformat(data["timestamp"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidNotificationError(f"not a notifykit json notification: {exc}") from None

    @property
    def iso_timestamp(self) -> str:
        """UTC, ISO 8601 with microseconds, e.g. ``2026-11-25T12:00:00.000001+00:00``."""
        return self.timestamp.isoformat(timespec="microseconds")

    def encode(self, wire_format: WireFormat | str) -> bytes:
        """The notification in a wire format, computed once per format."""
        cached = self._encoded.get(wire_format)  # WireFormat is a StrEnum: "json" and JSON share a key
        if cached is None:
            fmt = wire_format if type(wire_format) is WireFormat else WireFormat.parse(wire_format)
            cached = self._encoded[fmt] = fmt.serialise(self)
        return cached

    def __repr__(self) -> str:
        return (
            f"Notification(message_id={self.message_id!r}, event_type={self.event_type!r},"
            f" priority={self.priority.value!r}, publisher_id={self.publisher_id!r})"
        )


class QueueFullError(NotifyKitError):
    """``overflow = block``: a transport's queue had no room within its ``block_timeout``.

    The transports named in ``transports`` did not take the notification (each counts it
    as ``refused``); every other transport did. The caller still holds it: re-sending it
    with ``notifier.emit(exc.notification)`` keeps its message_id.
    """

    def __init__(self, notification: Notification, transports: Sequence[str]) -> None:
        self.notification = notification
        self.transports = tuple(transports)
        super().__init__(f"queue full: transport(s) {', '.join(map(repr, self.transports))} had no room within"
                         f" block_timeout for {notification.event_type!r} ({notification.message_id})")
