"""``notifykit-backup`` on bad arguments and on a catalog path that is not a catalog: one
``notifykit-backup: error: …`` line (exit 2 for an argument, 1 for a file), no usage block,
and never a byte written into another program's file."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from notifykit.backup.cli import main

from .test_cli import settings  # noqa: F401  (fixture)


def one_error_line(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("notifykit-backup: error: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err, err
    return err


@pytest.mark.parametrize(("argv", "problem"), [
    ([], "the following arguments are required: command (see notifykit-backup --help)"),
    (["frob"], "argument command: invalid choice: 'frob'"),
    (["list", "--bogus"], "unrecognized arguments: --bogus (see notifykit-backup --help)"),
    (["create"], "create: the following arguments are required: path (see notifykit-backup create --help)"),
    (["restore", "some-id"], "restore: the following arguments are required: target"),
    (["list", "--compression", "lzma"], "list: argument --compression: invalid choice: 'lzma'"),
    (["list", "--catalog"], "list: argument --catalog: expected one argument"),
    (["audit", "--start"], "audit: argument --start: expected one argument"),
])
def test_bad_arguments_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str],
                                               problem: str) -> None:
    assert main(argv) == 2  # returned, not argparse's SystemExit after a usage block
    one_error_line(capsys, problem)


def test_a_secret_in_a_bad_argument_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "amqp://guest:hunter2@127.0.0.1/"]) == 2
    assert "hunter2" not in one_error_line(capsys, "unrecognized arguments: amqp://guest:***@127.0.0.1/")


def test_help_still_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["create", "--help"])
    assert exited.value.code == 0 and capsys.readouterr().out.startswith("usage: notifykit-backup create")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sqlite_file(path: Path, schema: str) -> Path:
    db = sqlite3.connect(path)
    db.executescript(schema)
    db.commit()
    db.close()
    return path


@pytest.mark.parametrize(("schema", "problem"), [
    ("CREATE TABLE invoices (id INTEGER, total REAL); INSERT INTO invoices VALUES (1, 9.5);",
     "is a SQLite database of another program (tables invoices)"),
    ("CREATE TABLE backups (id INTEGER, label TEXT);",
     "is a SQLite database of another program (a backups table of another shape)"),
    ("PRAGMA journal_mode=WAL; CREATE TABLE notes (body TEXT);",
     "is a SQLite database of another program (tables notes)"),
])
def test_a_catalog_path_naming_another_sqlite_file_leaves_it_untouched(
        settings: Path, capsys: pytest.CaptureFixture[str], schema: str, problem: str) -> None:  # noqa: F811
    other = sqlite_file(settings / "other.db", schema)
    before, neighbours = digest(other), sorted(p.name for p in settings.iterdir())
    assert main(["list", "--catalog", str(other), "--notifier", "log://stderr"]) == 1
    one_error_line(capsys, repr(str(other)), problem, "left untouched")
    # Today: journal_mode=WAL rewrites its header and the catalog's tables are created in it.
    assert digest(other) == before
    assert sorted(p.name for p in settings.iterdir()) == neighbours  # no -wal/-shm beside it


@pytest.mark.parametrize(("content", "problem"), [
    ("not a database\n", "is not a SQLite file; it was left untouched"),
    (None, "is a directory; name a file"),
])
def test_a_catalog_path_that_is_not_a_sqlite_file(settings: Path, capsys: pytest.CaptureFixture[str],  # noqa: F811
                                                  content: str | None, problem: str) -> None:
    path = settings / "catalog.here"
    if content is None:
        path.mkdir()
    else:
        path.write_text(content)
    assert main(["list", "--catalog", str(path), "--notifier", "log://stderr"]) == 1
    one_error_line(capsys, repr(str(path)), problem)
    if content is not None:
        assert path.read_text() == content


def test_a_catalog_of_ours_still_opens(settings: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    catalog = settings / "catalog.sqlite3"
    for _ in range(2):  # created, then reopened
        assert main(["list", "--catalog", str(catalog), "--notifier", "log://stderr"]) == 0
        assert capsys.readouterr().out.startswith("id ")
