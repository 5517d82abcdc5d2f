"""What the backup benchmarks share: notifications switched off, the half-random test volume,
and the scripts/ servers (loaded as the tests load them)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from notifykit import ContextLike, Notification, Priority
from tests._servers import load_script

__all__ = ["MIB", "NoopNotifier", "load_script", "write_volume"]

MIB = 1024 * 1024


class NoopNotifier:
    """Notifications off: satisfies SupportsNotify and does nothing but count the calls."""

    def __init__(self) -> None:
        self._prebuilt = Notification.create("noop", {}, publisher_id="bench")
        self.calls = 0

    async def notify(self, ctx: ContextLike, event_type: str, payload: Mapping[str, Any], *,
                     priority: Priority | str = Priority.INFO) -> Notification:
        self.calls += 1
        return self._prebuilt


def write_volume(path: Path, size: int) -> None:
    """``size`` bytes, alternating 1 MiB of compressible text and 1 MiB of random bytes."""
    block = (b"compressible text block for the backup benchmark. " * 21_000)[:MIB]
    with open(path, "wb") as fh:
        for i in range(size // MIB):
            fh.write(os.urandom(MIB) if i % 2 else block)
