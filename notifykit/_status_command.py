"""``notifykit status``: a Notifier's status file and a spool, read and checked, then printed
as text (one line per transport), Prometheus text or one JSON line, once or redrawn
(``--watch``). Nothing here writes: a path that is not ours is refused untouched.
"""

from __future__ import annotations

import io
import json
import math
import stat
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from ._errors import ConfigError, NotifyKitError
from ._redact import redact_text
from ._spool import Spool, SpoolInfo
from ._stats import LATENCY_BUCKETS, LatencyHistogram, render_prometheus

__all__ = ["STATUS_MAX_BYTES", "read_status", "status", "watch_status"]

#: Far above any real status file (a few KiB per transport): a bigger "status file" is something else.
STATUS_MAX_BYTES = 16 * 1024 * 1024
_TEXT_FIELDS = ("name", "state", "last_error", "degraded")  # degraded: a reason while a spool is degraded
_HISTOGRAM_FIELDS = ("delivery_latency",)  # LatencyHistogram.as_dict(): buckets by le, sum, count


def read_status(path: Path) -> dict[str, Any]:
    """A Notifier's status file, checked: anything else (a directory, a FIFO, a binary or
    non-JSON file, JSON of another shape) is one ConfigError naming the path and the problem."""
    where = f"status file {str(path)!r}"
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError(f"{where} is a directory; give the file a Notifier's status_path names")
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{where} is not a regular file")
        if info.st_size > STATUS_MAX_BYTES:
            raise ConfigError(f"{where} is {info.st_size} bytes: not a notifykit status file")
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {where}: {exc.strerror or exc}") from None
    try:
        document = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}):"
                          " not a notifykit status file") from None
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ConfigError(f"{where} is not JSON ({reason}): not a notifykit status file") from None
    problem = _status_problem(document)
    if problem:
        raise ConfigError(f"{where} is not a notifykit status file: {problem}")
    assert isinstance(document, dict)
    return document


def _status_problem(document: object) -> str | None:
    """What makes ``document`` something other than a status document, or None."""
    if not isinstance(document, dict):
        return f"it holds a JSON {type(document).__name__}, not an object"
    updated = document.get("updated_at", 0)
    if isinstance(updated, bool) or not isinstance(updated, int | float) or not math.isfinite(updated):
        return f"updated_at is {updated!r}, not a time"
    for section in ("transports", "tasks"):
        rows = document.get(section, {})
        if not isinstance(rows, dict):
            return f"{section!r} is not an object"
        for name, row in rows.items():
            if not isinstance(row, dict):
                return f"{section} {name!r} is not an object"
            for key, value in row.items():
                if key in _TEXT_FIELDS or key == "last_failure":
                    continue
                if section == "transports" and key in _HISTOGRAM_FIELDS:
                    try:
                        LatencyHistogram.from_dict(value)
                    except ValueError as exc:
                        return f"transport {name!r}: {key} is no latency histogram ({exc})"
                elif section == "transports" and (isinstance(value, bool) or not isinstance(value, int)):
                    return f"transport {name!r}: {key} is {value!r}, not a count"
            if section == "transports" and not isinstance(row.get("state"), str):
                return f"transport {name!r} has no state"
    return None


def _latency_text(data: object) -> str:
    """`` latency p50<=0.005s p99<=0.1s``: the bucket bounds the median and the 99th
    percentile of the delivery latency fall within; empty before the first delivery."""
    if data is None:
        return ""
    histogram = LatencyHistogram.from_dict(data)  # checked by read_status
    bounds = [histogram.quantile(q) for q in (0.5, 0.99)]
    if bounds[0] is None:
        return ""
    p50, p99 = (f"<={b:g}s" if b is not None and math.isfinite(b) else f">{LATENCY_BUCKETS[-1]:g}s" for b in bounds)
    return f" latency p50{p50} p99{p99}"


def _spool_line(info: SpoolInfo) -> str:
    counts = ", ".join(f"{k}={v}" for k, v in sorted(info.counts.items())) or "empty"
    bad = f"; {info.bad_bytes} torn or corrupt byte(s), quarantined at the next start" if info.bad_bytes else ""
    return f"spool {info.path}: {counts} ({info.segments} segment(s), {info.bytes} bytes{bad})"


def status(status_file: Path | None, spool_file: Path | None, prometheus: bool, out: TextIO,
           as_json: bool = False) -> None:
    """Print a status file and/or what a spool holds. Both are only read: the spool with
    :meth:`Spool.inspect`, so a path that is not a spool (a file, another program's directory)
    is refused untouched. Everything is checked before anything is printed. ``as_json``:
    one line ``{"status": DOCUMENT, "spool": {...}}`` (null for what was not asked)."""
    if status_file is None and spool_file is None:
        raise ConfigError("status needs --file STATUS_JSON (a Notifier's status_path) and/or --spool SPOOL")
    document = read_status(status_file) if status_file is not None else None
    info = Spool.inspect(spool_file) if spool_file is not None else None
    if as_json:
        spool = None if info is None else {**asdict(info), "path": str(info.path)}
        out.write(json.dumps({"status": document, "spool": spool}, ensure_ascii=False) + "\n")
        return
    if document is not None:
        transports = document.get("transports", {})
        if prometheus:
            out.write(render_prometheus(transports))
        else:
            age = datetime.now(UTC).timestamp() - float(document.get("updated_at", 0))
            out.write(f"pid {document.get('pid')} publisher {document.get('publisher_id')}"
                      f" {'closed' if document.get('closed') else 'running'}, updated {age:.0f}s ago\n")
            for name, row in transports.items():
                counts = " ".join(f"{k}={row.get(k, '?')}" for k in (
                    "enqueued", "sent", "retried", "dropped", "dead_lettered"))
                out.write(f"  {name}: {row['state']} {counts} queue={row.get('queue_depth', '?')}"
                          f" spooled={row.get('spooled', '?')}"
                          + (f" ({row['spooled_bytes']} bytes)" if row.get("spooled_bytes") else "")
                          + _latency_text(row.get("delivery_latency"))
                          + (f" last_error={row['last_error']!r}" if row.get("last_error") else "") + "\n")
            for name, task in document.get("tasks", {}).items():  # background tasks that failed
                if task.get("failures"):
                    out.write(f"  task {name}: {task.get('state')} failures={task.get('failures')}"
                              f" last_error={task.get('last_error')!r}\n")
    if info is not None:
        out.write(_spool_line(info) + "\n")


def watch_status(status_file: Path | None, spool_file: Path | None, prometheus: bool, as_json: bool,
                 interval: float, out: TextIO, frames: int | None = None) -> None:
    """``status --watch``: print the status again every ``interval`` seconds until Ctrl-C
    (``frames``: stop after that many). On a terminal each frame replaces the last; JSON is
    one line per frame. A source that fails later (a file being replaced, say) shows its
    error in the frame and is read again; one that fails at once is the command's error."""
    shown = 0
    while frames is None or shown < frames:
        frame = io.StringIO()
        try:
            status(status_file, spool_file, prometheus, frame, as_json)
        except NotifyKitError as exc:
            if not shown:
                raise
            frame.write(f"notifykit: error: {redact_text(str(exc))}\n")
        if out.isatty():
            out.write("\x1b[H\x1b[2J")  # cursor home, clear screen
        if not as_json:
            out.write(f"# {datetime.now(UTC).isoformat(timespec='seconds')}, every {interval:g} s (Ctrl-C stops)\n")
        out.write(frame.getvalue())
        out.flush()
        shown += 1
        if frames is None or shown < frames:
            time.sleep(interval)
