"""The names and the lock of a restore target (``_target``): a lock file
``.NAME.restore.lock`` (created exclusively, or reused only if it is a plain file of ours,
never through a symlink) held with ``flock`` for the whole restore, naming the backup and
process holding it, so a second restore to the same target is refused; a block device is
locked itself. Every step works on a descriptor of the target's directory, which may be
writable by others. Everything here blocks; callers use worker threads.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import stat
import time
from collections.abc import Mapping
from typing import Any

from ._errors import RestoreTargetError
from ._volume import is_rbd_url

__all__ = ["RestoreTargetBusyError", "TargetLock", "lock_name", "lock_restore_target", "partial_prefix",
           "remove_restore_leftovers"]

_NAME_MAX = 255
_LOCK_ATTEMPTS = 20


class RestoreTargetBusyError(RestoreTargetError):
    """Another restore holds the target: refused before anything is written."""

    def __init__(self, message: str, holder: Mapping[str, Any] | None) -> None:
        super().__init__(message)
        self.holder = dict(holder or {})


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _stem(name: str) -> str:
    """What the hidden names start with: ``.NAME``, or a digest of a name too long to extend."""
    if len(os.fsencode(name)) > _NAME_MAX - 80:
        return "." + hashlib.sha256(os.fsencode(name)).hexdigest()[:32]
    return f".{name}"


def partial_prefix(name: str, operation: str) -> str:
    """Every partial file of ``operation`` (a backup id) for target ``name`` starts so."""
    return f"{_stem(name)}.{operation}."


def lock_name(name: str) -> str:
    return f"{_stem(name)}.restore.lock"


def _open_dir(where: str) -> tuple[int, str]:
    """A descriptor of the target's directory and the target's last name component."""
    head, name = os.path.split(where)
    if name in ("", ".", ".."):
        raise RestoreTargetError(f"restore target {where!r} names a directory, not a file")
    try:
        return os.open(head or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), name
    except OSError as exc:
        raise RestoreTargetError(f"restore target {where!r}: its directory cannot be opened: {_reason(exc)}") from None


def _lstat(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _same(a: os.stat_result | None, b: os.stat_result) -> bool:
    return a is not None and (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _symlink_error(where: str, name: str, dir_fd: int) -> RestoreTargetError:
    try:
        points = f" (to {os.readlink(name, dir_fd=dir_fd)!r})"
    except OSError:
        points = ""
    return RestoreTargetError(f"restore target {where!r} is a symbolic link{points}; a restore writes through no"
                              " symlink: give the path it points to")


def _describe(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"))
    return next((text for test, text in kinds if test(mode)), "not a regular file")


# -- the lock ----------------------------------------------------------------------------


class TargetLock:
    """An exclusive ``flock`` on the target (its lock file, or the device itself) for the
    length of one restore."""

    def __init__(self, dir_fd: int, fd: int, name: str | None) -> None:
        self._dir_fd = dir_fd
        self._fd = fd
        self._name = name  # the lock file's name; None when the device itself is locked

    def release(self) -> None:
        """Remove the lock file (if it is still ours) and let go of the lock."""
        if self._fd < 0:
            return
        try:
            if self._name is not None and _same(_lstat(self._name, self._dir_fd), os.fstat(self._fd)):
                os.unlink(self._name, dir_fd=self._dir_fd)
        except OSError:
            pass  # a stale lock file is harmless: the next restore takes it over
        finally:
            os.close(self._fd)
            os.close(self._dir_fd)
            self._fd = -1


def _busy(where: str, fd: int) -> RestoreTargetBusyError:
    holder: Any = {}
    for _ in range(_HOLDER_READS):  # the holder writes its name just after taking the lock
        try:
            holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
        except (OSError, ValueError):
            holder = {}
        if isinstance(holder, dict) and holder.get("backup_id"):
            break
        time.sleep(0.02)
    if not isinstance(holder, dict) or not holder.get("backup_id"):
        return RestoreTargetBusyError(f"restore target {where!r} is in use by another restore; wait for it to finish"
                                      " or choose another target", None)
    return RestoreTargetBusyError(
        f"restore target {where!r} is in use by the restore of backup {holder['backup_id']} (process"
        f" {holder.get('pid')} on {holder.get('host')}); wait for it to finish or choose another target", holder)


#: How often (every 20 ms) a refused restore reads the lock file for the holder's name.
_HOLDER_READS = 25


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _open_lock_file(where: str, name: str, dir_fd: int) -> int | None:
    """The lock file, created or (if a plain file of ours) reused; None if it vanished."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        return os.open(name, flags | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dir_fd)
    except FileExistsError:
        pass
    except OSError as exc:
        raise RestoreTargetError(f"restore target {where!r}: cannot create its lock file {name!r}:"
                                 f" {_reason(exc)}") from None
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        kind = "is a symbolic link (not followed)" if exc.errno == errno.ELOOP else f"cannot be opened: {_reason(exc)}"
        raise RestoreTargetError(f"restore target {where!r}: its lock file {name!r} {kind}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_uid != os.geteuid():
        os.close(fd)
        raise RestoreTargetError(f"restore target {where!r}: its lock file {name!r} was not made by a restore of"
                                 " this user; remove it if no restore is running")
    return fd


def lock_restore_target(target: str | os.PathLike[str], holder: Mapping[str, Any]) -> TargetLock:
    """Take the target for one restore; RestoreTargetBusyError (naming the holder) if another
    restore has it. ``holder`` (backup id, pid, host) is written into the lock file. A local
    file or device: ``_targets`` sends an RBD image to ``_rbd_target``."""
    where = os.fspath(target)
    dir_fd, name = _open_dir(where)
    try:
        st = _lstat(name, dir_fd)
        if st is not None and stat.S_ISBLK(st.st_mode):
            device = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
            if not _try_flock(device):
                os.close(device)
                raise RestoreTargetBusyError(f"restore target {where!r} is in use by another restore; wait for it to"
                                             " finish or choose another target", None)
            return TargetLock(dir_fd, device, None)
        lock = lock_name(name)
        for _ in range(_LOCK_ATTEMPTS):
            fd = _open_lock_file(where, lock, dir_fd)
            if fd is None:
                continue
            if not _try_flock(fd):
                busy = _busy(where, fd)
                os.close(fd)
                raise busy
            if not _same(_lstat(lock, dir_fd), os.fstat(fd)):  # removed by the holder just before
                os.close(fd)
                continue
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(dict(holder)).encode(), 0)
            except OSError:
                os.close(fd)
                raise
            return TargetLock(dir_fd, fd, lock)
        raise RestoreTargetError(f"restore target {where!r}: its lock file {lock!r} kept changing; try again")
    except OSError as exc:
        os.close(dir_fd)
        raise RestoreTargetError(f"restore target {where!r} cannot be locked: {_reason(exc)}") from None
    except BaseException:
        os.close(dir_fd)
        raise


def remove_restore_leftovers(target: str | os.PathLike[str], operation: str) -> list[str]:
    """After a killed restore of ``operation``: remove its partial files and the target's
    lock file if no restore holds it. Returns the names removed; never follows a symlink."""
    if is_rbd_url(target):  # an RBD image: no partial file, and librbd breaks a dead holder's lock
        return []
    where = os.fspath(target)
    try:
        dir_fd, name = _open_dir(where)
    except RestoreTargetError:
        return []
    removed: list[str] = []
    try:
        prefix = partial_prefix(name, operation)
        for entry in os.listdir(dir_fd):
            if entry.startswith(prefix) and entry.endswith(".partial"):
                st = _lstat(entry, dir_fd)
                if st is not None and stat.S_ISREG(st.st_mode):
                    os.unlink(entry, dir_fd=dir_fd)
                    removed.append(entry)
        lock = lock_name(name)
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
        except OSError:
            return removed
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode) and _try_flock(fd) and _same(_lstat(lock, dir_fd), os.fstat(fd)):
                os.unlink(lock, dir_fd=dir_fd)
                removed.append(lock)
        finally:
            os.close(fd)
    finally:
        os.close(dir_fd)
    return removed
