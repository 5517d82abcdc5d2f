"""An RBD image as a restore target: written in place (an existing image, ``overwrite``) or
made for the restore (``create``), locked against a second restore for as long as it writes.

The image's own exclusive lock (the exclusive-lock feature, on by default) is taken
explicitly by the handle that writes (``lock_acquire``): librbd then refuses every other
client's writes (EROFS) until it is released, and breaks it by itself when its holder died.
Which restore holds it is written beside it in the image's metadata (:data:`NOTE`), with
the lock owner's address, so a second restore is refused by name — before it starts, by the
service's lock step (:func:`lock_rbd_target`), and again by the lock itself. An image
without the feature gets an advisory lock instead (``rbd lock ls``), its cookie naming the
restore. Blocking calls: callers run them in worker threads.

The note is written just after the lock is taken, so a reader may come in between: a note
counts only if it names the lock's current owner (else it is not written yet, or left by a
restore whose lock is gone), and a refused restore reads again for a while, as the file
target does (``_target._busy``), before it gives up on a name. A stale note is never taken
for the holder's: a live restore's lock is not broken as a dead one's.

On release the note is removed only if still its own: the lock may have been broken meanwhile
(``rbd lock rm`` without blocklisting) and the note be the next holder's. librbd's metadata
calls are each atomic but none conditional (and a client that lost the lock may still remove),
so the removal is one RADOS op on the header object, ``omap_cmp`` (this note, exactly) +
``omap_rm_keys``, applied all or nothing by the OSD: no window. It relies on cls_rbd's layout
(omap key ``metadata_`` + name, the value as written); the tests check a released note is gone.
"""

from __future__ import annotations

import errno
import json
import logging
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._errors import BackupError, RestoreTargetError
from ._liveness import current_process, process_alive
from ._rbd import Connection, RbdLocation, binding, connect, failure, reason
from ._target import RestoreTarget
from ._target_lock import _HOLDER_READS, RestoreTargetBusyError, TargetLock

__all__ = ["NOTE", "RbdTarget", "RbdTargetLock", "lock_rbd_target", "open_rbd_target"]

log = logging.getLogger("backup")

NOTE = "notifykit.restore"
#: The note's omap key in the image's header object (cls_rbd: ``metadata_`` + the name).
_NOTE_KEY = f"metadata_{NOTE}"

#: Seconds between the reads of a refused restore waiting for the holder's note (``_HOLDER_READS`` of them).
_HOLDER_READ_INTERVAL = 0.02


def _note(holder: Mapping[str, Any]) -> str:
    pid, token = current_process()
    return json.dumps({"backup_id": holder.get("backup_id"), "pid": holder.get("pid", pid),
                       "host": holder.get("host"), "token": token, "owner": holder.get("owner")}, sort_keys=True)


def _holder(text: str | None) -> dict[str, Any]:
    try:
        found = json.loads(text or "")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _lockers(image: Any) -> tuple[list[str], list[tuple[str, str]], dict[str, Any]]:
    """(exclusive lock owners, advisory (client, cookie) locks, the note of the restore that
    holds the lock: ``{}`` when no note names the current holder)."""
    _, rbd = binding()
    try:
        owners = [str(o.get("owner")) for o in image.lock_get_owners()]
    except rbd.Error:  # no exclusive-lock feature
        owners = []
    advisory = [(str(c), str(k)) for c, k, _ in (image.list_lockers() or {}).get("lockers", [])
                if not str(k).startswith("auto ")]
    holder: dict[str, Any] = {}
    if owners:
        try:
            holder = _holder(image.metadata_get(NOTE))
        except (rbd.Error, KeyError):
            pass
        if holder.get("owner") not in owners:  # not written yet, or a gone restore's
            holder = {}
    elif advisory:
        holder = _holder(advisory[0][1])  # the cookie is the note, taken with the lock
    return owners, advisory, holder


