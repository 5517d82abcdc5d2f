"""Reading and writing volumes: a regular file or a block device.

Opening checks the kind first, so a FIFO or a directory is a clear VolumeError instead
of a hang or an IsADirectoryError traceback. Everything here blocks; callers run it in
worker threads.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from ._errors import RestoreTargetError, VolumeError

__all__ = ["open_restore_target", "open_volume", "partial_path", "read_exactly", "volume_size"]


def _describe(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    return "not a regular file"


def _os_reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def open_volume(path: str | os.PathLike[str]) -> tuple[BinaryIO, int]:
    """Open a volume for reading; returns the file and its size in bytes."""
    where = os.fspath(path)
    try:
        st = os.stat(where)
    except FileNotFoundError:
        raise VolumeError(f"volume {where!r} does not exist") from None
    except OSError as exc:
        raise VolumeError(f"volume {where!r} cannot be read: {_os_reason(exc)}") from None
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise VolumeError(f"volume {where!r} is {_describe(st.st_mode)}, not a regular file or block device")
    try:
        fh = open(where, "rb", buffering=0)
    except OSError as exc:
        raise VolumeError(f"volume {where!r} cannot be opened: {_os_reason(exc)}") from None
    try:
        size = fh.seek(0, os.SEEK_END) if stat.S_ISBLK(st.st_mode) else st.st_size
        fh.seek(0)
    except OSError as exc:
        fh.close()
        raise VolumeError(f"volume {where!r} cannot be read: {_os_reason(exc)}") from None
    return fh, size


def volume_size(path: str | os.PathLike[str]) -> int:
    """The volume's size in bytes (raises VolumeError like open_volume)."""
    fh, size = open_volume(path)
    fh.close()
    return size


def read_exactly(fh: BinaryIO, length: int, where: str, offset: int) -> bytes:
    """``length`` bytes, or a VolumeError if the volume ends early (it shrank while read)."""
    parts: list[bytes] = []
    want = length
    try:
        while want:
            part = fh.read(want)
            if not part:
                raise VolumeError(
                    f"volume {where!r} ended at byte {offset + length - want} while {offset + length} were expected"
                    " (did it shrink during the backup?)"
                )
            parts.append(part)
            want -= len(part)
    except OSError as exc:
        raise VolumeError(f"volume {where!r}: read error at byte {offset + length - want}: {_os_reason(exc)}") from None
    return parts[0] if len(parts) == 1 else b"".join(parts)


def partial_path(target: str | os.PathLike[str]) -> Path:
    """The hidden file a regular-file restore writes before renaming it to ``target``."""
    final = Path(target)
    return final.with_name(f".{final.name}.partial")


def open_restore_target(target: str | os.PathLike[str], *, overwrite: bool) -> tuple[BinaryIO, Path, bool]:
    """Open where a restore writes: ``(file, path_written, is_block_device)``.

    A regular-file target is written to a hidden partial file next to it and renamed into
    place only when every chunk is verified, so a failed restore leaves no wrong data under
    the target name. A block device is written in place (``overwrite`` required).
    """
    final = Path(target)
    try:
        st = os.stat(final)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise RestoreTargetError(f"restore target {str(final)!r}: {_os_reason(exc)}") from None
    if st is not None:
        if stat.S_ISBLK(st.st_mode):
            if not overwrite:
                raise RestoreTargetError(f"restore target {str(final)!r} is a block device; pass overwrite to write it")
            try:
                return open(final, "r+b", buffering=0), final, True
            except OSError as exc:
                raise RestoreTargetError(f"restore target {str(final)!r} cannot be opened: {_os_reason(exc)}") from None
        if not stat.S_ISREG(st.st_mode):
            raise RestoreTargetError(f"restore target {str(final)!r} is {_describe(st.st_mode)}")
        if not overwrite:
            raise RestoreTargetError(f"restore target {str(final)!r} already exists; pass overwrite to replace it")
    partial = partial_path(final)
    try:
        return open(partial, "wb", buffering=0), partial, False
    except OSError as exc:
        raise RestoreTargetError(f"restore target {str(final)!r} cannot be written: {_os_reason(exc)}") from None
