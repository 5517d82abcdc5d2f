"""``notifykit status --json`` and ``--watch``: the same sources, as one JSON line, and redrawn
until Ctrl-C (a real process, stopped with SIGINT)."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from notifykit import Notifier
from notifykit.cli import main, watch_status
from notifykit.testing import MemoryTransport


def make_status(tmp_path: Path) -> tuple[Path, Path]:
    """A closed Notifier's status file and its spool with 3 notifications left in it."""
    status_path, spool = tmp_path / "status.json", tmp_path / "spool.sqlite"

    async def run() -> None:
        n = Notifier.from_url("memory://?name=rabbit&durable=true", publisher_id="t", spool=spool,
                              status_path=status_path, dead_letters=tmp_path / "dl.jsonl", close_timeout=0.05)
        async with n:
            transport = n.transports["rabbit"]
            assert isinstance(transport, MemoryTransport)
            await n.info({}, "e.v", {})
            with anyio.fail_after(10):
                while transport.delivered < 1:
                    await anyio.sleep(0.001)
            transport.stall()
            for _ in range(3):
                await n.info({}, "e.v", {})

    anyio.run(run)
    return status_path, spool


def test_status_json_is_one_line_with_the_document_and_the_spool(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    status_path, spool = make_status(tmp_path)
    assert main(["status", "--file", str(status_path), "--spool", str(spool), "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    data = json.loads(out)
    assert data["status"] == json.loads(status_path.read_text(encoding="utf-8"))
    assert data["status"]["transports"]["rabbit"]["sent"] == 1 and data["status"]["closed"] is True
    assert data["spool"]["counts"] == {"rabbit": 3} and data["spool"]["path"] == str(spool)
    assert main(["status", "--spool", str(spool), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] is None


@pytest.mark.parametrize("argv", [["--json", "--prometheus"], ["--watch", "--interval", "0"],
                                  ["--watch", "--interval", "nan"]])
def test_status_refuses_bad_options(tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--file", str(tmp_path / "s.json"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("notifykit: error: status: ") and err.count("\n") == 1


def test_watch_redraws_on_a_terminal_and_reports_a_source_that_goes_away(tmp_path: Path) -> None:
    status_path, _ = make_status(tmp_path)

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

        def flush(self) -> None:
            super().flush()
            status_path.unlink(missing_ok=True)  # gone after the first frame

    out = Terminal()
    watch_status(status_path, None, False, False, 0.001, out, frames=2)
    first, second = out.getvalue().split("\x1b[H\x1b[2J")[1:]
    assert "rabbit: closed enqueued=4 sent=1" in first
    assert "notifykit: error: cannot read status file" in second


def test_watch_of_a_missing_file_fails_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--file", str(tmp_path / "none.json"), "--watch"]) == 2
    assert "cannot read status file" in capsys.readouterr().err


def test_watch_follows_the_file_until_sigint(tmp_path: Path) -> None:
    status_path, _ = make_status(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "notifykit.cli", "status", "--file", str(status_path),
                             "--json", "--watch", "--interval", "0.05"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["status"]["transports"]["rabbit"]["sent"] == 1
        document = json.loads(status_path.read_text(encoding="utf-8"))
        document["transports"]["rabbit"]["sent"] = 2
        tmp = status_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(document), encoding="utf-8")
        tmp.replace(status_path)  # as a Notifier writes it
        for _ in range(200):  # the next frames read the new file
            if json.loads(proc.stdout.readline())["status"]["transports"]["rabbit"]["sent"] == 2:
                break
        else:
            pytest.fail("--watch never showed the new status")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def test_status_shows_spooled_bytes_and_the_delivery_latency(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Text, --json and --prometheus: the bytes the 3 records left take in the spool, and the
    latency of the one sent (the same numbers in each)."""
    status_path, _ = make_status(tmp_path)
    row = json.loads(status_path.read_text(encoding="utf-8"))["transports"]["rabbit"]
    assert row["spooled"] == 3 and row["spooled_bytes"] > 0
    latency = row["delivery_latency"]
    assert latency["count"] == row["sent"] == 1 and latency["buckets"]["+Inf"] == 1
    assert main(["status", "--file", str(status_path)]) == 0
    text = capsys.readouterr().out
    assert f"spooled=3 ({row['spooled_bytes']} bytes)" in text and " latency p50<=" in text and " p99<=" in text
    assert main(["status", "--file", str(status_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"]["transports"]["rabbit"]["delivery_latency"] == latency
    assert main(["status", "--file", str(status_path), "--prometheus"]) == 0
    prom = capsys.readouterr().out
    assert f'notifykit_spooled_bytes{{transport="rabbit"}} {row["spooled_bytes"]}' in prom
    assert "# TYPE notifykit_delivery_latency_seconds histogram" in prom
    assert 'notifykit_delivery_latency_seconds_bucket{transport="rabbit",le="+Inf"} 1' in prom
    assert 'notifykit_delivery_latency_seconds_count{transport="rabbit"} 1' in prom
    assert f'notifykit_delivery_latency_seconds_sum{{transport="rabbit"}} {latency["sum"]!r}' in prom


def test_status_file_of_an_older_notifier_without_bytes_or_latency(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    status_path = tmp_path / "status.json"
    status_path.write_text(json.dumps({"pid": 1, "publisher_id": "t", "updated_at": 0, "closed": True, "transports": {
        "rabbit": {"name": "rabbit", "state": "closed", "enqueued": 2, "sent": 2, "spooled": 0}}}), encoding="utf-8")
    assert main(["status", "--file", str(status_path)]) == 0
    assert "rabbit: closed enqueued=2 sent=2" in (text := capsys.readouterr().out) and "latency" not in text
    assert main(["status", "--file", str(status_path), "--prometheus"]) == 0
    prom = capsys.readouterr().out
    assert 'notifykit_spooled_bytes{transport="rabbit"} 0' in prom and "notifykit_delivery_latency_seconds_" not in prom


def test_status_refuses_a_damaged_latency_histogram(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status_path, _ = make_status(tmp_path)
    document = json.loads(status_path.read_text(encoding="utf-8"))
    document["transports"]["rabbit"]["delivery_latency"]["buckets"]["+Inf"] = -1
    status_path.write_text(json.dumps(document), encoding="utf-8")
    assert main(["status", "--file", str(status_path)]) == 2
    err = capsys.readouterr().err
    assert "transport 'rabbit': delivery_latency is no latency histogram (bucket counts are not growing counts)" in err
    document["transports"]["rabbit"]["delivery_latency"] = 3
    status_path.write_text(json.dumps(document), encoding="utf-8")
    assert main(["status", "--file", str(status_path), "--json"]) == 2
    assert "delivery_latency is no latency histogram (not an object)" in capsys.readouterr().err
