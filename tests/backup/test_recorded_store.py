"""The catalog records the store each backup is in: restore and delete use it, another
``--store`` is refused with one line (issue 15, reproduction 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from notifykit.backup.cli import main

from .helpers import write_volume
from .test_cli import lines, settings  # noqa: F401  (fixture)


def test_delete_or_restore_with_another_store_is_refused(settings: Path,  # noqa: F811
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    store_a, store_b = settings / "storeA", settings / "storeB"
    volume = write_volume(settings / "vol.img", 40_000)
    log = settings / "n.jsonl"
    common = ["--chunk-size", "16KiB", "--notifier", f"log://{log}"]
    assert main(["create", str(volume), "--store", str(store_a), *common]) == 0
    backup_id = capsys.readouterr().out.strip()
    objects = sorted(p.name for p in (store_a / f"backup_{backup_id}").iterdir())
    assert len(objects) == 5  # three chunks, the block list and the metadata

    assert main(["delete", backup_id, "--store", str(store_b), *common]) == 1
    out, err = capsys.readouterr()
    assert "deleted" not in out
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"is in the posix store {str(store_a.resolve())!r}" in err and str(store_b) in err
    assert sorted(p.name for p in (store_a / f"backup_{backup_id}").iterdir()) == objects

    assert main(["restore", backup_id, str(settings / "out.img"), "--store", str(store_b), *common]) == 1
    assert "is in the posix store" in capsys.readouterr().err
    assert not (settings / "out.img").exists()

    assert main(["show", backup_id, "--json", *common]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "available"  # refusals leave the backup as it was
    assert (shown["store_kind"], shown["store_location"]) == ("posix", str(store_a.resolve()))

    # A symlink to the same directory is the same store.
    (settings / "alias").symlink_to(store_a)
    assert main(["restore", backup_id, str(settings / "out.img"), "--store", str(settings / "alias"), *common]) == 0
    assert (settings / "out.img").read_bytes() == volume.read_bytes()
    assert main(["delete", backup_id, "--store", str(store_a), *common]) == 0
    assert list(store_a.iterdir()) == []

    kinds = [e["event_type"] for e in lines(log)]
    assert kinds.count("backup.delete.error") == 1 and kinds.count("backup.restore.error") == 1
    assert kinds.count("backup.delete.end") == 1
    refused = next(e for e in lines(log) if e["event_type"] == "backup.delete.error")
    assert refused["payload"]["status"] == "available" and "posix store" in refused["payload"]["fail_reason"]
