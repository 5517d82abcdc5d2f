"""State owned by one thread (issue 23, reproduction 12): the spool's worker threads get
snapshots and return results; only the event loop changes what the loop reads.

``Spool._delete_blocking`` re-appended segments whose unlink failed to ``_segments`` and
added their bytes to ``_bytes`` from the worker thread, while the loop could be starting a
segment; ``_read_blocking`` read the drop list the loop changes and counted quarantined
records there. Here every change of a spool attribute, and of its segment list, records the
thread that made it.
"""

from __future__ import annotations

import errno
import threading
from pathlib import Path
from typing import Any, SupportsIndex

import anyio
import pytest

from notifykit import Notification
from notifykit._log import frame, segment_name
from notifykit._spool import Spool

pytestmark = pytest.mark.asyncio


class Watched(list[Any]):
    """A list that reports the threads changing it."""

    def __init__(self, items: list[Any], seen: set[int]) -> None:
        super().__init__(items)
        self.seen = seen

    def append(self, item: Any) -> None:
        self.seen.add(threading.get_ident())
        super().append(item)

    def remove(self, item: Any) -> None:
        self.seen.add(threading.get_ident())
        super().remove(item)

    def extend(self, items: Any) -> None:
        self.seen.add(threading.get_ident())
        super().extend(items)

    def sort(self, *args: Any, **kwargs: Any) -> None:
        self.seen.add(threading.get_ident())
        super().sort(*args, **kwargs)

    def pop(self, index: SupportsIndex = -1) -> Any:
        self.seen.add(threading.get_ident())
        return super().pop(index)


class WatchedSpool(Spool):
    """A Spool that records, once watching, which threads set its attributes."""

    def __setattr__(self, name: str, value: Any) -> None:
        watch = self.__dict__.get("watch")
        if watch is not None:
            watch.add((threading.get_ident(), name))
            if name == "_segments" and not isinstance(value, Watched):
                value = Watched(value, self.__dict__["list_threads"])
        super().__setattr__(name, value)

    def start_watching(self) -> None:
        self.__dict__["list_threads"] = set()
        self.__dict__["watch"] = set()
        self._segments = Watched(list(self._segments), self.__dict__["list_threads"])


async def test_worker_threads_change_no_state_of_the_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "spool"
    spool = WatchedSpool(path, max_bytes=256 * 1024)
    await spool.open()
    loop = threading.get_ident()
    spool.start_watching()
    failures = 2
    unlink = Path.unlink

    def failing_unlink(self: Path, missing_ok: bool = False) -> None:
        nonlocal failures
        if self.name in (segment_name(1), segment_name(2)) and failures:
            failures -= 1
            raise OSError(errno.EIO, "Input/output error")
        unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", failing_unlink)
    try:
        seqs = []
        for i in range(300):
            seqs.append(spool.append("a", Notification.create("e.v", {"i": i, "pad": "x" * 100}, publisher_id="t")))
            if i == 250:  # a record that checks out but is no notification: quarantined by a read
                junk = spool._next_seq
                spool._next_seq += 1
                spool._put(frame(b"N" + junk.to_bytes(8, "little") + (1).to_bytes(2, "little") + b"a" + b"junk"))
        read = await spool.read("a", 0, 100)
        assert [row.row_id for row in read.rows] == seqs[:100]
        spool.drop("a", seqs[100], seqs[120])
        async with anyio.create_task_group() as tg:  # deletions and a spare in threads, appends on the loop
            spool.ack("a", seqs[200])
            tg.start_soon(spool.release)
            tg.start_soon(spool._make_spare_now)
            for i in range(100):
                spool.append("a", Notification.create("e.v", {"i": i, "pad": "x" * 100}, publisher_id="t"))
                await anyio.lowlevel.checkpoint()
        read = await spool.read("a", seqs[120], 1000)
        assert read.rows and read.rows[0].row_id == seqs[201] and read.quarantined == 1  # acked through [200]
        await spool.release()
    finally:
        await spool.aclose()
    assert failures == 0  # the failing unlinks did happen
    changed_by = {thread for thread, _ in spool.__dict__["watch"]} | spool.__dict__["list_threads"]
    assert changed_by == {loop}, sorted(name for thread, name in spool.__dict__["watch"] if thread != loop)
