"""The spool's on-disk format: append-only segment files of framed, checksummed records.

A frame is ``MAGIC | length (u32) | crc32 (u32) | body``. The writer copies frames into a
shared mapping of a preallocated segment (see :mod:`notifykit._spool`), so a segment may
end in zero bytes that were never written: a reader stops at that zero tail. A reader that
meets a torn or garbage region skips to the next MAGIC whose frame checks out and reports
the region, so the valid records around it are kept and the bad bytes can be quarantined.

Record bodies (first byte is the kind):

* ``N`` seq, transport, fields — one notification for one transport: its UTC timestamp
  (year u16, month, day, hour, minute, second u8, microsecond u32), then event_type, priority, publisher_id, the
  context's JSON, the payload's JSON and the message_id, joined by NUL (only the last can
  hold one: the others are validated or JSON); cheaper to write than the wire format,
  which the transport encodes later, in its batch;
* ``R`` seq, transport, notification JSON — the same in the ``json`` wire format (format 1,
  read and replayed, no longer written);
* ``A`` seq, transport — every record of that transport up to ``seq`` is done (sent,
  dead-lettered or dropped): the acknowledgement watermark;
* ``D`` seq, transport, after (u64) — the records of that transport with ``after < seq' <=
  seq`` were dropped (``overflow = drop_oldest`` on a full spool) while older ones were
  still in flight: a hole above the watermark;
* ``C`` JSON ``{"format": 1, "next_seq": …, "acked": {transport: seq}, "dropped":
  {transport: [[after, seq], …]}}`` — a checkpoint, the first record of every segment, so
  that deleting older segments loses no watermark and no hole. (A version that does not
  know ``D`` quarantines it and replays the dropped records: nothing is lost.)

Format 2 added ``N``; a format-1 notifykit refuses a format-2 spool with a clear error
rather than quarantine records it cannot read.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ._errors import InvalidNotificationError
from ._formats import json_context
from ._message import Notification

__all__ = [
    "FORMAT", "HEADER", "MAGIC", "RECORD", "Ack", "BadRegion", "Checkpoint", "Drop", "Record",
    "data_end", "decode_body", "frame", "frame_ack", "frame_checkpoint", "frame_drop", "frame_notification", "frame_record",
    "notification_fields", "notification_from_fields", "notification_head", "scan", "segment_name",
    "segment_number",
]

FORMAT = 2
MAGIC = b"\xa7K"
HEADER = struct.Struct("<2sII")
RECORD = struct.Struct("<cQH")  # kind, seq, transport name length
_SEQ = struct.Struct("<Q")
#: Larger lengths are garbage: no notification is this big (max_payload_bytes is 1 MiB by default).
MAX_BODY = 256 * 1024 * 1024
SEGMENT_PREFIX = "segment-"
SEGMENT_SUFFIX = ".log"


def segment_name(number: int) -> str:
    return f"{SEGMENT_PREFIX}{number:012d}{SEGMENT_SUFFIX}"


def segment_number(path: Path) -> int | None:
    """The segment's number, or None when the name is not a segment's."""
    name = path.name
    if not (name.startswith(SEGMENT_PREFIX) and name.endswith(SEGMENT_SUFFIX)):
        return None
    digits = name[len(SEGMENT_PREFIX):-len(SEGMENT_SUFFIX)]
    return int(digits) if digits.isdigit() else None


def frame(body: bytes) -> bytes:
    return HEADER.pack(MAGIC, len(body), zlib.crc32(body)) + body


#: An ``N`` record's timestamp: the UTC datetime's fields (exact over its whole range, and
#: cheaper to take than a difference from the epoch).
_TIME = struct.Struct("<HBBBBBI")


def notification_fields(n: Notification) -> bytes:
    """An ``N`` body's fields (after the record head): no JSON encoding, no isoformat.
    (Spool.append writes the same bytes, inlined.)"""
    t = n.timestamp
    return _TIME.pack(t.year, t.month, t.day, t.hour, t.minute, t.second, t.microsecond) + "\x00".join((
        n.event_type, n.priority, n.publisher_id, n.context.encoded("json", json_context), n.payload_json,
        n.message_id)).encode("utf-8", "surrogatepass")


def notification_from_fields(data: bytes) -> Notification:
    """The notification an ``N`` body's fields hold (message_id and timestamp kept)."""
    try:
        if len(data) < _TIME.size:
            raise ValueError("shorter than its timestamp")
        year, month, day, hour, minute, second, microsecond = _TIME.unpack_from(data)
        timestamp = datetime(year, month, day, hour, minute, second, microsecond, tzinfo=UTC)
        event_type, priority, publisher_id, context, payload, message_id = (
            data[_TIME.size:].decode("utf-8", "surrogatepass").split("\x00", 5))
        return Notification.create(
            event_type, json.loads(payload), priority=priority, publisher_id=publisher_id,
            context=json.loads(context), max_payload_bytes=2**62, message_id=message_id,
            timestamp=timestamp)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidNotificationError(f"not a notifykit notification record: {exc}") from None


def frame_notification(seq: int, transport: bytes, n: Notification) -> bytes:
    body = RECORD.pack(b"N", seq, len(transport)) + transport + notification_fields(n)
    return HEADER.pack(MAGIC, len(body), zlib.crc32(body)) + body


