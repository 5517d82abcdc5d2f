"""Progress throttling for ``backup.createprogress`` / ``backup.restoreprogress``.

Cinder emits a progress event every ``backup_object_number_per_notification`` objects and,
with ``backup_enable_progress_timer``, every ``backup_timer_interval`` seconds. Unlike
Cinder, the percentage here is computed from bytes (not a chunk count over a byte size),
never goes backwards, and the last event says 100. Each update carries it twice: as
``percentage`` (two decimals) and as Cinder's ``backup_percent`` (a whole number, rounded
down, so it says 100 only on the last one).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from notifykit import Clock

from ._errors import BackupConfigError

__all__ = ["ProgressObserver", "ProgressPolicy", "ProgressTracker", "ProgressUpdate"]

# Called after every object (not throttled) with (bytes_done, total_bytes): for progress bars.
ProgressObserver = Callable[[int, int], None]


MAX_TIMER_INTERVAL = 86400.0


@dataclass(frozen=True, slots=True)
class ProgressPolicy:
    """How often progress is reported (Cinder's option names and defaults)."""

    backup_object_number_per_notification: int = 10
    backup_timer_interval: float = 120.0
    backup_enable_progress_timer: bool = True

    def __post_init__(self) -> None:
        if self.backup_object_number_per_notification < 1:
            raise BackupConfigError(
                f"backup_object_number_per_notification must be >= 1, got {self.backup_object_number_per_notification}"
            )
        if not 0 < self.backup_timer_interval <= MAX_TIMER_INTERVAL or math.isnan(self.backup_timer_interval):
            raise BackupConfigError(f"backup_timer_interval must be > 0 and at most {MAX_TIMER_INTERVAL:.0f} seconds"
                                    f" (a day), got {self.backup_timer_interval}")


@dataclass(frozen=True, slots=True)
class ProgressUpdate:
    bytes_done: int
    objects_done: int
    percentage: float
    backup_percent: int = 0


class ProgressTracker:
    """Counts finished objects and bytes; says when an event is due (by count or by time)."""

    def __init__(self, total_bytes: int, policy: ProgressPolicy, clock: Clock) -> None:
        self.total_bytes = total_bytes
        self.policy = policy
        self._clock = clock
        self.bytes_done = 0
        self.objects_done = 0
        self._objects_at_last = 0
        self._last_percentage = 0.0
        self._last_backup_percent = 0
        self._last_emit = clock.now()
        self.final_sent = False

    def _percentage(self) -> float:
        if self.total_bytes <= 0:
            value = 100.0
        else:
            value = min(100.0, round(self.bytes_done * 100.0 / self.total_bytes, 2))
            if value == 100.0 and self.bytes_done < self.total_bytes:
                value = 99.99  # rounding must not claim completion early
        value = max(value, self._last_percentage)
        self._last_percentage = value
        return value

    def _backup_percent(self) -> int:
        """Cinder's whole-number field: floor of the byte ratio, so 100 only when complete."""
        value = 100 if self.total_bytes <= 0 else min(100, self.bytes_done * 100 // self.total_bytes)
        self._last_backup_percent = max(value, self._last_backup_percent)
        return self._last_backup_percent

    def _snapshot(self) -> ProgressUpdate:
        self._objects_at_last = self.objects_done
        self._last_emit = self._clock.now()
        update = ProgressUpdate(self.bytes_done, self.objects_done, self._percentage(), self._backup_percent())
        if update.percentage >= 100.0:
            self.final_sent = True
        return update

    def object_done(self, nbytes: int) -> ProgressUpdate | None:
        """Record one finished object; an update when the object count says one is due."""
        self.objects_done += 1
        self.bytes_done += nbytes
        if self.objects_done - self._objects_at_last >= self.policy.backup_object_number_per_notification:
            return self._snapshot()
        return None

    def seconds_until_timer(self) -> float:
        """How long the timer task should sleep before calling :meth:`timer_due`."""
        return max(0.0, self._last_emit + self.policy.backup_timer_interval - self._clock.now())

    def timer_due(self) -> ProgressUpdate | None:
        """An update if ``backup_timer_interval`` passed since the last one (a heartbeat while
        objects are slow), else None."""
        if not self.policy.backup_enable_progress_timer or self.final_sent:
            return None
        if self.seconds_until_timer() > 0:
            return None
        return self._snapshot()

    def final(self) -> ProgressUpdate | None:
        """The 100 % update, unless the last update already said 100."""
        if self.final_sent:
            return None
        self.bytes_done = max(self.bytes_done, self.total_bytes)
        return self._snapshot()
