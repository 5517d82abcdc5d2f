"""``log://`` — one JSON line per notification: to Python logging, a stream or a file.

* ``log://`` — the ``notifykit.notifications`` logger (``logger=NAME`` to change),
  at the level matching the priority;
* ``log://stderr`` or ``log://stdout`` — straight to the stream;
* ``log:///path/file.jsonl`` — appended to a file (``fsync=true`` to sync each batch).

Writes happen in a worker thread, in every mode (a logging handler may write to a slow
disk, a full pipe or the network), so that they never block the event loop.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Self

import anyio.to_thread

from notifykit.transport import (
    ConfigError,
    Notification,
    PermanentError,
    Priority,
    TransientError,
    Transport,
    TransportSettings,
    WireFormat,
)

__all__ = ["LogTransport"]

_LEVELS = {
    Priority.DEBUG: logging.DEBUG,
    Priority.SAMPLE: logging.INFO,
    Priority.INFO: logging.INFO,
    Priority.AUDIT: logging.INFO,
    Priority.WARN: logging.WARNING,
    Priority.ERROR: logging.ERROR,
    Priority.CRITICAL: logging.CRITICAL,
}


@dataclass(frozen=True, slots=True)
class LogOptions:
    """Where lines go: a logger (``log://``), a stream (``log://stderr``) or a file (``log:///path``)."""

    logger: str | None = "notifykit.notifications"
    stream: str | None = None
    path: str | None = None
    fsync: bool = False

    @classmethod
    def from_settings(cls, settings: TransportSettings) -> Self:
        url = settings.url
        host = url.host or ""
        logger = settings.take_str("logger", "notifykit.notifications")
        fsync = settings.take_bool("fsync", False)
        if host in ("stderr", "stdout"):
            if url.path not in ("", "/"):
                raise ConfigError(f"log URL {url.redacted!r}: a stream URL takes no path")
            return cls(logger=None, stream=host, fsync=fsync)
        if host:
            raise ConfigError(
                f"log URL {url.redacted!r}: expected log://, log://stderr, log://stdout or log:///path/file.jsonl"
            )
        if url.path not in ("", "/"):
            return cls(logger=None, path=url.path, fsync=fsync)
        return cls(logger=logger, fsync=fsync)


class LogTransport(Transport):
    """Writes notifications as JSON lines; delivery is done when the write returns."""

    default_format: ClassVar[WireFormat] = WireFormat.JSON
    max_batch_size = 500
    Options = LogOptions
    options: LogOptions

    def __init__(self, settings: TransportSettings, options: LogOptions) -> None:
        super().__init__(settings, options)
        self.logger = logging.getLogger(options.logger) if options.logger is not None else None
        self.stream_name = options.stream
        self.path = options.path
        self.fsync = options.fsync

    def classify(self, exc: BaseException) -> TransientError | PermanentError:
        """A failed write (disk full, closed pipe) may succeed later: transient, with the OS's reason."""
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        return TransientError(f"cannot write notifications to {self.path or self.stream_name}: {reason}")

    def _write_lines(self, text: str) -> None:
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(text)
                if self.fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
        else:
            stream = sys.stderr if self.stream_name == "stderr" else sys.stdout
            stream.write(text)
            stream.flush()

    async def open(self) -> None:
        if self.path is not None:
            directory = os.path.dirname(self.path) or "."
            await anyio.to_thread.run_sync(lambda: os.makedirs(directory, exist_ok=True))

    def _log_lines(self, lines: list[tuple[int, str]]) -> None:
        assert self.logger is not None
        for level, line in lines:
            self.logger.log(level, "%s", line)

    async def send(self, batch: Sequence[Notification]) -> None:
        if self.logger is not None:
            lines = [(_LEVELS[n.priority], n.encode(self.format).decode()) for n in batch]
            await anyio.to_thread.run_sync(self._log_lines, lines)
            return
        text = "".join(n.encode(self.format).decode() + "\n" for n in batch)
        try:
            await anyio.to_thread.run_sync(self._write_lines, text)
        except OSError as exc:
            raise self.classify(exc) from None