def frame_record(seq: int, transport: bytes, notification_json: bytes) -> bytes:
    body = RECORD.pack(b"R", seq, len(transport)) + transport + notification_json
    return HEADER.pack(MAGIC, len(body), zlib.crc32(body)) + body


def notification_head(transport: bytes) -> struct.Struct:
    """A packer of an ``N`` body's head and timestamp for one transport: ``pack(b"N", seq,
    len(name), name, year, …, microsecond)`` and the text fields are the body (the append hot path)."""
    return struct.Struct(f"{RECORD.format}{len(transport)}s{_TIME.format[1:]}")


def frame_ack(seq: int, transport: bytes) -> bytes:
    return frame(RECORD.pack(b"A", seq, len(transport)) + transport)


def frame_checkpoint(next_seq: int, acked: Mapping[str, int],
                     dropped: Mapping[str, list[tuple[int, int]]] | None = None) -> bytes:
    data: dict[str, object] = {"format": FORMAT, "next_seq": next_seq, "acked": dict(acked)}
    if dropped:
        data["dropped"] = {t: [list(r) for r in ranges] for t, ranges in dropped.items() if ranges}
    return frame(b"C" + json.dumps(data).encode())


def frame_drop(after: int, through: int, transport: bytes) -> bytes:
    return frame(RECORD.pack(b"D", through, len(transport)) + transport + _SEQ.pack(after))


@dataclass(frozen=True, slots=True)
class Record:
    seq: int
    transport: str
    body: bytes  # the notification: its fields (N), or the json wire format (R)
    fields: bool = True

    def notification(self) -> Notification:
        """Decoded; InvalidNotificationError (or ValueError) when the bytes hold none."""
        return notification_from_fields(self.body) if self.fields else Notification.from_json(self.body)


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int
    transport: str


@dataclass(frozen=True, slots=True)
class Checkpoint:
    next_seq: int
    acked: dict[str, int]
    format: int = FORMAT
    dropped: dict[str, list[tuple[int, int]]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Drop:
    """The records of ``transport`` in ``(after, through]`` were dropped."""

    after: int
    through: int
    transport: str


@dataclass(frozen=True, slots=True)
class BadRegion:
    """Bytes ``[start, end)`` of a segment that are no valid frame (torn write, garbage)."""

    start: int
    end: int


def decode_body(body: bytes) -> Record | Ack | Drop | Checkpoint | None:
    """The record a checked frame holds; None for a body this version cannot read."""
    kind = body[:1]
    if kind == b"D" and len(body) >= RECORD.size + _SEQ.size:
        _, through, name_len = RECORD.unpack_from(body)
        if len(body) != RECORD.size + name_len + _SEQ.size:
            return None
        try:
            transport = body[RECORD.size:RECORD.size + name_len].decode()
        except UnicodeDecodeError:
            return None
        (after,) = _SEQ.unpack_from(body, RECORD.size + name_len)
        return Drop(after, through, transport) if after < through else None
    if kind in (b"N", b"R", b"A") and len(body) >= RECORD.size:
        _, seq, name_len = RECORD.unpack_from(body)
        name_end = RECORD.size + name_len
        if len(body) < name_end:
            return None
        try:
            transport = body[RECORD.size:name_end].decode()
        except UnicodeDecodeError:
            return None
        return Ack(seq, transport) if kind == b"A" else Record(seq, transport, body[name_end:], kind == b"N")
    if kind == b"C":
        try:
            data = json.loads(body[1:])
            acked = {str(k): int(v) for k, v in data["acked"].items()}
            dropped = {str(k): [(int(a), int(b)) for a, b in v] for k, v in data.get("dropped", {}).items()}
            return Checkpoint(int(data["next_seq"]), acked, int(data.get("format", FORMAT)), dropped)
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
    return None


def data_end(buf: bytes) -> int:
    """``len(buf)`` without its zero tail (the preallocated part of a segment never written)."""
    end = len(buf)
    while end > 0:
        start = max(0, end - 65536)
        kept = len(buf[start:end].rstrip(b"\x00"))
        if kept:
            return start + kept
        end = start
    return 0


def scan(buf: bytes, start: int = 0) -> Iterator[tuple[int, bytes] | BadRegion]:
    """Each valid frame's ``(offset, body)`` in ``buf[start:]``, and each bad region between
    them; the zero tail is the end, not a bad region."""
    end = len(buf)
    tail = data_end(buf)
    pos = start
    bad_start: int | None = None
    header = HEADER.size
    while pos < end:
        body: bytes | None = None
        if buf.startswith(MAGIC, pos) and pos + header <= end:
            _, length, crc = HEADER.unpack_from(buf, pos)
            body_end = pos + header + length
            if length <= MAX_BODY and body_end <= end:
                candidate = buf[pos + header:body_end]
                if zlib.crc32(candidate) == crc:
                    body = candidate
        if body is not None:
            if bad_start is not None:
                yield BadRegion(bad_start, pos)
                bad_start = None
            yield pos, body
            pos += header + len(body)
        elif pos >= tail:  # only zeros from here on
            break
        else:
            if bad_start is None:
                bad_start = pos
            found = buf.find(MAGIC, pos + 1, tail)
            pos = tail if found < 0 else found
    if bad_start is not None:
        yield BadRegion(bad_start, tail)
