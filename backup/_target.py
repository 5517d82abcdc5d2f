"""Where a restore writes: a new or replaced regular file, or a block device, never through
a symlink, never over something that appeared meanwhile, one restore per target at a time.

The target's directory may be writable by others (``/tmp``, a shared scratch directory), so
every step works on a descriptor of that directory and on names nobody can have prepared:

- a lock file ``.NAME.restore.lock`` held for the whole restore, so a second restore to the
  same target is refused (``_target_lock``);
- the data goes to ``.NAME.<backup id>.<random>.partial``, opened with
  ``O_CREAT|O_EXCL|O_NOFOLLOW``: a planted file or symlink makes the open fail instead of
  being written through;
- the finished file is renamed onto ``NAME`` with ``renameat2(RENAME_NOREPLACE)`` (or, where
  the kernel or filesystem lacks it, ``link`` + ``unlink``), so a file that appeared under
  ``NAME`` meanwhile is not replaced unless ``overwrite`` was given.

A block device (``overwrite`` required) is written in place, opened with ``O_NOFOLLOW`` and
checked to be the device first seen. Everything here blocks; callers use worker threads.

Direct writes: the target is also opened a second time, through ``/proc/self/fd`` (the same
file, never its name again), with ``O_DIRECT``; a write from a page-aligned buffer at an
aligned offset (a restore decompresses into such buffers, ``_buffers``) goes through it
straight to the disk, all but its last partial page, instead of being copied into the page
cache and written back by the final sync. Where ``O_DIRECT`` is refused (no ``/proc``, a
filesystem without it: ``EINVAL``) everything goes through the page cache.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import stat
from typing import Any

from ._buffers import ALIGN, is_aligned
from ._errors import BackupError, RestoreTargetError
from ._sparse import pwrite_all, zero_range
from ._target_lock import (
    RestoreTargetBusyError,
    TargetLock,
    _describe,
    _lstat,
    _open_dir,
    _reason,
    _same,
    _symlink_error,
    lock_restore_target,
    partial_prefix,
    remove_restore_leftovers,
)

# The lock's names are re-exported: callers import them from here.
__all__ = ["RestoreTarget", "RestoreTargetBusyError", "TargetLock", "lock_restore_target",
           "open_restore_target", "remove_restore_leftovers"]

_RENAME_NOREPLACE = 1


def _new_token() -> str:
    """The random part of a partial file's name (tests replace it to predict the name)."""
    return secrets.token_hex(6)


# -- the target --------------------------------------------------------------------------


def _reopen_direct(fd: int) -> int:
    """A second descriptor of ``fd``'s file for O_DIRECT writes, or -1 where there is none."""
    try:
        return os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
    except (OSError, AttributeError):  # no /proc, no O_DIRECT here, or the filesystem refuses it
        return -1


class RestoreTarget:
    """An opened target: ``fd`` to write at offsets, then :meth:`finish` or :meth:`discard`."""

    # An O_DIRECT descriptor of the same file (-1: none), and whether it still works; class
    # defaults for targets that write otherwise (an RBD image, _rbd_target).
    _direct_fd = -1
    _direct_ok = False

    def __init__(self, where: str, dir_fd: int, name: str, fd: int, partial: str | None, overwrite: bool) -> None:
        self.where = where
        self.fd = fd
        self.in_place = partial is None
        self._dir_fd = dir_fd
        self._name = name
        self._partial = partial
        self._overwrite = overwrite
        self._identity = os.fstat(fd)
        self._direct_fd = _reopen_direct(fd)
        self._direct_ok = self._direct_fd >= 0

    @property
    def direct(self) -> bool:
        """Whether writes of aligned buffers at aligned offsets bypass the page cache."""
        return self._direct_ok

    @property
    def written_path(self) -> str:
        """Where the bytes go now (for messages)."""
        if self._partial is None:
            return self.where
        return os.path.join(os.path.dirname(self.where), self._partial)

    def write(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        view = memoryview(data)
        if self._direct_ok and offset % ALIGN == 0 and len(view) >= ALIGN and is_aligned(view):
            bulk = len(view) - len(view) % ALIGN
            if self._write_direct(view[:bulk], offset):
                view, offset = view[bulk:], offset + bulk
        if view:
            pwrite_all(self.fd, view, offset, self.written_path)

    def _write_direct(self, view: memoryview, offset: int) -> bool:
        """Write ``view`` with O_DIRECT; False (and no direct write again) if refused."""
        try:
            while view:
                done = os.pwrite(self._direct_fd, view, offset)
                view, offset = view[done:], offset + done
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise BackupError(f"cannot write restore target {self.written_path!r}: {_reason(exc)}") from None
            self._direct_ok = False  # the descriptor is closed with the target (other writers may hold it)
            return False
        return True

    def zero(self, offset: int, length: int) -> bool:
        """Make a range of a target written in place zero; whether a hole was punched."""
        return zero_range(self.fd, offset, length, self.written_path)

    def prepare(self, size: int) -> None:
        """Size a new file (all holes) before the data is written."""
        if not self.in_place:
            os.ftruncate(self.fd, size)

    def _close(self) -> None:
        if self._direct_fd >= 0:
            os.close(self._direct_fd)
            self._direct_fd = -1
            self._direct_ok = False
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


def open_restore_target(target: str | os.PathLike[str], *, overwrite: bool, operation: str) -> RestoreTarget:
    """Open where a restore of ``operation`` (the backup id) writes.

    A regular-file target gets a new partial file, renamed into place by
    :meth:`RestoreTarget.finish` when every chunk is verified; a block device (``overwrite``
    required) is written in place. A symlink target is refused. An RBD image
    (``rbd://``) is ``_rbd_target``'s: ``_targets`` picks the one a name needs.
    """
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
