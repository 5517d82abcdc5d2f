"""An RBD restore target's lock seen in the middle of being taken: the holder takes the image's
lock first and writes its note (who it is) just after. A second restore looking in between is
still refused before it starts, by the holder's name, and a note left by a restore that died
is never taken for the new holder's (which would let the second restore go on and break the
live holder's lock).

The gap is made exact, not timed: the holder's note waits until the second restore has read
the image once, and that read returns only once the note is written.

And the other end of a hold: a restore whose lock an operator broke, releasing at last, removes
only its own note, never the one of the restore holding the image now (which would then show
as an unnamed holder). The orders are made by the calls' sequence and events, not timed.
"""

from __future__ import annotations

import json
import logging
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
from notifykit.backup._rbd_target import NOTE, RbdTarget, _acquire, lock_rbd_target, open_rbd_target
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


def _operator_breaks_the_lock(pool: RbdPool, name: str, *, blocklist: bool) -> None:
    """``rbd lock rm`` as an operator runs it: by default the holder's client is blocklisted
    (fenced: it can write nothing more), else it goes on unaware its lock is gone."""
    (lock,) = json.loads(pool.rbd("lock", "ls", name, "--format", "json"))
    pool.rbd("lock", "rm", name, lock["id"], lock["locker"],
             *(() if blocklist else ("--rbd_blocklist_on_break_lock=false",)))


@pytest.mark.parametrize(("lock", "blocklist", "when"), [
    ("exclusive", False, "after the next holder noted itself"),
    ("exclusive", False, "while the next holder notes itself"),
    ("exclusive", True, "after the next holder noted itself"),
    ("advisory", False, "after the next holder noted itself"),
])
def test_a_restore_whose_lock_was_broken_removes_only_its_own_note(
        rbd_pool: RbdPool, caplog: pytest.LogCaptureFixture,  # noqa: F811
        lock: str, blocklist: bool, when: str) -> None:
    import rbd

    caplog.set_level(logging.WARNING, logger="backup")
    target = Image(rbd_pool, 2 * MIB)
    url = rbd_pool.url(target.name)
    loc = RbdLocation.parse(url)
    gap = Gap()
    after = when.startswith("after")
    if after:
        gap.looked.set()  # the next holder notes itself at once
    try:
        if lock == "advisory":  # an image without the feature: an advisory lock, its cookie the note
            target._do(lambda handle: handle.update_features(
                rbd.RBD_FEATURE_FAST_DIFF | rbd.RBD_FEATURE_OBJECT_MAP | rbd.RBD_FEATURE_EXCLUSIVE_LOCK, False))
        first = open_rbd_target(url, overwrite=True, create=False, operation="b-first", size=2 * MIB)
        try:
            first.write(b"first", 0)
            assert json.loads(target.metadata()[NOTE])["backup_id"] == "b-first"
            _operator_breaks_the_lock(rbd_pool, target.name, blocklist=blocklist)
            conn = connect(loc, "restore target")
            second = HolderImage(rbd.Image(conn.ioctx, target.name), gap)
            held: list[Any] = []
            thread = threading.Thread(target=lambda: held.append(_acquire(second, loc, "b-second")))
            thread.start()
            try:
                assert (gap.noted if after else gap.locked).wait(WAIT)  # the next holder locked (and noted)
                first.discard()  # the broken restore lets go at last
                gap.looked.set()
                thread.join(WAIT)
                assert len(held) == 1 and gap.noted.is_set()
                noted = target.metadata().get(NOTE)
                assert noted is not None and json.loads(noted)["backup_id"] == "b-second"  # left in place
                with pytest.raises(RestoreTargetBusyError) as busy:
                    lock_rbd_target(url, {})
                assert "is in use by the restore of backup b-second (process" in str(busy.value)
            finally:
                gap.looked.set()
                thread.join(WAIT)
                if held:  # the next holder's release (it closes its image and connection)
                    RbdTarget(loc, conn, second, False, held[0]).discard()
                else:
                    second.close()
                    conn.close()
        finally:
            first.discard()
        assert NOTE not in target.metadata()  # each removed its own
        lock_rbd_target(url, {}).release()  # and the image is free
        warned = [r.getMessage() for r in caplog.records if "its note" in r.getMessage()]
        if not after:  # the first's note was still its own: removed, and the next one's came after
            assert warned == []
        elif blocklist:  # fenced: the first could not touch the image at all
            assert warned == [warned[0]] and "was not removed" in warned[0]
        else:
            assert warned == ["restore target: its note was no longer its own (its lock was broken?): left as it is"]
    finally:
        target.close()