def _named_lockers(image: Any) -> tuple[list[str], list[tuple[str, str]], dict[str, Any]]:
    """:func:`_lockers`, read again for a while when the image is locked but its note names
    no one yet (the holder writes it just after taking the lock)."""
    for _ in range(_HOLDER_READS - 1):
        owners, advisory, holder = _lockers(image)
        if not (owners or advisory) or holder.get("backup_id"):
            return owners, advisory, holder
        time.sleep(_HOLDER_READ_INTERVAL)
    return _lockers(image)


def _dead(holder: Mapping[str, Any]) -> bool:
    """A restore of this host whose process is gone (SIGKILL, power loss)."""
    return bool(holder.get("backup_id")) and holder.get("host") == socket.gethostname() and \
        not process_alive(holder.get("pid"), holder.get("token"))


def _break_dead(image: Any, loc: RbdLocation) -> bool:
    """Break the lock of a restore of this host that died, at once (librbd itself would only
    after the OSDs' watch timeout). Whether there was one."""
    _, rbd = binding()
    owners, advisory, holder = _lockers(image)
    if not (owners or advisory) or not _dead(holder):
        return False
    log.warning("restore target %s: breaking the lock of the restore of backup %s (process %s on %s is gone)",
                loc.display, holder.get("backup_id"), holder.get("pid"), holder.get("host"))
    try:
        for owner in owners:
            image.lock_break(rbd.RBD_LOCK_MODE_EXCLUSIVE, owner)
        for client, cookie in advisory:
            image.break_lock(client, cookie)
    except rbd.Error as exc:
        raise failure(exc, loc, "restore target", "cannot break the lock of a restore that died",
                      RestoreTargetError) from None
    return True


def _busy(image: Any, loc: RbdLocation, *, ignore_dead: bool) -> RestoreTargetBusyError | None:
    """Why the image is in use (named by the restore's note), or None when it is not."""
    owners, advisory, holder = _named_lockers(image)
    if not owners and not advisory:
        return None
    if holder.get("backup_id"):
        if ignore_dead and _dead(holder):
            return None  # its restore died: the restore breaks its lock (_break_dead)
        return RestoreTargetBusyError(
            f"restore target {loc.display!r} is in use by the restore of backup {holder['backup_id']} (process"
            f" {holder.get('pid')} on {holder.get('host')}); wait for it to finish or choose another target",
            {k: holder.get(k) for k in ("backup_id", "pid", "host")})
    who = owners[0] if owners else advisory[0][0]
    return RestoreTargetBusyError(f"restore target {loc.display!r} is in use: {who} holds its lock (is it open for"
                                  f" writing, e.g. mapped or attached? rbd lock ls {loc.pool}/{loc.image}); stop that"
                                  " or choose another target", None)


class RbdTargetLock(TargetLock):
    """What the service holds before a restore starts: nothing, once the image was found not
    in use; the restore's writing handle takes the lock itself (:func:`_acquire`)."""

    def __init__(self) -> None:  # no descriptor: no super().__init__
        pass

    def release(self) -> None:
        pass


def lock_rbd_target(url: str, holder: Mapping[str, Any]) -> TargetLock:
    """Refuse, before anything starts, a restore to an image another restore (or client) is
    writing: RestoreTargetBusyError naming it. A missing image is not in use."""
    _, rbd = binding()
    loc = RbdLocation.parse(url)
    conn = connect(loc, "restore target", RestoreTargetError)
    try:
        try:
            image = rbd.Image(conn.ioctx, loc.image)  # read-only handles cannot see lock owners
        except rbd.ImageNotFound:
            return RbdTargetLock()
        except rbd.Error as exc:
            raise failure(exc, loc, "restore target", "cannot open the image", RestoreTargetError) from None
        try:
            busy = _busy(image, loc, ignore_dead=True)
        finally:
            image.close()
        if busy is not None:
            raise busy
        return RbdTargetLock()
    finally:
        conn.close()


