"""Where a restore writes: a new or replaced regular file, or a block device, never through
a symlink, never over something that appeared meanwhile, one restore per target at a time.

The target's directory may be writable by others (``/tmp``, a shared scratch directory), so
every step works on a descriptor of that directory and on names nobody can have prepared:

- a lock file ``.NAME.restore.lock`` (created exclusively, or reused only if it is a plain
  file of ours, never through a symlink) held with ``flock`` for the whole restore, naming
  the backup and process holding it, so a second restore to the same target is refused;
- the data goes to ``.NAME.<backup id>.<random>.partial``, opened with
  ``O_CREAT|O_EXCL|O_NOFOLLOW``: a planted file or symlink makes the open fail instead of
  being written through;
- the finished file is renamed onto ``NAME`` with ``renameat2(RENAME_NOREPLACE)`` (or, where
  the kernel or filesystem lacks it, ``link`` + ``unlink``), so a file that appeared under
  ``NAME`` meanwhile is not replaced unless ``overwrite`` was given.

A block device (``overwrite`` required) is written in place, opened with ``O_NOFOLLOW`` and
checked to be the device first seen. Everything here blocks; callers use worker threads.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import json
import os
import secrets
import stat
import time
from collections.abc import Mapping
from typing import Any

from ._errors import BackupError, RestoreTargetError
from ._sparse import pwrite_all, zero_range
from ._volume import is_rbd_url

__all__ = ["RestoreTarget", "RestoreTargetBusyError", "TargetLock", "lock_restore_target", "open_restore_target",
           "remove_restore_leftovers"]

_NAME_MAX = 255
_RENAME_NOREPLACE = 1
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


def _new_token() -> str:
    """The random part of a partial file's name (tests replace it to predict the name)."""
    return secrets.token_hex(6)


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
    restore has it. ``holder`` (backup id, pid, host) is written into the lock file."""
    if is_rbd_url(target):  # an RBD image: checked not in use; its writer locks it (_rbd_target)
        from ._rbd_target import lock_rbd_target

        return lock_rbd_target(str(target), holder)
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


# -- the target --------------------------------------------------------------------------


class RestoreTarget:
    """An opened target: ``fd`` to write at offsets, then :meth:`finish` or :meth:`discard`."""

    def __init__(self, where: str, dir_fd: int, name: str, fd: int, partial: str | None, overwrite: bool) -> None:
        self.where = where
        self.fd = fd
        self.in_place = partial is None
        self._dir_fd = dir_fd
        self._name = name
        self._partial = partial
        self._overwrite = overwrite
        self._identity = os.fstat(fd)

    @property
    def written_path(self) -> str:
        """Where the bytes go now (for messages)."""
        if self._partial is None:
            return self.where
        return os.path.join(os.path.dirname(self.where), self._partial)

    def write(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        pwrite_all(self.fd, data, offset, self.written_path)

    def zero(self, offset: int, length: int) -> bool:
        """Make a range of a target written in place zero; whether a hole was punched."""
        return zero_range(self.fd, offset, length, self.written_path)

    def prepare(self, size: int) -> None:
        """Size a new file (all holes) before the data is written."""
        if not self.in_place:
            os.ftruncate(self.fd, size)

    def _close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1

    def finish(self, size: int) -> None:
        """Sync; a partial file becomes the target only now, never replacing a file that
        appeared meanwhile (unless overwrite)."""
        try:
            if self._partial is not None:
                os.ftruncate(self.fd, size)
            os.fsync(self.fd)
            if self._partial is not None:
                if not _same(_lstat(self._partial, self._dir_fd), self._identity):
                    raise RestoreTargetError(f"restore target {self.where!r}: the partial file {self._partial!r} was"
                                             " replaced while the restore ran; nothing was put in place")
                if self._overwrite:
                    os.rename(self._partial, self._name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
                else:
                    _rename_noreplace(self._dir_fd, self._partial, self._name, self.where)
                self._partial = None
                os.fsync(self._dir_fd)
        except OSError as exc:
            raise BackupError(f"cannot finish restore target {self.where!r}: {_reason(exc)}") from None
        finally:
            if self._partial is None:
                self._close()

    def discard(self) -> None:
        """Close and remove the partial file (only if it is still the one this restore made)."""
        try:
            if self._partial is not None and _same(_lstat(self._partial, self._dir_fd), self._identity):
                os.unlink(self._partial, dir_fd=self._dir_fd)
        except OSError:
            pass
        finally:
            self._close()


def _renameat2() -> Any:
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_RENAMEAT2 = _renameat2()


def _rename_noreplace(dir_fd: int, src: str, dst: str, where: str) -> None:
    """Rename ``src`` to ``dst`` in ``dir_fd`` unless ``dst`` exists, atomically."""
    try:
        if _RENAMEAT2 is not None:
            if _RENAMEAT2(dir_fd, os.fsencode(src), dir_fd, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
                return
            code = ctypes.get_errno()
            if code not in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise OSError(code, os.strerror(code))
        # No renameat2 here, or not on this filesystem: link fails if dst exists.
        os.link(src, dst, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        os.unlink(src, dir_fd=dir_fd)
    except FileExistsError:
        raise RestoreTargetError(f"restore target {where!r} appeared while the restore ran (another program or"
                                 " restore made it); it was not replaced and the restored data was discarded:"
                                 " pass overwrite to replace it") from None


def open_restore_target(target: str | os.PathLike[str], *, overwrite: bool, operation: str, create: bool = False,
                        size: int = 0) -> RestoreTarget:
    """Open where a restore of ``operation`` (the backup id) writes.

    A regular-file target gets a new partial file, renamed into place by
    :meth:`RestoreTarget.finish` when every chunk is verified; a block device (``overwrite``
    required) is written in place. A symlink target is refused. An RBD image (``rbd://``,
    ``_rbd_target``) is written in place too, or made with ``create`` at ``size`` bytes.
    """
    if is_rbd_url(target):
        from ._rbd_target import open_rbd_target

        return open_rbd_target(str(target), overwrite=overwrite, create=create, operation=operation, size=size)
    where = os.fspath(target)
    dir_fd, name = _open_dir(where)
    try:
        st = _lstat(name, dir_fd)
        if st is not None:
            if stat.S_ISLNK(st.st_mode):
                raise _symlink_error(where, name, dir_fd)
            if stat.S_ISBLK(st.st_mode):
                if not overwrite:
                    raise RestoreTargetError(f"restore target {where!r} is a block device; pass overwrite to write it")
                return RestoreTarget(where, dir_fd, name, _open_device(where, name, dir_fd, st), None, overwrite)
            if not stat.S_ISREG(st.st_mode):
                raise RestoreTargetError(f"restore target {where!r} is {_describe(st.st_mode)}")
            if not overwrite:
                raise RestoreTargetError(f"restore target {where!r} already exists; pass overwrite to replace it")
        partial = partial_prefix(name, operation) + f"{_new_token()}.partial"
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666,
                         dir_fd=dir_fd)
        except FileExistsError:
            raise RestoreTargetError(f"restore target {where!r}: a file {partial!r} is already there (planted?);"
                                     " a restore writes only files it creates") from None
        except OSError as exc:
            raise RestoreTargetError(f"restore target {where!r} cannot be written: {_reason(exc)}") from None
        return RestoreTarget(where, dir_fd, name, fd, partial, overwrite)
    except BaseException:
        os.close(dir_fd)
        raise


def _open_device(where: str, name: str, dir_fd: int, seen: os.stat_result) -> int:
    try:
        fd = os.open(name, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _symlink_error(where, name, dir_fd) from None
        raise RestoreTargetError(f"restore target {where!r} cannot be opened: {_reason(exc)}") from None
    st = os.fstat(fd)
    if not stat.S_ISBLK(st.st_mode) or (st.st_rdev, st.st_ino) != (seen.st_rdev, seen.st_ino):
        os.close(fd)
        raise RestoreTargetError(f"restore target {where!r} changed while it was opened; nothing was written")
    return fd


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
