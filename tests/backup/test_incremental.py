"""Incremental backups on the posix store, as Cinder's chunked driver makes them: a block
list beside the metadata, only changed 32 KiB blocks stored, restore through the chain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from notifykit.backup import BackupError, BackupStatus, ProgressPolicy
from notifykit.backup.cli import main

from . import incremental_cases as cases
from .helpers import backup_env, write_volume
from .test_cli import lines, settings  # noqa: F401  (fixture)


@pytest.mark.asyncio
async def test_full_change_incremental_restore_both(tmp_path: Path) -> None:
    async with backup_env(tmp_path, chunk_size=cases.CHUNK,
                          policy=ProgressPolicy(backup_object_number_per_notification=2,
                                                backup_enable_progress_timer=False)) as env:
        await cases.full_change_incremental_restore(env)
    # The throttle works as for a full backup: one event per 2 chunks, then the last one.
    inc_progress = [n for n in env.memory.messages if n.event_type == "backup.createprogress"
                    and n.payload["parent_id"] is not None]
    assert [n.payload["objects_done"] for n in inc_progress] == [2, 4, 6, 8, 9]


@pytest.mark.asyncio
async def test_chain_of_three_restores_every_generation(tmp_path: Path) -> None:
    async with backup_env(tmp_path, chunk_size=cases.CHUNK) as env:
        await cases.chain_of_three(env)


@pytest.mark.asyncio
async def test_delete_order_rules(tmp_path: Path) -> None:
    async with backup_env(tmp_path, chunk_size=cases.CHUNK) as env:
        await cases.delete_order(env)
    assert list((tmp_path / "store").iterdir()) == []


@pytest.mark.asyncio
async def test_a_damaged_block_fails_the_restore(tmp_path: Path) -> None:
    async with backup_env(tmp_path, chunk_size=cases.CHUNK, compression="zstd") as env:
        await cases.damaged_increment_fails_restore(env)


@pytest.mark.asyncio
async def test_incremental_without_a_parent_is_refused(tmp_path: Path) -> None:
    async with backup_env(tmp_path, chunk_size=cases.CHUNK) as env:
        volume = env.volume(cases.SIZE)
        with pytest.raises(BackupError, match=r"no available backup of volume .* make a full backup first"):
            await env.service.create_backup(volume, incremental=True)
        assert await env.service.list() == []
        # A failed backup is no parent either.
        other = env.volume(10, "other.img")
        full = await env.service.create_backup(other, volume_id="vol-x")
        await env.catalog.transition(full.id, BackupStatus.DELETING)
        await env.catalog.transition(full.id, BackupStatus.DELETED)
        with pytest.raises(BackupError, match="no available backup of volume vol-x"):
            await env.service.create_backup(other, volume_id="vol-x", incremental=True)


@pytest.mark.asyncio
async def test_an_increment_keeps_its_parents_chunk_size(tmp_path: Path) -> None:
    async with backup_env(tmp_path, chunk_size=cases.CHUNK) as env:
        volume = env.volume(cases.SIZE)
        full = await env.service.create_backup(volume)
    cases.rewrite(volume, 7, b"!")
    async with backup_env(tmp_path, chunk_size=4 * cases.CHUNK) as env:
        inc = await env.service.create_backup(volume, incremental=True)
        assert inc.parent_id == full.id and inc.container and inc.service_metadata
        meta = json.loads(await env.store.get_object(inc.container, f"{inc.service_metadata}_metadata"))
        await env.service.restore_backup(inc.id, tmp_path / "out.img")
    assert meta["chunk_size"] == cases.CHUNK and meta["block_size"] == 32 * 1024
    assert (tmp_path / "out.img").read_bytes() == volume.read_bytes()


def test_cli_incremental_show_list_and_delete_order(settings: Path,  # noqa: F811
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    volume = write_volume(settings / "vol.img", 300_000)
    log = settings / "n.jsonl"
    common = ["--chunk-size", "128KiB", "--notifier", f"log://{log}"]
    assert main(["create", str(volume), "--incremental", *common]) == 1
    assert "no available backup of volume" in capsys.readouterr().err
    assert main(["create", str(volume), *common]) == 0
    full = capsys.readouterr().out.strip()
    cases.rewrite(volume, 1000, b"new")
    assert main(["create", str(volume), "--incremental", "--json", *common]) == 0
    inc = json.loads(capsys.readouterr().out)
    assert inc["parent_id"] == full and inc["is_incremental"] is True and inc["object_count"] == 1
    assert main(["show", full, "--json", *common]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["num_dependent_backups"] == 1 and shown["is_incremental"] is False
    assert main(["list", "--json", *common]) == 0
    assert [(r["id"], r["parent_id"]) for r in json.loads(capsys.readouterr().out)] == [(full, None),
                                                                                       (inc["id"], full)]
    assert main(["delete", full, *common]) == 1
    err = capsys.readouterr().err
    assert err == (f"notifykit-backup: error: backup {full!r} has dependent incremental backups:"
                   f" delete them first ({inc['id']})\n")
    assert main(["restore", inc["id"], str(settings / "out.img"), *common]) == 0
    assert (settings / "out.img").read_bytes() == volume.read_bytes()
    assert main(["delete", inc["id"], *common]) == 0
    assert main(["delete", full, *common]) == 0
    assert list((settings / "objects").iterdir()) == []
    ends = [e for e in lines(log) if e["event_type"] == "backup.create.end"]
    assert [e["payload"]["parent_id"] for e in ends] == [None, full]
