"""Reading volumes: a regular file or a block device (restore targets: ``_target``).

Opening checks the kind first, so a FIFO or a directory is a clear VolumeError instead
of a hang or an IsADirectoryError traceback. Everything here blocks; callers run it in
worker threads.
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

from ._errors import VolumeError

__all__ = ["is_rbd_url", "open_volume", "read_exactly", "volume_size"]

RBD_SCHEME = "rbd://"


def is_rbd_url(path: object) -> bool:
    """Whether a volume or restore target names an RBD image (``_rbd``), not a file."""
    return isinstance(path, str) and path.startswith(RBD_SCHEME)


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
    if is_rbd_url(path):
        from ._rbd import image_size  # librbd only for rbd:// volumes

        return image_size(str(path))
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
