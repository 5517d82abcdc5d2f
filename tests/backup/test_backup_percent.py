"""Progress events carry Cinder's ``backup_percent`` (issue 24, reproduction 4): a consumer
written against Cinder's chunked driver (``backup.createprogress`` with ``backup_percent``, 100
in the last one) finds it, computed from bytes, beside ``percentage``."""

from __future__ import annotations

from pathlib import Path

import pytest

from notifykit.backup._progress import ProgressPolicy, ProgressTracker

from .helpers import CHUNK, ManualClock, backup_env

EVERY_1 = ProgressPolicy(backup_object_number_per_notification=1, backup_enable_progress_timer=False)


def test_backup_percent_is_a_whole_number_that_says_100_only_at_the_end() -> None:
    tracker = ProgressTracker(1000, EVERY_1, ManualClock())
    updates = [tracker.object_done(n) for n in (333, 333, 333)]
    assert [u.backup_percent for u in updates if u] == [33, 66, 99]  # 99.9 % is not 100
    last = tracker.object_done(1)
    assert last is not None and last.backup_percent == 100 and isinstance(last.backup_percent, int)
    assert tracker.final() is None  # the last update already said 100


def test_backup_percent_of_an_empty_volume_is_one_100() -> None:
    tracker = ProgressTracker(0, EVERY_1, ManualClock())
    final = tracker.final()
    assert final is not None and final.backup_percent == 100 and final.percentage == 100.0


@pytest.mark.asyncio
@pytest.mark.parametrize("size", [0, CHUNK - 1, 7 * CHUNK + 100])
async def test_create_and_restore_progress_carry_backup_percent(tmp_path: Path, size: int) -> None:
    async with backup_env(tmp_path, policy=EVERY_1) as env:
        record = await env.service.create_backup(env.volume(size))
        await env.service.restore_backup(record.id, tmp_path / "restored.img")
    for event_type in ("backup.createprogress", "backup.restoreprogress"):
        progress = [n.payload for n in env.memory.messages if n.event_type == event_type]
        assert progress, event_type
        percents = [p["backup_percent"] for p in progress]
        assert all(type(p) is int and 0 <= p <= 100 for p in percents)
        assert percents == sorted(percents) and percents[-1] == 100 and percents.count(100) == 1
        assert all(p["backup_percent"] == (100 if size == 0 else p["bytes_done"] * 100 // size) for p in progress)
        assert all({"bytes_done", "objects_done", "percentage"} <= set(p) for p in progress)  # still there
