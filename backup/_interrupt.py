"""What an interrupted command really did: ``WatchedCatalog`` remembers every record this
process wrote (and every write that failed), so after Ctrl-C or SIGTERM the CLI says
"nothing was recorded", "backup X is recorded as error" or "backup X is still creating:
run recover" instead of guessing."""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any

from ._catalog import BackupCatalog, BackupRecord, BackupStatus
from ._errors import BackupError

__all__ = ["LOCK_GRACE", "Interruption", "WatchedCatalog", "interruption_message"]

# After a signal, the interrupted operation's error report may wait this long for another
# process's catalog lock; then it gives up, so the command ends within a second.
LOCK_GRACE = 0.5

# Statuses an operation leaves behind only while it runs: a record still in one after an
# interruption means its failure could not be recorded.
_WORKING = frozenset({BackupStatus.CREATING, BackupStatus.RESTORING, BackupStatus.DELETING})


class WatchedCatalog(BackupCatalog):
    """Delegates to ``inner`` and keeps, per backup id, the last record this process wrote
    and the last write that failed."""

    def __init__(self, inner: BackupCatalog) -> None:
        self.inner = inner
        self.written: dict[str, BackupRecord] = {}
        self.failed: dict[str, str] = {}

    def __repr__(self) -> str:
        return repr(self.inner)

    @property
    def interrupted_lock_waits(self) -> int:
        """Waits for another process's lock that ended with the interruption."""
        return int(getattr(self.inner, "interrupted_lock_waits", 0))

    def give_up_lock_waits(self, after: float = 0.0) -> None:
        """End the inner catalog's lock waits ``after`` seconds from now (SQLite)."""
        give_up = getattr(self.inner, "give_up_lock_waits", None)
        if give_up is not None:
            give_up(after)

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def add(self, record: BackupRecord) -> BackupRecord:
        added = await self.inner.add(record)
        self.written[added.id] = added
        return added

    async def get(self, backup_id: str) -> BackupRecord:
        return await self.inner.get(backup_id)

    async def list(self, *, project_id: str | None = None, include_deleted: bool = False,
                   volume_id: str | None = None) -> builtins.list[BackupRecord]:
        return await self.inner.list(project_id=project_id, include_deleted=include_deleted, volume_id=volume_id)

    async def dependents(self, backup_id: str) -> builtins.list[BackupRecord]:
        return await self.inner.dependents(backup_id)

    async def existed_between(self, start: datetime, end: datetime) -> builtins.list[BackupRecord]:
        return await self.inner.existed_between(start, end)

    async def transition(self, backup_id: str, to: BackupStatus, *, expect: BackupRecord | None = None,
                         **changes: Any) -> BackupRecord:
        try:
            updated = await self.inner.transition(backup_id, to, expect=expect, **changes)
        except BackupError as exc:
            if backup_id in self.written:  # a change of a record of ours that did not happen
                self.failed[backup_id] = f"it could not become {to.value}: {exc}"
            raise
        self.written[updated.id] = updated
        self.failed.pop(updated.id, None)
        return updated

    async def update(self, backup_id: str, **changes: Any) -> BackupRecord:
        updated = await self.inner.update(backup_id, **changes)
        self.written[updated.id] = updated
        return updated

    async def reset_status(self, backup_id: str, to: BackupStatus, *, expect: BackupRecord, user: str, host: str,
                           fail_reason: str | None) -> BackupRecord:
        updated = await self.inner.reset_status(backup_id, to, expect=expect, user=user, host=host,
                                                fail_reason=fail_reason)
        self.written[updated.id] = updated
        return updated


class Interruption:
    """What a signal handler needs to reach while a command runs: the catalog it uses."""

    def __init__(self) -> None:
        self.catalog: WatchedCatalog | None = None


def interruption_message(signal_name: str, catalog: WatchedCatalog | None) -> str:
    """One line: which signal stopped the command and what the catalog now holds because
    of it, in words that are true whatever point it was stopped at."""
    said = "interrupted (SIGINT)" if signal_name == "SIGINT" else f"stopped by {signal_name}"
    if catalog is None or not catalog.written:
        if catalog is not None and catalog.interrupted_lock_waits:
            path = getattr(catalog.inner, "path", None)
            where = f"{str(path)!r} is" if path is not None else "it is"
            return f"{said} while waiting for the catalog lock ({where} locked by another process); nothing was recorded"
        return f"{said}; nothing was recorded"
    parts = []
    for record in catalog.written.values():
        if record.id in catalog.failed or record.status in _WORKING:
            why = catalog.failed.get(record.id, "its failure was not recorded")
            parts.append(f"backup {record.id} is still {record.status.value} in the catalog ({why}); run"
                         " notifykit-backup recover once nothing else holds the catalog")
        elif record.status.value.startswith("error"):
            parts.append(f"backup {record.id} is recorded as {record.status.value} ({record.fail_reason})")
        else:
            parts.append(f"backup {record.id} had already become {record.status.value}")
    return f"{said}; " + "; ".join(parts)
