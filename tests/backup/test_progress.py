"""Progress throttling: by object count, by timer (a manual clock, no sleeping), monotonic, ending at 100."""

from __future__ import annotations

import random
from pathlib import Path

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from notifykit.backup import BackupConfigError, ProgressPolicy
from notifykit.backup._progress import ProgressTracker

from .helpers import CHUNK, GatedStore, ManualClock, backup_env


def test_tracker_emits_every_n_objects_then_a_final_100() -> None:
    clock = ManualClock()
    tracker = ProgressTracker(25 * 100, ProgressPolicy(backup_object_number_per_notification=10), clock)
    updates = [tracker.object_done(100) for _ in range(25)]
    due = [(i + 1, u.percentage) for i, u in enumerate(updates) if u is not None]
    assert due == [(10, 40.0), (20, 80.0)]
    final = tracker.final()
    assert final is not None and final.percentage == 100.0 and final.bytes_done == 2500
    assert tracker.final() is None


def test_tracker_does_not_repeat_100_when_the_last_count_event_said_it() -> None:
    tracker = ProgressTracker(400, ProgressPolicy(backup_object_number_per_notification=2), ManualClock())
    updates = [tracker.object_done(100) for _ in range(4)]
    assert [u.percentage for u in updates if u] == [50.0, 100.0]
    assert tracker.final() is None


def test_tracker_timer_fires_only_after_the_interval_since_the_last_event() -> None:
    clock = ManualClock()
    policy = ProgressPolicy(backup_object_number_per_notification=100, backup_timer_interval=120.0)
    tracker = ProgressTracker(1000, policy, clock)
    tracker.object_done(100)
    assert tracker.timer_due() is None
    clock.t = 119.0
    assert tracker.timer_due() is None and tracker.seconds_until_timer() == 1.0
    clock.t = 120.0
    update = tracker.timer_due()
    assert update is not None and update.percentage == 10.0
    assert tracker.timer_due() is None  # the interval restarts at each event


def test_tracker_timer_can_be_turned_off() -> None:
    clock = ManualClock()
    tracker = ProgressTracker(1000, ProgressPolicy(backup_enable_progress_timer=False), clock)
    clock.t = 10_000.0
    assert tracker.timer_due() is None


def test_percentage_is_monotonic_never_100_early_and_ends_at_100() -> None:
    rng = random.Random(3)
    sizes = [rng.randint(1, 5000) for _ in range(300)] + [1]
    total = sum(sizes)
    tracker = ProgressTracker(total, ProgressPolicy(backup_object_number_per_notification=1), ManualClock())
    seen = [u.percentage for u in (tracker.object_done(s) for s in sizes[:-1]) if u]
    assert seen == sorted(seen) and max(seen) < 100.0  # 1 byte short of the total is not "done"
    last = tracker.object_done(sizes[-1])
    assert last is not None and last.percentage == 100.0


def test_empty_volume_reports_100() -> None:
    tracker = ProgressTracker(0, ProgressPolicy(), ManualClock())
    final = tracker.final()
    assert final is not None and final.percentage == 100.0


@pytest.mark.parametrize("bad", [{"backup_object_number_per_notification": 0}, {"backup_timer_interval": 0.0}])
def test_bad_policy_is_a_clear_error(bad: dict[str, float]) -> None:
    with pytest.raises(BackupConfigError, match=next(iter(bad))):
        ProgressPolicy(**bad)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_timer_emits_while_objects_are_slow(tmp_path: Path) -> None:
    clock = ManualClock()
    store = GatedStore(tmp_path / "store", free=1)
    policy = ProgressPolicy(backup_object_number_per_notification=10, backup_timer_interval=120.0)
    async with backup_env(tmp_path, store=store, policy=policy, clock=clock) as env:
        volume = env.volume(3 * CHUNK)

        async def progress_count() -> int:
            await wait_all_tasks_blocked()
            return env.event_types.count("backup.createprogress")

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(env.service.create_backup, volume)
                await store.first_stored.wait()
                while clock.sleepers == 0:
                    await anyio.sleep(0.001)
                assert await progress_count() == 0
                clock.advance(119.0)
                assert await progress_count() == 0
                clock.advance(1.0)
                while await progress_count() < 1:
                    await anyio.sleep(0.001)
                clock.advance(120.0)
                while await progress_count() < 2:
                    await anyio.sleep(0.001)
                store.gate.set()
    payloads = [n.payload for n in env.memory.messages]
    assert env.event_types == ["backup.create.start", "backup.createprogress", "backup.createprogress",
                               "backup.createprogress", "backup.create.end"]
    assert [p["percentage"] for p in payloads[1:4]] == [33.33, 33.33, 100.0]
    assert [p["objects_done"] for p in payloads[1:4]] == [1, 1, 3]
