"""Which restore target a name is: ``rbd://POOL/IMAGE`` an RBD image (``_rbd_target``), anything
else a local file or block device (``_target``, locked by ``_target_lock``).

The choice is made here, above both, so the RBD target builds on the local one's base pieces
(``RestoreTarget``, ``TargetLock``) without the local modules knowing of it. librbd's module is
imported only for an ``rbd://`` target.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ._target import RestoreTarget, open_restore_target
from ._target_lock import TargetLock, lock_restore_target
from ._volume import is_rbd_url

__all__ = ["RestoreTarget", "TargetLock", "lock_target", "open_target"]


def open_target(target: str | os.PathLike[str], *, overwrite: bool, operation: str, create: bool = False,
                size: int = 0) -> RestoreTarget:
    """Open where a restore of ``operation`` (the backup id) writes (see ``open_restore_target``);
    an RBD image is written in place, or made with ``create`` at ``size`` bytes."""
    if is_rbd_url(target):
        from ._rbd_target import open_rbd_target

        return open_rbd_target(str(target), overwrite=overwrite, create=create, operation=operation, size=size)
    return open_restore_target(target, overwrite=overwrite, operation=operation)


def lock_target(target: str | os.PathLike[str], holder: Mapping[str, Any]) -> TargetLock:
    """Take the target for one restore (see ``lock_restore_target``); an RBD image is checked
    not in use here, and locked by its writer."""
    if is_rbd_url(target):
        from ._rbd_target import lock_rbd_target

        return lock_rbd_target(str(target), holder)
    return lock_restore_target(target, holder)
