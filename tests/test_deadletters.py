"""Dead letters end to end: any notification can be written, the file is bounded and never
holds a torn record of ours, a full disk loses nothing silently, and the tools read any
file without crashing (issue 13, reproductions 9, 10 and the dead-letter half of 12)."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from notifykit import ConfigError, Notification, Notifier, NotifierConfig
from notifykit._log import segment_name
from notifykit.cli import main
from notifykit.deadletters import (
    DeadLetter,
    DeadLetterWriteError,
    JsonlDeadLetterSink,
    read_dead_letters,
    rewrite_dead_letters,
)

from .helpers import FakeClock, assert_accounted
from .test_notifier import until

# -- helpers -------------------------------------------------------------------------------


def custom(payload: dict[str, Any] | None = None, **context: Any) -> Notification:
    """A notification built past validation (as a custom Notification or a bug could)."""
    base = Notification.create("bad.custom", {"i": 0}, publisher_id="t", context=context and {"request_id": "r"})
    payload = payload if payload is not None else {"i": 0}
    return replace(base, payload=payload, payload_json=json.dumps(payload, ensure_ascii=False),
                   context=replace(base.context, extra=context))


def letter(n: Notification | None = None, transport: str = "billing") -> DeadLetter:
    from notifykit._deadletter import now_utc

    return DeadLetter(transport, "permanent error: test", n or Notification.create("e.v", {"i": 1}, publisher_id="t"),
                      now_utc())


def line_of(dead: DeadLetter) -> bytes:
    """A record as the file holds it (written without the sink, so it reads on any version)."""
    return json.dumps(dead.as_dict(), ensure_ascii=True).encode() + b"\n"


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def no_torn_line(path: Path) -> None:
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), "a torn last line"
    for line in data.splitlines():
        json.loads(line)


def dead_letter_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "notifykit" and "dead letter" in r.getMessage()
            and r.levelno >= logging.WARNING]


# -- 1. any notification can be written ---------------------------------------------------


@pytest.mark.asyncio
async def test_a_lone_surrogate_is_written_as_ascii_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    n = custom({"name": "vol-\ud800", "k\udc80": ["\udfff"]}, note="x\ud83d")
    await JsonlDeadLetterSink(path).write([letter(n)])
    assert path.read_bytes().isascii()
    (record,) = read_dead_letters(path)
    assert record["message"]["payload"] == {"name": "vol-\ud800", "k\udc80": ["\udfff"]}
    assert record["message"]["context"]["note"] == "x\ud83d"
    assert record["message"]["message_id"] == n.message_id


@pytest.mark.asyncio
async def test_a_notifier_dead_letters_a_notification_no_transport_can_encode(tmp_path: Path,
                                                                              fake_clock: FakeClock) -> None:
    """It used to fail the dead-letter write too (UnicodeEncodeError): counted, but lost."""
    dead = tmp_path / "dead.jsonl"
    url = "memory://?retry_max_attempts=2&batch_size=1"
    async with Notifier.from_url(url, publisher_id="t", dead_letters=dead, clock=fake_clock) as n:
        await n.emit(custom({"v": "\ud800"}))
        await n.info({}, "e.v", {"i": 1})
    stats = n.stats()["memory"]
    assert (stats.sent, stats.dead_lettered, stats.dead_letter_failed) == (1, 1, 0)
    assert [r["message"]["payload"] for r in read_dead_letters(dead)] == [{"v": "\ud800"}]
    assert_accounted(n, dead)


@pytest.mark.asyncio
async def test_an_unencodable_payload_is_kept_as_its_repr(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    loop: dict[str, Any] = {}
    loop["self"] = loop
    n = replace(custom(), payload=loop, payload_json="not json")
    await JsonlDeadLetterSink(path).write([letter(n)])
    (record,) = read_dead_letters(path)
    assert record["unencodable"]["payload"].startswith("{'self': {'self': ")


@pytest.mark.asyncio
async def test_letters_are_encoded_in_a_worker_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[threading.Thread] = []
    encode = DeadLetter.encode

    def spy(self: DeadLetter) -> bytes:
        threads.append(threading.current_thread())
        return encode(self)

    monkeypatch.setattr(DeadLetter, "encode", spy)
    await JsonlDeadLetterSink(tmp_path / "dead.jsonl").write([letter(), letter()])
    assert len(threads) == 2 and threading.main_thread() not in threads


# -- 2. size bound ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_file_stops_growing_at_its_cap(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    sink = JsonlDeadLetterSink(path, max_bytes=4096)
    with pytest.raises(DeadLetterWriteError, match="is full") as caught:
        await sink.write([letter() for _ in range(100)])
    assert 0 < caught.value.written < 100
    assert path.stat().st_size <= 4096 and len(lines_of(path)) == caught.value.written
    no_torn_line(path)


@pytest.mark.parametrize("bad", [float("nan"), -1, 0, 100, "big", True, float("inf")])
def test_dead_letter_max_bytes_is_validated(bad: Any) -> None:
    with pytest.raises(ConfigError, match="dead_letter_max_bytes must be an integer >= 4096"):
        NotifierConfig.from_mapping({"dead_letter_max_bytes": bad, "transports": {"m": {"url": "memory://"}}})


def test_dead_letter_max_bytes_default_and_keyword(tmp_path: Path) -> None:
    config = NotifierConfig.from_mapping({"transports": {"m": {"url": "memory://"}}})
    assert config.dead_letter_max_bytes == 1 << 30
    n = Notifier.from_url("memory://", publisher_id="t", dead_letters=tmp_path / "d", dead_letter_max_bytes=8192)
    assert n._sink.max_bytes == 8192  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="dead_letter_max_bytes"):
        Notifier.from_url("memory://", publisher_id="t", dead_letter_max_bytes=-5)


@pytest.mark.asyncio
async def test_a_full_file_counts_the_rest_dead_letter_failed_once(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    dead = tmp_path / "dead.jsonl"
    async with Notifier.from_url("memory://?reject=*&batch_size=10", publisher_id="t", dead_letters=dead,
                                 dead_letter_max_bytes=4096) as n:
        for i in range(50):
            await n.info({}, "e.v", {"i": i})
    stats = n.stats()["memory"]
    assert stats.dead_lettered == len(lines_of(dead)) > 0
    assert stats.dead_letter_failed == 50 - stats.dead_lettered
    assert_accounted(n, dead)
    logs = dead_letter_logs(caplog)
    assert [r.levelname for r in logs] == ["WARNING", "ERROR"]  # the burst, then the close
    assert all(r.exc_info is None for r in logs)


# -- 3 and 4. a full disk (reproduction 9) ------------------------------------------------


def enospc_after(monkeypatch: pytest.MonkeyPatch, budget: int) -> list[int]:
    """os.write writes at most ``budget`` bytes in all, then fails with ENOSPC."""
    real = os.write
    left = [budget]

    def write(fd: int, data: Any) -> int:
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = real(fd, bytes(data)[: left[0]])
        left[0] -= n
        return n

    monkeypatch.setattr(os, "write", write)
    return left


@pytest.mark.asyncio
async def test_a_torn_write_is_cut_back_to_the_last_complete_line(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "dead.jsonl"
    one = len(letter().encode())
    enospc_after(monkeypatch, 3 * one + one // 2)
    with pytest.raises(DeadLetterWriteError, match="No space left") as caught:
        await JsonlDeadLetterSink(path).write([letter() for _ in range(10)])
    assert caught.value.written == 3 and len(lines_of(path)) == 3
    no_torn_line(path)


@pytest.mark.asyncio
async def test_disk_full_then_space_again_loses_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Reproduction 9: the disk fills up half-way through a burst of dead letters, then
    has room again. Stats equal what reached the file, one log line per burst, no torn line."""
    dead = tmp_path / "dead.jsonl"
    monkeypatch.setattr("notifykit._deadletter.RETRY_FIRST", 0.01)
    left = enospc_after(monkeypatch, 2500)
    async with Notifier.from_url("memory://?reject=bad.*&batch_size=5", publisher_id="t", dead_letters=dead) as n:
        for i in range(40):
            await n.info({}, "bad.x" if i % 2 else "ok.x", {"i": i})
        await until(lambda: n.stats()["memory"].sent == 20 and n.stats()["memory"].in_flight == 20
                    - n.stats()["memory"].dead_lettered)
        assert_accounted(n, dead)  # mid-burst: what is not on disk is in flight, not dead-lettered
        on_disk = n.stats()["memory"].dead_lettered
        assert 0 < on_disk < 20 and len(lines_of(dead)) == on_disk
        no_torn_line(dead)
        left[0] = 10**9  # room again
        await until(lambda: n.stats()["memory"].dead_lettered == 20, timeout=20)
    stats = n.stats()["memory"]
    assert (stats.sent, stats.dead_lettered, stats.dead_letter_failed) == (20, 20, 0)
    assert sorted(r["message"]["payload"]["i"] for r in read_dead_letters(dead)) == list(range(1, 40, 2))
    no_torn_line(dead)
    assert_accounted(n, dead)
    assert [r.levelname for r in dead_letter_logs(caplog)] == ["WARNING", "WARNING"]  # full; written again
    assert all(r.exc_info is None for r in caplog.records)


