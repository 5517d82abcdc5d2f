"""Recovery of a spool at start, read-only inspection, and quarantine: what a previous
process left is read segment by segment (watermarks, holes, the next sequence number, what
waits per transport), and bad regions are copied to ``quarantine.jsonl``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from array import array
from dataclasses import dataclass
from pathlib import Path

from ._errors import ConfigError
from ._log import FORMAT, HEADER, Ack, BadRegion, Checkpoint, Drop, Record, data_end, decode_body, scan, segment_number
from ._spool_segments import Segment

__all__ = [
    "LOCK", "QUARANTINE", "QUARANTINE_MAX_BYTES", "Recovered", "SpoolInfo", "inspect_spool", "is_ours", "recover",
    "write_quarantine",
]

log = logging.getLogger("notifykit")

QUARANTINE = "quarantine.jsonl"


#: quarantine.jsonl grows to at most this many bytes; a bad region that would pass the bound
#: is still skipped and counted, only logged instead of copied.
QUARANTINE_MAX_BYTES = 16 * 1024 * 1024


LOCK = "lock"


@dataclass(frozen=True, slots=True)
class SpoolInfo:
    """A read-only look at a spool (``notifykit status --spool``): nothing is written."""

    path: Path
    counts: dict[str, int]  # notifications waiting, per transport
    bytes: int  # on disk, segments included
    segments: int
    bad_bytes: int  # torn or garbage bytes the next start will quarantine


@dataclass(slots=True)
class Recovered:
    segments: list[Segment]
    acked: dict[str, int]
    next_seq: int
    pending: dict[str, int]
    bad: list[tuple[Segment, BadRegion, bytes]]
    dropped: dict[str, list[tuple[int, int]]]
    #: Per transport, the waiting records' sequence numbers and frame sizes, in order.
    waiting: dict[str, tuple[array[int], array[int]]]


def recover(path: Path, *, read_only: bool = False) -> Recovered:
    """Read every segment: the watermarks, the next sequence number, what is pending, and
    the bad regions (with their bytes, to quarantine)."""
    segments: list[Segment] = []
    seqs: list[dict[str, tuple[array[int], array[int]]]] = []  # per segment, per transport: (seqs, frame sizes)
    acked: dict[str, int] = {}
    holes: dict[str, list[tuple[int, int]]] = {}
    next_seq = 1
    bad: list[tuple[Segment, BadRegion, bytes]] = []
    numbered = sorted((n, p) for p in path.iterdir() if (n := segment_number(p)) is not None)
    for number, segment_path in numbered:
        try:
            with open(segment_path, "rb") as fh:
                buf = fh.read()
        except FileNotFoundError:
            continue
        segment = Segment(number, segment_path, data_end(buf))
        by_transport: dict[str, tuple[array[int], array[int]]] = {}
        for item in scan(buf):
            if isinstance(item, BadRegion):
                bad.append((segment, item, buf[item.start:item.end]))
                continue
            offset, body = item
            segment.size = max(segment.size, offset + HEADER.size + len(body))  # a frame may end in zeros
            record = decode_body(body)
            if isinstance(record, Record):
                numbers, sizes = by_transport.setdefault(record.transport, (array("Q"), array("I")))
                numbers.append(record.seq)
                sizes.append(HEADER.size + len(body))
                segment.last[record.transport] = max(record.seq, segment.last.get(record.transport, 0))
                next_seq = max(next_seq, record.seq + 1)
            elif isinstance(record, Ack):
                acked[record.transport] = max(acked.get(record.transport, 0), record.seq)
            elif isinstance(record, Drop):
                holes.setdefault(record.transport, []).append((record.after, record.through))
            elif isinstance(record, Checkpoint):
                if record.format > FORMAT:
                    raise ConfigError(f"spool {str(path)!r} was written by a newer notifykit (log format"
                                      f" {record.format}); open it with that version")
                next_seq = max(next_seq, record.next_seq)
                for transport, seq in record.acked.items():
                    acked[transport] = max(acked.get(transport, 0), seq)
                for transport, ranges in record.dropped.items():
                    holes.setdefault(transport, []).extend(ranges)
            else:
                bad.append((segment, BadRegion(offset, offset + len(body)), body))
        if len(buf) > segment.size:  # a crashed writer's preallocated tail, never written
            segment.allocated = len(buf)
        segments.append(segment)
        seqs.append(by_transport)
    dropped: dict[str, list[tuple[int, int]]] = {}
    for transport, ranges in holes.items():  # merged, and absorbed by the watermark they reach
        merged: list[tuple[int, int]] = []
        for a, b in sorted(ranges):
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        mark = acked.get(transport, 0)
        while merged and merged[0][0] <= mark:
            mark = max(mark, merged.pop(0)[1])
        if mark:
            acked[transport] = mark
        if merged:
            dropped[transport] = merged
    waiting: dict[str, tuple[array[int], array[int]]] = {}
    for by_transport in seqs:
        for transport, (values, sizes) in by_transport.items():
            mark = acked.get(transport, 0)
            ranges = dropped.get(transport, [])
            kept_seqs, kept_sizes = waiting.setdefault(transport, (array("Q"), array("I")))
            for seq, size in zip(values, sizes, strict=True):
                if seq > mark and not any(a < seq <= b for a, b in ranges):
                    kept_seqs.append(seq)
                    kept_sizes.append(size)
    pending = {transport: len(kept) for transport, (kept, _) in waiting.items() if kept}
    del read_only
    return Recovered(segments, acked, next_seq, pending, bad, dropped, waiting)


def _inspect_log(path: Path) -> SpoolInfo:
    names = [p.name for p in path.iterdir()]
    strangers = sorted(name for name in names if not is_ours(path / name))
    if strangers:
        raise ConfigError(f"{str(path)!r} is a directory that is not a notifykit spool"
                          f" (it holds {', '.join(strangers[:3])})")
    if not names:  # a Notifier's spool always holds its lock file
        raise ConfigError(f"{str(path)!r} is an empty directory, not a notifykit spool")
    recovered = recover(path, read_only=True)
    return SpoolInfo(path, {t: n for t, n in recovered.pending.items() if n},
                     sum(max(s.size, s.allocated) for s in recovered.segments), len(recovered.segments),
                     sum(r.end - r.start for _, r, _ in recovered.bad))


def is_ours(path: Path) -> bool:
    return path.name in (LOCK, QUARANTINE) or segment_number(path) is not None


def write_quarantine(spool: Path, lock: threading.Lock, what: dict[str, object], data: bytes) -> bool:
    """Skip bad bytes for good, keeping a copy in quarantine.jsonl while it has room
    (QUARANTINE_MAX_BYTES); past that, or when the copy cannot be written, the region
    is only logged (segment, offset, length). Returns whether it was copied; the caller
    counts it (any thread: this touches only the quarantine file)."""
    line = json.dumps({**what, "data_base64": base64.b64encode(data).decode()}) + "\n"
    where = ", ".join(f"{k}={v}" for k, v in what.items())
    path = spool / QUARANTINE
    with lock:
        try:
            size = path.stat().st_size if path.exists() else 0
            if size + len(line) > QUARANTINE_MAX_BYTES:
                log.error("notifykit spool %r: skipped %s; not copied, %s is full (%d bytes,"
                          " the bound): move it away to keep later copies", str(spool), where,
                          QUARANTINE, QUARANTINE_MAX_BYTES)
                return False
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)  # it holds payloads
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                fh.write(line)
        except OSError as exc:
            log.error("notifykit spool %r: skipped %s; could not copy it to %s: %s", str(spool), where,
                      QUARANTINE, exc.strerror or exc)
            return False
    log.error("notifykit spool %r: quarantined %s to %s", str(spool), where, QUARANTINE)
    return True


def inspect_spool(path: str | os.PathLike[str]) -> SpoolInfo:
    """What a spool holds, read-only: no lock, no recovery, nothing created or written.
    Anything that is not a spool (a spool is a directory), or cannot be read, is one
    ConfigError naming the path."""
    path = Path(path)
    try:
        if path.is_dir():
            return _inspect_log(path)
        if not path.exists():
            raise ConfigError(f"no spool at {str(path)!r}")
        if not path.is_file():
            raise ConfigError(f"{str(path)!r} is not a notifykit spool (not a directory or a regular file)")
        raise ConfigError(f"{str(path)!r} is a file that is not a notifykit spool (a spool is a directory)")
    except OSError as exc:
        raise ConfigError(f"cannot read spool {str(path)!r}: {exc.strerror or exc}") from None
