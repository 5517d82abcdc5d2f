"""A backup TOML file is understood whole or refused (issue 24, reproduction 7): an unknown
key anywhere, or a bad value in any table, is one error naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from notifykit.backup import BackupConfig, BackupConfigError
from notifykit.backup.cli import main


def refused(tmp_path: Path, text: str) -> str:
    toml = tmp_path / "backup.toml"
    toml.write_text(text)
    with pytest.raises(BackupConfigError) as raised:
        BackupConfig.load(toml, env={})
    message = str(raised.value)
    assert message.startswith(f"{str(toml)!r}: "), message
    return message


def test_a_key_above_the_backup_table_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, 'chunk_size = "1MiB"\n[backup]\ncompression = "zlib"\n')
    assert "unknown key(s) outside the [backup] table: chunk_size" in message


def test_a_table_beside_the_backup_table_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, '[options]\nfsync = false\n[backup]\ncompression = "zlib"\n')
    assert "outside the [backup] table: [options]" in message


def test_an_unknown_table_inside_backup_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, '[backup]\ncompression = "zlib"\n[backup.options]\nfsync = false\n')
    assert "unknown backup setting(s): [backup.options]" in message


def test_a_typo_in_the_store_options_names_the_file(tmp_path: Path) -> None:
    message = refused(tmp_path, f'[backup]\nstore = "file://{tmp_path}/objects"\n'
                                '[backup.store_options]\nfsinc = false\n')
    assert "unknown option(s) 'fsinc'" in message


@pytest.mark.parametrize(("text", "key"), [('[backup]\nchunk_size = "1Mix"\n', "chunk_size"),
                                           ('[backup]\ncompression = "lzma"\n', "compression"),
                                           ('[backup]\nworkers = "many"\n', "workers"),
                                           ('[backup.chunk_size]\nvalue = 1\n', "chunk_size")])
def test_a_bad_value_names_the_file_and_the_key(tmp_path: Path, text: str, key: str) -> None:
    assert key in refused(tmp_path, text)


def test_top_level_keys_without_a_backup_table_still_work(tmp_path: Path) -> None:
    toml = tmp_path / "backup.toml"
    toml.write_text('chunk_size = "1MiB"\ncompression = "zlib"\n')
    config = BackupConfig.load(toml, env={})
    assert config.chunk_size == 1024 * 1024 and config.compression == "zlib"


def test_an_environment_value_is_not_blamed_on_the_file(tmp_path: Path) -> None:
    toml = tmp_path / "backup.toml"
    toml.write_text('[backup]\ncompression = "zlib"\n')
    with pytest.raises(BackupConfigError) as raised:
        BackupConfig.load(toml, env={"NOTIFYKIT_BACKUP_COMPRESSION": "lzma"})
    assert str(raised.value).startswith("compression must be one of")


def test_the_cli_prints_it_as_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    toml = tmp_path / "backup.toml"
    toml.write_text('chunk_size = "1MiB"\n[backup]\ncompression = "zlib"\n')
    assert main(["list", "--config", str(toml), "--catalog", str(tmp_path / "c.db")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(toml) in err and "chunk_size" in err, err
