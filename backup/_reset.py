"""``reset-status``: an operator forces a backup's status, with Cinder's rules.

Cinder's ``backup-reset-state`` allows two target states: ``error`` always, and
``available`` only when the backup is known good — the driver verifies it first, unless it
comes back from ``restoring`` (a restore only reads the backup). The same here: ``available``
runs ``verify`` (every object of the backup and its chain read, every block checked) and a
failed verify leaves the status as it was. The change is a compare-and-set on the record as
read, recorded with who asked (user and host) and when, and reported with
``backup.reset_status.start`` then ``.end`` (or ``.error``), each with the usual usage
payload. An operation this host still runs (its process alive) is not reset under it;
another host's cannot be checked from here, so it is the operator's call, as in Cinder.
"""

from __future__ import annotations

import logging

import anyio
import anyio.to_thread

from notifykit import ContextLike, Priority

from ._catalog import RESET_STATUSES, BackupRecord, BackupStatus
from ._errors import BackupNotFoundError, InvalidStatusTransitionError, WrongStoreError
from ._liveness import process_alive
from ._payload import usage_from_backup
from ._service import BackupService, ProgressObserver, _remove_leftovers, describe_failure
from ._tracing import describe, traced
from ._verify import verify_record

__all__ = ["RESET_EVENT", "reset_status"]

log = logging.getLogger("backup")

RESET_EVENT = "backup.reset_status"
_SHIELDED_REPORT_TIMEOUT = 15.0


@traced("reset_status")
async def reset_status(service: BackupService, backup_id: str, state: str, *, user: str | None = None,
                       ctx: ContextLike = None, on_progress: ProgressObserver | None = None) -> BackupRecord:
    """Force backup ``backup_id`` to ``state`` (``available`` or ``error``); returns the new
    record. ``user`` is recorded as who asked (default: the context's user_id). Refused
    requests (another state, unknown id, ``deleted``, an operation still running here, the
    wrong store for a verify) emit only ``.error`` and change nothing; a failed verify emits
    ``.start`` then ``.error`` and changes nothing."""
    context = service._context(ctx)
    who = user or context.user_id or service.user_id
    record: BackupRecord | None = None
    try:
        to = _target(backup_id, state)
        record = await service.catalog.get(backup_id)
        describe(record)
        if record.status is BackupStatus.DELETED:
            raise InvalidStatusTransitionError(f"backup {record.id!r} is deleted: its objects are gone, it cannot be"
                                               " reset")
        await _refuse_a_running_operation(service, record)
        verify = to is BackupStatus.AVAILABLE and record.status is not BackupStatus.RESTORING
        if verify:
            service.check_store(record)
    except (BackupNotFoundError, InvalidStatusTransitionError, WrongStoreError) as exc:
        log.error("backup %s: reset-status refused: %s", backup_id, exc)
        await service._reject(context, "reset_status", backup_id, exc, record)
        raise
    await service._emit(context, f"{RESET_EVENT}.start", usage_from_backup(record))
    try:
        if verify:
            await verify_record(service, record, on_progress=on_progress)
        reason = None if to is BackupStatus.AVAILABLE else \
            f"status reset from {record.status.value} to error by {who} on {service.host}"
        updated = await service.catalog.reset_status(record.id, to, expect=record, user=who, host=service.host,
                                                     fail_reason=reason)
    except BaseException as exc:
        why = describe_failure(exc)
        log.error("backup %s: reset-status to %s failed, status left %s: %s", record.id, to.value,
                  record.status.value, why)
        with anyio.CancelScope(shield=True), anyio.move_on_after(_SHIELDED_REPORT_TIMEOUT):
            await service._emit(context, f"{RESET_EVENT}.error",
                                usage_from_backup(record, fail_reason=f"not reset to {to.value}: {why}"),
                                Priority.ERROR)
        raise
    if record.status is BackupStatus.RESTORING and record.restore_target is not None \
            and (record.worker_host or record.host) == service.host:
        await anyio.to_thread.run_sync(_remove_leftovers, record.restore_target, record.id)
    log.info("backup %s: status reset from %s to %s by %s on %s", record.id, record.status.value, to.value, who,
             service.host)
    await service._emit(context, f"{RESET_EVENT}.end", usage_from_backup(updated))
    return updated


def _target(backup_id: str, state: str) -> BackupStatus:
    allowed = sorted(s.value for s in RESET_STATUSES)
    try:
        to = BackupStatus(state)
    except ValueError:
        to = None
    if to not in RESET_STATUSES:
        raise InvalidStatusTransitionError(f"backup {backup_id!r}: a reset sets {' or '.join(allowed)}, not"
                                           f" {state!r}")
    assert to is not None
    return to


async def _refuse_a_running_operation(service: BackupService, record: BackupRecord) -> None:
    """InvalidStatusTransitionError while the process this host recorded as running the
    backup's operation still lives (a reset would pull the record from under it)."""
    if record.worker_pid is None or (record.worker_host or record.host) != service.host:
        return
    if await anyio.to_thread.run_sync(process_alive, record.worker_pid, record.worker_token):
        raise InvalidStatusTransitionError(
            f"backup {record.id!r} is {record.status.value}: process {record.worker_pid} on this host ({service.host})"
            " is still running that operation; wait for it or stop it, then reset")

