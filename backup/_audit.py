"""The usage audit's period (Cinder's ``cinder-volume-usage-audit``): which hour to report.

``notifykit-backup audit`` sends one ``backup.exists`` per backup that existed during the
period; by default the period is the previous full hour, so an hourly cron job or systemd
timer reports every hour exactly once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ._errors import BackupConfigError

__all__ = ["audit_period", "previous_hour"]

HOUR = timedelta(hours=1)


def previous_hour(now: datetime) -> tuple[datetime, datetime]:
    """The last full hour before ``now`` (at 22:53 UTC: 21:00 to 22:00)."""
    end = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return end - HOUR, end


def _parse(value: str, option: str) -> datetime:
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise BackupConfigError(f"{option} must be an ISO 8601 date and time such as 2026-12-01T21:00:00Z,"
                                f" got {value!r}") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def audit_period(start: str | None, end: str | None, now: datetime | None = None) -> tuple[datetime, datetime]:
    """(beginning, ending), both UTC, from ``--start``/``--end`` (ISO 8601; without an offset
    it is UTC). Neither given: the previous full hour; one given: the hour after or before it."""
    if start is None and end is None:
        return previous_hour(now or datetime.now(UTC))
    begin = _parse(start, "--start") if start is not None else None
    finish = _parse(end, "--end") if end is not None else None
    if begin is None:
        assert finish is not None
        begin = finish - HOUR
    if finish is None:
        finish = begin + HOUR
    if begin >= finish:
        raise BackupConfigError(f"--start ({begin.isoformat()}) must be before --end ({finish.isoformat()})")
    return begin, finish
