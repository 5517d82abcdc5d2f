"""The operator CLI on bad arguments and files (issue 13, reproduction 12): one
``notifykit: error: …`` line naming the path and the problem, exit 2, never a traceback,
never a byte written into a file that is not a spool or status file of ours."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from notifykit import ConfigError
from notifykit._log import segment_name
from notifykit.cli import main, tail

Make = Callable[[Path], Path]


def one_error_line(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("notifykit: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in err, err
    return err


def tree(path: Path) -> dict[str, str]:
    """Every file under ``path`` with a hash of its bytes: what "nothing written" means."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The CLI as an operator runs it: its own process, no logging configured."""
    return subprocess.run([sys.executable, "-m", "notifykit.cli", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


# -- status --spool ----------------------------------------------------------------------------

def a_text_file(d: Path) -> Path:
    (d / "notes.txt").write_text("hello\n")
    return d / "notes.txt"


def a_binary_file(d: Path) -> Path:
    (d / "blob.bin").write_bytes(bytes(range(256)) * 8)
    return d / "blob.bin"


def _sqlite_file(path: Path, *statements: str) -> Path:
    """A SQLite database made by running ``statements``, then closed cleanly."""
    db = sqlite3.connect(path)
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()
    return path


def another_sqlite_file(d: Path) -> Path:
    """Another program's SQLite database (a backup catalog)."""
    return _sqlite_file(d / "catalog.sqlite3", "CREATE TABLE backups (id TEXT PRIMARY KEY, status TEXT)",
                        "INSERT INTO backups VALUES ('b1', 'available')")


def a_wal_sqlite_file(d: Path) -> Path:
    """The same in WAL mode, closed cleanly (no -wal/-shm files next to it)."""
    return _sqlite_file(d / "app.db", "PRAGMA journal_mode=WAL", "CREATE TABLE things (id INTEGER)")


def an_empty_directory(d: Path) -> Path:
    (d / "empty").mkdir()
    return d / "empty"


def a_directory_of_other_files(d: Path) -> Path:
    (d / "data").mkdir()
    (d / "data" / "report.csv").write_text("a,b\n")
    return d / "data"


def a_segment_that_is_a_directory(d: Path) -> Path:
    """A spool whose segment cannot be read (as root, a directory stands in for mode 000)."""
    (d / "spool" / segment_name(1)).mkdir(parents=True)
    (d / "spool" / "lock").touch()
    return d / "spool"


def a_missing_path(d: Path) -> Path:
    return d / "nowhere"


def a_fifo(d: Path) -> Path:
    os.mkfifo(d / "pipe")
    return d / "pipe"


@pytest.mark.parametrize(("make", "problem"), [
    (a_text_file, "is a file that is not a notifykit spool"),
    (a_binary_file, "is a file that is not a notifykit spool"),
    (another_sqlite_file, "is a file that is not a notifykit spool"),
    (a_wal_sqlite_file, "is a file that is not a notifykit spool"),
    (an_empty_directory, "is an empty directory, not a notifykit spool"),
    (a_directory_of_other_files, "is a directory that is not a notifykit spool (it holds report.csv)"),
    (a_segment_that_is_a_directory, "cannot read spool"),
    (a_missing_path, "no spool at"),
    (a_fifo, "is not a notifykit spool (not a directory or a regular file)"),
])
def test_status_spool_refuses_what_is_not_a_spool_untouched(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            make: Make, problem: str) -> None:
    path = make(tmp_path)
    before = tree(tmp_path)
    assert main(["status", "--spool", str(path)]) == 2
    one_error_line(capsys, repr(str(path)), problem)
    assert tree(tmp_path) == before  # byte-identical, and no file created next to it


def test_status_spool_leaves_another_sqlite_file_without_a_new_table(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    catalog = another_sqlite_file(tmp_path)
    digest = hashlib.sha256(catalog.read_bytes()).hexdigest()
    assert main(["status", "--spool", str(catalog)]) == 2
    one_error_line(capsys, str(catalog))
    assert hashlib.sha256(catalog.read_bytes()).hexdigest() == digest
    db = sqlite3.connect(f"file:{catalog}?mode=ro", uri=True)
    assert [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["backups"]
    db.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file of mode 000")
def test_status_spool_unreadable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "lock").touch()
    (spool / segment_name(1)).write_bytes(b"x")
    (spool / segment_name(1)).chmod(0)
    assert main(["status", "--spool", str(spool)]) == 2
    one_error_line(capsys, "cannot read spool", "Permission denied")


def old_sqlite_spool(path: Path, rows: int, *, wal: bool) -> sqlite3.Connection:
    """A SQLite file shaped like a pre-release spool (an ``outbox`` table), left open."""
    db = sqlite3.connect(path, isolation_level=None)
    if wal:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA wal_autocheckpoint=0")  # committed rows stay in the -wal file
    db.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY, transport TEXT, body TEXT)")
    for i in range(rows):
        db.execute("INSERT INTO outbox (transport, body) VALUES ('rabbit', ?)", (json.dumps({"i": i}),))
    return db


@pytest.mark.parametrize("wal", [False, True])
def test_status_spool_refuses_a_sqlite_spool_untouched(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       wal: bool) -> None:
    """No released version wrote a SQLite spool: such a file is no spool, one error line, untouched."""
    path = tmp_path / "spool.sqlite"
    old_sqlite_spool(path, 3, wal=wal).close()  # closed cleanly: no -wal/-shm beside it
    before = tree(tmp_path)
    assert main(["status", "--spool", str(path)]) == 2
    one_error_line(capsys, repr(str(path)), "not a notifykit spool")
    assert tree(tmp_path) == before  # nothing migrated, renamed or created next to it


def test_status_spool_refuses_a_sqlite_file_in_use_without_touching_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "spool.sqlite"
    writer = old_sqlite_spool(path, 4, wal=True)  # a process still has it open: rows in the -wal
    try:
        assert (tmp_path / "spool.sqlite-wal").stat().st_size > 0
        before = tree(tmp_path)
        assert main(["status", "--spool", str(path)]) == 2
        one_error_line(capsys, repr(str(path)), "not a notifykit spool")
        assert tree(tmp_path) == before  # not even a -shm written next to it
    finally:
        writer.close()


# -- status --file -------------------------------------------------------------------------------

def write(name: str, content: str | bytes) -> Make:
    def make(d: Path) -> Path:
        path = d / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path
    return make


@pytest.mark.parametrize(("make", "problem"), [
    (write("status.json", "not json"), "is not JSON"),
    (write("status.json", b"\x89PNG\r\n\x1a\n\x00\xff"), "is not UTF-8 text (byte 0x89 at offset 0)"),
    (write("status.json", "[" * 100_000 + "]" * 100_000), "is not JSON (nested too deeply)"),
    (write("status.json", "[1, 2]"), "it holds a JSON list, not an object"),
    (write("status.json", '{"transports": {"rabbit": {}}}'), "transport 'rabbit' has no state"),
    (write("status.json", '{"transports": {"rabbit": {"state": "connected", "sent": "many"}}}'),
     "transport 'rabbit': sent is 'many', not a count"),
    (write("status.json", '{"transports": []}'), "'transports' is not an object"),
    (write("status.json", '{"updated_at": "yesterday"}'), "updated_at is 'yesterday', not a time"),
    (write("status.json", '{"tasks": {"status": 3}}'), "tasks 'status' is not an object"),
    (an_empty_directory, "is a directory"),
    (a_missing_path, "cannot read status file"),
    (lambda d: a_text_file(d) / "status.json", "Not a directory"),
])
@pytest.mark.parametrize("prometheus", [False, True])
def test_status_file_that_is_not_a_status_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Make,
                                               problem: str, prometheus: bool) -> None:
    path = make(tmp_path)
    assert main(["status", "--file", str(path), *(["--prometheus"] if prometheus else [])]) == 2
    one_error_line(capsys, repr(str(path)), problem)
    assert capsys.readouterr().out == ""


def test_status_file_and_spool_checks_both_before_printing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status_file = tmp_path / "status.json"
    status_file.write_text(json.dumps({"pid": 1, "publisher_id": "p", "updated_at": 0, "transports": {}}))
    assert main(["status", "--file", str(status_file), "--spool", str(a_text_file(tmp_path))]) == 2
    assert capsys.readouterr().out == ""  # not half a report


def test_status_file_that_is_a_fifo_does_not_hang(tmp_path: Path) -> None:
    fifo = a_fifo(tmp_path)
    done = run_cli("status", "--file", str(fifo), timeout=30)  # today: blocks forever in open()
    assert done.returncode == 2
    assert done.stderr == f"notifykit: error: status file {str(fifo)!r} is not a regular file\n"


# -- tail ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("limit", ["0", "-5"])
def test_tail_limit_below_one_is_refused_before_connecting(limit: str) -> None:
    # A reachable broker (the machine's RabbitMQ) would be tailed forever by today's code.
    done = run_cli("tail", "amqp://guest:guest@127.0.0.1:5672/", "--limit", limit, timeout=30)
    assert done.returncode == 2
    assert done.stderr == (f"notifykit: error: tail: argument --limit: must be >= 1 (stop after N notifications),"
                           f" got {int(limit)} (see notifykit tail --help)\n")


def test_tail_function_refuses_limit_below_one() -> None:
    with pytest.raises(ConfigError, match="--limit must be >= 1"):  # before resolving the transport
        anyio.run(tail, "memory://", "*", True, sys.stdout, 0)


@pytest.mark.parametrize(("argv", "problem"), [
    (["tail", "memory://", "--limit", "ten"], "argument --limit: must be a whole number >= 1, got 'ten'"),
    (["tail", "memory://", "--limit", "1.5"], "argument --limit: must be a whole number >= 1, got '1.5'"),
    (["tail", ":::"], "malformed URL ':::'"),
    (["tail", "nope://x"], "unknown transport scheme 'nope'"),
    (["tail", "log:///tmp/x.jsonl"], "transport 'log' cannot be tailed"),
    (["tail", "amqp://127.0.0.1:5672/?no_such_option=1"], "no_such_option"),
])
def test_tail_bad_argument_is_one_line(capsys: pytest.CaptureFixture[str], argv: list[str], problem: str) -> None:
    assert main(argv) == 2
    one_error_line(capsys, problem)


def test_tail_unreachable_broker_is_one_line_without_the_client_library_logs() -> None:
    done = run_cli("tail", "amqp://guest:secret@127.0.0.1:1/", timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("notifykit: error: cannot connect to amqp://guest:***@127.0.0.1:1/")
    assert done.stderr.count("\n") == 1 and "secret" not in done.stderr


# -- argparse's own errors -------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "problem"), [
    ([], "the following arguments are required: command (see notifykit --help)"),
    (["frob"], "argument command: invalid choice: 'frob'"),
    (["status", "--bogus"], "unrecognized arguments: --bogus (see notifykit --help)"),
    (["status", "--file"], "status: argument --file: expected one argument (see notifykit status --help)"),
    (["tail"], "tail: the following arguments are required: url (see notifykit tail --help)"),
    (["tail", "memory://", "--event-type"], "tail: argument --event-type: expected one argument"),
    (["deadletters"], "deadletters: the following arguments are required: action"),
    (["deadletters", "replay"], "deadletters replay: one of the arguments --url --config is required"),
    (["deadletters", "list", "--json", "extra"], "unrecognized arguments: extra"),
])
def test_bad_arguments_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str],
                                               problem: str) -> None:
    assert main(argv) == 2  # returned, not a SystemExit from argparse with its usage block
    one_error_line(capsys, problem)


def test_a_secret_in_a_bad_argument_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "amqp://guest:hunter2@127.0.0.1/"]) == 2
    err = one_error_line(capsys, "unrecognized arguments: amqp://guest:***@127.0.0.1/")
    assert "hunter2" not in err


@pytest.mark.parametrize("argv", [["--help"], ["tail", "--help"], ["status", "-h"]])
def test_help_still_prints_usage(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("usage: notifykit")
