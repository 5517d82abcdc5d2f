"""An RBD restore target's lock seen in the middle of being taken: the holder takes the image's
lock first and writes its note (who it is) just after. A second restore looking in between is
still refused before it starts, by the holder's name, and a note left by a restore that died
is never taken for the new holder's (which would let the second restore go on and break the
live holder's lock).

The gap is made exact, not timed: the holder's note waits until the second restore has read
the image once, and that read returns only once the note is written.
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
from typing import Any

import anyio
import anyio.to_thread
import pytest

from notifykit.backup import BackupStatus
from notifykit.backup import _rbd_target as rbd_target
from notifykit.backup._rbd import RbdLocation, binding, connect
from notifykit.backup._rbd_target import NOTE, _acquire
from notifykit.backup._target import RestoreTargetBusyError

from .test_rbd_volumes import MIB, Image, RbdPool, rbd_env, rbd_pool  # noqa: F401 (rbd_pool: the pool fixture)

pytestmark = pytest.mark.broker

WAIT = 60.0  # a bound on a hang, not a measurement


class Gap:
    """The order of one race: the holder locked, the second restore looked, the holder noted."""

    def __init__(self) -> None:
        self.locked = threading.Event()
        self.looked = threading.Event()
        self.noted = threading.Event()


class HolderImage:
    """The holder's image handle: its note is written only once the second restore looked."""

    def __init__(self, image: Any, gap: Gap) -> None:
        self._image = image
        self._gap = gap

    def __getattr__(self, name: str) -> Any:
        return getattr(self._image, name)

    def metadata_set(self, key: str, value: str) -> None:
        self._gap.locked.set()
        self._gap.looked.wait(WAIT)
        try:
            self._image.metadata_set(key, value)
        finally:
            self._gap.noted.set()


class ReaderImage:
    """The second restore's handles: its first read of the note returns what it read only
    once the holder's note is written (so that read saw the gap, and the next one sees the note)."""

    def __init__(self, image: Any, gap: Gap) -> None:
        self._image = image
        self._gap = gap

    def __getattr__(self, name: str) -> Any:
        return getattr(self._image, name)

    def metadata_get(self, key: str) -> Any:
        try:
            return self._image.metadata_get(key)
        finally:
            if not self._gap.looked.is_set():
                self._gap.looked.set()
                self._gap.noted.wait(WAIT)


class ReaderRbd:
    """The rbd module as the code under test sees it: every image it opens is a ReaderImage."""

    def __init__(self, rbd: Any, gap: Gap) -> None:
        self._rbd = rbd
        self._gap = gap

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rbd, name)

    def Image(self, *args: Any, **kwargs: Any) -> ReaderImage:  # named as rbd.Image
        return ReaderImage(self._rbd.Image(*args, **kwargs), self._gap)


def _dead_note() -> str:
    """The note a restore of this host left when it was killed (its process is gone)."""
    return json.dumps({"backup_id": "b-dead", "pid": os.getpid(), "host": socket.gethostname(),
                       "token": "another-boot/0"})


@pytest.mark.asyncio
@pytest.mark.parametrize("left", [None, "a dead restore's note"])
async def test_a_restore_looking_while_the_holder_notes_itself_is_refused_by_name(
        tmp_path: Any, rbd_pool: RbdPool, monkeypatch: pytest.MonkeyPatch, left: str | None) -> None:  # noqa: F811
    import rbd

    image = Image(rbd_pool, 2 * MIB)
    target = Image(rbd_pool, 2 * MIB)
    loc = RbdLocation.parse(rbd_pool.url(target.name))
    gap = Gap()
    try:
        image.write(random.Random(8).randbytes(MIB), 0)
        if left is not None:  # as a killed restore leaves it: note kept, lock gone
            target._do(lambda handle: handle.metadata_set(NOTE, _dead_note()))
        async with rbd_env(tmp_path) as env:
            record = await env.service.create_backup(rbd_pool.url(image.name))
            conn = connect(loc, "restore target")
            holder = HolderImage(rbd.Image(conn.ioctx, target.name), gap)
            taken: list[BaseException | None] = []

            def take() -> None:  # the holder: lock, then note (held back until the reader looked)
                try:
                    _acquire(holder, loc, "b-other")
                    taken.append(None)
                except BaseException as exc:
                    taken.append(exc)

            thread = threading.Thread(target=take)
            thread.start()
            try:
                assert await anyio.to_thread.run_sync(gap.locked.wait, WAIT)
                real_rados, real_rbd = binding()
                with monkeypatch.context() as patch:
                    patch.setattr(rbd_target, "binding", lambda: (real_rados, ReaderRbd(real_rbd, gap)))
                    with pytest.raises(RestoreTargetBusyError) as busy:
                        await env.service.restore_backup(record.id, rbd_pool.url(target.name), overwrite=True)
                await anyio.to_thread.run_sync(thread.join, WAIT)
                assert taken == [None]
                assert holder.is_exclusive_lock_owner()  # the holder's lock was not broken
            finally:
                gap.looked.set()
                await anyio.to_thread.run_sync(thread.join, WAIT)
                holder.close()
                conn.close()
            after = await env.service.show(record.id)
            restored = await env.service.restore_backup(record.id, rbd_pool.url(target.name), overwrite=True)
        assert gap.looked.is_set() and gap.noted.is_set()  # the second restore did look in the gap
        assert "is in use by the restore of backup b-other (process" in str(busy.value)
        assert busy.value.holder["backup_id"] == "b-other"
        assert after.status is BackupStatus.AVAILABLE  # refused before it started
        assert restored.status is BackupStatus.AVAILABLE
    finally:
        image.close()
        target.close()