def _lock(image: Any, loc: RbdLocation, note: str) -> str | None:
    """One try at the image's lock: None (its exclusive lock) or the advisory lock's cookie."""
    _, rbd = binding()
    try:
        image.lock_acquire(rbd.RBD_LOCK_MODE_EXCLUSIVE)
        return None
    except rbd.InvalidArgument:  # no exclusive-lock feature: an advisory lock
        try:
            image.lock_exclusive(note)
        except (rbd.ImageBusy, rbd.ImageExists):
            raise _busy(image, loc, ignore_dead=False) or RestoreTargetError(
                f"restore target {loc.display!r}: its lock kept changing; try again") from None
        return note
    except (rbd.ReadOnlyImage, rbd.ImageBusy):
        raise _busy(image, loc, ignore_dead=False) or RestoreTargetError(
            f"restore target {loc.display!r}: its lock kept changing; try again") from None
    except rbd.Error as exc:
        raise failure(exc, loc, "restore target", "cannot lock the image", RestoreTargetError) from None


@dataclass(frozen=True, slots=True)
class _Hold:
    """What :func:`_acquire` took: the advisory lock's cookie (None: the image's exclusive
    lock) and the note it wrote, which its release compares before removing it."""

    cookie: str | None
    note: str


def _acquire(image: Any, loc: RbdLocation, operation: str) -> _Hold:
    """Take the image for this restore: its exclusive lock or, without the feature, an advisory
    lock (the cookie); the holder's note is written beside it. The lock of a restore of this
    host that died is broken first."""
    _, rbd = binding()
    holder: dict[str, str | None] = {"backup_id": operation, "host": socket.gethostname()}
    _break_dead(image, loc)  # else lock_acquire would wait out the dead holder's watch (30 s)
    try:
        cookie = _lock(image, loc, _note(holder))
    except RestoreTargetBusyError:
        if not _break_dead(image, loc):
            raise
        cookie = _lock(image, loc, _note(holder))
    try:
        if cookie is None:  # the exclusive lock: the note names its owner (this handle's client)
            holder["owner"] = next((str(o.get("owner")) for o in image.lock_get_owners()), None)
        note = _note(holder)
        image.metadata_set(NOTE, note)
    except rbd.Error as exc:  # a note that landed all the same is stale once unlocked: _lockers ignores it
        _unlock(image, cookie)
        raise failure(exc, loc, "restore target", "cannot note its restore lock", RestoreTargetError) from None
    return _Hold(cookie, note)


def _release(image: Any, ioctx: Any, hold: _Hold) -> None:
    """Remove the note if it is still this restore's, atomically (see the module's docstring),
    then release the lock :func:`_acquire` took."""
    rados, rbd = binding()
    op = ioctx.create_write_op()
    try:
        op.omap_cmp(_NOTE_KEY, hold.note, rados.LIBRADOS_CMPXATTR_OP_EQ)
        ioctx.remove_omap_keys(op, (_NOTE_KEY,))
        ioctx.operate_write_op(op, f"rbd_header.{image.id()}")
    except (rados.Error, rbd.Error) as exc:
        if getattr(exc, "errno", None) == errno.ECANCELED:  # the compare failed: not ours (or gone)
            log.warning("restore target: its note was no longer its own (its lock was broken?): left as it is")
        else:  # e.g. ESHUTDOWN: blocklisted when its lock was broken, it can write nothing
            log.warning("restore target: its note was not removed: %s", reason(exc))
    finally:
        ioctx.release_write_op(op)
        _unlock(image, hold.cookie)


def _unlock(image: Any, cookie: str | None) -> None:
    """Release the advisory lock (``cookie``) or the exclusive lock; one broken meanwhile is logged."""
    _, rbd = binding()
    try:
        if cookie is not None:
            image.unlock(cookie)
        else:
            image.lock_release()
    except rbd.Error as exc:  # broken by an operator meanwhile: nothing to undo
        log.warning("restore target: its lock was not released: %s", reason(exc))


# -- the restore target -------------------------------------------------------------------


