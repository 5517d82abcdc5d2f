"""Two ``notifykit-backup restore`` processes of different backups to one new target, started
together (issue 24, reproduction 2): one restores, the other is refused with one line, and
the target holds the winner's bytes. Before, both wrote the same ``.TARGET.partial``: A
exited 0 while the target held B's bytes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import write_volume

TRIALS = 6
SIZE = 24 * 1024 * 1024


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "NOTIFYKIT_BACKUP_CATALOG_PATH": str(tmp_path / "c.db"),
           "NOTIFYKIT_BACKUP_STORE": f"file://{tmp_path / 'objects'}?fsync=false",
           "NOTIFYKIT_BACKUP_DEAD_LETTER_PATH": str(tmp_path / "dl.jsonl")}
    env.pop("NOTIFYKIT_BACKUP_CONFIG", None)
    return env


def _cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "notifykit.backup.cli", *args, "--chunk-size", "256KiB",
                             "--notifier", f"log://{env['NOTIFYKIT_BACKUP_CATALOG_PATH']}.events.jsonl"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    return proc.returncode, out, err


@pytest.mark.slow
def test_two_restores_to_one_new_target_at_once(tmp_path: Path) -> None:
    env = _env(tmp_path)
    volumes = [write_volume(tmp_path / f"{name}.img", SIZE, seed) for name, seed in (("a", 1), ("b", 2))]
    ids = []
    for volume in volumes:
        code, out, err = _finish(_cli(env, "create", str(volume)))
        assert code == 0, err
        ids.append(out.strip())
    data = {backup_id: volume.read_bytes() for backup_id, volume in zip(ids, volumes, strict=True)}
    kinds: dict[str, int] = {}
    for trial in range(TRIALS):
        target = tmp_path / "shared" / f"new-{trial}.img"
        target.parent.mkdir(exist_ok=True)
        order = ids if trial % 2 == 0 else ids[::-1]
        procs = [_cli(env, "restore", backup_id, str(target)) for backup_id in order]
        results = dict(zip(order, (_finish(p) for p in procs), strict=True))
        winners = [backup_id for backup_id, (code, _, _) in results.items() if code == 0]
        assert len(winners) == 1, results
        [winner] = winners
        [loser] = [backup_id for backup_id in ids if backup_id != winner]
        code, _, err = results[loser]
        [error] = [line for line in err.splitlines() if line.startswith("notifykit-backup:")]
        assert code == 1 and error.startswith("notifykit-backup: error: "), err
        if f"is in use by the restore of backup {winner} (process " in error:
            kinds["refused: in use"] = kinds.get("refused: in use", 0) + 1
        else:  # the winner was done before the loser looked
            assert "already exists; pass overwrite" in error, error
            kinds["refused: exists"] = kinds.get("refused: exists", 0) + 1
        assert target.read_bytes() == data[winner], f"trial {trial}: the target is not {winner}'s"
        assert [p.name for p in target.parent.iterdir() if p.name.startswith(".")] == []  # no partial, no lock
        target.unlink()
    print(f"concurrent restores, {TRIALS} trials: {kinds}")
