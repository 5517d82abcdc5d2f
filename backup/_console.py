"""What the CLI commands share: the progress display on stderr and the configured Notifier."""

from __future__ import annotations

import time
from typing import TextIO

from notifykit import Notifier

from ._config import BackupConfig

__all__ = ["MIB", "ProgressDisplay", "build_notifier"]

MIB = 1024 * 1024


class ProgressDisplay:
    """A redrawn bar on a terminal; one plain line per 10 % otherwise."""

    def __init__(self, label: str, stream: TextIO, tty: bool | None = None) -> None:
        self.label = label
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.start = time.perf_counter()
        self._last_step = -1
        self._last_draw = 0.0

    def __call__(self, done: int, total: int) -> None:
        pct = 100.0 if total <= 0 else done * 100.0 / total
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rate = done / MIB / elapsed
        if self.tty:
            now = time.perf_counter()
            if now - self._last_draw < 0.1 and done < total:
                return
            self._last_draw = now
            filled = int(pct / 100 * 30)
            # Cursor back to column 0 afterwards, so interleaved log lines overwrite the bar.
            self.stream.write(f"\r\x1b[K{self.label} [{'#' * filled}{'.' * (30 - filled)}] {pct:5.1f}%"
                              f" {done / MIB:8.1f} MiB {rate:7.1f} MiB/s\r")
        else:
            step = int(pct // 10)
            if step == self._last_step:
                return
            self._last_step = step
            self.stream.write(f"{self.label}: {pct:.0f}% ({done} of {total} bytes, {rate:.1f} MiB/s)\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def build_notifier(config: BackupConfig) -> Notifier:
    """The configured Notifier; the transport is picked by URL, never imported."""
    if config.notifier_config is not None:
        return Notifier.from_config(config.notifier_config, publisher_id=config.publisher_id,
                                    dead_letters=config.dead_letter_path)
    return Notifier.from_url(config.notifier_url, publisher_id=config.publisher_id,
                             dead_letters=config.dead_letter_path)