class RbdTarget(RestoreTarget):
    """An image a restore writes in place: written at offsets, zero ranges discarded; an image
    the restore created is removed again if the restore fails."""

    def __init__(self, loc: RbdLocation, conn: Connection, image: Any, created: bool,
                 hold: _Hold) -> None:  # no super().__init__: there is no descriptor
        self.where = loc.display
        self.fd = -1
        self.in_place = not created
        self._loc = loc
        self._conn: Connection | None = conn
        self._image = image
        self._created = created
        self._ioctx = conn.ioctx  # open until discard() closed the image
        self._hold = hold  # the lock and the note _acquire took

    @property
    def written_path(self) -> str:
        return self.where

    def _error(self, exc: BaseException, doing: str) -> BackupError:
        return failure(exc, self._loc, "restore target", doing, BackupError)

    def write(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        _, rbd = binding()
        try:
            done = self._image.write(bytes(data), offset)
        except rbd.Error as exc:
            raise self._error(exc, f"cannot write at byte {offset}") from None
        if done != len(data):
            raise BackupError(f"restore target {self.where}: wrote {done} of {len(data)} bytes at byte {offset}")

    def zero(self, offset: int, length: int) -> bool:
        """Discard: the range reads back as zeros (partial discards are not skipped)."""
        _, rbd = binding()
        try:
            self._image.discard(offset, length)
        except rbd.Error as exc:
            raise self._error(exc, f"cannot discard {length} bytes at byte {offset}") from None
        return True

    def prepare(self, size: int) -> None:
        """Nothing to do: a created image is all zeros at the backup's size already."""

    def _close_image(self) -> None:
        image, self._image = self._image, None
        if image is None:
            return
        try:
            _release(image, self._ioctx, self._hold)
        finally:
            image.close()

    def finish(self, size: int) -> None:
        _, rbd = binding()
        try:
            self._image.flush()
        except rbd.Error as exc:
            raise self._error(exc, "cannot flush the writes") from None  # the restore then discards
        self._created = False  # finished: kept
        self.discard()

    def discard(self) -> None:
        """Close (releasing the lock it took); an image this restore created is removed: it
        holds a partial restore."""
        _, rbd = binding()
        conn, self._conn = self._conn, None
        try:
            self._close_image()
            if self._created and conn is not None:
                self._created = False
                try:
                    rbd.RBD().remove(conn.ioctx, self._loc.image)
                except rbd.Error as exc:
                    log.warning("restore target %s: the partly restored image it created could not be removed: %s",
                                self.where, reason(exc))
        finally:
            if conn is not None:
                conn.close()


def open_rbd_target(url: str, *, overwrite: bool, create: bool, operation: str, size: int) -> RbdTarget:
    """An existing image of at least ``size`` bytes (``overwrite`` required: it is written in
    place), or with ``create`` a new one of ``size`` bytes (never an image that exists)."""
    _, rbd = binding()
    loc = RbdLocation.parse(url)
    where = loc.display
    conn = connect(loc, "restore target", RestoreTargetError)
    try:
        created = False
        try:
            image = rbd.Image(conn.ioctx, loc.image)
        except rbd.ImageNotFound:
            if not create:
                raise RestoreTargetError(f"restore target {where} does not exist: pass --create to create it (or"
                                         " create it with rbd create)") from None
            try:
                rbd.RBD().create(conn.ioctx, loc.image, size)
            except rbd.ImageExists:
                raise RestoreTargetError(f"restore target {where} appeared while the restore started; it was not"
                                         " written: pass --overwrite to write it") from None
            except rbd.Error as exc:
                raise failure(exc, loc, "restore target", "cannot create the image", RestoreTargetError) from None
            created = True
            image = rbd.Image(conn.ioctx, loc.image)
        except rbd.Error as exc:
            raise failure(exc, loc, "restore target", "cannot open the image", RestoreTargetError) from None
        try:
            if not created:
                if not overwrite:
                    raise RestoreTargetError(f"restore target {where} is an existing RBD image; pass --overwrite to"
                                             " write it (or restore to a new image with --create)")
                have = int(image.size())
                if have < size:
                    raise RestoreTargetError(f"restore target {where} is {have} bytes, the backup {size}: grow it"
                                             " (rbd resize) or restore to a new image with --create")
            # A created image is left if its lock fails: another restore that took it writes it.
            hold = _acquire(image, loc, operation)
        except BaseException:
            image.close()
            raise
        return RbdTarget(loc, conn, image, created, hold)
    except BaseException:
        conn.close()
        raise