@pytest.mark.asyncio
async def test_disk_full_until_close_is_counted_and_logged_once(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    dead = tmp_path / "dead.jsonl"
    dead.symlink_to("/dev/full")  # every write: ENOSPC
    async with Notifier.from_url("memory://?reject=*&batch_size=7", publisher_id="t", dead_letters=dead) as n:
        for i in range(100):
            await n.info({}, "e.v", {"i": i})
        await until(lambda: n.stats()["memory"].in_flight == 100)
        assert_accounted(n)
    stats = n.stats()["memory"]
    assert (stats.dead_lettered, stats.dead_letter_failed) == (0, 100)
    assert_accounted(n)
    logs = dead_letter_logs(caplog)
    assert [r.levelname for r in logs] == ["WARNING", "ERROR"]
    assert "100 dead letter(s) could not be written" in logs[1].getMessage()
    assert all(r.exc_info is None for r in caplog.records)


@pytest.mark.asyncio
async def test_durable_letters_that_cannot_be_written_stay_in_the_spool(tmp_path: Path) -> None:
    """With a spool they are not confirmed: the next Notifier replays them and, once the disk
    has room, they reach the dead-letter file. None is counted dead_letter_failed."""
    dead, spool = tmp_path / "dead.jsonl", tmp_path / "spool"
    dead.symlink_to("/dev/full")
    url = "memory://?durable=true&reject=bad.*&batch_size=4"
    first = Notifier.from_url(url, publisher_id="t", dead_letters=dead, spool=spool)
    async with first:
        for i in range(12):
            await first.info({}, "bad.x" if i % 3 == 0 else "ok.x", {"i": i})
        await until(lambda: first.stats()["memory"].sent == 8)
    stats = first.stats()["memory"]
    assert (stats.dead_lettered, stats.dead_letter_failed, stats.spooled) == (0, 0, 4)
    assert_accounted(first)
    dead.unlink()  # room again
    second = Notifier.from_url(url, publisher_id="t", dead_letters=dead, spool=spool)
    async with second:
        pass
    assert second.stats()["memory"].replayed == 4  # appended again at close: the good ones are not re-sent
    assert sorted(r["message"]["payload"]["i"] for r in read_dead_letters(dead)) == [0, 3, 6, 9]
    assert_accounted(second, dead)


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB tmpfs (needs root; the injected faults above cover the rest)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.asyncio
async def test_a_real_full_filesystem(tiny_fs: Path, caplog: pytest.LogCaptureFixture) -> None:
    dead = tiny_fs / "dead.jsonl"
    async with Notifier.from_url("memory://?reject=*&batch_size=50", publisher_id="t", dead_letters=dead) as n:
        for i in range(400):
            await n.info({}, "e.v", {"i": i, "pad": "x" * 300})
    stats = n.stats()["memory"]
    assert stats.dead_lettered == len(lines_of(dead)) and 0 < stats.dead_lettered < 400
    assert stats.dead_letter_failed == 400 - stats.dead_lettered
    no_torn_line(dead)
    assert_accounted(n, dead)
    assert [r.levelname for r in dead_letter_logs(caplog)] == ["WARNING", "ERROR"]


@pytest.mark.asyncio
async def test_a_torn_line_left_by_someone_else_stays_its_own_line(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "dead.jsonl"
    first = line_of(letter())
    path.write_bytes(first + first[:40])  # e.g. a crash of an older version mid-write
    await JsonlDeadLetterSink(path).write([letter()])
    assert len(list(read_dead_letters(path))) == 2
    assert "skipped 1 line(s)" in caplog.text and "line 2" in caplog.text


# -- 5. reading any file (reproduction 12, dead-letter half) ------------------------------


def write_letters(path: Path, *letters: DeadLetter) -> None:
    path.write_bytes(b"".join(line_of(dead) for dead in letters))


def one_error_line(capsys: pytest.CaptureFixture[str], *expected: str) -> None:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("notifykit: error: "), err
    for text in expected:
        assert text in lines[0]


def test_bad_lines_are_skipped_with_one_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "dead.jsonl"
    good = line_of(letter())
    path.write_bytes(good + b"{not json\n" + good + b'"a string"\n' + good[:30])
    assert main(["deadletters", "list", "--file", str(path)]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 2 and "# 2 dead letter(s)" in captured.err
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"notifykit: skipped 3 line(s) of {path} that are not dead letters (torn or not JSON):"
                        " line 2, 4, 5"]
    assert main(["deadletters", "purge", "--file", str(path), "--yes"]) == 0
    assert path.read_bytes() == b"{not json\n" + b'"a string"\n' + good[:30] + b"\n"  # kept, not deleted


@pytest.mark.parametrize("action", [["list"], ["purge", "--yes"], ["replay", "--url", "memory://?name=billing"]])
@pytest.mark.parametrize("kind", ["binary", "directory", "missing", "unreadable"])
def test_a_file_that_is_no_dead_letter_file_is_one_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch, action: list[str],
                                                         kind: str) -> None:
    path = tmp_path / "dead.jsonl"
    if kind == "binary":
        path.write_bytes(bytes(range(256)) * 10)
    elif kind == "directory":
        path.mkdir()
    elif kind == "unreadable":
        write_letters(path, letter())
        real = os.open

        def refuse(name: Any, *args: Any, **kwargs: Any) -> int:
            if Path(name) == path:
                raise PermissionError(errno.EACCES, "Permission denied")
            return real(name, *args, **kwargs)

        monkeypatch.setattr(os, "open", refuse)
    before = path.read_bytes() if path.is_file() else None
    assert main(["deadletters", *action[:1], "--file", str(path), *action[1:]]) == 2
    one_error_line(capsys, str(path), {"binary": "binary file", "directory": "is a directory",
                                       "missing": "no dead-letter file", "unreadable": "Permission denied"}[kind])
    assert (path.read_bytes() if path.is_file() else None) == before
    assert kind != "missing" or not path.exists()


def test_the_default_file_not_existing_yet_means_none(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFYKIT_DEAD_LETTERS", str(tmp_path / "never.jsonl"))
    assert main(["deadletters", "list"]) == 0
    assert "# 0 dead letter(s)" in capsys.readouterr().err
    assert main(["deadletters", "purge", "--yes"]) == 0
    assert not (tmp_path / "never.jsonl").exists()


def test_rewrite_never_creates_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no dead-letter file"):
        rewrite_dead_letters(tmp_path / "none.jsonl", lambda r: True)
    assert not (tmp_path / "none.jsonl").exists()


# -- 6. replay goes to the transport a letter came from (reproduction 10) -----------------


def two_transports(tmp_path: Path) -> Path:
    path = tmp_path / "dead.jsonl"
    write_letters(path, *(letter(Notification.create("e.v", {"i": i}, publisher_id="t"), "billing" if i % 2 else
                                 "audit") for i in range(6)))
    return path


def config_file(tmp_path: Path, **transports: str) -> Path:
    path = tmp_path / "notifykit.toml"
    path.write_text("".join(f'[transports.{name}]\nurl = "{url}"\n' for name, url in transports.items()))
    return path


def test_replay_with_a_config_sends_each_letter_only_to_its_own_transport(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Reproduction 10: a one-transport config took every letter, and the file lost them."""
    path = two_transports(tmp_path)
    out = tmp_path / "billing.jsonl"
    config = config_file(tmp_path, billing=f"log://{out}")
    assert main(["deadletters", "replay", "--file", str(path), "--config", str(config)]) == 0
    captured = capsys.readouterr()
    assert "replayed 3: 3 delivered, 0 dead-lettered again" in captured.out
    assert "3 dead letter(s) of transport(s) not in the configuration ('audit' (3))" in captured.err
    assert [json.loads(line)["payload"]["i"] for line in out.read_text().splitlines()] == [1, 3, 5]
    left = list(read_dead_letters(path))
    assert [(r["transport"], r["message"]["payload"]["i"]) for r in left] == [("audit", 0), ("audit", 2), ("audit", 4)]


def test_replay_to_another_url_needs_the_transport_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = two_transports(tmp_path)
    before = path.read_bytes()
    assert main(["deadletters", "replay", "--file", str(path), "--url", "memory://"]) == 0  # the 'memory' ones: none
    assert "6 dead letter(s) of transport(s) not in the configuration" in capsys.readouterr().err
    assert path.read_bytes() == before
    assert main(["deadletters", "replay", "--file", str(path), "--url", "memory://?name=x",
                 "--transport", "audit"]) == 2
    one_error_line(capsys, "give one name")
    assert path.read_bytes() == before
    out = tmp_path / "audit.jsonl"
    assert main(["deadletters", "replay", "--file", str(path), "--url", f"log://{out}", "--transport", "audit"]) == 0
    assert [json.loads(line)["payload"]["i"] for line in out.read_text().splitlines()] == [0, 2, 4]
    assert [r["transport"] for r in read_dead_letters(path)] == ["billing"] * 3


def test_replay_keeps_letters_that_are_no_valid_notification(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "dead.jsonl"
    write_letters(path, letter(custom({"v": "\ud800"})), letter())
    assert main(["deadletters", "replay", "--file", str(path), "--url", "memory://?name=billing"]) == 0
    captured = capsys.readouterr()
    assert "replayed 1: 1 delivered" in captured.out and "1 dead letter(s) are not valid notifications" in captured.err
    (left,) = read_dead_letters(path)
    assert left["message"]["payload"] == {"v": "\ud800"}


def test_replay_never_drops_or_spools_what_it_removes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A configured transport's own overflow or filter must not make a letter vanish."""
    path = two_transports(tmp_path)
    config = tmp_path / "notifykit.toml"
    config.write_text('[transports.billing]\nurl = "memory://"\nqueue_size = 1\noverflow = "drop_newest"\n'
                      'durable = true\n[transports.billing.filter]\nevent_types = ["nothing.*"]\n'
                      '[transports.audit]\nurl = "memory://"\n')
    assert main(["deadletters", "replay", "--file", str(path), "--config", str(config)]) == 0
    assert "replayed 6: 6 delivered, 0 dead-lettered again" in capsys.readouterr().out
    assert list(read_dead_letters(path)) == []


def test_a_sink_waiting_for_the_lock_writes_into_the_file_that_replaced_it(tmp_path: Path) -> None:
    """rewrite_dead_letters replaces the file under the lock; a sink that was waiting for
    that lock must not append to the old (unlinked) file, where its letters would be lost."""
    import fcntl

    path = tmp_path / "dead.jsonl"
    write_letters(path, letter())
    holder = os.open(path, os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    sink = JsonlDeadLetterSink(path)
    done = threading.Event()
    thread = threading.Thread(target=lambda: (sink._append([letter(transport="late")]), done.set()))
    thread.start()
    try:
        assert not done.wait(0.2)  # blocked on the lock
        replacement = tmp_path / "dead.jsonl.tmp"
        write_letters(replacement, letter(transport="kept"))
        os.replace(replacement, path)
    finally:
        fcntl.flock(holder, fcntl.LOCK_UN)
        os.close(holder)
        thread.join(10)
    assert [r["transport"] for r in read_dead_letters(path)] == ["kept", "late"]


@pytest.mark.asyncio
async def test_more_refused_letters_than_are_kept_are_counted_at_once(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    dead = tmp_path / "dead.jsonl"
    dead.symlink_to("/dev/full")
    url = "memory://?reject=*&batch_size=100&queue_size=500"  # keeps max(queue_size, 1000)
    async with Notifier.from_url(url, publisher_id="t", dead_letters=dead) as n:
        for i in range(1100):
            await n.info({}, "e.v", {"i": i})
        await until(lambda: n.stats()["memory"].dead_letter_failed == 100)  # over the 1000 kept
        assert_accounted(n)
    stats = n.stats()["memory"]
    assert (stats.dead_lettered, stats.dead_letter_failed) == (0, 1100)
    assert_accounted(n)
    assert [r.levelname for r in dead_letter_logs(caplog)] == ["WARNING", "ERROR", "ERROR"]  # full; over; close


@pytest.mark.asyncio
async def test_the_files_that_hold_payloads_are_created_private(tmp_path: Path) -> None:
    """The dead-letter file and the spool's quarantine.jsonl hold whole notifications: they
    are created 0600, whatever the umask; a dead-letter file that exists keeps its mode."""
    old_umask = os.umask(0o022)
    try:
        dead = tmp_path / "dl.jsonl"
        async with Notifier.from_url("memory://?fail=1000&failure=permanent", publisher_id="t", dead_letters=dead) as n:
            await n.info({}, "e.v", {"secret": "payload"})
        assert n.stats()["memory"].dead_lettered == 1
        assert dead.stat().st_mode & 0o777 == 0o600
        shared = tmp_path / "shared.jsonl"
        shared.touch(mode=0o640)
        shared.chmod(0o640)
        async with Notifier.from_url("memory://?fail=1000&failure=permanent", publisher_id="t", dead_letters=shared) as n:
            await n.info({}, "e.v", {})
        assert shared.stat().st_mode & 0o777 == 0o640 and n.stats()["memory"].dead_lettered == 1
        spool = tmp_path / "spool"
        spool.mkdir(mode=0o755)
        (spool / segment_name(1)).write_bytes(b"garbage that is no frame")
        async with Notifier.from_url("memory://?durable=true", publisher_id="t", spool=spool, dead_letters=dead):
            pass
        assert (spool / "quarantine.jsonl").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old_umask)
